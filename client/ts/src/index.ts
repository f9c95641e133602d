/**
 * @dlm/client is the TypeScript client of dlm, the distributed lock manager
 * that guards a set of append-only files, for browsers and Node.
 *
 * A Client is one session with the service. It keeps the session alive in
 * the background, numbers every request so that retries are executed at most
 * once, retries lost requests and unavailable servers with backoff within a
 * bounded time, and follows the leader of a replicated cluster.
 *
 *     const c = await Client.open(["http://127.0.0.1:7070"], { name: "me" });
 *     await c.withLock(async (lock) => lock.append("file_1", "A\n"));
 *     await c.close();
 *
 * Appends made under a Lock are staged by the server and reach the files
 * only when the Lock is released: a critical section is all or nothing. When
 * the lease runs out first, the server takes the lock away and discards the
 * section; the Lock reports it through its "lost" event, its `lost` promise
 * and its `signal`, and every later call under it throws LockExpiredError.
 *
 * @module
 */
export {
  Client,
  Reader,
  type AcquireOptions,
  type TryAcquireOptions,
  type LockOptions,
  type ListLocksOptions,
  type TokenCheck,
  type StatusOptions,
} from "./client.js";
export { Lock, LockReleasedError, type LockMode, type LockState, type CallOptions } from "./lock.js";
export * from "./errors.js";
/** The codes of DlmError.code (Connect's). */
export { Code } from "@connectrpc/connect";
export type { ClientOptions, ReaderOptions, Logger, Transports } from "./options.js";
export { parseEndpoints, backoff } from "./retry.js";
export { webTransports, type WebTransportOptions } from "./web.js";
export { validToken, withToken } from "./token.js";
export * as api from "./api.js";
