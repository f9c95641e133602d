import { createClient, type Client as RpcClient, type Transport } from "@connectrpc/connect";

import { ErrorReason, LockService } from "./api.js";
import { AbortedError, type DlmError, retryable, toDlmError, UnavailableError } from "./errors.js";
import type { Logger } from "./options.js";
import { policy } from "./reasons.js";

/** The generated promise client of the LockService. */
export type Api = RpcClient<typeof LockService>;

/**
 * backoff returns the pause in milliseconds before retry number n (1 for the
 * first retry): a random duration in [d/2, d] with d = base·2^(n-1) capped at
 * max, from the proto's retry_policy (the Go client's too). The random half
 * keeps clients that failed together from retrying together.
 */
export function backoff(n: number): number {
  const d = Math.min(policy.backoffBaseMs * 2 ** Math.max(n - 1, 0), policy.backoffMaxMs);
  return d / 2 + Math.random() * (d / 2);
}

/**
 * parseEndpoints splits a comma-separated list of server addresses into base
 * URLs. An address without a scheme gets http://; empty elements are dropped.
 */
export function parseEndpoints(s: string): string[] {
  return s
    .split(",")
    .map((e) => e.trim())
    .filter((e) => e !== "")
    .map((e) => (e.includes("://") ? e : `http://${e}`).replace(/\/+$/, ""));
}

/** validEndpoint reports whether e is an http:// or https:// base URL. */
export function validEndpoint(e: string): boolean {
  try {
    const u = new URL(e);
    return (u.protocol === "http:" || u.protocol === "https:") && u.host !== "";
  } catch {
    return false;
  }
}

/**
 * Endpoints is the list of servers and the one in use. A call that fails on a
 * server moves on to the next; a NOT_LEADER answer that names the leader moves
 * straight to it.
 */
export class Endpoints {
  private readonly urls: string[];
  private readonly apis = new Map<string, Api>();
  private current = 0;
  /**
   * refused records when each endpoint last failed without an answer from
   * the service (connection refused or reset, attempt timeout): for
   * policy.refusedForMs after that, a follower's word that it is the leader
   * is not taken, because followers keep naming a dead leader until the
   * election ends, and following them would bounce between the two without
   * pause.
   */
  private readonly refused = new Map<string, number>();

  constructor(
    urls: string[],
    private readonly newTransport: (baseUrl: string) => Transport,
  ) {
    this.urls = urls.map((u) => u.replace(/\/+$/, ""));
  }

  /** pick returns the current server and its client. */
  pick(): { url: string; api: Api } {
    const url = this.urls[this.current];
    let api = this.apis.get(url);
    if (api === undefined) {
      api = createClient(LockService, this.newTransport(url));
      this.apis.set(url, api);
    }
    return { url, api };
  }

  /**
   * failed moves away from server url after a failed attempt, unless another
   * call already did. It reports whether the next attempt goes to the leader
   * named by the answer, which is worth trying without a pause.
   */
  failed(url: string, err: DlmError): boolean {
    if (err.reason === ErrorReason.UNSPECIFIED) {
      // No ErrorDetail: the service itself did not answer.
      this.refused.set(url, Date.now());
    }
    if (this.urls[this.current] !== url) {
      return false;
    }
    const leader = err.leaderUrl.replace(/\/+$/, "");
    if (leader !== "" && validEndpoint(leader)) {
      if (leader === url || Date.now() - (this.refused.get(leader) ?? -Infinity) < policy.refusedForMs) {
        this.current = (this.current + 1) % this.urls.length;
        return false;
      }
      const i = this.urls.indexOf(leader);
      if (i >= 0) {
        this.current = i;
        return true;
      }
      // A leader outside the configured list (the cluster grew): use it as
      // one more endpoint.
      this.urls.push(leader);
      this.current = this.urls.length - 1;
      return true;
    }
    this.current = (this.current + 1) % this.urls.length;
    return false;
  }
}

