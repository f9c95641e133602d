import { Code } from "@connectrpc/connect";

import { ErrorReason, LockMode as WireMode } from "./api.js";
import type { Client } from "./client.js";
import {
  DataEmptyError,
  DlmError,
  InvalidArgumentError,
  LockExpiredError,
  NotExclusiveError,
  outcomeUnknown,
  reasonOf,
  SectionIncompleteError,
  sessionGone,
} from "./errors.js";
import { Mutex } from "./mutex.js";
import type { Session } from "./session.js";

/** LockState is where a Lock is in its life. */
export type LockState = "held" | "released" | "lost";

/**
 * LockMode is how a lock is held: "exclusive" (one holder; the only mode
 * that may append to files) or "shared" (any number of shared holders at
 * once, and no exclusive one).
 */
export type LockMode = "exclusive" | "shared";

/** @internal wireMode is the proto's value of mode. */
export function wireMode(mode: LockMode): WireMode {
  return mode === "shared" ? WireMode.SHARED : WireMode.EXCLUSIVE;
}

/** @internal modeOf reads the proto's value (unspecified is exclusive). */
export function modeOf(m: WireMode): LockMode {
  return m === WireMode.SHARED ? "shared" : "exclusive";
}

/**
 * @internal lockField is the optional lock field of a request for the lock
 * name: unset for the default lock (""), so that requests about it stay what
 * they were before named locks.
 */
export function lockField(name: string): { lock?: string } {
  return name === "" ? {} : { lock: name };
}

/** CallOptions bound one call of the client. */
export interface CallOptions {
  /** Aborts the call; the client then gives up (see AbortedError). */
  signal?: AbortSignal;
}

/**
 * PendingOp is a request whose outcome stayed unknown when its retries ran
 * out. Its sequence number is kept so that repeating the same request cannot
 * apply it twice.
 */
interface PendingOp {
  seq: bigint;
  release: boolean;
  abort: boolean;
  file: string;
  data: Uint8Array;
}

/** SectionAppend is one append of the critical section. */
interface SectionAppend {
  file: string;
  data: Uint8Array;
}

/**
 * maxResends bounds how many times one call re-sends the section to a leader
 * that lacks part of it (SECTION_INCOMPLETE): each leader change costs one.
 */
const maxResends = 3;

/**
 * maxInlineBytes bounds the appends a release carries: a request must stay
 * under the service's read limit (the per-append limit plus headroom, 1 MiB
 * and more by default). Staged appends beyond it are sent with AppendFile
 * before the release, oldest first.
 */
const maxInlineBytes = 512 << 10;

/** The reason a Lock's signal carries after release, abort or close. */
export class LockReleasedError extends DlmError {}

/**
 * Lock is one grant of a lock, named by its fencing token: the default lock
 * (name ""), which guards the files, or a named lock. append stages data
 * under a grant of the default lock held exclusively; release commits
 * everything staged, abort discards it. When
 * the grant is lost (its lease ran out, the service revoked it), the Lock
 * dispatches a "lost" event (a CustomEvent whose detail is the error), its
 * `lost` promise resolves, its `signal` aborts, and every call under it
 * fails with LockExpiredError.
 */
export class Lock extends EventTarget {
  /**
   * The fencing token of the grant: it grows with every grant, so a system
   * that receives writes from lock holders can refuse one that carries a
   * smaller token than it has already seen.
   */
  readonly token: bigint;
  /** The lock's name; "" for the default lock, which guards the files. */
  readonly name: string;
  /** How the lock is held. */
  readonly mode: LockMode;
  /**
   * Resolves with the cause when the grant is lost; never when it is
   * released.
   */
  readonly lost: Promise<DlmError>;

  private readonly ctl = new AbortController();
  private resolveLost!: (err: DlmError) => void;
  private readonly opMu = new Mutex();
  /**
   * pending is kept only while the grant is held: once it ended, nothing
   * repeats the request, and a number left in flight would hold the
   * session's acknowledgement back for good.
   */
  private pending: PendingOp | undefined;
  private st: LockState = "held";
  private gone = false; // the service said the grant is gone
  /**
   * section is every append sent under the grant, in order: the one at index
   * i went to place i + 1. The leader keeps them in memory until the
   * release, so a new leader may lack some; they are kept here until the
   * release commits, to send again.
   */
  private section: SectionAppend[] = [];
  private sectionBytes = 0;
  /**
   * inDoubt says the last of section is an append whose outcome stayed
   * unknown: an append with the same file and data repeats it at its place.
   */
  private inDoubt = false;
  /** local are the appends stage buffered, sent with the release. */
  private local: (SectionAppend & { n: number })[] = [];
  private staged = 0; // stage calls so far, numbering local
  private ending = 0; // release and abort calls not finished

