// Named and shared locks, try and timeout, lock-delay, checkToken,
// listLocks and lockHistory, against a real dlm server.
import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";

import { createClient, type Interceptor } from "@connectrpc/connect";
import { createConnectTransport } from "@connectrpc/connect-node";

import {
  AbortedError,
  api,
  Client,
  DlmError,
  InvalidArgumentError,
  type Lock,
  LockExpiredError,
  LockModeMismatchError,
  LockUnknownError,
  NotAvailableError,
  NotExclusiveError,
  Reader,
  type Transports,
  webTransports,
} from "../src/index.ts";
import { nodeTransports } from "../src/node.ts";
import { withToken } from "../src/token.ts";
import { eventually, type Server, startServer, testAdminToken } from "./server.ts";

const { ErrorReason, LockEnd, LockMode } = api;

let srv: Server;
let r: Reader;
before(async () => {
  srv = await startServer({ lease: "3s", minLease: "200ms" });
  r = new Reader([srv.url], { transports: nodeTransports() });
});
after(async () => {
  r?.close();
  await srv?.stop();
});

/** open opens a client that polls often, so waits end soon after a grant. */
function open(name: string, extra: Parameters<typeof Client.open>[1] = {}): Promise<Client> {
  return Client.open([srv.url], { transports: nodeTransports(), name, pollWaitMs: 200, ...extra });
}

/** lockNamed is the live lock name as listLocks shows it, if any. */
async function lockNamed(name: string): Promise<api.LockStatus | undefined> {
  return (await r.listLocks({ consistent: true })).find((l) => l.name === name);
}

/** queued waits until client c waits in the queue of lock name. */
async function queued(c: Client, name: string): Promise<void> {
  await eventually(`client ${c.clientId} waits for ${name}`, async () =>
    (await lockNamed(name))?.queue.includes(c.clientId),
  );
}

describe("named locks", () => {
  test("named locks are independent, and one session holds several", async () => {
    const c1 = await open("named-1");
    const c2 = await open("named-2");
    try {
      const a = await c1.acquire({ lock: "jobs/a" });
      const d = await c1.acquire();
      const b = await c2.acquire({ lock: "jobs/b", timeoutMs: 10_000 });
      assert.equal(a.name, "jobs/a");
      assert.equal(a.mode, "exclusive");
      assert.equal(d.name, "");
      assert.equal(b.name, "jobs/b");
      // Tokens are unique and grow across all locks.
      assert.ok(a.token < d.token && d.token < b.token, `${a.token} ${d.token} ${b.token}`);
      await assert.rejects(c2.tryAcquire({ lock: "jobs/a" }), NotAvailableError);
      await assert.rejects(c2.tryAcquire(), NotAvailableError);
      // The same lock twice in one client is refused before asking.
      await assert.rejects(c1.acquire({ lock: "jobs/a" }), /already holds lock "jobs\/a"/);
      // A named lock guards no files.
      await assert.rejects(a.append("file_50", "x"), (e: unknown) => {
        return e instanceof InvalidArgumentError && e.reason === ErrorReason.APPEND_NEEDS_DEFAULT_LOCK;
      });
      assert.throws(() => a.stage("file_50", "x"), InvalidArgumentError);
      assert.equal(a.state, "held");
      await d.append("file_50", "default\n");
      // Releasing one lock leaves the others held.
      await a.release();
      assert.equal(a.state, "released");
      assert.equal(d.state, "held");
      const a2 = await c2.tryAcquire({ lock: "jobs/a" });
      assert.ok(a2.token > b.token);
      await d.release();
      assert.equal(new TextDecoder().decode(await r.readFile("file_50")), "default\n");
      await a2.release();
      await b.release();
      // Named locks leave no state behind.
      await eventually("only the default lock is live", async () => {
        const locks = await r.listLocks({ consistent: true });
        return locks.length === 1 && locks[0].name === "";
      });
    } finally {
      await c1.close();
      await c2.close();
    }
  });

  test("withLock takes a named lock in the mode asked, and releases it", async () => {
    const c1 = await open("with-1");
    const c2 = await open("with-2");
    try {
      const token = await c1.withLock(
        async (lk) => {
          assert.equal(lk.name, "with");
          assert.equal(lk.mode, "shared");
          // Another reader shares it meanwhile.
          const other = await c2.tryAcquire({ lock: "with", mode: "shared" });
          await other.release();
          return lk.token;
        },
        { lock: "with", mode: "shared", timeoutMs: 10_000 },
      );
      assert.equal((await r.checkToken(token, { lock: "with" }).catch((e: unknown) => e)) instanceof LockUnknownError, true);
    } finally {
      await c1.close();
      await c2.close();
    }
  });

  test("close releases every lock the session holds", async () => {
    const c1 = await open("close-all");
    const c2 = await open("close-next");
    try {
      const a = await c1.acquire({ lock: "close/a" });
      const b = await c1.acquire({ lock: "close/b", mode: "shared" });
      const d = await c1.acquire();
      await d.append("file_51", "closed\n");
      await c1.close();
      for (const lk of [a, b, d]) {
        assert.equal(lk.state, "released", lk.name);
        assert.ok(lk.signal.aborted);
      }
      await (await c2.tryAcquire({ lock: "close/a" })).release();
      await (await c2.tryAcquire({ lock: "close/b" })).release();
      assert.equal(new TextDecoder().decode(await r.readFile("file_51")), "closed\n");
    } finally {
      await c1.close();
      await c2.close();
    }
  });
});

