// Browser tests of the dashboard's lock views: Debian's chromium, headless,
// driven by playwright-core, against a real dlm node, with real sessions
// (the generated Connect client, as any program would speak to dlm) that
// hold named and shared locks, wait, release, abort, close and expire.
import assert from "node:assert/strict";
import { mkdirSync, mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join, resolve } from "node:path";
import { after, before, describe, test } from "node:test";
import { fileURLToPath } from "node:url";

import { createClient } from "@connectrpc/connect";
import { type BrowserContext, chromium, type Page } from "playwright-core";

import { type LockAcquireResponse, LockMode, LockService } from "../../../../client/ts/src/api.ts";
import { nodeTransports } from "../../../../client/ts/src/node.ts";
import { eventually, type Server, startServer } from "../../../../client/ts/test/server.ts";

const here = dirname(fileURLToPath(import.meta.url));
const artifacts = resolve(here, "../test-artifacts");
const chromiumPath = process.env.CHROMIUM ?? "/usr/bin/chromium";

let dlm: Server;
let ctx: BrowserContext;
let profile: string;
const transports = nodeTransports();
const sessions: Session[] = [];

/**
 * Session is one dlm session spoken to with the generated client: numbered
 * requests, a keepalive that can be stopped (so that its lease runs out),
 * named and shared acquires.
 */
class Session {
  private seq = 0n;
  private timer: NodeJS.Timeout | undefined;
  private constructor(
    private readonly api: ReturnType<typeof createClient<typeof LockService>>,
    readonly id: bigint,
    private readonly secret: string,
    leaseMs: number,
  ) {
    this.timer = setInterval(() => {
      this.api.keepAlive({ clientId: id, secret }).catch(() => {});
    }, Math.max(50, leaseMs / 4));
  }

  static async open(name: string, leaseMs = 0): Promise<Session> {
    const api = createClient(LockService, transports.create(dlm.url));
    const r = await api.init({ name, leaseMs });
    const s = new Session(api, r.clientId, r.secret, r.leaseMs);
    sessions.push(s);
    return s;
  }

  /**
   * acquire asks for lock ("": the default lock, the field left unset) in mode; with queue it only queues (the grant
   * comes later through granted), else it waits for the grant, bounded.
   */
  async acquire(lock: string, mode: LockMode, opts: { queue?: boolean; lockDelayMs?: number } = {}): Promise<LockAcquireResponse> {
    const seq = ++this.seq;
    const req = { clientId: this.id, secret: this.secret, seq, lock: lock || undefined, mode, noWait: opts.queue ?? false, waitMs: 3000, lockDelayMs: opts.lockDelayMs };
    const r = await this.api.lockAcquire(req);
    if (opts.queue) {
      assert.ok(r.queued && !r.granted, `${lock}: want queued, got ${JSON.stringify(r, (_k, v) => (typeof v === "bigint" ? String(v) : v))}`);
      this.pending = seq;
      return r;
    }
    assert.ok(r.granted, `${lock}: want granted, got ${JSON.stringify(r, (_k, v) => (typeof v === "bigint" ? String(v) : v))}`);
    return r;
  }

  private pending = 0n;

  /** granted waits (bounded) for the grant of the request queued last, repeating it as the API allows. */
  async granted(lock: string, mode: LockMode): Promise<bigint> {
    const seq = this.pending;
    const r = await eventually<LockAcquireResponse | undefined>(`grant of ${lock}`, async () => {
      const a = await this.api.lockAcquire({ clientId: this.id, secret: this.secret, seq, lock: lock || undefined, mode, waitMs: 500 });
      return a.granted ? a : undefined;
    }, 20_000, 10);
    return (r as LockAcquireResponse).token;
  }

  async release(lock: string, token: bigint, abort = false): Promise<void> {
    await this.api.lockRelease({ clientId: this.id, secret: this.secret, seq: ++this.seq, lock: lock || undefined, token, abort });
  }

  /** stopKeepAlive lets the lease run out. */
  stopKeepAlive(): void {
    clearInterval(this.timer);
    this.timer = undefined;
  }

  async close(): Promise<void> {
    this.stopKeepAlive();
    await this.api.close({ clientId: this.id, secret: this.secret, seq: ++this.seq });
  }
}

