// What each reason means is written once, as options on the proto's
// ErrorReason values (proto/dlm/v1/reason.proto); the server and the Go
// client read the same options. This module reads them from the generated
// descriptor, once.
import { getOption, hasOption } from "@bufbuild/protobuf";

import { ErrorReason, ErrorReasonSchema, type ReasonSpec, reason_spec, RetryClass, retry_policy } from "./api.js";

/** reasonSpecs is each reason's spec (all but UNSPECIFIED have one). */
export const reasonSpecs: ReadonlyMap<ErrorReason, ReasonSpec> = new Map(
  ErrorReasonSchema.values
    .filter((v) => hasOption(v, reason_spec))
    .map((v) => [v.number as ErrorReason, getOption(v, reason_spec)]),
);

/** policy paces repeated requests, the same for the Go client. */
export const policy = getOption(ErrorReasonSchema, retry_policy);

/**
 * repeatedReason reports whether the client repeats a request answered with
 * reason, or undefined for a reason this client does not know (a newer
 * server's): then the code decides.
 */
export function repeatedReason(reason: ErrorReason): boolean | undefined {
  const spec = reasonSpecs.get(reason);
  if (spec === undefined) {
    return undefined;
  }
  return spec.retry === RetryClass.FOLLOW_LEADER || spec.retry === RetryClass.RETRY_SAME_REQUEST;
}
