// The dashboard's lock views: every live lock (ListLocks), a chart of grants
// per second and waiters over the last minutes, sampled by the page, and a
// timeline of who held which lock when (LockHistory, the ring of the last
// grants the service keeps in its replicated state).
import { api, Code, DlmError, Reader, type Transports } from "@dlm/client";

import { backfill, endLabel, layout, lockLabel, modeLabel, newGrants, niceMax, Ring, type Sample } from "./history.js";

/** The page polls the locks and their history this often, and samples the chart at each poll. */
export const sampleMs = 1000;
/** Polls asked for by a change the Status long poll saw come no closer than this. */
const minGapMs = 250;
/** Locks the table lists (one ListLocks page); lockCount counts them all. */
const lockPage = 200;
/** Lock rows of the timeline: the locks granted most recently. */
const timelineRows = 12;
/** Grants the list under the timeline shows, newest first. */
const recentGrants = 15;
/** The longest window the chart shows, and so how many samples the page keeps. */
const maxWindowMs = 15 * 60_000;

const svgNS = "http://www.w3.org/2000/svg";

/** LockReader adds the lock views' calls to the client's Reader: leader following, retries, the page's token. */
class LockReader extends Reader {
  locksPage(opts: { consistent: boolean; signal?: AbortSignal }): Promise<api.ListLocksResponse> {
    return this.retrier.do("ListLocks", opts.signal, 0, (a, o) => a.listLocks({ pageSize: lockPage, pageToken: "", consistent: opts.consistent }, o));
  }
  history(opts: { signal?: AbortSignal }): Promise<api.LockHistoryResponse> {
    return this.retrier.do("LockHistory", opts.signal, 0, (a, o) => a.lockHistory({ limit: 0 }, o));
  }
}

export interface LockViewsOptions {
  endpoints: string[];
  transports: Transports;
  /** Says what went wrong, as the rest of the page does. */
  describe(err: unknown): string;
  /** Names a session for people ("#7 worker (this page)"). */
  who(clientId: bigint, name: string): string;
}

const $ = <T extends Element = HTMLElement>(id: string) => document.getElementById(id) as unknown as T;

function el(tag: string, text: string, cls?: string): HTMLElement {
  const e = document.createElement(tag);
  e.textContent = text;
  if (cls) {
    e.className = cls;
  }
  return e;
}

function svg<K extends keyof SVGElementTagNameMap>(tag: K, attrs: Record<string, string | number>, text?: string): SVGElementTagNameMap[K] {
  const e = document.createElementNS(svgNS, tag);
  for (const [k, v] of Object.entries(attrs)) {
    e.setAttribute(k, String(v));
  }
  if (text !== undefined) {
    e.textContent = text;
  }
  return e;
}

function clock(ms: number): string {
  return new Date(ms).toLocaleTimeString([], { hour12: false });
}

function duration(ms: number): string {
  if (ms < 1000) {
    return `${Math.max(0, Math.round(ms))} ms`;
  }
  if (ms < 60_000) {
    return `${(ms / 1000).toFixed(1)} s`;
  }
  return `${Math.floor(ms / 60_000)} min ${Math.round((ms % 60_000) / 1000)} s`;
}

/** ago labels a time offset on an axis: "now", "-30s", "-2m". */
function ago(ms: number): string {
  if (ms <= 0) {
    return "now";
  }
  return ms % 60_000 === 0 ? `-${ms / 60_000}m` : `-${Math.round(ms / 1000)}s`;
}

/** anchor keeps the labels at both ends of an axis inside the chart. */
function anchor(off: number, windowMs: number): string {
  return off === 0 ? "end" : off >= windowMs ? "start" : "middle";
}

/** tickStep picks the axis step for a window: about five ticks. */
function tickStep(windowMs: number): number {
  for (const s of [10_000, 30_000, 60_000, 120_000, 300_000]) {
    if (windowMs / s <= 6) {
      return s;
    }
  }
  return 600_000;
}