before(async () => {
  mkdirSync(artifacts, { recursive: true });
  dlm = await startServer({ dashboard: true, lease: "5s", minLease: "200ms" });
  profile = mkdtempSync(join(tmpdir(), "dlm-chromium-"));
  ctx = await chromium.launchPersistentContext(profile, {
    executablePath: chromiumPath,
    headless: true,
    viewport: { width: 1280, height: 1400 },
    args: [
      "--no-sandbox",
      "--disable-gpu",
      "--disable-background-networking",
      "--disable-component-update",
      "--disable-sync",
      "--no-first-run",
      "--disable-background-timer-throttling",
      "--disable-renderer-backgrounding",
      "--disable-backgrounding-occluded-windows",
    ],
    timeout: 60_000,
  });
  ctx.setDefaultTimeout(15_000);
});

after(async () => {
  for (const s of sessions) {
    s.stopKeepAlive();
  }
  await ctx?.close();
  transports.close?.();
  await dlm?.stop();
  if (profile) {
    rmSync(profile, { recursive: true, force: true });
  }
});

let consoleLines: string[] = [];

function diag(fn: () => Promise<void>): () => Promise<void> {
  return async () => {
    consoleLines = [];
    try {
      await fn();
    } catch (err) {
      (err as Error).message += `\npage console:\n${consoleLines.join("\n")}`;
      throw err;
    }
  };
}

async function open(url: string): Promise<Page> {
  const page = await ctx.newPage();
  const errors: string[] = [];
  page.on("pageerror", (e) => errors.push(String(e)));
  page.on("console", (m) => consoleLines.push(`${new Date().toISOString()} ${m.text()}`));
  await page.goto(url);
  await page.locator("#conn", { hasText: "live" }).waitFor();
  // The lock views answered at least once.
  await page.locator("#lock-count", { hasText: "live" }).waitFor();
  assert.deepEqual(errors, []);
  return page;
}

/** lockRow is the locks table's row of lock. */
function lockRow(page: Page, lock: string) {
  return page.locator(`#locks tr[data-lock="${lock}"]`);
}

/** cells reads the texts of a row of the locks table: lock, mode, holders, queue, state. */
async function cells(page: Page, lock: string): Promise<string[]> {
  return lockRow(page, lock).locator("td").allTextContents();
}

/** rowIs waits (bounded) until the row of lock reads as want says. */
async function rowIs(page: Page, lock: string, want: (c: string[]) => boolean, what: string): Promise<string[]> {
  let last: string[] = [];
  try {
    return (await eventually(
      `${lock}: ${what}`,
      async () => {
        last = await cells(page, lock);
        return last.length > 0 && want(last) ? last : undefined;
      },
      15_000,
      50,
    )) as string[];
  } catch (err) {
    (err as Error).message += `; the row reads ${JSON.stringify(last)}`;
    throw err;
  }
}

/** grantEnd waits (bounded) for the timeline's bar of token to show end. */
async function grantEnd(page: Page, token: bigint, end: string): Promise<void> {
  await page.locator(`#timeline .grant[data-token="${token}"][data-end="${end}"]`).waitFor({ state: "attached" });
  await page.locator(`#grants tr[data-token="${token}"] td.end-${end}`).waitFor();
}

/** series reads a chart path's points and largest value. */
async function series(page: Page, name: string): Promise<{ points: number; max: number }> {
  const p = page.locator(`svg path[data-series="${name}"]`);
  return { points: Number(await p.getAttribute("data-points")), max: Number(await p.getAttribute("data-max")) };
}

