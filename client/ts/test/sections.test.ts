// Critical sections staged in the leader's memory: appends name their place,
// the release carries the section's counts and the appends stage buffered,
// and a leader that lacks part of the section (it changed inside it) gets it
// again from the client. Against real servers and a real three-node cluster.
import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";

import { Code, ConnectError, createClient, type Interceptor } from "@connectrpc/connect";
import { createConnectTransport } from "@connectrpc/connect-node";

import {
  Client,
  type ClientOptions,
  DataEmptyError,
  type Logger,
  nodeTransports,
  Reader,
  SectionIncompleteError,
  toDlmError,
  type Transports,
  UnavailableError,
} from "../src/node.ts";
import { LockService } from "../src/api.ts";
import { type Cluster, eventually, type Server, startCluster, startServer, testAdminToken } from "./server.ts";
import { withToken } from "../src/token.ts";

const text = (b: Uint8Array) => new TextDecoder().decode(b);

/** counting makes node transports that count calls by method and can drop answers of one method. */
function counting(): { transports: Transports; calls: Map<string, number>; dropAnswers: Set<string> } {
  const calls = new Map<string, number>();
  const dropAnswers = new Set<string>();
  const count: Interceptor = (next) => async (req) => {
    const m = req.method.name;
    calls.set(m, (calls.get(m) ?? 0) + 1);
    const res = await next(req);
    if (dropAnswers.has(m)) {
      throw new ConnectError("injected: answer lost", Code.Unavailable);
    }
    return res;
  };
  return {
    calls,
    dropAnswers,
    transports: {
      create: (baseUrl) => createConnectTransport({ baseUrl, httpVersion: "2", interceptors: [count] }),
    },
  };
}

/** logged collects the messages a client logs at info level. */
function logged(): { logger: Logger; infos: string[] } {
  const infos: string[] = [];
  return { infos, logger: { debug() {}, info: (msg) => infos.push(msg), warn() {} } };
}

const resent = "dlm: the leader lacks part of the critical section; sending it again";