/** LockViews polls the locks and their history and draws the three views. */
export class LockViews {
  private readonly reader: LockReader;
  private readonly samples = new Ring<Sample>(Math.ceil(maxWindowMs / sampleMs) + 10);
  private locks: api.ListLocksResponse | undefined;
  private history: api.LockHistoryResponse | undefined;
  private events: api.LockEvent[] = [];
  private capacity = 0;
  /** The highest token seen: the grants after it are new. */
  private lastToken = 0n;
  private lastSampleAt = 0;
  private pendingGrants = 0;
  private pendingClipped = false;
  private kick: (() => void) | undefined;
  private windowMs = 5 * 60_000;

  constructor(private readonly opts: LockViewsOptions) {
    this.reader = new LockReader(opts.endpoints, { transports: opts.transports, retryBudgetMs: 2000, attemptTimeoutMs: 1500 });
    const sel = $<HTMLSelectElement>("window");
    this.windowMs = Number(sel.value) * 60_000 || this.windowMs;
    sel.addEventListener("change", () => {
      this.windowMs = Number(sel.value) * 60_000 || this.windowMs;
      this.draw();
    });
    // Resizing changes the charts' width in pixels: draw them again.
    addEventListener("resize", () => this.draw());
  }

  /** changed asks for a poll now: the Status long poll saw the lock state move. */
  changed(): void {
    this.kick?.();
  }

  /** What the page knows, for tests and the curious. */
  get state(): { locks: api.ListLocksResponse | undefined; events: readonly api.LockEvent[]; samples: readonly Sample[] } {
    return { locks: this.locks, events: this.events, samples: this.samples.all() };
  }

  async run(): Promise<void> {
    for (;;) {
      const start = Date.now();
      await this.pollOnce();
      const wait = new Promise<void>((r) => {
        const t = setTimeout(r, Math.max(0, sampleMs - (Date.now() - start)));
        this.kick = () => {
          clearTimeout(t);
          setTimeout(r, Math.max(0, minGapMs - (Date.now() - start)));
        };
      });
      await wait;
      this.kick = undefined;
    }
  }

  private async pollOnce(): Promise<void> {
    const note = $("locks-note");
    try {
      let locks: api.ListLocksResponse;
      try {
        locks = await this.reader.locksPage({ consistent: true });
      } catch (err) {
        // Without a leader, any node's own view is better than none.
        if (err instanceof DlmError && err.code === Code.Unimplemented) {
          throw err;
        }
        locks = await this.reader.locksPage({ consistent: false });
      }
      // Every grant and every end is a log entry: while the state has not
      // moved past the history the page has, that history is current.
      if (this.history === undefined || locks.stateIndex === 0n || locks.stateIndex > this.history.stateIndex) {
        this.history = await this.reader.history({});
      }
      this.locks = locks;
      this.events = this.history.events;
      this.capacity = this.history.capacity;
      this.sample(locks, this.history);
      note.textContent = "";
      note.classList.remove("error");
    } catch (err) {
      const unimplemented = err instanceof DlmError && err.code === Code.Unimplemented;
      note.textContent = unimplemented ? "this server does not list its locks (it predates named locks)" : `locks: ${this.opts.describe(err)}`;
      note.classList.add("error");
    }
    this.draw();
  }