describe("shared locks", () => {
  test("shared holders hold together, each with its own token", async () => {
    const c1 = await open("reader-1");
    const c2 = await open("reader-2");
    const c3 = await open("writer");
    try {
      const s1 = await c1.tryAcquire({ lock: "table", mode: "shared" });
      const s2 = await c2.tryAcquire({ lock: "table", mode: "shared" });
      assert.equal(s1.mode, "shared");
      assert.ok(s2.token > s1.token);
      await assert.rejects(c3.tryAcquire({ lock: "table" }), NotAvailableError);
      const st = await lockNamed("table");
      assert.equal(st?.mode, LockMode.SHARED);
      assert.deepEqual(
        st?.holders.map((h) => [h.clientId, h.token, h.mode]),
        [
          [c1.clientId, s1.token, LockMode.SHARED],
          [c2.clientId, s2.token, LockMode.SHARED],
        ],
      );
      for (const lk of [s1, s2]) {
        const check = await r.checkToken(lk.token, { lock: "table" });
        assert.deepEqual(check, { ...check, current: true, mode: "shared", latestToken: s2.token });
      }
      await s1.release();
      await assert.rejects(c3.tryAcquire({ lock: "table" }), NotAvailableError);
      await s2.release();
      await (await c3.tryAcquire({ lock: "table" })).release();
    } finally {
      await Promise.all([c1.close(), c2.close(), c3.close()]);
    }
  });

  test("a reader behind a waiting writer waits: FIFO across modes", async () => {
    const c1 = await open("fifo-reader-1");
    const c2 = await open("fifo-writer");
    const c3 = await open("fifo-reader-2");
    try {
      const s1 = await c1.acquire({ lock: "fifo", mode: "shared" });
      const writer = c2.acquire({ lock: "fifo", timeoutMs: 30_000 });
      await queued(c2, "fifo");
      // Compatible with the holder, but behind the writer.
      await assert.rejects(c3.tryAcquire({ lock: "fifo", mode: "shared" }), NotAvailableError);
      const reader = c3.acquire({ lock: "fifo", mode: "shared", timeoutMs: 30_000 });
      await queued(c3, "fifo");
      const st = await lockNamed("fifo");
      assert.deepEqual(st?.queue, [c2.clientId, c3.clientId]);
      assert.deepEqual(st?.queueModes, [LockMode.EXCLUSIVE, LockMode.SHARED]);
      let readerDone = false;
      void reader.then(() => (readerDone = true)).catch(() => {});
      await s1.release();
      const w = await writer;
      assert.equal(w.mode, "exclusive");
      assert.equal(readerDone, false);
      assert.deepEqual((await lockNamed("fifo"))?.queue, [c3.clientId]);
      await w.release();
      const s3 = await reader;
      assert.equal(s3.mode, "shared");
      assert.ok(s3.token > w.token);
      await s3.release();
    } finally {
      await Promise.all([c1.close(), c2.close(), c3.close()]);
    }
  });

  test("a shared holder of the default lock cannot append", async () => {
    const c = await open("shared-default");
    try {
      const lk = await c.acquire({ mode: "shared" });
      await assert.rejects(lk.append("file_52", "x"), NotExclusiveError);
      assert.throws(() => lk.stage("file_52", "x"), NotExclusiveError);
      assert.equal(lk.state, "held");
      await lk.release();
    } finally {
      await c.close();
    }
  });

  test("the other mode of a lock the session holds is refused, and changes nothing", async () => {
    const c = await open("mismatch");
    try {
      const lk = await c.acquire({ lock: "mm", mode: "shared" });
      await assert.rejects(c.acquire({ lock: "mm" }), LockModeMismatchError);
      await assert.rejects(c.tryAcquire({ lock: "mm" }), LockModeMismatchError);
      assert.equal(lk.state, "held");
      assert.equal((await r.checkToken(lk.token, { lock: "mm" })).current, true);
      assert.deepEqual((await lockNamed("mm"))?.queue, []);
      await lk.release();
      const x = await c.tryAcquire({ lock: "mm" });
      assert.equal(x.mode, "exclusive");
      await x.release();
    } finally {
      await c.close();
    }
  });
});

