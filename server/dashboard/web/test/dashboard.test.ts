// Browser tests of the dashboard: Debian's chromium, headless, driven by
// playwright-core, against a real dlm node that serves the dashboard, and a
// second origin that serves the same page to show it works over CORS.
import assert from "node:assert/strict";
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { createServer, type Server as HttpServer } from "node:http";
import type { AddressInfo } from "node:net";
import { tmpdir } from "node:os";
import { dirname, extname, join, resolve } from "node:path";
import { after, before, describe, test } from "node:test";
import { fileURLToPath } from "node:url";

import { build } from "esbuild";
import { type BrowserContext, chromium, type Page } from "playwright-core";

import { Client } from "../../../../client/ts/src/index.ts";
import { freePorts, type Server, startServer } from "../../../../client/ts/test/server.ts";

const here = dirname(fileURLToPath(import.meta.url));
const dist = resolve(here, "../../dist");
/** Screenshots land here; the folder is ignored by git. */
export const artifacts = resolve(here, "../test-artifacts");
const chromiumPath = process.env.CHROMIUM ?? "/usr/bin/chromium";

let dlm: Server;
let other: HttpServer;
let otherOrigin: string;
let ctx: BrowserContext;
let profile: string;

/** serveDist serves the built dashboard from another origin. */
function serveDist(): Promise<HttpServer> {
  return serveDir(dist);
}

/** serveDir serves the files under root on a loopback port. */
function serveDir(root: string): Promise<HttpServer> {
  const types: Record<string, string> = { ".html": "text/html", ".js": "text/javascript" };
  const srv = createServer((req, res) => {
    const path = new URL(req.url ?? "/", "http://x").pathname;
    const file = join(root, path === "/" ? "index.html" : path.slice(1));
    if (!file.startsWith(root) || !existsSync(file)) {
      res.writeHead(404).end();
      return;
    }
    res.writeHead(200, { "Content-Type": types[extname(file)] ?? "application/octet-stream" });
    res.end(readFileSync(file));
  });
  return new Promise((res) => srv.listen(0, "127.0.0.1", () => res(srv)));
}

before(async () => {
  mkdirSync(artifacts, { recursive: true });
  dlm = await startServer({ dashboard: true, lease: "5s", minLease: "200ms" });
  other = await serveDist();
  // localhost and 127.0.0.1 on another port: a different origin.
  otherOrigin = `http://localhost:${(other.address() as AddressInfo).port}`;
  profile = mkdtempSync(join(tmpdir(), "dlm-chromium-"));
  ctx = await chromium.launchPersistentContext(profile, {
    executablePath: chromiumPath,
    headless: true,
    viewport: { width: 1280, height: 900 },
    args: [
      "--no-sandbox",
      "--disable-gpu",
      "--disable-background-networking",
      "--disable-component-update",
      "--disable-sync",
      "--no-first-run",
      // Pages in the background must keep their keepalive timers running.
      "--disable-background-timer-throttling",
      "--disable-renderer-backgrounding",
      "--disable-backgrounding-occluded-windows",
    ],
    timeout: 60_000,
  });
  ctx.setDefaultTimeout(15_000);
});

after(async () => {
  await ctx?.close();
  other?.closeAllConnections();
  await new Promise((r) => (other ? other.close(r) : r(undefined)));
  await dlm?.stop();
  if (profile) {
    rmSync(profile, { recursive: true, force: true });
  }
});

/** What the pages of the running test logged, shown when it fails. */
let consoleLines: string[] = [];

/** diag runs a test body and adds the pages' console output to its failure. */
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
  const label = new URL(url).searchParams.get("name") ?? url;
  page.on("pageerror", (e) => errors.push(String(e)));
  page.on("console", (m) => consoleLines.push(`${new Date().toISOString()} [${label}] ${m.text()}`));
  await page.goto(url);
  await page.locator("#conn", { hasText: "live" }).waitFor();
  assert.deepEqual(errors, []);
  return page;
}

async function holding(page: Page): Promise<void> {
  await page.locator("#me-state.holding").waitFor();
}

async function appendText(page: Page, text: string): Promise<void> {
  await page.fill("#append-text", text);
  await page.click("#append");
  await page.locator("#log li", { hasText: "staged" }).first().waitFor();
  await page.waitForFunction(() => (document.getElementById("append-text") as HTMLInputElement).value === "");
}

