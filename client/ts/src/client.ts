import { create } from "@bufbuild/protobuf";
import { Code } from "@connectrpc/connect";

import {
  ErrorReason,
  type HeldLock,
  HeldLockSchema,
  type ListLocksResponse,
  type LockHistoryResponse,
  type LockStatus,
  type ReadFileResponse,
  type StatusResponse,
} from "./api.js";
import {
  AbortedError,
  ClosedError,
  DlmError,
  LockExpiredError,
  NotAvailableError,
  outcomeUnknown,
  reasonOf,
  retryable,
  SectionIncompleteError,
  SessionExpiredError,
  sessionGone,
  toDlmError,
} from "./errors.js";
import {
  type CallOptions,
  Lock,
  type LockMode,
  LockReleasedError,
  modeOf,
  sessionGoneError,
  wireMode,
} from "./lock.js";
import { Mutex } from "./mutex.js";
import { type ClientOptions, type Logger, noLogger, type ReaderOptions, type Transports } from "./options.js";
import { type Api, backoff, type CallOpts, Endpoints, Retrier, validEndpoint } from "./retry.js";
import { Session } from "./session.js";
import { scope } from "./signals.js";
import { validToken, withToken } from "./token.js";
import { webTransports } from "./web.js";

/**
 * maxRenewals bounds how many replacement sessions one acquire opens, so that
 * a service that expires every new session at once cannot keep it busy
 * forever.
 */
const maxRenewals = 3;

/**
 * maxListPages bounds how many pages listLocks asks for, so that a service
 * whose page tokens never end cannot keep it busy.
 */
const maxListPages = 1000;

/**
 * Reader reads files and the service's status without opening a session: it
 * writes nothing to the service's log. It retries and follows the leader like
 * a Client. A Client is a Reader.
 */
export class Reader {
  /** @internal */ readonly log: Logger;
  protected readonly eps: Endpoints;
  protected readonly retrier: Retrier;
  protected readonly transports: Transports;
  protected readonly attemptTimeoutMs: number;

  /**
   * new Reader(endpoints) reads from the service at endpoints, base URLs such
   * as "http://127.0.0.1:7070" (see parseEndpoints). With a replicated
   * cluster, list every server: the reader finds the leader by itself.
   */
  constructor(endpoints: string[], opts: ReaderOptions = {}) {
    if (endpoints.length === 0) {
      throw new TypeError("dlm: no server endpoints given");
    }
    for (const e of endpoints) {
      if (!validEndpoint(e)) {
        throw new TypeError(`dlm: endpoint ${JSON.stringify(e)}: want an http:// or https:// base URL`);
      }
    }
    this.log = opts.logger ?? noLogger;
    this.transports = opts.transports ?? webTransports();
    this.attemptTimeoutMs = opts.attemptTimeoutMs ?? 2000;
    if (opts.token !== undefined && opts.token !== "" && !validToken(opts.token)) {
      throw new TypeError("dlm: token: want visible ASCII characters without spaces");
    }
    const token = opts.token;
    this.eps = new Endpoints(endpoints, (u) => withToken(this.transports.create(u), token));
    this.retrier = new Retrier(this.eps, opts.retryBudgetMs ?? 30_000, this.attemptTimeoutMs, this.log);
  }

  /**
   * readFile returns the committed content of the file name ("file_0" to
   * "file_99"). It reflects every release acknowledged before the call.
   */
  async readFile(name: string, opts: CallOptions = {}): Promise<Uint8Array> {
    const first = await this.readFileRange(name, 0, 0, opts);
    // Files only grow, so the first answer's size names a prefix that never
    // changes: read up to it, in as many pieces as the server's limit needs.
    const size = Number(first.size);
    const parts = [first.data];
    let have = first.data.length;
    while (have < size) {
      const next = await this.readFileRange(name, have, 0, opts);
      if (next.data.length === 0) {
        break;
      }
      parts.push(next.data);
      have += next.data.length;
    }
    const out = new Uint8Array(Math.min(have, size));
    let at = 0;
    for (const p of parts) {
      const n = Math.min(p.length, out.length - at);
      out.set(p.subarray(0, n), at);
      at += n;
    }
    return out;
  }

  /**
   * readFileRange returns up to limit committed bytes of the file name from
   * offset (negative: counted back from the end, so -100 reads the last 100
   * bytes; limit 0: the server's limit), with the offset they start at and
   * the file's size.
   */
  readFileRange(
    name: string,
    offset: number | bigint,
    limit: number | bigint = 0,
    opts: CallOptions = {},
  ): Promise<ReadFileResponse> {
    return this.retrier.do("ReadFile", opts.signal, 0, (api, o) =>
      api.readFile({ file: name, offset: BigInt(offset), limit: BigInt(limit) }, o),
    );
  }