  /** @internal */
  constructor(
    private readonly c: Client,
    /** @internal */ readonly session: Session,
    token: bigint,
    name = "",
    mode: LockMode = "exclusive",
  ) {
    super();
    this.token = token;
    this.name = name;
    this.mode = mode;
    this.lost = new Promise((resolve) => {
      this.resolveLost = resolve;
    });
  }

  /**
   * An AbortSignal that aborts when the grant is lost (its reason is the
   * LockExpiredError) or ended by release, abort or close (a
   * LockReleasedError). Work done under the lock should use it, so that it
   * stops when the lock is gone.
   */
  get signal(): AbortSignal {
    return this.ctl.signal;
  }

  /**
   * @internal stale says the grant was lost only on this side (no answer
   * from the service): it may still stand there and must be given up.
   */
  get stale(): boolean {
    return this.st === "lost" && !this.gone;
  }

  /** The Lock's state: held, released, or lost. */
  get state(): LockState {
    return this.st;
  }

  /** @internal end moves a held Lock to state, once. */
  end(state: LockState, cause: DlmError): boolean {
    if (this.st !== "held") {
      return false;
    }
    this.st = state;
    this.dropPending();
    this.section = [];
    this.sectionBytes = 0;
    this.local = [];
    this.inDoubt = false;
    this.ctl.abort(cause);
    if (state === "lost") {
      this.resolveLost(cause);
      this.dispatchEvent(new CustomEvent("lost", { detail: cause }));
    }
    return true;
  }

  /**
   * @internal markLost records that the grant is lost. gone says the service
   * confirmed it, so there is nothing to give up.
   */
  markLost(cause: DlmError, gone: boolean): void {
    this.gone ||= gone;
    if (this.end("lost", cause)) {
      this.c.log.warn("dlm: lock lost", {
        clientId: this.session.id,
        lock: this.name,
        token: this.token,
        cause: cause.message,
      });
    }
  }

  private check(): void {
    switch (this.st) {
      case "released":
        throw new LockExpiredError(`dlm: lock expired: the lock was already released (token ${this.token})`, {
          reason: ErrorReason.LOCK_EXPIRED,
        });
      case "lost":
        throw this.ctl.signal.reason as DlmError;
    }
  }

  /**
   * failed interprets an error from a request under the grant, marks the
   * grant lost when the error says so, and returns the error to throw. A
   * grant that ended with its session is reported as a LockExpiredError whose
   * cause is the session's error: for the holder both mean the same.
   */
  private failed(err: unknown): unknown {
    const reason = reasonOf(err);
    let e: DlmError;
    if (reason === ErrorReason.LOCK_EXPIRED || reason === ErrorReason.NOT_HOLDER) {
      e = err as DlmError;
    } else if (sessionGone(reason)) {
      e = sessionGoneError(err as DlmError);
    } else {
      return err;
    }
    this.markLost(e, true);
    return e;
  }

  /**
   * reuse returns the pending request if op repeats it; otherwise it gives
   * the pending request up for good.
   */
  private reuse(op: Omit<PendingOp, "seq">): PendingOp | undefined {
    const p = this.pending;
    const repeats = p !== undefined && p.release === op.release;
    if (repeats && (p.release || (p.file === op.file && sameBytes(p.data, op.data)))) {
      this.pending = undefined;
      return p;
    }
    this.dropPending();
    return undefined;
  }

  /**
   * keep records a request whose outcome stayed unknown, so that a repeat
   * reuses its number. If the grant ended meanwhile there will be no repeat:
   * the number is given up at once.
   */
  private keep(op: PendingOp): void {
    this.dropPending();
    if (this.st !== "held") {
      this.session.end(op.seq);
      return;
    }
    this.pending = op;
  }

  /**
   * dropPending gives up the pending request for good. Its number is never
   * sent again, so the session's acknowledgement moves past it and the
   * service refuses any late copy of it (SEQUENCE_ACKNOWLEDGED): whether or
   * not it was applied, it is applied at most once.
   */
  private dropPending(): void {
    if (this.pending !== undefined) {
      this.session.end(this.pending.seq);
      this.pending = undefined;
    }
  }