describe("one server", () => {
  let srv: Server;
  before(async () => {
    srv = await startServer({ lease: "20s" });
  });
  after(async () => {
    await srv?.stop();
  });

  const open = (opts: ClientOptions = {}) => Client.open([srv.url], { keepAlive: false, ...opts });

  test("appends with places stage in the leader's memory: no log entry until the release", async () => {
    const c = await open({ transports: nodeTransports() });
    try {
      const lk = await c.acquire();
      const before = await c.status({ consistent: true });
      await lk.append("file_50", "a");
      await lk.append("file_51", "bb");
      await lk.append("file_50", "c");
      const during = await c.status({ consistent: true });
      // The leader holds them; an append sent without its place would have
      // been a log entry of its own.
      assert.equal(during.lock?.stagedAppends, 3);
      assert.equal(during.lock?.stagedBytes, 4n);
      assert.equal(during.node?.commitIndex, before.node?.commitIndex, "no log entry for the appends");
      await lk.release();
      const done = await c.status({ consistent: true });
      assert.equal(done.node!.commitIndex - before.node!.commitIndex, 1n, "the release is the section's one entry");
      assert.equal(text(await c.readFile("file_50")), "ac");
      assert.equal(text(await c.readFile("file_51")), "bb");
    } finally {
      await c.close();
    }
  });

  test("stage and release commit a section in one call", async () => {
    const k = counting();
    const c = await open({ transports: k.transports });
    try {
      const lk = await c.acquire();
      const before = await c.status({ consistent: true });
      k.calls.clear();
      lk.stage("file_52", "one,");
      lk.stage("file_53", new TextEncoder().encode("two,"));
      lk.stage("file_52", "three");
      assert.deepEqual([...k.calls], [], "stage makes no call");
      await lk.release();
      assert.deepEqual([...k.calls], [["LockRelease", 1]]);
      const done = await c.status({ consistent: true });
      assert.equal(done.node!.commitIndex - before.node!.commitIndex, 1n);
      assert.equal(text(await c.readFile("file_52")), "one,three");
      assert.equal(text(await c.readFile("file_53")), "two,");
      assert.throws(() => lk.stage("file_52", "late"), /released/);
    } finally {
      await c.close();
    }
  });

  test("staged and sent appends keep the order of the calls", async () => {
    const c = await open({ transports: nodeTransports() });
    try {
      const lk = await c.acquire();
      lk.stage("file_54", "1");
      // Not awaited: what is staged while the append waits its turn
      // comes after it.
      const sent = lk.append("file_54", "2");
      lk.stage("file_54", "3");
      await sent;
      await lk.append("file_54", "4");
      lk.stage("file_54", "5");
      assert.throws(() => lk.stage("file_54", ""), DataEmptyError);
      await lk.release();
      assert.equal(text(await c.readFile("file_54")), "12345");
    } finally {
      await c.close();
    }
  });

  test("a large buffer sends its oldest appends first, and the release carries at most 512 KiB", async () => {
    const k = counting();
    const c = await open({ transports: k.transports });
    try {
      const lk = await c.acquire();
      const part = (ch: string) => ch.repeat(300 << 10);
      for (const ch of ["x", "y", "z"]) {
        lk.stage("file_55", part(ch));
      }
      k.calls.clear();
      await lk.release();
      // 900 KiB buffered: two 300 KiB appends go first, the last rides
      // with the release.
      assert.deepEqual(Object.fromEntries(k.calls), { AppendFile: 2, LockRelease: 1 });
      assert.equal(text(await c.readFile("file_55")), part("x") + part("y") + part("z"));
    } finally {
      await c.close();
    }
  });

  test("an append repeated after its outcome stayed unknown is staged once", async () => {
    const k = counting();
    const c = await open({ transports: k.transports, retryBudgetMs: 800, attemptTimeoutMs: 500 });
    try {
      const lk = await c.acquire();
      await lk.append("file_56", "first,");
      k.dropAnswers.add("AppendFile");
      await assert.rejects(lk.append("file_56", "twice?"), UnavailableError);
      assert.ok((k.calls.get("AppendFile") ?? 0) >= 3, "the append reached the server more than once");
      k.dropAnswers.clear();
      // The repeat goes to the same place: the leader has it already.
      await lk.append("file_56", "twice?");
      // An append in doubt followed by another one stays in the section.
      k.dropAnswers.add("AppendFile");
      await assert.rejects(lk.append("file_56", ",kept"), UnavailableError);
      k.dropAnswers.clear();
      await lk.append("file_56", ",last");
      await lk.release();
      assert.equal(text(await c.readFile("file_56")), "first,twice?,kept,last");
    } finally {
      await c.close();
    }
  });

  test("after a release whose outcome is unknown, stage waits for its repeat", async () => {
    const k = counting();
    const c = await open({ transports: k.transports, retryBudgetMs: 800, attemptTimeoutMs: 500 });
    try {
      const lk = await c.acquire();
      lk.stage("file_58", "once");
      k.dropAnswers.add("LockRelease");
      await assert.rejects(lk.release(), UnavailableError);
      // The release committed; a buffer sent with its repeat would be lost.
      assert.throws(() => lk.stage("file_58", "lost?"), /repeat it, or abort/);
      // So does append: sending it would give the release's number up.
      await assert.rejects(lk.append("file_58", "lost?"), /repeat it, or abort/);
      k.dropAnswers.clear();
      await lk.release();
      assert.equal(text(await c.readFile("file_58")), "once");
    } finally {
      await c.close();
    }
  });

  test("SECTION_INCOMPLETE says what the leader holds", async () => {
    const raw = createClient(
      LockService,
      withToken(createConnectTransport({ baseUrl: srv.url, httpVersion: "2" }), process.env.DLM_TOKEN || testAdminToken),
    );
    const s = await raw.init({});
    const g = await raw.lockAcquire({ clientId: s.clientId, secret: s.secret, seq: 1n });
    const creds = { clientId: s.clientId, secret: s.secret, token: g.token, file: "file_57" };
    await raw.appendFile({ ...creds, seq: 2n, data: new Uint8Array([1, 2, 3]), position: 1 });
    const err = await raw
      .appendFile({ ...creds, seq: 3n, data: new Uint8Array([4]), position: 3 })
      .then(() => undefined, toDlmError);
    assert.ok(err instanceof SectionIncompleteError, String(err));
    assert.equal(err.stagedAppends, 1);
    assert.equal(err.stagedBytes, 3n);
    const rel = await raw
      .lockRelease({ clientId: s.clientId, secret: s.secret, seq: 4n, token: g.token, sectionAppends: 2, sectionBytes: 4n })
      .then(() => undefined, toDlmError);
    assert.ok(rel instanceof SectionIncompleteError, String(rel));
    assert.equal(rel.stagedAppends, 1);
    assert.equal(rel.stagedBytes, 3n);
    await raw.close({ clientId: s.clientId, secret: s.secret, seq: 5n });
  });
});