  /**
   * status describes the service: the answering node, the lock, its queue,
   * one page of the sessions (the first 100; sessionCount and
   * lock.queueLength count them all) and the files. With consistent the
   * leader answers after confirming its leadership; otherwise the first
   * reachable server answers from its own state. pageSize and pageToken (a
   * previous answer's nextPageToken) ask for other pages. knownStateIndex (a
   * previous answer's stateIndex) makes it a long poll: the server answers
   * once the lock state changed, or after waitMs (default 5000); the
   * attempt's deadline grows to match, within the reader's retry budget.
   */
  status(opts: CallOptions & StatusOptions = {}): Promise<StatusResponse> {
    const longPoll = (opts.knownStateIndex ?? 0n) > 0n;
    const timeoutMs = longPoll ? (opts.waitMs || 5000) + this.attemptTimeoutMs : 0;
    return this.retrier.do("Status", opts.signal, timeoutMs, (api, o) =>
      api.status(
        {
          consistent: opts.consistent ?? false,
          pageSize: opts.pageSize ?? 0,
          pageToken: opts.pageToken ?? "",
          knownStateIndex: opts.knownStateIndex ?? 0n,
          waitMs: opts.waitMs ?? 0,
          ...(opts.lock === undefined ? {} : { lock: opts.lock }),
        },
        o,
      ),
    );
  }

  /**
   * checkToken asks whether token is a current grant of a lock (the default
   * lock unless opts.lock names one): the exclusive grant, or one of the
   * shared ones. It is how a service dlm does not own refuses a stale
   * holder (Chubby's CheckSequencer): the leader confirms its leadership
   * before answering, so a true answer was true at some moment during the
   * call. A lock that is not live throws LockUnknownError (no token of it
   * is current).
   */
  async checkToken(token: bigint, opts: CallOptions & { lock?: string } = {}): Promise<TokenCheck> {
    const r = await this.retrier.do("CheckToken", opts.signal, 0, (api, o) =>
      api.checkToken({ token, ...(opts.lock === undefined ? {} : { lock: opts.lock }) }, o),
    );
    return {
      current: r.current,
      mode: r.current ? modeOf(r.mode) : undefined,
      latestToken: r.latestToken,
      stateIndex: r.stateIndex,
    };
  }

  /**
   * listLocks returns every live lock (held, waited for, or in its
   * lock-delay) in name order, the default lock (name "") first, with
   * holders, modes, tokens and queues, asking for them page by page. With
   * consistent the leader answers each page after confirming its
   * leadership. Each lock lists at most 100 waiters; queueLength counts
   * them all.
   */
  async listLocks(opts: CallOptions & { consistent?: boolean } = {}): Promise<LockStatus[]> {
    const locks: LockStatus[] = [];
    let pageToken = "";
    // Bounded: live locks are capped (10000 by default), a hundred pages.
    for (let i = 0; i < maxListPages; i++) {
      const page = await this.listLocksPage({ ...opts, pageSize: 1000, pageToken });
      locks.push(...page.locks);
      pageToken = page.nextPageToken;
      if (pageToken === "") {
        break;
      }
    }
    return locks;
  }

  /**
   * listLocksPage returns one page of the live locks (see listLocks): pass
   * a page's nextPageToken as pageToken for the next one.
   */
  listLocksPage(opts: CallOptions & ListLocksOptions = {}): Promise<ListLocksResponse> {
    return this.retrier.do("ListLocks", opts.signal, 0, (api, o) =>
      api.listLocks(
        { pageSize: opts.pageSize ?? 0, pageToken: opts.pageToken ?? "", consistent: opts.consistent ?? false },
        o,
      ),
    );
  }

  /**
   * lockHistory returns the last grants the service remembers (a bounded
   * ring across all locks, kept in the replicated state), oldest first: who
   * held which lock when, and how each grant ended. opts.lock keeps one
   * lock's grants; opts.limit the newest few.
   */
  lockHistory(opts: CallOptions & { lock?: string; limit?: number } = {}): Promise<LockHistoryResponse> {
    return this.retrier.do("LockHistory", opts.signal, 0, (api, o) =>
      api.lockHistory({ limit: opts.limit ?? 0, ...(opts.lock === undefined ? {} : { lock: opts.lock }) }, o),
    );
  }