describe("dashboard", () => {
  test("an idle page asks for Status rarely, and a change shows at once", diag(async () => {
    const page = await open(`${dlm.url}/?name=idle`);
    await page.locator("#members .role-leader").waitFor();
    let calls = 0;
    page.on("request", (r) => {
      if (r.url().endsWith("/dlm.v1.LockService/Status")) {
        calls++;
      }
    });
    // An idle window: the long poll waits on the server (5 s) and each node
    // is asked for its role every 2 s. Polling every 300 ms and every node
    // every 500 ms, as before, made 16 calls in these 3 seconds.
    await new Promise((r) => setTimeout(r, 3000));
    assert.ok(calls <= 4, `an idle page made ${calls} Status calls in 3 s`);
    // A change elsewhere ends the waiting poll: it shows well within the
    // long poll's 5 s.
    const other = await open(`${dlm.url}/?name=changer`);
    const start = Date.now();
    await other.click("#acquire");
    await holding(other);
    await page.locator("#holder", { hasText: "changer" }).waitFor({ timeout: 4000 });
    const took = Date.now() - start;
    assert.ok(took < 4000, `the idle page showed the new holder after ${took} ms`);
    await other.click("#release");
    await page.locator("#holder", { hasText: "free" }).waitFor();
    await other.close();
    await page.close();
  }));

  test("serves the page and shows the node", diag(async () => {
    const page = await open(`${dlm.url}/`);
    await page.locator("#members .role-leader").waitFor();
    assert.equal(await page.locator("#holder").textContent(), "free");
    assert.equal(await page.locator("#file-select option").count(), 100);
    await page.close();
  }));

  test("two pages contend for the lock, one of them from another origin", diag(async () => {
    const file = "file_5";
    const p1 = await open(`${dlm.url}/?name=page-1&file=${file}`);
    const p2 = await open(`${otherOrigin}/?server=${encodeURIComponent(dlm.url)}&name=page-2&file=${file}`);

    await p1.click("#acquire");
    await holding(p1);
    await p1.locator("#holder", { hasText: "page-1 (this page)" }).waitFor();
    const token1 = BigInt((await p1.locator("#token").textContent()) ?? "0");
    assert.ok(token1 > 0n);
    await p2.locator("#holder", { hasText: "page-1" }).waitFor();

    await p2.click("#acquire");
    await p2.locator("#me-state.waiting", { hasText: "queue" }).waitFor();
    await p1.locator("#queue li", { hasText: "page-2" }).waitFor();

    await appendText(p1, "from page 1");
    await p1.locator("#staged", { hasText: "1 appends" }).waitFor();
    await p1.screenshot({ path: join(artifacts, "contend-page1-holding.png") });
    await p1.click("#release");

    await holding(p2);
    const token2 = BigInt((await p2.locator("#me-state").textContent())?.replace(/\D+/g, "") ?? "0");
    assert.ok(token2 > token1, `${token2} > ${token1}`);
    await appendText(p2, "from page 2");
    await p2.locator("#file-tail", { hasText: "from page 1" }).waitFor();
    await p2.screenshot({ path: join(artifacts, "contend-page2-holding.png") });
    // Page 1 sees page 2 hold the lock with a staged append.
    await p1.locator("#holder", { hasText: "page-2" }).waitFor();
    await p1.locator("#staged", { hasText: "1 appends" }).waitFor();
    await p1.screenshot({ path: join(artifacts, "dashboard.png") });
    await p2.click("#release");

    const want = "from page 1\nfrom page 2\n";
    for (const p of [p1, p2]) {
      await p.waitForFunction((w) => document.getElementById("file-tail")?.textContent === w, want);
      await p.locator("#holder", { hasText: "free" }).waitFor();
    }
    await p1.screenshot({ path: join(artifacts, "contend-final.png") });
    await p1.close();
    await p2.close();
  }));

  test("a tab closed while holding the lock loses it after its lease", diag(async () => {
    const leaseMs = 2000;
    const gone = await open(`${dlm.url}/?name=closing&lease=${leaseMs}&file=file_6`);
    const next = await open(`${otherOrigin}/?server=${encodeURIComponent(dlm.url)}&name=next&file=file_6`);
    await gone.click("#acquire");
    await holding(gone);
    await appendText(gone, "never committed");
    await next.click("#acquire");
    await next.locator("#me-state.waiting", { hasText: "queue" }).waitFor();

    const closedAt = Date.now();
    await gone.close();
    // Granted once the closed page's lease runs out: a bounded wait.
    await next.locator("#me-state.holding").waitFor({ timeout: leaseMs + 10_000 });
    const took = Date.now() - closedAt;
    assert.ok(took < leaseMs + 10_000, `granted ${took}ms after the tab closed`);
    // The closed page's staged append was discarded with its section.
    await next.click("#release");
    await next.locator("#holder", { hasText: "free" }).waitFor();
    assert.equal(await next.locator("#file-tail").textContent(), "");
    await next.close();
  }));
});

