import { Code, ConnectError } from "@connectrpc/connect";

import { ErrorDetailSchema, ErrorReason } from "./api.js";
import { reasonSpecs, repeatedReason } from "./reasons.js";

/**
 * DlmError is every error this package throws. Service errors are subclasses
 * named for the ErrorDetail reason the service gave, so callers test
 * `err instanceof LockExpiredError` rather than read messages; `reason` and
 * `code` carry the raw values.
 */
export class DlmError extends Error {
  /** The Connect code of the answer (Code.Unknown when there was none). */
  readonly code: Code;
  /** The service's reason; ERROR_REASON_UNSPECIFIED when none was given. */
  readonly reason: ErrorReason;
  /** With NOT_LEADER: the leader's base URL, when the service knew it. */
  readonly leaderUrl: string;
  /**
   * With SECTION_INCOMPLETE: the appends the leader holds of the critical
   * section (they are re-sent from place stagedAppends + 1).
   */
  readonly stagedAppends: number;
  /** With SECTION_INCOMPLETE: the bytes of those appends. */
  readonly stagedBytes: bigint;

  constructor(message: string, opts: DlmErrorOptions = {}) {
    super(message, opts.cause === undefined ? undefined : { cause: opts.cause });
    this.name = new.target.name;
    this.code = opts.code ?? Code.Unknown;
    this.reason = opts.reason ?? ErrorReason.UNSPECIFIED;
    this.leaderUrl = opts.leaderUrl ?? "";
    this.stagedAppends = opts.stagedAppends ?? 0;
    this.stagedBytes = opts.stagedBytes ?? 0n;
  }
}

/** DlmErrorOptions are the fields of a DlmError, as the service's answer gave them. */
export interface DlmErrorOptions {
  code?: Code;
  reason?: ErrorReason;
  leaderUrl?: string;
  stagedAppends?: number;
  stagedBytes?: bigint;
  cause?: unknown;
}

/**
 * LockExpiredError: the grant is no longer current (released, revoked after
 * its lease ran out, or granted anew). Nothing of the critical section
 * reached the files; acquire the lock again. When the grant ended with its
 * session, `cause` is the session's error.
 */
export class LockExpiredError extends DlmError {}
/** NotHolderError: the session does not hold the lock. */
export class NotHolderError extends DlmError {}
/** FileNotFoundError: no file has the name. */
export class FileNotFoundError extends DlmError {}
/** InvalidFileNameError: the name is not of the form file_N. */
export class InvalidFileNameError extends DlmError {}
/** SessionExpiredError: the session's lease ran out, or it was closed. */
export class SessionExpiredError extends DlmError {}
/** SessionUnknownError: the service never opened the session. */
export class SessionUnknownError extends DlmError {}
/** BadSecretError: the session secret did not match. */
export class BadSecretError extends DlmError {}
/** NotAvailableError: tryAcquire found the lock held by another session. */
export class NotAvailableError extends DlmError {}
/**
 * UnavailableError: the service could not be reached, or could not commit,
 * within the retry budget (or a server answered NOT_LEADER / UNAVAILABLE).
 * `cause` is the last failure. Repeating the same call is safe.
 */
export class UnavailableError extends DlmError {
  /** How many attempts were made, when retries ran out. */
  attempts = 0;
}
/**
 * AbortedError: the caller's AbortSignal ended the call before a final
 * answer; `cause` is the signal's reason (a TimeoutError for
 * AbortSignal.timeout). The service may or may not have acted on it.
 */
export class AbortedError extends DlmError {}
/** DataEmptyError: an append carried no data. */
export class DataEmptyError extends DlmError {}
/** DataTooLargeError: an append exceeded the per-append limit. */
export class DataTooLargeError extends DlmError {}
/** SectionTooLargeError: the critical section would exceed its limit. */
export class SectionTooLargeError extends DlmError {}
/** SequenceAcknowledgedError: the service forgot the request's answer. */
export class SequenceAcknowledgedError extends DlmError {}
/** TooManyRequestsError: the session has too many unacknowledged requests. */
export class TooManyRequestsError extends DlmError {}
/** DiskFullError: the leader's data volume is below its free-space minimum; nothing changed. */
export class DiskFullError extends DlmError {}
/** FileTooLargeError: the append would take its file past the per-file limit; nothing changed. */
export class FileTooLargeError extends DlmError {}
/** TooManySessionsError: the cluster has as many open sessions as its limit; nothing changed. Not retried. */
export class TooManySessionsError extends DlmError {}
/** InitRateLimitedError: this address opens sessions faster than the server allows; the message says when to retry. Not retried. */
export class InitRateLimitedError extends DlmError {}
/**
 * SectionIncompleteError: the leader holds fewer staged appends than were
 * sent (the leader changed inside the section); nothing changed. The client
 * re-sends them itself; it throws this only when repeated leader changes
 * outlast its re-sends. stagedAppends and stagedBytes say what the leader
 * holds.
 */
export class SectionIncompleteError extends DlmError {}
/** InvalidArgumentError: the service refused a malformed request. */
export class InvalidArgumentError extends DlmError {}
/** MemberConflictError: a membership change was refused: the id or Raft address is another member's. */
export class MemberConflictError extends DlmError {}
/** MemberUnknownError: a membership change named no member. */
export class MemberUnknownError extends DlmError {}
/**
 * NotAuthorizedError: the service refused the call's credential (no token or
 * an unknown one: code Unauthenticated; a role that may not make the call:
 * PermissionDenied). See the token option.
 */
