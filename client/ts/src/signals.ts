/**
 * Scope is an AbortSignal that aborts when any of its parents does or its
 * timeout passes. dispose drops the listeners and the timer, so a long-lived
 * parent signal does not collect them.
 */
export interface Scope {
  signal: AbortSignal;
  dispose(): void;
}

/** scope combines parents (undefined ones are skipped) with a timeout in ms. */
export function scope(parents: (AbortSignal | undefined)[], timeoutMs?: number): Scope {
  const ctl = new AbortController();
  const undo: (() => void)[] = [];
  for (const p of parents) {
    if (p === undefined) {
      continue;
    }
    if (p.aborted) {
      ctl.abort(p.reason);
      break;
    }
    const onAbort = () => ctl.abort(p.reason);
    p.addEventListener("abort", onAbort, { once: true });
    undo.push(() => p.removeEventListener("abort", onAbort));
  }
  if (timeoutMs !== undefined && !ctl.signal.aborted) {
    const t = setTimeout(
      () => ctl.abort(new DOMException("the operation timed out", "TimeoutError")),
      Math.max(0, timeoutMs),
    );
    undo.push(() => clearTimeout(t));
  }
  return {
    signal: ctl.signal,
    dispose() {
      for (const u of undo.splice(0)) {
        u();
      }
    },
  };
}