describe("try and timeout", () => {
  test("tryAcquire does not queue; a timed-out acquire leaves the queue of its lock", async () => {
    const c1 = await open("try-holder");
    const c2 = await open("try-waiter");
    try {
      const h = await c1.acquire({ lock: "busy" });
      const d = await c2.acquire();
      await assert.rejects(c2.tryAcquire({ lock: "busy" }), NotAvailableError);
      assert.deepEqual((await lockNamed("busy"))?.queue, []);
      const err = await c2.acquire({ lock: "busy", timeoutMs: 400 }).catch((e: unknown) => e);
      assert.ok(err instanceof AbortedError, String(err));
      assert.equal((err.cause as Error).name, "TimeoutError");
      assert.deepEqual((await lockNamed("busy"))?.queue, []);
      // Giving up that place left c2's other grant alone.
      assert.equal(d.state, "held");
      assert.equal((await r.checkToken(d.token)).current, true);
      await h.release();
      // Nothing was left behind for c2: the lock is no longer live.
      assert.equal(await lockNamed("busy"), undefined);
      await d.release();
    } finally {
      await c1.close();
      await c2.close();
    }
  });
});

describe("bad input", () => {
  test("bad lock names and lock-delays get their own reasons and change nothing", async () => {
    const c = await open("bad-names");
    try {
      const live = async () =>
        (await r.listLocks({ consistent: true })).map((l) => [l.name, l.holders.map((h) => h.token), l.queue]);
      const before = await live();
      const cases: [string, () => Promise<unknown>, api.ErrorReason][] = [
        ["an empty name", () => c.acquire({ lock: "" }), ErrorReason.LOCK_NAME_EMPTY],
        ["an empty name, try", () => c.tryAcquire({ lock: "" }), ErrorReason.LOCK_NAME_EMPTY],
        ["a name over 256 bytes", () => c.acquire({ lock: "x".repeat(257) }), ErrorReason.LOCK_NAME_TOO_LONG],
        ["a line break", () => c.acquire({ lock: "a\nb" }), ErrorReason.LOCK_NAME_INVALID],
        ["a control character", () => c.tryAcquire({ lock: "a\u0007" }), ErrorReason.LOCK_NAME_INVALID],
        ["a lock-delay over a minute", () => c.acquire({ lock: "ok", lockDelayMs: 60_001 }), ErrorReason.LOCK_DELAY_INVALID],
        ["checkToken of an empty name", () => r.checkToken(1n, { lock: "" }), ErrorReason.LOCK_NAME_EMPTY],
        ["lockHistory of an empty name", () => r.lockHistory({ lock: "" }), ErrorReason.LOCK_NAME_EMPTY],
      ];
      for (const [what, call, reason] of cases) {
        const err = await call().then(
          () => undefined,
          (e: unknown) => e,
        );
        assert.ok(err instanceof InvalidArgumentError, `${what}: ${String(err)}`);
        assert.equal(err.reason, reason, `${what}: ${err.message}`);
      }
      // 256 bytes of a printable name are fine (here 128 two-byte letters).
      const long = await c.tryAcquire({ lock: "é".repeat(128) });
      await long.release();
      assert.deepEqual(await live(), before);
    } finally {
      await c.close();
    }
  });
});