  /**
   * @internal abandon gives up a grant whose release or abort ran out of
   * retries when nobody can repeat it (withLock returns without handing the
   * Lock out): a Lock left held would keep its request's number in flight,
   * and the client could not acquire again. It reports whether it did: the
   * caller then asks the service to drop the grant if it still stands.
   */
  abandon(err: unknown): boolean {
    if (!outcomeUnknown(err)) {
      return false;
    }
    const msg = err instanceof Error ? err.message : String(err);
    const cause = new LockExpiredError(
      `dlm: lock expired: the outcome of ending the critical section is unknown: ${msg}`,
      { reason: ErrorReason.LOCK_EXPIRED, cause: err },
    );
    this.markLost(cause, false);
    return true;
  }

  /**
   * append stages data (a string is sent as UTF-8) for appending to file
   * ("file_0" to "file_99"), under a grant of the default lock held
   * exclusively (otherwise it throws InvalidArgumentError, reason
   * APPEND_NEEDS_DEFAULT_LOCK, or NotExclusiveError). The data reaches the file when the lock is
   * released, and never if the grant is lost first. Each append names its
   * place in the critical section, so repeating an append that failed with
   * UnavailableError or AbortedError (same file, same data) is safe: it is
   * staged once. An append whose outcome stayed unknown is part of the
   * section from then on (the release sends it again if the leader lacks
   * it). Appends buffered with stage before this call are sent first.
   */
  append(file: string, data: string | Uint8Array, opts: CallOptions = {}): Promise<void> {
    const bytes = typeof data === "string" ? new TextEncoder().encode(data) : data;
    // What stage buffered before this call goes before it; what it buffers
    // while this call waits its turn goes after.
    const mark = this.staged;
    return this.opMu.run(async () => {
      this.check();
      this.refuseWhileReleaseInDoubt();
      this.refuseUnlessFilesLock();
      // Any other request gives a pending one up; the repeat of an append
      // whose outcome is unknown goes to the same place, under the same
      // number when it still has one.
      const p = this.reuse({ release: false, abort: false, file, data: bytes });
      const last = this.section.at(-1);
      if (this.inDoubt && last !== undefined && last.file === file && sameBytes(last.data, bytes)) {
        this.inDoubt = false;
        try {
          await this.place(this.section.length, p?.seq ?? 0n, opts.signal);
        } catch (err) {
          this.inDoubt = outcomeUnknown(err);
          throw this.failed(err);
        }
        return;
      }
      this.inDoubt = false;
      if (p !== undefined) {
        // Not a repeat after all: its number is never sent again.
        this.session.end(p.seq);
      }
      try {
        await this.flushLocal((a) => a.n < mark, opts.signal);
      } catch (err) {
        throw this.failed(err);
      }
      try {
        await this.add({ file, data: bytes.slice() }, opts.signal);
      } catch (err) {
        this.inDoubt = outcomeUnknown(err);
        throw this.failed(err);
      }
    });
  }

  /**
   * stage buffers data (a string as UTF-8) for appending to file, with no
   * call to the service: the buffered appends travel with release, after
   * those sent by append, so a critical section written with stage costs
   * one request and one write to the service's log in all. Bad input is
   * reported by release (or the next append), which then changes nothing;
   * abort discards the buffer. It throws LockExpiredError when the grant is
   * over or a release or abort is under way, and a DlmError after a release
   * whose outcome stayed unknown (repeat the release first).
   */
  stage(file: string, data: string | Uint8Array): void {
    const bytes = typeof data === "string" ? new TextEncoder().encode(data) : data;
    this.check();
    if (this.ending > 0) {
      throw new LockExpiredError(`dlm: lock expired: the lock is being released (token ${this.token})`, {
        reason: ErrorReason.LOCK_EXPIRED,
      });
    }
    this.refuseWhileReleaseInDoubt();
    this.refuseUnlessFilesLock();
    if (bytes.length === 0) {
      throw new DataEmptyError(`dlm: nothing to stage for ${file}`, {
        code: Code.InvalidArgument,
        reason: ErrorReason.DATA_EMPTY,
      });
    }
    this.local.push({ file, data: bytes.slice(), n: this.staged++ });
  }