  private sample(locks: api.ListLocksResponse, hist: api.LockHistoryResponse): void {
    const now = Date.now();
    const first = this.lastSampleAt === 0;
    const g = newGrants(hist.events, this.lastToken, hist.capacity);
    this.lastToken = g.last;
    if (first) {
      // The chart starts with the grants the history remembers; the page's
      // own samples, with queues, follow.
      for (const b of backfill(hist.events, hist.capacity, now - maxWindowMs, now - sampleMs, sampleMs)) {
        this.samples.push(b);
      }
    } else {
      this.pendingGrants += g.count;
      this.pendingClipped ||= g.clipped;
    }
    // A poll asked for by a change adds its grants to the next sample, so
    // that samples stay about sampleMs apart and their rates comparable.
    if (!first && now - this.lastSampleAt < sampleMs * 0.8) {
      return;
    }
    let queue = 0;
    let holders = 0;
    for (const l of locks.locks) {
      queue += Number(l.queueLength);
      holders += l.holders.length > 0 ? l.holders.length : l.holder !== 0n ? 1 : 0;
    }
    if (first) {
      this.pendingGrants = hist.events.filter((e) => Number(e.grantedUnixMs) > now - sampleMs).length;
    }
    const dt = first ? sampleMs : now - this.lastSampleAt;
    this.samples.push({ t: now, rate: (this.pendingGrants * 1000) / dt, clipped: this.pendingClipped, queue, holders });
    this.lastSampleAt = now;
    this.pendingGrants = 0;
    this.pendingClipped = false;
  }

  private draw(): void {
    this.drawLocks();
    const now = Date.now();
    this.drawChart(now);
    this.drawTimeline(now);
    this.drawRecent();
  }

  private drawLocks(): void {
    const l = this.locks;
    if (l === undefined) {
      return;
    }
    const rows = l.locks.map((lk) => {
      const tr = document.createElement("tr");
      tr.dataset.lock = lk.name;
      const holders = lk.holders.length > 0 ? lk.holders : lk.holder !== 0n ? [{ clientId: lk.holder, token: lk.token, name: lk.holderName, mode: lk.mode, leaseLeftMs: lk.leaseLeftMs }] : [];
      const hcell = document.createElement("td");
      hcell.className = "holders";
      for (const h of holders) {
        const d = el("div", "", "holder");
        d.append(el("span", this.opts.who(h.clientId, h.name)), el("span", ` token ${h.token}`, "token"));
        if (h.leaseLeftMs > 0n) {
          d.append(el("span", ` · lease ${h.leaseLeftMs} ms`, "dim"));
        }
        hcell.append(d);
      }
      if (holders.length === 0) {
        hcell.append(el("span", "free", "dim"));
      }
      const shared = lk.queueModes.filter((m) => m === api.LockMode.SHARED).length;
      const queue = lk.queueLength === 0n ? "–" : `${lk.queueLength}${shared > 0 ? ` (${shared} shared)` : ""}`;
      const state = lk.delayed ? el("span", `lock-delay ${lk.delayMs} ms`, "delayed") : holders.length > 0 ? el("span", "held", "held") : el("span", lk.queueLength > 0n ? "waiting" : "free", "dim");
      const name = el("td", lockLabel(lk.name), lk.name === "" ? "lock dim" : "lock");
      const mode = el("td", modeLabel(holders.length > 0 ? (lk.mode === api.LockMode.UNSPECIFIED ? api.LockMode.EXCLUSIVE : lk.mode) : api.LockMode.UNSPECIFIED), "mode");
      const q = el("td", queue, "queue");
      const s = document.createElement("td");
      s.className = "state";
      s.append(state);
      tr.append(name, mode, hcell, q, s);
      return tr;
    });
    const more = Number(l.lockCount) - l.locks.length;
    if (more > 0) {
      const tr = document.createElement("tr");
      tr.className = "dim more";
      tr.append(el("td", `… ${more} more locks`));
      rows.push(tr);
    }
    $("locks").replaceChildren(...rows);
    $("lock-count").textContent = `${l.lockCount} live`;
  }

  private drawChart(now: number): void {
    const from = now - this.windowMs;
    const samples = this.samples.since(from, (s) => s.t);
    const last = samples.at(-1);
    $("grants-now").textContent = last ? `${last.rate.toFixed(1)}${last.clipped ? "+" : ""}/s` : "–";
    $("queue-now").textContent = last?.queue !== undefined ? String(last.queue) : "–";
    $("holders-now").textContent = last?.holders !== undefined ? String(last.holders) : "–";
    plot($<SVGSVGElement>("chart-grants"), samples, from, now, [{ name: "grants", value: (s) => s.rate, cls: "series-grants" }]);
    plot($<SVGSVGElement>("chart-queue"), samples, from, now, [
      { name: "queue", value: (s) => s.queue, cls: "series-queue" },
      { name: "holders", value: (s) => s.holders, cls: "series-holders" },
    ]);
  }