  /** close closes the reader's connections. */
  close(): void {
    this.transports.close?.();
  }
}

/** StatusOptions choose a page of Status, or make it a long poll. */
export interface StatusOptions {
  /** Confirm leadership first, so the answer is up to date. */
  consistent?: boolean;
  /** Sessions and waiters in the answer (0: 100; the server allows 1000). */
  pageSize?: number;
  /** A previous answer's nextPageToken: the sessions after its page. */
  pageToken?: string;
  /** A previous answer's stateIndex: wait until the lock state moves past it. */
  knownStateIndex?: bigint;
  /** How long a long poll may wait, in milliseconds (0: 5000; at most 30000). */
  waitMs?: number;
  /** The lock that the answer's lock describes (unset: the default lock). */
  lock?: string;
}

/** ListLocksOptions choose a page of listLocksPage. */
export interface ListLocksOptions {
  /** Locks in the answer (0: 100; at most 1000). */
  pageSize?: number;
  /** A previous answer's nextPageToken: the locks after its page. */
  pageToken?: string;
  /** Confirm leadership first, so the answer is up to date. */
  consistent?: boolean;
}

/** TokenCheck is checkToken's answer. */
export interface TokenCheck {
  /** True when the token is a grant the lock has now. */
  current: boolean;
  /** The mode of that grant, when current. */
  mode: LockMode | undefined;
  /**
   * The highest token of the lock still held, or 0 when it is free: a
   * resource server may refuse any token below the highest it has seen.
   */
  latestToken: bigint;
  /** The log index the answer reflects. */
  stateIndex: bigint;
}

/** LockOptions choose the lock and how to hold it. */
export interface LockOptions {
  /**
   * The lock's name: printable, at most 256 bytes. Unset means the default
   * lock, the one that guards the files; an empty name is refused
   * (InvalidArgumentError, reason LOCK_NAME_EMPTY), so that a name lost on
   * the way does not take the default lock.
   */
  lock?: string;
  /** "exclusive" (the default) or "shared". Only an exclusive holder of the default lock may append. */
  mode?: LockMode;
  /**
   * This grant's lock-delay in milliseconds (at most 60000; unset: the
   * server's --lock-delay): if the session's lease runs out while it holds
   * the grant, the lock stays ungranted this long, so that this holder's
   * writes in flight to other systems drain before the next holder starts.
   * A clean release or close starts no delay.
   */
  lockDelayMs?: number;
}

/** TryAcquireOptions choose the lock of a tryAcquire. */
export interface TryAcquireOptions extends CallOptions, LockOptions {}

/** AcquireOptions choose the lock of a blocking acquire, and bound its wait. */
export interface AcquireOptions extends CallOptions, LockOptions {
  /**
   * Give up after this many milliseconds in the queue: the client leaves the
   * queue of that lock (so it is not granted to a caller that stopped
   * waiting) and throws an AbortedError whose cause is a TimeoutError.
   */
  timeoutMs?: number;
}

/**
 * Client is one session with a dlm service. It keeps the session alive in
 * the background, numbers every request so that retries are executed at most
 * once, retries lost requests and unavailable servers with backoff within a
 * bounded time, and follows the leader of a replicated cluster. A session
 * may hold several locks (the default lock and named ones), each at most
 * once: code that competes for one lock needs one Client per competitor.
 * Deadlock is left to the caller, as etcd and Chubby leave it: take locks in
 * one order, or bound the wait with tryAcquire or timeoutMs.
 */
export class Client extends Reader {
  private sess: Session;
  private readonly renewMu = new Mutex();
  /** held is the last grant of each lock handed out, until released. */
  private readonly held = new Map<string, Lock>();
  private acquiring = 0; // acquire calls in progress
  /** acquiringLocks counts the acquire calls in progress by lock name. */
  private readonly acquiringLocks = new Map<string, number>();
  /**
   * changes counts grants, releases and acquire calls starting or ending, so
   * a keepalive answer is judged only against the state it was sent in: one
   * sent before a grant would otherwise report a token just replaced.
   */
  private changes = 0;
  /**
   * releasing counts releases in flight: while one is, the service may
   * already report the grant gone (token 0) before the client hears that
   * its release succeeded, so keepalive answers are not judged.
   */
  private releasing = 0;
  private closed = false;
  private closing: Promise<void> | undefined;
  private readonly copts: ClientOptions;
  private readonly stopKeepAlive = new AbortController();
  private keepAliveTimer: ReturnType<typeof setTimeout> | undefined;
  private keepAliveRun: Promise<void> | undefined;
  private failures = 0;