describe("dashboard of a cluster", () => {
  let nodes: Server[] = [];
  before(async () => {
    const ports = await freePorts(3);
    const peers = ports.map((p, i) => `n${i + 1}=127.0.0.1:${p}`).join(",");
    nodes = await Promise.all(
      ports.map((p, i) =>
        startServer({ lease: "5s", args: ["--id", `n${i + 1}`, "--raft", `127.0.0.1:${p}`, "--peers", peers] }),
      ),
    );
  });
  after(async () => {
    await Promise.all(nodes.map((n) => n.stop()));
  });

  test("shows each node's role, and a new leader after the leader dies", diag(async () => {
    const servers = nodes.map((n) => n.url).join(",");
    const page = await open(`${otherOrigin}/?server=${encodeURIComponent(servers)}&name=cluster&file=file_8`);
    await page.locator("#members tr").nth(2).waitFor();
    await page.locator("#members .role-leader").waitFor();
    await page.waitForFunction(() => document.querySelectorAll("#members .role-follower").length === 2);
    const leaderRow = page.locator("#members tr", { has: page.locator(".role-leader") });
    const leaderId = (await leaderRow.getAttribute("data-node")) ?? "";
    assert.match(leaderId, /^n[123]$/);

    // A Node client writes first, then waits behind the page.
    const worker = await Client.open(nodes.map((n) => n.url), { name: "node worker" });
    await worker.withLock(async (lk) => lk.append("file_8", "hello from node\n"));
    await page.click("#acquire");
    await holding(page);
    const queued = worker.acquire();
    await appendText(page, "before failover");
    await page.locator("#queue li", { hasText: "node worker" }).waitFor();
    await page.locator("#staged", { hasText: "1 appends" }).waitFor();
    await page.locator("#file-tail", { hasText: "hello from node" }).waitFor();
    await page.screenshot({ path: join(artifacts, "cluster.png") });

    nodes[Number(leaderId.slice(1)) - 1].proc.kill("SIGKILL");
    await page.locator(`#members tr[data-node="${leaderId}"] .role-unreachable`).waitFor({ timeout: 20_000 });
    await page.waitForFunction(
      (dead) => {
        const row = document.querySelector("#members .role-leader")?.closest("tr");
        return row ? row.dataset.node !== dead : false;
      },
      leaderId,
      { timeout: 20_000 },
    );
    // The page's lock survived the failover: it appends and releases.
    await appendText(page, "after failover");
    await page.click("#release");
    const lk = await queued;
    await lk.release();
    await worker.close();
    await page.waitForFunction(
      () => document.getElementById("file-tail")?.textContent === "hello from node\nbefore failover\nafter failover\n",
      undefined,
      { timeout: 20_000 },
    );
    await page.screenshot({ path: join(artifacts, "cluster-after-failover.png") });
    await page.close();
  }));
});

describe("examples/browser", () => {
  test("takes the lock from its own origin and appends", diag(async () => {
    const example = resolve(here, "../../../../examples/browser");
    const out = mkdtempSync(join(tmpdir(), "dlm-example-"));
    const site = await (async () => {
      await build({
        entryPoints: [join(example, "main.ts")],
        bundle: true,
        format: "esm",
        target: "es2022",
        outfile: join(out, "dist", "main.js"),
        logLevel: "warning",
      });
      writeFileSync(join(out, "index.html"), readFileSync(join(example, "index.html")));
      return serveDir(out);
    })();
    try {
      const page = await ctx.newPage();
      page.on("console", (m) => consoleLines.push(`[example] ${m.text()}`));
      await page.goto(`http://localhost:${(site.address() as AddressInfo).port}/`);
      await page.fill("#server", dlm.url);
      await page.fill("#file", "file_3");
      await page.fill("#text", "from the example");
      await page.click("#go");
      await page.locator("#out", { hasText: "released; file_3 now ends with" }).waitFor();
      assert.match((await page.locator("#out").textContent()) ?? "", /from the example\n/);
      await page.close();
    } finally {
      site.closeAllConnections();
      await new Promise((r) => site.close(r));
      rmSync(out, { recursive: true, force: true });
    }
  }));
});