export class NotAuthorizedError extends DlmError {}
/** NotExclusiveError: the session holds the default lock shared; only an exclusive holder may append. Nothing changed. */
export class NotExclusiveError extends DlmError {}
/** LockUnknownError: no live lock has the name (neither held, waited for, nor in its lock-delay). */
export class LockUnknownError extends DlmError {}
/** TooManyLocksError: the service, or this session, has as many live locks as its limit. Nothing changed. */
export class TooManyLocksError extends DlmError {}
/** LockModeMismatchError: the session holds or waits for the lock in the other mode; release it first. */
export class LockModeMismatchError extends DlmError {}
/** ClosedError: the Client was closed. */
export class ClosedError extends DlmError {}

export type ErrorClass = new (message: string, opts?: DlmErrorOptions) => DlmError;

/** byName gives each class the name that the proto's client_error uses for it. */
const byName: Record<string, ErrorClass> = {
  LockExpired: LockExpiredError,
  NotHolder: NotHolderError,
  FileNotFound: FileNotFoundError,
  InvalidFileName: InvalidFileNameError,
  SessionExpired: SessionExpiredError,
  SessionUnknown: SessionUnknownError,
  BadSecret: BadSecretError,
  Unavailable: UnavailableError,
  DataEmpty: DataEmptyError,
  DataTooLarge: DataTooLargeError,
  SectionTooLarge: SectionTooLargeError,
  SequenceAcknowledged: SequenceAcknowledgedError,
  TooManyRequests: TooManyRequestsError,
  DiskFull: DiskFullError,
  FileTooLarge: FileTooLargeError,
  TooManySessions: TooManySessionsError,
  InitRateLimited: InitRateLimitedError,
  SectionIncomplete: SectionIncompleteError,
  InvalidArgument: InvalidArgumentError,
  MemberConflict: MemberConflictError,
  MemberUnknown: MemberUnknownError,
  NotExclusive: NotExclusiveError,
  LockUnknown: LockUnknownError,
  TooManyLocks: TooManyLocksError,
  LockModeMismatch: LockModeMismatchError,
};

/** errorClass returns the class of reason, as the proto's client_error names it. */
export function errorClass(reason: ErrorReason): ErrorClass | undefined {
  const name = reasonSpecs.get(reason)?.clientError;
  return name === undefined ? undefined : byName[name];
}

/**
 * toDlmError interprets a failed RPC: a DlmError subclass for the reason in
 * the answer's ErrorDetail, or a plain DlmError with the code when there was
 * none (a transport failure, a proxy's answer).
 */
export function toDlmError(err: unknown): DlmError {
  if (err instanceof DlmError) {
    return err;
  }
  const ce = ConnectError.from(err);
  const detail = ce.findDetails(ErrorDetailSchema)[0];
  const reason = detail?.reason ?? ErrorReason.UNSPECIFIED;
  let cls = errorClass(reason) ?? DlmError;
  if (reason === ErrorReason.UNSPECIFIED && (ce.code === Code.Unauthenticated || ce.code === Code.PermissionDenied)) {
    cls = NotAuthorizedError;
  }
  const msg = ce.rawMessage || Code[ce.code] || "error";
  return new cls(`dlm: ${msg}`, {
    code: ce.code,
    reason,
    leaderUrl: detail?.leaderUrl ?? "",
    stagedAppends: detail?.stagedAppends ?? 0,
    stagedBytes: detail?.stagedBytes ?? 0n,
    cause: ce,
  });
}

/**
 * retryable reports whether a failed attempt may be repeated because the
 * service gave no definite answer. Every mutating request carries its
 * sequence number, so a repeat is harmless even when the first attempt did
 * reach the service. When the service (or a proxy) answered, only "try again"
 * answers are not final; everything else, even an unexpected code, is. A
 * failure raised on this side (a refused or reset connection, the attempt's
 * deadline, a cut-off answer) is no answer at all, and is retried.
 */
export function retryable(err: unknown): boolean {
  const ce = ConnectError.from(err);
  const detail = ce.findDetails(ErrorDetailSchema)[0];
  if (detail !== undefined) {
    // The service answered: the reason's retry class (in the proto)
    // decides, unless the reason is newer than this client.
    const r = repeatedReason(detail.reason);
    if (r !== undefined) {
      return r;
    }
  }
  if (ce.isWireError || detail !== undefined) {
    return ce.code === Code.Unavailable || ce.code === Code.DeadlineExceeded;
  }
  switch (ce.code) {
    case Code.Unavailable:
    case Code.DeadlineExceeded:
    case Code.Canceled:
    case Code.Unknown:
    case Code.Internal:
    case Code.ResourceExhausted:
      return true;
  }
  return false;
}

/** reasonOf returns the service reason carried by err, if any. */
export function reasonOf(err: unknown): ErrorReason {
  if (err instanceof DlmError) {
    return err.reason;
  }
  if (err === undefined || err === null) {
    return ErrorReason.UNSPECIFIED;
  }
  return toDlmError(err).reason;
}

/** sessionGone reports whether reason says the session is over. */
export function sessionGone(reason: ErrorReason): boolean {
  return (
    reason === ErrorReason.SESSION_EXPIRED ||
    reason === ErrorReason.SESSION_UNKNOWN ||
    reason === ErrorReason.BAD_SECRET
  );
}

/**
 * outcomeUnknown reports whether err means a call's retries ran out (the
 * retry budget, or the caller's signal), so that the service may or may not
 * have acted on it: a repeat must reuse the request's sequence number.
 */
export function outcomeUnknown(err: unknown): boolean {
  return err instanceof AbortedError || (err instanceof UnavailableError && err.attempts > 0);
}