  private constructor(endpoints: string[], opts: ClientOptions) {
    super(endpoints, opts);
    this.copts = opts;
    // Set by open before the Client is handed out.
    this.sess = undefined as unknown as Session;
  }

  /**
   * Client.open opens a session with the service at endpoints (see Reader).
   * The signal bounds the opening only; end the session with close.
   */
  static async open(endpoints: string[], opts: ClientOptions = {}, call: CallOptions = {}): Promise<Client> {
    const c = new Client(endpoints, opts);
    try {
      c.sess = await c.openSession(call.signal);
    } catch (err) {
      c.transports.close?.();
      throw err;
    }
    if (opts.keepAlive ?? true) {
      c.scheduleKeepAlive(c.keepAliveInterval());
    }
    return c;
  }

  /** The id of the current session. It changes when acquire replaces an expired session. */
  get clientId(): bigint {
    return this.sess.id;
  }

  /** The lease of the current session, in milliseconds, as the service granted it. */
  get leaseMs(): number {
    return this.sess.leaseMs;
  }

  private async openSession(signal: AbortSignal | undefined): Promise<Session> {
    let sentAt = 0;
    const resp = await this.retrier.do("Init", signal, 0, (api, o) => {
      sentAt = Date.now();
      return api.init({ leaseMs: this.copts.leaseMs ?? 0, name: this.copts.name ?? "" }, o);
    });
    this.log.debug("dlm: session opened", { clientId: resp.clientId, leaseMs: resp.leaseMs });
    return new Session(resp.clientId, resp.secret, resp.leaseMs, sentAt);
  }

  private current(): Session {
    if (this.closed) {
      throw new ClosedError("dlm: client closed");
    }
    return this.sess;
  }

  /** liveSession returns the current session, or opens a new one when it expired. */
  private liveSession(signal: AbortSignal | undefined): Promise<Session> {
    return this.renewMu.run(async () => {
      const s = this.current();
      if (!s.isExpired()) {
        return s;
      }
      // Whatever the old session held ended with it.
      this.loseGrant(s, new LockExpiredError("dlm: lock expired with its session"), true);
      const ns = await this.openSession(signal);
      if (this.closed) {
        throw new ClosedError("dlm: client closed");
      }
      this.sess = ns;
      this.log.info("dlm: session expired; opened a new one", { oldClientId: s.id, clientId: ns.id });
      return ns;
    });
  }

  /**
   * @internal mutate runs one numbered request of session s. call sends it
   * for the sequence number and acknowledgement it is given. When keep is
   * set and the outcome stays unknown (retries ran out), the number stays in
   * flight and is handed to keep, so that a repeat of the same request can
   * reuse it; otherwise the number is finished on return.
   */
  async mutate<T>(
    op: string,
    s: Session,
    seq: bigint,
    signal: AbortSignal | undefined,
    timeoutMs: number,
    call: (api: Api, o: CallOpts, seq: bigint, ackedBelow: bigint) => Promise<T>,
    keep?: (seq: bigint) => void,
  ): Promise<T> {
    const n = seq === 0n ? s.begin() : seq;
    try {
      const r = await this.retrier.do(op, signal, timeoutMs, (api, o) => call(api, o, n, s.ackedBelow()));
      s.end(n);
      return r;
    } catch (err) {
      if (keep !== undefined && outcomeUnknown(err)) {
        keep(n);
      } else {
        s.end(n);
      }
      this.sessionFailed(s, err);
      throw err;
    }
  }

  /**
   * sessionFailed marks session s expired, and every grant it holds lost,
   * when err says the service ended it.
   */
  private sessionFailed(s: Session, err: unknown): void {
    if (sessionGone(reasonOf(err))) {
      s.markExpired();
      this.loseGrant(s, sessionGoneError(toDlmError(err)), true);
    }
  }

  /**
   * acquire takes a lock (the default one, or opts.lock) in opts.mode,
   * waiting in its queue until it is granted, the signal aborts or timeoutMs
   * passes. When it gives up, it leaves the queue (so the lock is not granted
   * to a caller that stopped waiting) and throws an AbortedError. If the
   * session expired, acquire opens a new one and carries on (the grants of
   * the old session are lost with it).
   */
  acquire(opts: AcquireOptions = {}): Promise<Lock> {
    return this.acquire0(false, opts);
  }