describe("dashboard lock views", () => {
  test("the locks table shows named and shared locks with their holders, tokens, queues and lock-delay", diag(async () => {
    const page = await open(`${dlm.url}/`);
    // The default lock is always listed, first, free.
    await rowIs(page, "", (c) => c[0] === "(default)" && c[2] === "free", "listed free");

    const alpha = await Session.open("alpha");
    const beta = await Session.open("beta");
    const a = await alpha.acquire("orders", LockMode.EXCLUSIVE);
    await beta.acquire("orders", LockMode.EXCLUSIVE, { queue: true });
    const row = await rowIs(page, "orders", (c) => c[2].includes("alpha") && c[3] === "1", "held by alpha, one waiter");
    assert.equal(row[1], "exclusive");
    assert.match(row[2], new RegExp(`#${alpha.id} alpha token ${a.token}\\b`));
    assert.equal(row[4], "held");

    const r1 = await Session.open("reader-1");
    const r2 = await Session.open("reader-2");
    const w = await Session.open("writer");
    const t1 = (await r1.acquire("catalog", LockMode.SHARED)).token;
    const t2 = (await r2.acquire("catalog", LockMode.SHARED)).token;
    assert.notEqual(t1, t2);
    await w.acquire("catalog", LockMode.EXCLUSIVE, { queue: true });
    const cat = await rowIs(page, "catalog", (c) => c[2].includes("reader-2") && c[3] !== "–", "two readers and a writer waiting");
    assert.equal(cat[1], "shared");
    assert.match(cat[2], new RegExp(`reader-1 token ${t1}\\b`));
    assert.match(cat[2], new RegExp(`reader-2 token ${t2}\\b`));
    assert.equal(cat[3], "1");
    const names = await page.locator("#locks tr").evaluateAll((rows) => rows.map((r) => (r as HTMLElement).dataset.lock));
    assert.deepEqual(names.slice(0, 3), ["", "catalog", "orders"], "the default lock first, then by name");
    await page.screenshot({ path: join(artifacts, "locks-table.png"), fullPage: true });

    // alpha releases: beta holds orders with a later token, nobody waits.
    await alpha.release("orders", a.token);
    const b = await beta.granted("orders", LockMode.EXCLUSIVE);
    assert.ok(b > a.token);
    await rowIs(page, "orders", (c) => c[2].includes(`beta token ${b}`) && c[3] === "–", "held by beta");

    // A holder whose lease runs out leaves its lock in lock-delay.
    const gone = await Session.open("gone", 400);
    await gone.acquire("jobs", LockMode.EXCLUSIVE, { lockDelayMs: 4000 });
    const next = await Session.open("next");
    await next.acquire("jobs", LockMode.EXCLUSIVE, { queue: true });
    gone.stopKeepAlive();
    await rowIs(page, "jobs", (c) => c[4] === "lock-delay 4000 ms" && c[3] === "1", "in its lock-delay, one waiter");
    await page.screenshot({ path: join(artifacts, "locks-delayed.png"), fullPage: true });
    const n = await next.granted("jobs", LockMode.EXCLUSIVE);
    await rowIs(page, "jobs", (c) => c[2].includes(`next token ${n}`) && c[4] === "held", "held by next after the delay");

    // Locks nobody holds or waits for leave the table.
    for (const [s, lock, token] of [[beta, "orders", b], [next, "jobs", n], [r1, "catalog", t1], [r2, "catalog", t2]] as const) {
      await s.release(lock, token);
    }
    const wt = await w.granted("catalog", LockMode.EXCLUSIVE);
    await w.release("catalog", wt);
    await eventually("named locks gone from the table", async () => (await page.locator("#locks tr[data-lock]").count()) === 1, 15_000, 50);
    for (const s of [alpha, beta, r1, r2, w, next]) {
      await s.close();
    }
    await page.close();
  }));

  test("the chart draws grants per second and waiters as they happen", diag(async () => {
    const page = await open(`${dlm.url}/?name=chart`);
    const holder = await Session.open("chart-holder");
    const waiter = await Session.open("chart-waiter");
    const h = await holder.acquire("chart", LockMode.EXCLUSIVE);
    await waiter.acquire("chart", LockMode.EXCLUSIVE, { queue: true });
    // The waiter shows in the chart once a sample has seen it.
    await eventually("the waiting series rises", async () => (await series(page, "queue")).max >= 1, 15_000, 100);
    assert.ok((await series(page, "holders")).max >= 1);
    // A burst of grants on other locks.
    const busy = await Session.open("chart-busy");
    for (let i = 0; i < 20; i++) {
      const g = await busy.acquire(`burst-${i % 4}`, LockMode.EXCLUSIVE);
      await busy.release(`burst-${i % 4}`, g.token);
    }
    // The page's own samples (those with queues) count the burst.
    const liveRate = () =>
      page.evaluate(() => {
        const w = window as unknown as { dlm: { locks: { samples: { rate: number; queue?: number }[] } } };
        return Math.max(0, ...w.dlm.locks.samples.filter((x) => x.queue !== undefined).map((x) => x.rate));
      });
    await eventually("a sample counts the burst", async () => (await liveRate()) > 0, 15_000, 100);
    const grants = await series(page, "grants");
    assert.ok(grants.max > 0, `grants series max ${grants.max}`);
    assert.ok(grants.points >= 2, `${grants.points} points`);
    const d = (await page.locator('svg path[data-series="grants"]').getAttribute("d")) ?? "";
    assert.ok(d.split("L").length >= 2, d);
    const rate = Number.parseFloat((await page.locator("#grants-now").textContent()) ?? "");
    assert.ok(rate >= 0, `grants now: ${rate}`);
    await page.screenshot({ path: join(artifacts, "locks-chart.png"), fullPage: true });
    // A page opened now draws the burst at once, from the history's grant times.
    const late = await open(`${dlm.url}/?name=late`);
    const past = await series(late, "grants");
    assert.ok(past.points >= 60 && past.max > 0, `a new page's grants series: ${JSON.stringify(past)}`);
    assert.equal((await series(late, "queue")).points <= 2, true, "queues are not rebuilt from the history");
    await late.close();
    await holder.release("chart", h.token);
    const wt = await waiter.granted("chart", LockMode.EXCLUSIVE);
    await waiter.release("chart", wt);
    // The queue empties: the newest sample says so.
    await page.locator("#queue-now", { hasText: /^0$/ }).waitFor();
    for (const s of [holder, waiter, busy]) {
      await s.close();
    }
    await page.close();
  }));

  test("the timeline shows who held which lock when, and how each grant ended", diag(async () => {
    const page = await open(`${dlm.url}/?name=timeline`);
    const rel = await Session.open("releaser");
    const abo = await Session.open("aborter");
    const clo = await Session.open("closer");
    const exp = await Session.open("expirer", 300);
    const held = await Session.open("keeper");
    const tRel = (await rel.acquire("", LockMode.EXCLUSIVE)).token;
    const tAbo = (await abo.acquire("tl-b", LockMode.EXCLUSIVE)).token;
    const tClo = (await clo.acquire("tl-c", LockMode.SHARED)).token;
    const tExp = (await exp.acquire("tl-d", LockMode.EXCLUSIVE)).token;
    const tHeld = (await held.acquire("tl-e", LockMode.SHARED)).token;
    // The bars of live grants show first.
    for (const t of [tRel, tHeld]) {
      await page.locator(`#timeline .grant[data-token="${t}"][data-end="held"]`).waitFor({ state: "attached" });
    }
    await rel.release("", tRel);
    await abo.release("tl-b", tAbo, true);
    await clo.close();
    exp.stopKeepAlive();
    await grantEnd(page, tRel, "released");
    await grantEnd(page, tAbo, "aborted");
    await grantEnd(page, tClo, "closed");
    await grantEnd(page, tExp, "expired");
    // Each lock has its row, and a grant's bar sits in its lock's row.
    for (const [lock, token] of [["", tRel], ["tl-b", tAbo], ["tl-c", tClo], ["tl-d", tExp]] as const) {
      await page.locator(`#timeline .lock-row[data-lock="${lock}"] .grant[data-token="${token}"]`).waitFor({ state: "attached" });
    }
    const rowText = await page.locator(`#grants tr[data-token="${tClo}"] td`).allTextContents();
    assert.equal(rowText[0], "tl-c");
    assert.match(rowText[2], /closer/);
    assert.equal(rowText[3], "shared");
    const title = (await page.locator(`#timeline .grant[data-token="${tExp}"] title`).textContent()) ?? "";
    assert.match(title, new RegExp(`tl-d: expirer .*token ${tExp}, exclusive\\n.* → .* expired`));
    // The keeper still holds its grant: its bar runs to now.
    await page.locator(`#timeline .grant[data-token="${tHeld}"][data-end="held"]`).waitFor({ state: "attached" });
    await page.screenshot({ path: join(artifacts, "locks-timeline.png"), fullPage: true });
    for (const s of [rel, abo, held]) {
      await s.close();
    }
    await page.close();
  }));
});
