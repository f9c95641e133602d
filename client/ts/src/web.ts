import { createConnectTransport, createGrpcWebTransport } from "@connectrpc/connect-web";

import type { Transports } from "./options.js";

/** WebTransportOptions choose the protocol spoken over fetch. */
export interface WebTransportOptions {
  /** "connect" (the default) or "grpc-web". */
  protocol?: "connect" | "grpc-web";
  /** Send protobuf binary instead of JSON (default true). */
  binary?: boolean;
}

/**
 * webTransports speaks to the servers with fetch: in browsers (from the
 * server's own origin, or from one it allows with dlm serve --cors-origin),
 * and in Node, Deno and Bun too. It is the default of Reader and Client.
 */
export function webTransports(opts: WebTransportOptions = {}): Transports {
  const useBinaryFormat = opts.binary ?? true;
  return {
    create(baseUrl) {
      return opts.protocol === "grpc-web"
        ? createGrpcWebTransport({ baseUrl, useBinaryFormat })
        : createConnectTransport({ baseUrl, useBinaryFormat });
    },
  };
}