  /**
   * refuseWhileReleaseInDoubt refuses a new append while a release or
   * abort whose outcome is unknown waits to be repeated: its repeat must be
   * the same request, since the service may have committed it already,
   * without what would be added now.
   */
  private refuseWhileReleaseInDoubt(): void {
    if (this.pending?.release) {
      throw new DlmError(
        `dlm: a release of this lock (token ${this.token}) may have committed already: repeat it, or abort, first`,
        { code: Code.FailedPrecondition },
      );
    }
  }

  /**
   * refuseUnlessFilesLock refuses an append under a grant that cannot carry
   * it, before asking the service, with the reason the service would give:
   * files are guarded by the default lock held exclusively. (A staged one
   * would make the release that carries it be refused.)
   */
  private refuseUnlessFilesLock(): void {
    if (this.name !== "") {
      throw new InvalidArgumentError(
        `dlm: files are guarded by the default lock, not by lock ${JSON.stringify(this.name)}`,
        { code: Code.InvalidArgument, reason: ErrorReason.APPEND_NEEDS_DEFAULT_LOCK },
      );
    }
    if (this.mode !== "exclusive") {
      throw new NotExclusiveError("dlm: a shared holder cannot append: files need the default lock held exclusively", {
        code: Code.FailedPrecondition,
        reason: ErrorReason.APPEND_NEEDS_EXCLUSIVE,
      });
    }
  }

  /** @internal buffered says stage holds appends that only a release carries. */
  get buffered(): boolean {
    return this.local.length > 0;
  }

  /**
   * flushLocal sends buffered appends with AppendFile, oldest first, while
   * send says so.
   */
  private async flushLocal(send: (a: SectionAppend & { n: number }, left: number) => boolean, signal?: AbortSignal) {
    let left = this.local.reduce((n, a) => n + a.data.length, 0);
    while (this.local.length > 0 && send(this.local[0], left)) {
      const a = this.local[0];
      try {
        await this.add(a, signal);
      } catch (err) {
        if (outcomeUnknown(err)) {
          // It is part of the section now: the release re-sends it if
          // the leader lacks it, and must not carry it a second time.
          this.local.shift();
        }
        throw err;
      }
      this.local.shift();
      left -= a.data.length;
    }
  }

  /**
   * add sends a new append at the next place. A refusal leaves the section
   * as it was; an unknown outcome keeps the append in it.
   */
  private async add(a: SectionAppend, signal?: AbortSignal): Promise<void> {
    this.section.push({ file: a.file, data: a.data });
    this.sectionBytes += a.data.length;
    try {
      await this.place(this.section.length, 0n, signal);
    } catch (err) {
      if (!outcomeUnknown(err)) {
        this.section.pop();
        this.sectionBytes -= a.data.length;
      }
      throw err;
    }
  }

  /**
   * place sends the append at place pos of the section (under seq, when it
   * repeats a request), first sending again the places before it that a new
   * leader lacks. When its outcome stays unknown, it is kept pending.
   */
  private async place(pos: number, seq: bigint, signal?: AbortSignal): Promise<void> {
    for (let attempt = 0; ; attempt++) {
      try {
        await this.sendAppend(pos, seq, signal, (seq) => {
          const a = this.section[pos - 1];
          this.keep({ seq, release: false, abort: false, file: a.file, data: a.data });
        });
        return;
      } catch (err) {
        seq = 0n;
        if (!(err instanceof SectionIncompleteError) || attempt === maxResends || err.stagedAppends >= pos) {
          throw err;
        }
        this.c.log.info("dlm: the leader lacks part of the critical section; sending it again", {
          token: this.token,
          staged: err.stagedAppends,
          sent: pos - 1,
        });
        await this.resend(err.stagedAppends, pos - 1, signal);
      }
    }
  }

  /** resend sends places from + 1 to to again. */
  private async resend(from: number, to: number, signal?: AbortSignal): Promise<void> {
    for (let p = from + 1; p <= to; p++) {
      await this.sendAppend(p, 0n, signal);
    }
  }

  private async sendAppend(pos: number, seq: bigint, signal?: AbortSignal, keep?: (seq: bigint) => void) {
    const a = this.section[pos - 1];
    const s = this.session;
    await this.c.mutate(
      "AppendFile",
      s,
      seq,
      signal,
      0,
      (api, o, seq, ackedBelow) =>
        api.appendFile(
          {
            clientId: s.id,
            secret: s.secret,
            seq,
            ackedBelow,
            token: this.token,
            file: a.file,
            data: a.data,
            position: pos,
          },
          o,
        ),
      keep,
    );
  }