  /**
   * tryAcquire takes a lock if it can be granted now, and throws
   * NotAvailableError at once otherwise (held in a conflicting mode, others
   * waiting before it, or in its lock-delay), without queueing.
   */
  tryAcquire(opts: TryAcquireOptions = {}): Promise<Lock> {
    return this.acquire0(true, { ...opts, timeoutMs: undefined });
  }

  private async acquire0(tryOnly: boolean, opts: AcquireOptions): Promise<Lock> {
    this.current();
    const mode = opts.mode ?? "exclusive";
    if (mode !== "exclusive" && mode !== "shared") {
      throw new TypeError(`dlm: mode ${JSON.stringify(mode)}: want "exclusive" or "shared"`);
    }
    // An empty name goes to the service as it is, which refuses it: it is
    // not the default lock, whose name is unset.
    const name = opts.lock ?? "";
    const prev = opts.lock === "" ? undefined : this.held.get(name);
    // Held in the other mode, the service refuses the call
    // (LockModeMismatchError) and changes nothing; in the same mode it would
    // hand out the same grant a second time.
    if (prev?.state === "held" && prev.mode === mode) {
      throw new DlmError(`dlm: this client already holds ${lockLabel(name)} (token ${prev.token}); release it first`, {
        code: Code.FailedPrecondition,
      });
    }
    if (!tryOnly && opts.lock !== "" && (this.acquiringLocks.get(name) ?? 0) > 0) {
      // The service would answer both calls with one grant.
      throw new DlmError(`dlm: this client is already acquiring ${lockLabel(name)}`, {
        code: Code.FailedPrecondition,
      });
    }
    const stale = prev?.stale ? prev : undefined;
    const req: AcquireRequest = {
      lock: opts.lock,
      mode,
      lockDelayMs: opts.lockDelayMs,
      tryOnly,
    };
    const sc = scope([opts.signal], opts.timeoutMs);
    const deadline = opts.timeoutMs === undefined ? undefined : Date.now() + opts.timeoutMs;
    this.acquiring++;
    this.acquiringLocks.set(name, (this.acquiringLocks.get(name) ?? 0) + 1);
    this.changes++;
    try {
      if (stale !== undefined) {
        // A grant lost only for want of answers may still stand: asking
        // again would be granted it back, with the appends staged before
        // the loss. Give it up first.
        await this.releaseToken(stale.session, stale.token, opts.lock);
      }
      for (let renewals = 0; ; renewals++) {
        const s = await this.liveSession(sc.signal);
        let lk: Lock;
        try {
          lk = await this.acquireIn(s, req, sc.signal, deadline);
        } catch (err) {
          if (err instanceof SessionExpiredError && renewals < maxRenewals && !sc.signal.aborted) {
            continue;
          }
          throw err;
        }
        if (stale !== undefined && lk.token === stale.token && renewals < maxRenewals) {
          // The give-up did not get through and the old grant came back:
          // drop it and ask for a fresh one.
          lk.end("released", new LockReleasedError("dlm: lock released"));
          this.forget(lk);
          await this.releaseToken(stale.session, stale.token, opts.lock);
          continue;
        }
        return lk;
      }
    } finally {
      sc.dispose();
      this.acquiring--;
      const n = (this.acquiringLocks.get(name) ?? 1) - 1;
      if (n > 0) {
        this.acquiringLocks.set(name, n);
      } else {
        this.acquiringLocks.delete(name);
      }
      this.changes++;
    }
  }

