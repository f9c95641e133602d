// Browser tests of the dashboard: Debian's chromium, headless, driven by
// playwright-core, against a real dlm node that serves the dashboard, and a
// second origin that serves the same page to show it works over CORS when
// the node allows that origin (--cors-origin), and only then.
import assert from "node:assert/strict";
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { createServer, type IncomingMessage, type Server as HttpServer, type ServerResponse } from "node:http";
import type { AddressInfo } from "node:net";
import { tmpdir } from "node:os";
import { dirname, extname, join, resolve } from "node:path";
import { after, before, describe, test } from "node:test";
import { fileURLToPath } from "node:url";

import { Code, ConnectError } from "@connectrpc/connect";
import { connectNodeAdapter } from "@connectrpc/connect-node";
import { build } from "esbuild";
import { type BrowserContext, chromium, type Page } from "playwright-core";

import { LockService } from "../../../../client/ts/src/api.ts";
import { Client } from "../../../../client/ts/src/index.ts";
import {
  type Cluster,
  type ClusterNode,
  eventually,
  type Server,
  startCluster,
  startServer,
} from "../../../../client/ts/test/server.ts";

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

/** listen starts srv on a loopback port and returns its origin. */
async function listen(srv: HttpServer, host = "127.0.0.1"): Promise<string> {
  await new Promise<void>((res) => srv.listen(0, "127.0.0.1", res));
  return `http://${host}:${(srv.address() as AddressInfo).port}`;
}

async function closeServer(srv: HttpServer | undefined): Promise<void> {
  srv?.closeAllConnections();
  await new Promise((r) => (srv ? srv.close(r) : r(undefined)));
}

/** serveDist serves the built dashboard from another origin. */
function serveDist(): Promise<HttpServer> {
  return serveDir(dist);
}

/** serveDir serves the files under root on a loopback port. */
function serveDir(root: string): Promise<HttpServer> {
  const srv = createServer(serveDirHandler(root));
  return new Promise((res) => srv.listen(0, "127.0.0.1", () => res(srv)));
}

/** serveDirHandler answers requests for the files under root. */
function serveDirHandler(root: string): (req: IncomingMessage, res: ServerResponse) => void {
  const types: Record<string, string> = { ".html": "text/html", ".js": "text/javascript" };
  return (req, res) => {
    const path = new URL(req.url ?? "/", "http://x").pathname;
    const file = join(root, path === "/" ? "index.html" : path.slice(1));
    if (!file.startsWith(root) || !existsSync(file)) {
      res.writeHead(404).end();
      return;
    }
    res.writeHead(200, { "Content-Type": types[extname(file)] ?? "application/octet-stream" });
    res.end(readFileSync(file));
  };
}

before(async () => {
  mkdirSync(artifacts, { recursive: true });
  other = await serveDist();
  // localhost and 127.0.0.1 on another port: a different origin.
  otherOrigin = `http://localhost:${(other.address() as AddressInfo).port}`;
  dlm = await startServer({ dashboard: true, lease: "5s", minLease: "200ms", args: ["--cors-origin", otherOrigin] });
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
  let cluster: Cluster;
  let nodes: ClusterNode[] = [];
  before(async () => {
    cluster = await startCluster({ lease: "5s", args: ["--cors-origin", otherOrigin] });
    nodes = cluster.nodes;
  });
  after(async () => {
    await cluster?.stop();
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

    await cluster.kill(leaderId);
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
    const siteOrigin = `http://localhost:${(site.address() as AddressInfo).port}`;
    // The example's origin is its own: the server must allow it.
    const server = await startServer({ args: ["--cors-origin", siteOrigin] });
    try {
      const page = await ctx.newPage();
      page.on("console", (m) => consoleLines.push(`[example] ${m.text()}`));
      await page.goto(`${siteOrigin}/`);
      await page.fill("#server", server.url);
      await page.fill("#file", "file_3");
      await page.fill("#text", "from the example");
      await page.click("#go");
      await page.locator("#out", { hasText: "released; file_3 now ends with" }).waitFor();
      assert.match((await page.locator("#out").textContent()) ?? "", /from the example\n/);
      await page.close();
    } finally {
      await server.stop();
      site.closeAllConnections();
      await new Promise((r) => site.close(r));
      rmSync(out, { recursive: true, force: true });
    }
  }));
});

/** blankSite serves an empty page: the origin a test's script runs in. */
function blankSite(): HttpServer {
  return createServer((_req, res) => {
    res.writeHead(200, { "Content-Type": "text/html" }).end("<!doctype html><title>another site</title>");
  });
}

