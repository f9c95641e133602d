import type { Transport } from "@connectrpc/connect";

/** Logger receives the client's reports; the default discards them. */
export interface Logger {
  debug(msg: string, attrs?: Record<string, unknown>): void;
  info(msg: string, attrs?: Record<string, unknown>): void;
  warn(msg: string, attrs?: Record<string, unknown>): void;
}

/**
 * Transports makes the Connect transport for each server base URL, and
 * closes them when the client closes. webTransports (fetch: browsers, Node,
 * Deno) and nodeTransports (node:http2, also gRPC) are provided.
 */
export interface Transports {
  create(baseUrl: string): Transport;
  close?(): void;
}

/** ReaderOptions configure a Reader (and a Client). */
export interface ReaderOptions {
  /** How to reach the servers; the default is webTransports() (fetch, Connect protocol). */
  transports?: Transports;
  /**
   * Bounds the total time one call keeps retrying lost requests and
   * unavailable servers before it fails with UnavailableError (default 30 s).
   * Raise it to ride out a long leader election; lower it to fail fast in
   * interactive tools. A blocking acquire applies it to the time without any
   * answer, not to its wait in the queue.
   */
  retryBudgetMs?: number;
  /**
   * Bounds each single attempt (default 2 s), so that a request lost on a
   * connection that stays open is retried instead of waited on forever.
   */
  attemptTimeoutMs?: number;
  /** Reports retries, leader changes, renewed sessions and lost locks. */
  logger?: Logger;
  /**
   * A credential for a server that requires one, sent on every call as
   * `Authorization: Bearer <token>`, whichever transport carries it. Send it
   * only over https:// to servers other than this machine: over http:// it
   * can be read on the way.
   */
  token?: string;
}

/** ClientOptions configure a Client. */
export interface ClientOptions extends ReaderOptions {
  /**
   * The session lease asked for, in milliseconds (0: the server's default,
   * clamped by the server). A short lease hands the lock on sooner after a
   * holder crashes or its tab closes; a long one tolerates longer pauses.
   */
  leaseMs?: number;
  /** A label for the session in Status and on the dashboard. */
  name?: string;
  /**
   * How long one LockAcquire call waits in the queue before the server
   * answers "still queued" and the client asks again (default 5 s).
   */
  pollWaitMs?: number;
  /**
   * Set false to stop the background keepalive, so the session lives only as
   * long as its lease. Tests use it to act out a holder that stalls.
   */
  keepAlive?: boolean;
}

export const noLogger: Logger = { debug() {}, info() {}, warn() {} };