  /** acquireIn asks for the lock in session s with one sequence number, as a series of long polls. */
  private async acquireIn(
    s: Session,
    req: AcquireRequest,
    signal: AbortSignal,
    deadline: number | undefined,
  ): Promise<Lock> {
    const { tryOnly } = req;
    const seq = s.begin();
    try {
      for (;;) {
        let wait = this.copts.pollWaitMs ?? 5000;
        if (deadline !== undefined) {
          // Let the service answer "still queued" before the deadline,
          // rather than have the answer cut off.
          wait = Math.min(wait, deadline - Date.now());
        }
        wait = Math.max(Math.floor(wait), 1);
        let resp;
        try {
          resp = await this.retrier.do("LockAcquire", signal, wait + this.attemptTimeoutMs, (api, o) =>
            api.lockAcquire(
              {
                clientId: s.id,
                secret: s.secret,
                seq,
                ackedBelow: s.ackedBelow(),
                try: tryOnly,
                waitMs: wait,
                mode: wireMode(req.mode),
                ...(req.lock === undefined ? {} : { lock: req.lock }),
                ...(req.lockDelayMs === undefined ? {} : { lockDelayMs: req.lockDelayMs }),
              },
              o,
            ),
          );
        } catch (err) {
          this.sessionFailed(s, err);
          if (outcomeUnknown(err)) {
            // The service may have queued or even granted this request:
            // give that up, so the lock is not held for nobody.
            await this.releaseToken(s, 0n, req.lock);
          }
          throw err;
        }
        if (resp.granted) {
          return this.grant(s, resp.token, req.lock ?? "", modeOf(resp.mode));
        }
        if (tryOnly) {
          throw new NotAvailableError(`dlm: ${lockLabel(req.lock ?? "")} not available`);
        }
        this.log.debug("dlm: waiting for the lock", { clientId: s.id, lock: req.lock ?? "", position: resp.queuePosition });
        if (signal.aborted) {
          await this.releaseToken(s, 0n, req.lock);
          throw new AbortedError(`dlm: acquire: ${String(signal.reason)}`, { cause: signal.reason });
        }
      }
    } finally {
      s.end(seq);
    }
  }

  /** grant makes the Lock for a grant just received. */
  private grant(s: Session, token: bigint, name: string, mode: LockMode): Lock {
    const lk = new Lock(this, s, token, name, mode);
    this.held.set(name, lk);
    this.changes++;
    this.log.debug("dlm: lock granted", { clientId: s.id, lock: name, mode, token });
    return lk;
  }

  /**
   * @internal releaseStarted and releaseEnded bracket a release of the held
   * grant, so that a keepalive answered meanwhile is not taken for a loss.
   */
  releaseStarted(): void {
    this.releasing++;
    this.changes++;
  }

  /** @internal */
  releaseEnded(): void {
    this.releasing--;
    this.changes++;
  }

  /** @internal forget drops lk as the client's grant once it ended. */
  forget(lk: Lock): void {
    if (this.held.get(lk.name) === lk) {
      this.held.delete(lk.name);
      this.changes++;
    }
  }

  /**
   * @internal releaseToken gives up the grant of lock (unset: the default
   * lock) named by token (or, with 0, whatever the session has of that
   * lock: its place in the queue, or a grant it never learned of),
   * discarding staged appends. It is best effort, bounded by one attempt
   * timeout, and its answer is ignored.
   */
  async releaseToken(s: Session, token: bigint, lock: string | undefined): Promise<void> {
    const sc = scope([], this.attemptTimeoutMs);
    try {
      await this.mutate("LockRelease", s, 0n, sc.signal, 0, (api, o, seq, ackedBelow) =>
        api.lockRelease(
          {
            clientId: s.id,
            secret: s.secret,
            seq,
            ackedBelow,
            token,
            abort: true,
            ...(lock === undefined ? {} : { lock }),
          },
          o,
        ),
      );
    } catch (err) {
      this.log.debug("dlm: giving up the lock failed", { clientId: s.id, lock, token, err: String(err) });
    } finally {
      sc.dispose();
    }
  }

  /**
   * withLock acquires a lock (see acquire for opts), runs fn under it, and releases the lock
   * (committing fn's appends) when fn resolves, or aborts it (discarding
   * them) when fn throws, and rethrows. fn's signal aborts if the grant is
   * lost while fn runs. If the release runs out of retries (UnavailableError:
   * it may or may not have committed), withLock gives the grant up, so the
   * next acquire works and gets a fresh grant.
   */
  async withLock<T>(fn: (lock: Lock, signal: AbortSignal) => Promise<T>, opts: AcquireOptions = {}): Promise<T> {
    const lk = await this.acquire(opts);
    const sc = scope([opts.signal, lk.signal]);
    let result: T;
    try {
      result = await fn(lk, sc.signal);
    } catch (err) {
      try {
        await lk.abort();
      } catch (aerr) {
        this.log.warn("dlm: abort after a failed critical section", { token: lk.token, err: String(aerr) });
        await this.abandon(lk, aerr);
      }
      throw err;
    } finally {
      sc.dispose();
    }
    // The release must happen even if the caller's signal aborted while fn
    // ran; the retry budget bounds it.
    try {
      await lk.release();
    } catch (err) {
      await this.abandon(lk, err);
      throw err;
    }
    return result;
  }