/** CallOpts are what one attempt passes to the generated client. */
export interface CallOpts {
  signal?: AbortSignal;
  timeoutMs: number;
}

/**
 * sleep waits ms milliseconds, or until signal aborts; it reports whether the
 * whole pause elapsed.
 */
export function sleep(ms: number, signal?: AbortSignal): Promise<boolean> {
  return new Promise((resolve) => {
    if (signal?.aborted) {
      resolve(false);
      return;
    }
    const onAbort = () => {
      clearTimeout(t);
      resolve(false);
    };
    const t = setTimeout(() => {
      signal?.removeEventListener("abort", onAbort);
      resolve(true);
    }, ms);
    signal?.addEventListener("abort", onAbort, { once: true });
  });
}

/**
 * Retrier runs one RPC until it gets a definite answer, the retry budget is
 * spent, or the caller's signal aborts.
 */
export class Retrier {
  constructor(
    private readonly eps: Endpoints,
    private readonly budgetMs: number,
    private readonly attemptTimeoutMs: number,
    private readonly log: Logger,
  ) {}

  /**
   * do runs attempt with a per-attempt deadline of timeoutMs (0: the default)
   * until it succeeds or fails with a definite error. It throws the service's
   * error as a DlmError subclass; UnavailableError (attempts > 0) when the
   * budget ran out; AbortedError when signal aborted.
   */
  async do<T>(
    op: string,
    signal: AbortSignal | undefined,
    timeoutMs: number,
    attempt: (api: Api, opts: CallOpts) => Promise<T>,
  ): Promise<T> {
    const perAttempt = timeoutMs > 0 ? timeoutMs : this.attemptTimeoutMs;
    const deadline = Date.now() + this.budgetMs;
    let last: DlmError | undefined;
    let redirects = 0;
    for (let n = 1; ; n++) {
      if (signal?.aborted) {
        throw aborted(op, n - 1, signal, last);
      }
      const left = deadline - Date.now();
      if (left <= 0) {
        throw exhausted(op, n - 1, last);
      }
      const { url, api } = this.eps.pick();
      try {
        // Whole milliseconds: the timeout travels in a header that the
        // server parses as an integer.
        return await attempt(api, { signal, timeoutMs: Math.max(1, Math.ceil(Math.min(perAttempt, left))) });
      } catch (err) {
        if (signal?.aborted) {
          throw aborted(op, n, signal, toDlmError(err));
        }
        if (!retryable(err)) {
          throw toDlmError(err);
        }
        last = toDlmError(err);
        const toLeader = this.eps.failed(url, last);
        this.log.debug("dlm: retrying", { op, attempt: n, endpoint: url, err: last.message });
        if (toLeader && redirects < policy.maxRedirects) {
          // One hop to the named leader needs no pause; a chain of them (an
          // election in progress) does.
          redirects++;
          continue;
        }
        redirects = 0;
        const pause = Math.min(backoff(n), Math.max(0, deadline - Date.now()));
        if (!(await sleep(pause, signal))) {
          throw aborted(op, n, signal as AbortSignal, last);
        }
        if (Date.now() >= deadline) {
          throw exhausted(op, n, last);
        }
      }
    }
  }
}

function exhausted(op: string, attempts: number, last: DlmError | undefined): UnavailableError {
  const e = new UnavailableError(
    `dlm: service unavailable: ${op} failed after ${attempts} attempts${last ? `: ${last.message}` : ""}`,
    { code: last?.code, reason: last?.reason, leaderUrl: last?.leaderUrl, cause: last },
  );
  e.attempts = Math.max(attempts, 1);
  return e;
}

function aborted(op: string, attempts: number, signal: AbortSignal, last: DlmError | undefined): AbortedError {
  const why = signal.reason instanceof Error ? signal.reason.message : String(signal.reason);
  return new AbortedError(
    `dlm: ${op}: ${why} after ${attempts} attempts${last ? `: ${last.message}` : ""}`,
    { code: last?.code, cause: signal.reason },
  );
}