/** members lists a node's members as a command-line tool does (no Origin). */
async function members(url: string): Promise<string[]> {
  const res = await fetch(`${url}/dlm.v1.ClusterService/ListMembers`, {
    method: "POST",
    headers: { "Content-Type": "application/json" },
    body: "{}",
  });
  assert.equal(res.status, 200, await res.clone().text());
  const body = (await res.json()) as { members?: { id: string }[] };
  return (body.members ?? []).map((m) => m.id).sort();
}

/** call makes a Connect call from page with fetch, and says how it ended. */
function call(page: Page, url: string, body: unknown, opts: { token?: string; simple?: boolean } = {}): Promise<string> {
  return page.evaluate(
    async ([url, body, opts]) => {
      try {
        const headers: Record<string, string> = { "Content-Type": opts.simple ? "text/plain" : "application/json" };
        if (opts.token) {
          headers.Authorization = `Bearer ${opts.token}`;
        }
        // A simple request (no-cors, text/plain) needs no preflight: the
        // browser sends it whatever the server's CORS answer would be.
        const res = await fetch(url, { method: "POST", mode: opts.simple ? "no-cors" : "cors", headers, body: JSON.stringify(body) });
        return res.type === "opaque" ? "opaque" : `${res.status} ${await res.text()}`;
      } catch (err) {
        return `failed: ${String(err)}`;
      }
    },
    [url, body, opts] as const,
  );
}

describe("cross-origin pages", () => {
  let cluster: Cluster;
  let nodes: ClusterNode[] = [];
  let allowed: HttpServer;
  let foreign: HttpServer;
  let allowedOrigin: string;
  let foreignOrigin: string;
  before(async () => {
    allowed = blankSite();
    foreign = blankSite();
    allowedOrigin = await listen(allowed);
    foreignOrigin = await listen(foreign, "localhost");
    // Two voters, so that removing either is a change a leader would make.
    // n1 allows one origin; n2 keeps the default (none).
    cluster = await startCluster({ nodes: 2, nodeArgs: { n1: ["--cors-origin", allowedOrigin] } });
    nodes = cluster.nodes;
  });
  after(async () => {
    await cluster?.stop();
    await closeServer(allowed);
    await closeServer(foreign);
  });

  test("no page of another origin removes a member; an allowed one may read the status", diag(async () => {
    assert.deepEqual(await members(nodes[0].url), ["n1", "n2"]);
    const foreignPage = await ctx.newPage();
    await foreignPage.goto(`${foreignOrigin}/`);
    const allowedPage = await ctx.newPage();
    await allowedPage.goto(`${allowedOrigin}/`);
    // Each node is asked to remove the other: the leader would do it.
    const removals = nodes.map((n, i) => ({ url: `${n.url}/dlm.v1.ClusterService/RemoveMember`, id: `n${2 - i}` }));
    for (const page of [foreignPage, allowedPage]) {
      for (const r of removals) {
        for (const simple of [false, true]) {
          const got = await call(page, r.url, { id: r.id }, { simple });
          assert.ok(got.startsWith("failed:") || got === "opaque", `RemoveMember ${r.id} at ${r.url} from ${page.url()}: ${got}`);
        }
      }
    }
    const status = (n: ClusterNode) => `${n.url}/dlm.v1.LockService/Status`;
    assert.match(await call(foreignPage, status(nodes[0]), {}), /^failed:/, "Status from a foreign origin");
    assert.match(await call(allowedPage, status(nodes[1]), {}), /^failed:/, "Status at a node that allows no origin");
    // The allowed origin reads the status, with a token header as well.
    const got = await call(allowedPage, status(nodes[0]), {}, { token: "t0ken" });
    assert.match(got, /^200 .*"node"/, `Status from the allowed origin: ${got}`);

    for (const n of nodes) {
      assert.deepEqual(await members(n.url), ["n1", "n2"], `members seen by ${n.url}`);
    }
    await foreignPage.close();
    await allowedPage.close();
  }));

  test("each node's dashboard reaches the other nodes without an allowlist", diag(async () => {
    // n2 allows no origin and n1 only another one: the page n2 serves
    // still polls n1, a member of its cluster.
    const page = await open(`${nodes[1].url}/`);
    await page.waitForFunction(() => document.querySelectorAll("#members tr").length === 2);
    await page.waitForFunction(() => document.querySelectorAll("#members .role-leader, #members .role-follower").length === 2);
    assert.equal(await page.locator("#members .role-unreachable").count(), 0);
    await page.close();
  }));
});