describe("a leader dies inside a critical section", () => {
  let cluster: Cluster;
  before(async () => {
    cluster = await startCluster({ lease: "8s" });
  });
  after(async () => {
    await cluster?.stop();
  });

  /** killLeader kills the current leader and returns its id (the test starts it again). */
  async function killLeader(): Promise<string> {
    const id = await cluster.leader();
    await cluster.kill(id);
    return id;
  }

  test("the section commits exactly once, in order", async () => {
    const log = logged();
    const urls = cluster.nodes.map((n) => n.url);
    const c = await Client.open(urls, { transports: nodeTransports(), logger: log.logger, attemptTimeoutMs: 1000 });
    try {
      const lk = await c.acquire();
      await lk.append("file_60", "A");
      await lk.append("file_61", "B");
      lk.stage("file_60", "C");
      const dead = await killLeader();
      await lk.append("file_60", "D");
      lk.stage("file_61", "E");
      assert.equal(lk.state, "held");
      await lk.release();
      assert.ok(log.infos.includes(resent), "the new leader lacked the section and the client sent it again");
      assert.equal(text(await c.readFile("file_60")), "ACD");
      assert.equal(text(await c.readFile("file_61")), "BE");
      await cluster.start(dead);
      await cluster.leader();
    } finally {
      await c.close();
    }
  });

  test("a release after the leader died re-sends the section", async () => {
    const log = logged();
    const urls = cluster.nodes.map((n) => n.url);
    const c = await Client.open(urls, { transports: nodeTransports(), logger: log.logger, attemptTimeoutMs: 1000 });
    try {
      const lk = await c.acquire();
      await lk.append("file_62", "one,");
      await lk.append("file_62", "two");
      const dead = await killLeader();
      await lk.release();
      assert.ok(log.infos.includes(resent));
      assert.equal(text(await c.readFile("file_62")), "one,two");
      await cluster.start(dead);
      await cluster.leader();
    } finally {
      await c.close();
    }
  });

  test("close of a holder after the leader died commits the section", async () => {
    const log = logged();
    const urls = cluster.nodes.map((n) => n.url);
    const c = await Client.open(urls, { transports: nodeTransports(), logger: log.logger, attemptTimeoutMs: 1000 });
    const lk = await c.acquire();
    await lk.append("file_63", "held,");
    await lk.append("file_63", "closed");
    const dead = await killLeader();
    await c.close();
    assert.equal(lk.state, "released");
    assert.ok(log.infos.includes(resent));
    const r = new Reader(urls, { transports: nodeTransports() });
    try {
      assert.equal(text(await r.readFile("file_63")), "held,closed");
      await eventually("the lock is free", async () => (await r.status({ consistent: true })).lock?.holder === 0n);
    } finally {
      r.close();
    }
    await cluster.start(dead);
    await cluster.leader();
  });

  test("close releases what stage buffered", async () => {
    const urls = cluster.nodes.map((n) => n.url);
    const c = await Client.open(urls, { transports: nodeTransports() });
    const lk = await c.acquire();
    await lk.append("file_64", "sent,");
    lk.stage("file_64", "buffered");
    await c.close();
    assert.equal(lk.state, "released");
    const r = new Reader(urls, { transports: nodeTransports() });
    try {
      assert.equal(text(await r.readFile("file_64")), "sent,buffered");
    } finally {
      r.close();
    }
  });
});