describe("checkToken", () => {
  test("current, stale, and an unknown lock", async () => {
    const c1 = await open("check-1");
    const c2 = await open("check-2");
    try {
      const a = await c1.acquire({ lock: "ck" });
      const now = await r.checkToken(a.token, { lock: "ck" });
      assert.equal(now.current, true);
      assert.equal(now.mode, "exclusive");
      assert.equal(now.latestToken, a.token);
      assert.ok(now.stateIndex >= a.token);
      await a.release();
      const b = await c2.acquire({ lock: "ck" });
      const stale = await r.checkToken(a.token, { lock: "ck" });
      assert.equal(stale.current, false);
      assert.equal(stale.mode, undefined);
      assert.equal(stale.latestToken, b.token);
      // The default lock's tokens are its own.
      assert.equal((await r.checkToken(b.token)).current, false);
      await b.release();
      await assert.rejects(r.checkToken(b.token, { lock: "ck" }), LockUnknownError);
      await assert.rejects(r.checkToken(1n, { lock: "never-held" }), LockUnknownError);
      await assert.rejects(r.checkToken(0n, { lock: "ck" }), InvalidArgumentError);
    } finally {
      await c1.close();
      await c2.close();
    }
  });
});

describe("listLocks and lockHistory", () => {
  test("listLocks pages through the live locks in name order, the default lock first", async () => {
    const c1 = await open("list-1");
    const c2 = await open("list-2");
    try {
      const held: Lock[] = [];
      for (const n of ["list/c", "list/a", "list/b"]) {
        held.push(await c1.acquire({ lock: n }));
      }
      const waiting = c2.acquire({ lock: "list/a", mode: "shared", timeoutMs: 30_000 });
      await queued(c2, "list/a");
      const all = await r.listLocks({ consistent: true });
      assert.deepEqual(
        all.map((l) => l.name),
        ["", "list/a", "list/b", "list/c"],
      );
      const a = all[1];
      assert.equal(a.holder, c1.clientId);
      assert.equal(a.token, held[1].token);
      assert.equal(a.mode, LockMode.EXCLUSIVE);
      assert.equal(a.holderName, "list-1");
      assert.equal(a.queueLength, 1n);
      assert.deepEqual(a.queueModes, [LockMode.SHARED]);
      // One at a time: the same locks, page by page.
      const names: string[] = [];
      let pageToken = "";
      for (let i = 0; i < 10; i++) {
        const page = await r.listLocksPage({ pageSize: 1, pageToken });
        assert.equal(page.lockCount, 4n);
        names.push(...page.locks.map((l) => l.name));
        pageToken = page.nextPageToken;
        if (pageToken === "") break;
      }
      assert.deepEqual(names, ["", "list/a", "list/b", "list/c"]);
      assert.equal((await r.status()).lockCount, 4n);
      assert.equal((await r.status({ lock: "list/a" })).lock?.holder, c1.clientId);
      await held[1].release();
      await (await waiting).release();
    } finally {
      await c1.close();
      await c2.close();
    }
  });

  test("lockHistory tells who held which lock when, and how it ended", async () => {
    const c1 = await open("history-1");
    const c2 = await open("history-2");
    try {
      const a = await c1.acquire({ lock: "hist" });
      await a.release();
      const b = await c2.acquire({ lock: "hist", mode: "shared" });
      const d = await c2.acquire();
      const h = await r.lockHistory({ lock: "hist" });
      assert.ok(h.capacity >= 2);
      const ev = h.events.map((e) => [e.lock, e.token, e.clientId, e.holderName, e.mode, e.end]);
      assert.deepEqual(ev, [
        ["hist", a.token, c1.clientId, "history-1", LockMode.EXCLUSIVE, LockEnd.RELEASED],
        ["hist", b.token, c2.clientId, "history-2", LockMode.SHARED, LockEnd.UNSPECIFIED],
      ]);
      assert.ok(h.events[0].endedUnixMs >= h.events[0].grantedUnixMs && h.events[0].grantedUnixMs > 0n);
      assert.equal(h.events[1].endedUnixMs, 0n);
      // Every lock, newest last; limit keeps the newest.
      const last = await r.lockHistory({ limit: 1 });
      assert.deepEqual(
        last.events.map((e) => [e.lock, e.token]),
        [["", d.token]],
      );
      await c2.close();
      const closed = await r.lockHistory({ lock: "hist" });
      assert.equal(closed.events.at(-1)?.end, LockEnd.CLOSED);
    } finally {
      await c1.close();
      await c2.close();
    }
  });
});