  /**
   * release ends the critical section and commits every staged append to the
   * files at once, then hands the lock to the next waiter. If the grant was
   * lost, nothing is committed and release throws the loss
   * (LockExpiredError). Repeating a release that failed with
   * UnavailableError is safe.
   */
  release(opts: CallOptions = {}): Promise<void> {
    return this.end2(false, opts);
  }

  /**
   * abort ends the critical section and discards every staged append. It
   * returns without error when the grant was already lost, since nothing was
   * committed either way. An abort after a release that failed with
   * UnavailableError finishes that release instead, whose commit may already
   * have happened.
   */
  abort(opts: CallOptions = {}): Promise<void> {
    return this.end2(true, opts);
  }

  private end2(abort: boolean, opts: CallOptions): Promise<void> {
    this.ending++;
    const run = this.opMu.run(async () => {
      if (this.st !== "held") {
        if (this.st === "lost") {
          if (!this.gone) {
            // The grant may still stand on the service if only the
            // keepalives went unanswered: give it up, without waiting long.
            await this.c.releaseToken(this.session, this.token, lockField(this.name).lock);
          }
          if (abort) {
            return;
          }
        }
        this.check();
      }
      const op = { release: true, abort, file: "", data: new Uint8Array() };
      let seq = 0n;
      const p = this.reuse(op);
      if (p !== undefined) {
        // The service may already have acted on the first request: repeat
        // it exactly, whichever of release and abort is asked now.
        seq = p.seq;
        op.abort = p.abort;
      }
      this.c.releaseStarted();
      try {
        if (!op.abort) {
          // What the release cannot carry goes first, with AppendFile.
          await this.flushLocal((_, left) => left > maxInlineBytes, opts.signal);
        }
        await this.sendRelease(seq, op, opts.signal);
      } catch (err) {
        this.c.releaseEnded();
        const e = this.failed(err);
        if (abort && e instanceof LockExpiredError) {
          return;
        }
        throw e;
      }
      this.end("released", new LockReleasedError("dlm: lock released"));
      this.c.forget(this);
      this.c.releaseEnded();
    });
    return run.finally(() => {
      this.ending--;
    });
  }

  /**
   * sendRelease sends the release (or abort), with seq when it repeats an
   * earlier one: with the section's counts and the buffered appends. When a
   * new leader lacks part of the section (nothing changed), it sends the
   * rest again and releases again, a bounded number of times.
   */
  private async sendRelease(seq: bigint, op: PendingOp | Omit<PendingOp, "seq">, signal?: AbortSignal) {
    for (let attempt = 0; ; attempt++) {
      try {
        await this.sendRelease1(seq, op, signal);
        return;
      } catch (err) {
        seq = 0n;
        const n = this.section.length;
        if (op.abort || !(err instanceof SectionIncompleteError) || attempt === maxResends || err.stagedAppends >= n) {
          throw err;
        }
        this.c.log.info("dlm: the leader lacks part of the critical section; sending it again", {
          token: this.token,
          staged: err.stagedAppends,
          sent: n,
        });
        await this.resend(err.stagedAppends, n, signal);
      }
    }
  }

  private async sendRelease1(seq: bigint, op: Omit<PendingOp, "seq">, signal?: AbortSignal) {
    const s = this.session;
    // Only the default lock has a critical section.
    const counts = op.abort || this.name !== ""
      ? {}
      : {
          sectionAppends: this.section.length,
          sectionBytes: BigInt(this.sectionBytes),
          appends: this.local.map((a) => ({ file: a.file, data: a.data })),
        };
    await this.c.mutate(
      "LockRelease",
      s,
      seq,
      signal,
      0,
      (api, o, seq, ackedBelow) =>
        api.lockRelease(
          {
            clientId: s.id,
            secret: s.secret,
            seq,
            ackedBelow,
            token: this.token,
            abort: op.abort,
            ...lockField(this.name),
            ...counts,
          },
          o,
        ),
      (seq) => {
        this.keep({ ...op, seq });
      },
    );
  }
}

/** sessionGoneError reports a grant that ended with its session. */
export function sessionGoneError(err: DlmError): LockExpiredError {
  return new LockExpiredError(`dlm: lock expired with its session: ${err.message.replace(/^dlm: /, "")}`, {
    code: err.code,
    reason: err.reason,
    cause: err,
  });
}

function sameBytes(a: Uint8Array, b: Uint8Array): boolean {
  return a.length === b.length && a.every((v, i) => v === b[i]);
}
