// What the dashboard remembers and lays out for its lock views: the samples
// of its chart in a bounded ring, the grants counted between two polls of
// LockHistory, and the lanes of the timeline. Pure: no DOM, no clocks.
import { api } from "@dlm/client";

/** Sample is what the page saw at one poll of the locks. */
export interface Sample {
  /** When, by the page's clock (ms). */
  t: number;
  /** Grants per second since the previous sample. */
  rate: number;
  /** True when the history ring turned over between the two samples, so rate is at least this. */
  clipped: boolean;
  /** Waiters of every listed lock; undefined in a sample rebuilt from the history. */
  queue?: number;
  /** Holders of every listed lock; undefined in a sample rebuilt from the history. */
  holders?: number;
}

/** Ring keeps the last capacity items, oldest first. */
export class Ring<T> {
  private readonly items: T[] = [];
  constructor(readonly capacity: number) {}
  push(x: T): void {
    this.items.push(x);
    if (this.items.length > this.capacity) {
      this.items.splice(0, this.items.length - this.capacity);
    }
  }
  /** The items from time on, oldest first. */
  since(from: number, at: (x: T) => number): T[] {
    return this.items.filter((x) => at(x) >= from);
  }
  get length(): number {
    return this.items.length;
  }
  all(): readonly T[] {
    return this.items;
  }
}

/**
 * newGrants counts the events granted after the one with token after. Tokens
 * grow with every grant on every lock, so the count needs no clocks. When
 * every event of a full ring is new, the ring turned over: more may have
 * been granted than it shows.
 */
export function newGrants(events: readonly api.LockEvent[], after: bigint, capacity: number): { count: number; last: bigint; clipped: boolean } {
  let count = 0;
  let last = after;
  for (const e of events) {
    if (e.token > after) {
      count++;
    }
    if (e.token > last) {
      last = e.token;
    }
  }
  return { count, last, clipped: after > 0n && capacity > 0 && count >= capacity };
}

/**
 * backfill rebuilds the grants per second of [from, now] from the history's
 * grant times (the leader's clock), one sample per stepMs ending at now, so
 * that a page opened on a busy service shows its recent past at once. It
 * starts at the oldest remembered grant when the ring is full (earlier
 * grants are forgotten) and knows nothing of queues.
 */
export function backfill(events: readonly api.LockEvent[], capacity: number, from: number, now: number, stepMs: number): Sample[] {
  let start = from;
  if (capacity > 0 && events.length >= capacity && events.length > 0) {
    start = Math.max(start, Number(events[0].grantedUnixMs));
  }
  const n = Math.floor((now - start) / stepMs);
  if (n <= 0) {
    return [];
  }
  const counts = new Array<number>(n).fill(0);
  const first = now - n * stepMs;
  for (const e of events) {
    const i = Math.ceil((Number(e.grantedUnixMs) - first) / stepMs) - 1;
    if (i >= 0 && i < n) {
      counts[i]++;
    }
  }
  return counts.map((c, i) => ({ t: first + (i + 1) * stepMs, rate: (c * 1000) / stepMs, clipped: false }));
}

/** Bar is one grant of the timeline, placed in its lock's row and lane. */
export interface Bar {
  event: api.LockEvent;
  /** Start and end in ms (end is now while held). */
  start: number;
  end: number;
  /** Lane within its lock's row: overlapping shared grants stack. */
  lane: number;
}

/** Row is one lock of the timeline. */
export interface Row {
  lock: string;
  lanes: number;
  bars: Bar[];
}

/**
 * layout places the grants that overlap [from, now] in one row per lock,
 * at most maxRows (the locks granted most recently), the default lock first
 * and the others by name, each row with as many lanes as grants overlap in
 * it. It also says how many more locks had grants in the window.
 */
export function layout(events: readonly api.LockEvent[], from: number, now: number, maxRows: number): { rows: Row[]; more: number } {
  const byLock = new Map<string, api.LockEvent[]>();
  for (const e of events) {
    const start = Number(e.grantedUnixMs);
    const end = e.endedUnixMs > 0n ? Number(e.endedUnixMs) : now;
    if (end < from || start > now) {
      continue;
    }
    let list = byLock.get(e.lock);
    if (list === undefined) {
      list = [];
      byLock.set(e.lock, list);
    }
    list.push(e);
  }
  const latest = (l: api.LockEvent[]) => l.reduce((m, e) => (e.token > m ? e.token : m), 0n);
  const locks = [...byLock.entries()].sort((a, b) => (latest(b[1]) > latest(a[1]) ? 1 : -1)).slice(0, maxRows);
  locks.sort((a, b) => (a[0] < b[0] ? -1 : a[0] > b[0] ? 1 : 0));
  const rows: Row[] = locks.map(([lock, list]) => {
    list.sort((a, b) => (a.token < b.token ? -1 : 1));
    const laneEnds: number[] = [];
    const bars = list.map((event) => {
      const start = Math.max(from, Number(event.grantedUnixMs));
      const end = Math.min(now, event.endedUnixMs > 0n ? Number(event.endedUnixMs) : now);
      let lane = laneEnds.findIndex((e) => e <= start);
      if (lane < 0) {
        lane = laneEnds.length;
        laneEnds.push(end);
      } else {
        laneEnds[lane] = end;
      }
      // A held grant's lane stays taken to the right edge.
      if (event.endedUnixMs === 0n) {
        laneEnds[lane] = Number.POSITIVE_INFINITY;
      }
      return { event, start, end: Math.max(start, end), lane };
    });
    return { lock, lanes: Math.max(1, laneEnds.length), bars };
  });
  return { rows, more: byLock.size - rows.length };
}

/** lockLabel names a lock for people: the default lock has no name. */
export function lockLabel(name: string): string {
  return name === "" ? "(default)" : name;
}

/** modeLabel says how a lock is held. */
export function modeLabel(m: api.LockMode): string {
  return m === api.LockMode.SHARED ? "shared" : m === api.LockMode.EXCLUSIVE ? "exclusive" : "–";
}

/** endLabel says how a grant ended ("held" while it lasts). */
export function endLabel(e: api.LockEnd): string {
  switch (e) {
    case api.LockEnd.RELEASED:
      return "released";
    case api.LockEnd.ABORTED:
      return "aborted";
    case api.LockEnd.CLOSED:
      return "closed";
    case api.LockEnd.EXPIRED:
      return "expired";
    default:
      return "held";
  }
}

/** niceMax rounds a chart's top up to 1, 2 or 5 times a power of ten. */
export function niceMax(v: number): number {
  if (!(v > 0)) {
    return 1;
  }
  const p = 10 ** Math.floor(Math.log10(v));
  for (const m of [1, 2, 5, 10]) {
    if (m * p >= v) {
      return m * p;
    }
  }
  return 10 * p;
}
