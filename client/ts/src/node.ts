import { createConnectTransport, createGrpcTransport, Http2SessionManager } from "@connectrpc/connect-node";

import type { Transports } from "./options.js";

export * from "./index.js";

/** NodeTransportOptions choose the protocol spoken over node:http2, and TLS's CA and client certificate. */
export interface NodeTransportOptions {
  /** "connect" (the default) or "grpc". Both use HTTP/2 (h2c for http:// URLs, TLS for https://). */
  protocol?: "connect" | "grpc";
  /**
   * ca is the PEM certificate of the CA to trust for https:// URLs (the
   * server's --tls-cert was signed by it); without it, Node's default CAs.
   */
  ca?: string | Buffer;
  /** cert and key are a PEM client certificate and key, for a server that requires mutual TLS. */
  cert?: string | Buffer;
  key?: string | Buffer;
}

/**
 * nodeTransports speaks to the servers over node:http2, one connection per
 * server, pinged while in use so that a server host that vanished is noticed
 * within seconds. Closing the client closes the connections.
 */
export function nodeTransports(opts: NodeTransportOptions = {}): Transports {
  const managers: Http2SessionManager[] = [];
  return {
    create(baseUrl) {
      const sessionManager = new Http2SessionManager(
        baseUrl,
        {
          pingIntervalMs: 2000,
          pingTimeoutMs: 2000,
          idleConnectionTimeoutMs: 60_000,
        },
        { ca: opts.ca, cert: opts.cert, key: opts.key },
      );
      managers.push(sessionManager);
      const common = { baseUrl, httpVersion: "2" as const, sessionManager };
      return opts.protocol === "grpc" ? createGrpcTransport(common) : createConnectTransport(common);
    },
    close() {
      for (const m of managers.splice(0)) {
        m.abort();
      }
    },
  };
}