  /**
   * abandon gives up a grant whose release or abort ran out of retries
   * inside withLock, where nobody can repeat it, and asks the service (best
   * effort, one attempt timeout) to drop it if it still stands: otherwise
   * the next acquire would be granted it back with its staged appends.
   */
  private async abandon(lk: Lock, err: unknown): Promise<void> {
    if (lk.abandon(err)) {
      try {
        await lk.abort();
      } catch {
        // The keepalive gives up a grant left behind.
      }
    }
  }

  /**
   * close ends the session: a held default lock is released and its critical
   * section committed, the named locks are released, places in queues are
   * given up, the keepalive stops and the
   * connections close. Calling it again returns the first call's outcome. A
   * session that had already expired closes without error.
   */
  close(opts: CallOptions = {}): Promise<void> {
    this.closing ??= this.close0(opts);
    return this.closing;
  }

  private async close0(opts: CallOptions): Promise<void> {
    this.closed = true;
    const s = this.sess;
    const lk = this.held.get("");
    const named = [...this.held.values()].filter((l) => l.name !== "");
    this.stopKeepAlive.abort(new ClosedError("dlm: client closed"));
    clearTimeout(this.keepAliveTimer);
    await this.keepAliveRun;
    let failure: unknown;
    if (!s.isExpired()) {
      try {
        if (lk?.state === "held") {
          // Close carries no appends: release first, with the section's
          // counts and what stage buffered, so the whole section commits.
          // A refused or unknown release stops here, before a close could
          // commit part of the section; a lost grant has nothing left to
          // commit.
          await lk.release(opts).catch((err: unknown) => {
            if (!(err instanceof LockExpiredError)) {
              throw err;
            }
          });
        } else if (lk?.stale) {
          // Lost on this side only: the grant may still stand on the
          // service, and a close would commit it. Give it up first.
          await this.mutate("LockRelease", s, 0n, opts.signal, 0, (api, o, seq, ackedBelow) =>
            api.lockRelease({ clientId: s.id, secret: s.secret, seq, ackedBelow, token: lk.token, abort: true }, o),
          ).catch((err: unknown) => {
            const r = reasonOf(err);
            if (r !== ErrorReason.LOCK_EXPIRED && r !== ErrorReason.NOT_HOLDER) {
              throw err;
            }
          });
        }
        try {
          await this.closeSession(s, opts);
        } catch (err) {
          if (lk?.state !== "held" || !(err instanceof SectionIncompleteError)) {
            throw err;
          }
          // The leader cannot vouch for the critical section (it changed
          // inside it): release it, which sends again what the leader
          // lacks, then close.
          await lk.release(opts);
          await this.closeSession(s, opts);
        }
      } catch (err) {
        if (!(err instanceof SessionExpiredError)) {
          failure = err;
        }
      }
    }
    // The Close that ended the session released the named locks too.
    for (const l of lk === undefined ? named : [lk, ...named]) {
      if (failure === undefined) {
        l.end("released", new LockReleasedError("dlm: lock released by close"));
      } else {
        l.markLost(new LockExpiredError("dlm: lock expired: client closed", { cause: failure }), false);
      }
    }
    this.held.clear();
    super.close();
    if (failure !== undefined) {
      throw failure;
    }
  }

  private async closeSession(s: Session, opts: CallOptions): Promise<void> {
    await this.mutate("Close", s, 0n, opts.signal, 0, (api, o, seq, ackedBelow) =>
      api.close({ clientId: s.id, secret: s.secret, seq, ackedBelow }, o),
    );
  }

  // The keepalive.

  private keepAliveInterval(): number {
    return Math.max(this.sess.leaseMs / 3, 10);
  }

  private scheduleKeepAlive(ms: number): void {
    if (this.closed) {
      return;
    }
    this.keepAliveTimer = setTimeout(() => {
      this.keepAliveRun = this.keepAliveTick();
    }, ms);
    // A Node program that forgets close should still exit; its lease then
    // runs out.
    (this.keepAliveTimer as { unref?: () => void }).unref?.();
  }

  /**
   * keepAliveTick renews the session's lease and schedules the next renewal:
   * after a third of the lease, or sooner after a failure, since during a
   * failover the new leader must hear from the session before the lease runs
   * out.
   */
  private async keepAliveTick(): Promise<void> {
    const ok = await this.keepAliveOnce();
    if (this.closed) {
      return;
    }
    if (ok) {
      this.failures = 0;
      this.scheduleKeepAlive(this.keepAliveInterval());
    } else {
      this.failures++;
      this.scheduleKeepAlive(Math.min(backoff(this.failures), this.keepAliveInterval() / 2));
    }
  }