describe("losing a named lock", () => {
  test("the loss of one lock is detected while the session's other lock stays held", async () => {
    // The client's own credentials, seen on the wire, let the test end one
    // grant behind the client's back, as an operator's tool could.
    let secret = "";
    let keepAlives = 0;
    const see: Interceptor = (next) => async (req) => {
      const res = await next(req);
      if (req.method.name === "Init" && !res.stream) {
        secret = (res.message as api.InitResponse).secret;
      }
      if (req.method.name === "KeepAlive") {
        keepAlives++;
      }
      return res;
    };
    const t: Transports = {
      create: (baseUrl) => createConnectTransport({ baseUrl, httpVersion: "2", interceptors: [see] }),
    };
    const c = await Client.open([srv.url], { transports: t, leaseMs: 900, name: "loses-one" });
    const raw = createClient(
      api.LockService,
      withToken(createConnectTransport({ baseUrl: srv.url, httpVersion: "2" }), testAdminToken),
    );
    try {
      const keep = await c.acquire({ lock: "keep" });
      const lose = await c.acquire({ lock: "lose", mode: "shared" });
      const events: Event[] = [];
      lose.addEventListener("lost", (e) => events.push(e));
      await raw.lockRelease({
        clientId: c.clientId,
        secret,
        seq: 1_000_000n,
        token: lose.token,
        lock: "lose",
      });
      await eventually("the loss is seen", () => lose.state === "lost", 10_000);
      const why = await lose.lost;
      assert.ok(why instanceof LockExpiredError, String(why));
      assert.match(why.message, /lock "lose"/);
      assert.equal(lose.state, "lost");
      assert.ok(lose.signal.aborted);
      assert.equal(events.length, 1);
      // Two keepalives later (the first may have been judged already when
      // the loss was seen), the other grant is still held.
      const seen = keepAlives;
      await eventually("two more keepalives", () => keepAlives >= seen + 2);
      assert.equal(keep.state, "held");
      assert.equal((await r.checkToken(keep.token, { lock: "keep" })).current, true);
      await assert.rejects(lose.release(), LockExpiredError);
      const again = await c.tryAcquire({ lock: "lose" });
      assert.ok(again.token > lose.token);
      await again.release();
      await keep.release();
    } finally {
      await c.close();
    }
  });

  test("a holder whose lease runs out loses every lock, and the lock-delay holds a named one back", async () => {
    const c1 = await open("expires", { leaseMs: 300, keepAlive: false });
    const c2 = await open("after-expiry");
    try {
      const a = await c1.acquire({ lock: "delayed", lockDelayMs: 3000 });
      const d = await c1.acquire();
      // No keepalive: the lease runs out, and the delay starts.
      await eventually("the lock is in its lock-delay", async () => (await lockNamed("delayed"))?.delayed);
      assert.equal((await lockNamed("delayed"))?.delayMs, 3000);
      await assert.rejects(c2.tryAcquire({ lock: "delayed" }), NotAvailableError);
      // The default lock had no delay.
      await (await c2.tryAcquire()).release();
      const next = await c2.acquire({ lock: "delayed", timeoutMs: 30_000 });
      assert.ok(next.token > d.token);
      await assert.rejects(a.release(), LockExpiredError);
      assert.equal(a.state, "lost");
      await assert.rejects(d.append("file_53", "late"), LockExpiredError);
      await next.release();
    } finally {
      await c1.close();
      await c2.close();
    }
  });
});

test("named and shared locks over fetch, the browser's transport (grpc-web)", async () => {
  const t = () => webTransports({ protocol: "grpc-web" });
  const c1 = await Client.open([srv.url], { transports: t(), name: "web-1", pollWaitMs: 200 });
  const c2 = await Client.open([srv.url], { transports: t(), name: "web-2", pollWaitMs: 200 });
  const web = new Reader([srv.url], { transports: t() });
  try {
    const s1 = await c1.acquire({ lock: "web", mode: "shared" });
    const s2 = await c2.tryAcquire({ lock: "web", mode: "shared" });
    assert.equal((await web.checkToken(s1.token, { lock: "web" })).current, true);
    const err = await c1.acquire({ lock: "web2", timeoutMs: 10_000 }).then(
      (lk) => lk.release(),
      (e: unknown) => e,
    );
    assert.equal(err, undefined, String(err));
    const locks = await web.listLocks();
    assert.deepEqual(
      locks.find((l) => l.name === "web")?.holders.map((h) => h.token),
      [s1.token, s2.token],
    );
    assert.equal((await web.lockHistory({ lock: "web", limit: 1 })).events[0]?.token, s2.token);
    await s1.release();
    await s2.release();
  } finally {
    web.close();
    await c1.close();
    await c2.close();
  }
});

test("DlmError stays the base of the new errors", () => {
  for (const cls of [LockModeMismatchError, LockUnknownError, NotExclusiveError]) {
    assert.ok(new cls("x") instanceof DlmError);
  }
});