  private drawTimeline(now: number): void {
    const root = $<SVGSVGElement>("timeline");
    const width = Math.max(320, root.clientWidth || root.parentElement?.clientWidth || 900);
    const from = now - this.windowMs;
    const { rows, more } = layout(this.events, from, now, timelineRows);
    const labelW = 130;
    const laneH = 16;
    const gap = 6;
    const axisH = 18;
    const x = (t: number) => labelW + ((t - from) / (now - from)) * (width - labelW - 8);
    const kids: SVGElement[] = [];
    let y = 4;
    for (const r of rows) {
      const h = r.lanes * laneH;
      const g = svg("g", { class: "lock-row", "data-lock": r.lock });
      g.append(svg("rect", { x: 0, y: y - 2, width, height: h + 4, class: "row-bg" }));
      g.append(svg("text", { x: 4, y: y + Math.min(h, laneH) - 4, class: r.lock === "" ? "row-label dim" : "row-label" }, truncate(lockLabel(r.lock), 18)));
      for (const b of r.bars) {
        const e = b.event;
        const end = endLabel(e.end);
        const shared = e.mode === api.LockMode.SHARED;
        const bx = x(b.start);
        const bw = Math.max(2, x(b.end) - bx);
        const by = y + b.lane * laneH + 1;
        const bar = svg("g", {
          class: `grant end-${end}${shared ? " shared" : ""}`,
          "data-token": String(e.token),
          "data-lock": e.lock,
          "data-end": end,
        });
        const title = `${lockLabel(e.lock)}: ${e.holderName || `#${e.clientId}`} (#${e.clientId}) token ${e.token}, ${modeLabel(e.mode)}\n` +
          `${clock(Number(e.grantedUnixMs))} → ${e.endedUnixMs > 0n ? `${clock(Number(e.endedUnixMs))} ${end}` : "held"}` +
          ` (${duration((e.endedUnixMs > 0n ? Number(e.endedUnixMs) : now) - Number(e.grantedUnixMs))})`;
        bar.append(svg("title", {}, title));
        bar.append(svg("rect", { x: bx, y: by, width: bw, height: laneH - 3, rx: 2 }));
        if (e.endedUnixMs > 0n) {
          // The end's mark: its colour says how the grant ended.
          bar.append(svg("rect", { x: bx + bw - 2, y: by - 1, width: 3, height: laneH - 1, class: "end-mark" }));
        }
        if (bw > 70) {
          bar.append(svg("text", { x: bx + 4, y: by + laneH - 6, class: "bar-label" }, truncate(`${e.holderName || `#${e.clientId}`} · ${e.token}`, Math.floor(bw / 7))));
        }
        g.append(bar);
      }
      kids.push(g);
      y += h + gap;
    }
    if (rows.length === 0) {
      kids.push(svg("text", { x: labelW, y: y + 12, class: "dim-text" }, "no grants in this window"));
      y += 20;
    }
    const step = tickStep(this.windowMs);
    for (let off = 0; off <= this.windowMs; off += step) {
      const tx = x(now - off);
      kids.push(svg("line", { x1: tx, x2: tx, y1: 0, y2: y, class: "tick" }));
      kids.push(svg("text", { x: tx, y: y + 12, class: "axis", "text-anchor": anchor(off, this.windowMs) }, ago(off)));
    }
    root.setAttribute("height", String(y + axisH));
    root.setAttribute("viewBox", `0 0 ${width} ${y + axisH}`);
    root.replaceChildren(...kids);
    $("timeline-note").textContent =
      `${this.events.length} of the last ${this.capacity || "–"} grants the service remembers` + (more > 0 ? `; ${more} more locks had grants in this window` : "");
  }

  private drawRecent(): void {
    const list = this.events.slice(-recentGrants).reverse();
    const now = Date.now();
    $("grants").replaceChildren(
      ...list.map((e) => {
        const end = endLabel(e.end);
        const tr = document.createElement("tr");
        tr.dataset.token = String(e.token);
        tr.dataset.lock = e.lock;
        const ended = e.endedUnixMs > 0n;
        tr.append(
          el("td", lockLabel(e.lock), e.lock === "" ? "dim" : ""),
          el("td", String(e.token)),
          el("td", this.opts.who(e.clientId, e.holderName)),
          el("td", modeLabel(e.mode)),
          el("td", clock(Number(e.grantedUnixMs))),
          el("td", ended ? clock(Number(e.endedUnixMs)) : "–"),
          el("td", duration((ended ? Number(e.endedUnixMs) : now) - Number(e.grantedUnixMs))),
          el("td", end, `end end-${end}`),
        );
        return tr;
      }),
    );
  }
}

function truncate(s: string, n: number): string {
  return s.length <= n ? s : `${s.slice(0, Math.max(1, n - 1))}…`;
}

interface Series {
  name: string;
  value(s: Sample): number | undefined;
  cls: string;
}

/**
 * plot draws series of samples over [from, now] into root, scaled to the
 * largest value, as a line over a filled area each. Each path says how many
 * points it has and its largest value (data-points, data-max).
 */
function plot(root: SVGSVGElement, samples: readonly Sample[], from: number, now: number, series: Series[]): void {
  const width = Math.max(240, root.clientWidth || root.parentElement?.clientWidth || 600);
  const height = 120;
  const left = 36;
  const bottom = 16;
  const top = 6;
  const max = niceMax(Math.max(0, ...samples.flatMap((s) => series.map((x) => x.value(s) ?? 0))));
  const x = (t: number) => left + ((t - from) / (now - from)) * (width - left - 6);
  const y = (v: number) => top + (1 - v / max) * (height - top - bottom);
  const kids: SVGElement[] = [];
  for (const v of [0, max / 2, max]) {
    kids.push(svg("line", { x1: left, x2: width - 6, y1: y(v), y2: y(v), class: "grid" }));
    kids.push(svg("text", { x: left - 4, y: y(v) + 4, class: "axis", "text-anchor": "end" }, Number.isInteger(v) ? String(v) : v.toFixed(1)));
  }
  const step = tickStep(now - from);
  for (let off = 0; off <= now - from; off += step) {
    kids.push(svg("text", { x: x(now - off), y: height - 3, class: "axis", "text-anchor": anchor(off, now - from) }, ago(off)));
  }
  for (const s of series) {
    // Samples rebuilt from the history have no queues: those series start later.
    const known = samples.filter((p) => s.value(p) !== undefined);
    const pts = known.map((p) => `${x(p.t).toFixed(1)},${y(s.value(p) ?? 0).toFixed(1)}`);
    const smax = Math.max(0, ...known.map((p) => s.value(p) ?? 0));
    if (pts.length > 0) {
      const first = known[0];
      const lastS = known[known.length - 1];
      kids.push(svg("path", { d: `M${x(first.t).toFixed(1)},${y(0)} L${pts.join(" L")} L${x(lastS.t).toFixed(1)},${y(0)} Z`, class: `area ${s.cls}` }));
    }
    kids.push(
      svg("path", {
        d: pts.length > 0 ? `M${pts.join(" L")}` : "",
        class: `line ${s.cls}`,
        "data-series": s.name,
        "data-points": pts.length,
        "data-max": smax,
      }),
    );
  }
  root.setAttribute("viewBox", `0 0 ${width} ${height}`);
  root.setAttribute("height", String(height));
  root.replaceChildren(...kids);
}