describe("dashboard token", () => {
  test("is sent on every call, kept for the tab only, never in the URL", diag(async () => {
    const page = await open(`${dlm.url}/?name=token-page&file=file_7`);
    const sent: { path: string; authorization?: string }[] = [];
    page.on("request", (r) => {
      const path = new URL(r.url()).pathname;
      if (path.startsWith("/dlm.v1.")) {
        // A request still in flight when the page closes has no headers
        // to give: ignore it.
        r.allHeaders().then((h) => sent.push({ path, authorization: h.authorization }), () => {});
      }
    });
    await page.fill("#auth-token", "s3cret-tok");
    await page.click("#auth-use");
    await page.locator("#auth-state", { hasText: "set for this tab" }).waitFor();
    // Polls already under way when the token was set go without it: the
    // polls that follow carry it.
    const lastPolls = (auth: string | undefined) => () => sent.length >= 4 && sent.slice(-4).every((s) => s.authorization === auth);
    await eventually("polls with the token", lastPolls("Bearer s3cret-tok"));
    await page.click("#acquire");
    await holding(page);
    await page.click("#release");
    await page.locator("#me-state", { hasText: "idle" }).waitFor();
    // The session's calls were all made after the token was set.
    const session = sent.filter((s) => /\/(Init|LockAcquire|LockRelease|KeepAlive)$/.test(s.path));
    const paths = new Set(session.map((s) => s.path));
    for (const p of ["/dlm.v1.LockService/Init", "/dlm.v1.LockService/LockAcquire", "/dlm.v1.LockService/LockRelease"]) {
      assert.ok(paths.has(p), `${p} in ${[...paths].join(", ")}`);
    }
    for (const s of session) {
      assert.equal(s.authorization, "Bearer s3cret-tok", s.path);
    }
    assert.ok(sent.some((s) => s.path.endsWith("/ReadFile") && s.authorization === "Bearer s3cret-tok"));
    assert.ok(!page.url().includes("s3cret"), page.url());
    assert.deepEqual(await page.evaluate(() => ({ local: localStorage.length, session: sessionStorage.getItem("dlm-token") })), {
      local: 0,
      session: "s3cret-tok",
    });

    // A reload keeps it (same tab); a new tab starts without one.
    await page.reload();
    assert.equal(await page.inputValue("#auth-token"), "s3cret-tok");
    sent.length = 0;
    await eventually("polls with the token after the reload", lastPolls("Bearer s3cret-tok"));
    const fresh = await open(`${dlm.url}/`);
    assert.equal(await fresh.inputValue("#auth-token"), "");
    const freshSent: (string | undefined)[] = [];
    fresh.on("request", (r) => r.allHeaders().then((h) => freshSent.push(h.authorization), () => {}));
    await eventually("polls of the new tab", () => freshSent.length >= 4);
    assert.deepEqual(freshSent.filter((a) => a !== undefined), []);

    // Forget: no header again, and nothing stored.
    await page.click("#auth-forget");
    await eventually("polls without a token after Forget", lastPolls(undefined));
    assert.equal(await page.evaluate(() => sessionStorage.getItem("dlm-token")), null);
    await fresh.close();
    await page.close();
  }));

  test("a server that requires a token says so, and the page works once it is given", diag(async () => {
    // A real Connect server that wants "Bearer right" for every call, and
    // serves the dashboard from the same origin.
    const seen: (string | null)[] = [];
    const api = connectNodeAdapter({
      routes(router) {
        router.service(LockService, {
          status: () => ({}),
          readFile: () => ({}),
        });
      },
      interceptors: [
        (next) => async (req) => {
          const auth = req.header.get("Authorization");
          seen.push(auth);
          if (auth === null) {
            throw new ConnectError("a token is required", Code.Unauthenticated);
          }
          if (auth !== "Bearer right") {
            throw new ConnectError("unknown token", Code.Unauthenticated);
          }
          return next(req);
        },
      ],
    });
    const files = serveDirHandler(dist);
    const srv = createServer((req, res) => (req.url?.startsWith("/dlm.v1.") ? api(req, res) : files(req, res)));
    const origin = await listen(srv);
    try {
      const page = await ctx.newPage();
      page.on("console", (m) => consoleLines.push(`[token] ${m.text()}`));
      await page.goto(`${origin}/`);
      await page.locator("#conn", { hasText: "this server requires a token" }).waitFor();
      await page.locator("#auth-msg", { hasText: "enter it above" }).waitFor();
      await page.screenshot({ path: join(artifacts, "token-required.png") });
      await page.fill("#auth-token", "wrong");
      await page.press("#auth-token", "Enter");
      await page.locator("#auth-msg", { hasText: "did not accept the token" }).waitFor();
      await page.fill("#auth-token", "right");
      await page.click("#auth-use");
      await page.locator("#conn", { hasText: "live" }).waitFor();
      assert.equal(await page.locator("#auth-msg").isHidden(), true);
      assert.ok(seen.includes("Bearer right"));
      await page.close();
    } finally {
      await closeServer(srv);
    }
  }));
});