  /** keepAliveOnce sends one KeepAlive and reports whether it was answered. */
  private async keepAliveOnce(): Promise<boolean> {
    const s = this.sess;
    if (s.isExpired()) {
      // Nothing to keep alive until acquire opens a new session.
      return true;
    }
    const { url, api } = this.eps.pick();
    const sent = Date.now();
    const changes = this.changes;
    let resp;
    try {
      resp = await api.keepAlive(
        { clientId: s.id, secret: s.secret },
        {
          signal: this.stopKeepAlive.signal,
          timeoutMs: Math.ceil(Math.min(this.attemptTimeoutMs, Math.max(s.leaseMs / 3, 10))),
        },
      );
    } catch (err) {
      if (this.closed) {
        return true;
      }
      const e = toDlmError(err);
      if (sessionGone(e.reason)) {
        s.markExpired();
        this.loseGrant(s, sessionGoneError(e), true);
        return true;
      }
      if (e.reason === ErrorReason.TOO_MANY_REQUESTS) {
        // The service renews no lease of a session that cannot make
        // progress: it expires within a lease, and its grant with it.
        this.log.warn("dlm: the service refuses to renew the session", { clientId: s.id, err: e.message });
        const why = `dlm: lock expired: ${e.message.replace(/^dlm: /, "")}`;
        this.loseGrant(s, new LockExpiredError(why, { reason: e.reason, cause: e }), false);
        return false;
      }
      this.log.debug("dlm: keepalive failed", { clientId: s.id, endpoint: url, err: e.message });
      if (retryable(err)) {
        this.eps.failed(url, e);
      }
      const silence = s.silentFor(Date.now());
      if (silence >= s.leaseMs) {
        this.loseGrant(
          s,
          new LockExpiredError(
            `dlm: lock expired: no keepalive answered for ${silence}ms (lease ${s.leaseMs}ms): ${e.message}`,
            { cause: e },
          ),
          false,
        );
      }
      return false;
    }
    if (this.closed) {
      return true;
    }
    s.renewed(sent, resp.leaseMs);
    let held = resp.held;
    if (held.length === 0 && resp.token !== 0n) {
      // A server that predates named locks reports the default lock only.
      held = [create(HeldLockSchema, { lock: "", token: resp.token })];
    }
    await this.checkGrants(s, held, changes);
    return true;
  }

  /**
   * checkGrants compares the grants the service says session s holds with
   * the ones the client knows of, when nothing changed since the keepalive
   * was sent.
   */
  private async checkGrants(s: Session, held: HeldLock[], changes: number): Promise<void> {
    if (this.changes !== changes || this.releasing > 0) {
      return;
    }
    const there = new Map(held.map((h) => [h.lock, h.token]));
    for (const lk of [...this.held.values()]) {
      if (lk.session !== s || lk.state !== "held") {
        continue;
      }
      const token = there.get(lk.name) ?? 0n;
      if (token !== lk.token) {
        lk.markLost(
          new LockExpiredError(
            `dlm: lock expired: the service reports grant ${token} of ${lockLabel(lk.name)}, not ${lk.token}`,
          ),
          true,
        );
      }
    }
    // A grant nobody here uses (an acquire that gave up after the service
    // granted it, a Lock lost only for want of keepalive answers) would hold
    // the lock for nobody while this session stays alive: give it up.
    for (const h of held) {
      const lk = this.held.get(h.lock);
      const used = lk !== undefined && lk.session === s && lk.state === "held" && lk.token === h.token;
      if (!used && (this.acquiringLocks.get(h.lock) ?? 0) === 0) {
        this.log.info("dlm: giving up an unused grant", { clientId: s.id, lock: h.lock, token: h.token });
        await this.releaseToken(s, h.token, h.lock === "" ? undefined : h.lock);
      }
    }
  }

  /** loseGrant marks every held grant of session s lost. */
  private loseGrant(s: Session, cause: DlmError, gone: boolean): void {
    for (const lk of [...this.held.values()]) {
      if (lk.session === s) {
        lk.markLost(cause, gone);
      }
    }
  }
}

/** AcquireRequest is what one acquire call asks the service for. */
interface AcquireRequest {
  /** The lock field: unset for the default lock. */
  lock: string | undefined;
  mode: LockMode;
  lockDelayMs: number | undefined;
  tryOnly: boolean;
}

/** lockLabel names a lock in messages. */
function lockLabel(name: string): string {
  return name === "" ? "the lock" : `lock ${JSON.stringify(name)}`;
}
