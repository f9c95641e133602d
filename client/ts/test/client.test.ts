// The client against a real dlm server, through each transport.
import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";

import {
  AbortedError,
  Client,
  DataEmptyError,
  FileNotFoundError,
  InvalidFileNameError,
  LockExpiredError,
  LockReleasedError,
  NotAvailableError,
  Reader,
  type Transports,
  webTransports,
} from "../src/index.ts";
import { nodeTransports } from "../src/node.ts";
import { eventually, type Server, startServer } from "./server.ts";

const text = (b: Uint8Array) => new TextDecoder().decode(b);

let srv: Server;
before(async () => {
  srv = await startServer({ lease: "3s", minLease: "200ms" });
});
after(async () => {
  await srv?.stop();
});

const transports: [string, () => Transports][] = [
  ["connect over node:http2", () => nodeTransports()],
  ["grpc over node:http2", () => nodeTransports({ protocol: "grpc" })],
  ["connect over fetch", () => webTransports()],
  ["grpc-web over fetch", () => webTransports({ protocol: "grpc-web" })],
];

describe("basic calls", () => {
  transports.forEach(([name, make], i) => {
    test(name, async () => {
      const file = `file_${10 + i}`;
      const c = await Client.open([srv.url], { transports: make(), name: `basic-${i}` });
      try {
        const lk = await c.acquire();
        assert.ok(lk.token > 0n);
        assert.equal(lk.state, "held");
        await lk.append(file, "hello ");
        await lk.append(file, new TextEncoder().encode("world\n"));
        // Staged, not visible before the release.
        assert.equal(text(await c.readFile(file)), "");
        await lk.release();
        assert.equal(lk.state, "released");
        assert.ok(lk.signal.aborted);
        assert.ok(lk.signal.reason instanceof LockReleasedError);
        assert.equal(text(await c.readFile(file)), "hello world\n");
        const tail = await c.readFileRange(file, -6);
        assert.equal(text(tail.data), "world\n");
        assert.equal(tail.size, 12n);
        const st = await c.status({ consistent: true });
        assert.equal(st.node?.role, "leader");
        assert.ok(st.sessions.some((s) => s.clientId === c.clientId && s.name === `basic-${i}`));
        await assert.rejects(lk.append(file, "late"), LockExpiredError);
      } finally {
        await c.close();
      }
    });
  });
});

describe("contention", () => {
  test("a waiter is granted after the holder releases, with a larger token", async () => {
    const c1 = await Client.open([srv.url], { transports: nodeTransports(), name: "holder" });
    // Short polls: the waiter repeats its LockAcquire several times with one seq.
    const c2 = await Client.open([srv.url], { transports: nodeTransports(), name: "waiter", pollWaitMs: 150 });
    const r = new Reader([srv.url], { transports: nodeTransports() });
    try {
      const lk1 = await c1.acquire();
      await lk1.append("file_20", "1");
      const waiting = c2.acquire();
      await eventually("the waiter queued", async () => {
        const st = await r.status();
        return st.lock?.queue.includes(c2.clientId);
      });
      // Several polls pass; the waiter keeps one place.
      await eventually("a few polls", async () => {
        const st = await r.status();
        return st.lock?.queue.length === 1 && st.sessions.length >= 2;
      });
      await assert.rejects(c2.tryAcquire(), NotAvailableError);
      await lk1.release();
      const lk2 = await waiting;
      assert.ok(lk2.token > lk1.token);
      await lk2.append("file_20", "2");
      await lk2.release();
      assert.equal(text(await r.readFile("file_20")), "12");
    } finally {
      r.close();
      await c1.close();
      await c2.close();
    }
  });

  test("an acquire that times out leaves the queue", async () => {
    const c1 = await Client.open([srv.url], { transports: nodeTransports() });
    const c2 = await Client.open([srv.url], { transports: nodeTransports(), pollWaitMs: 100 });
    try {
      const lk1 = await c1.acquire();
      const err = await c2.acquire({ timeoutMs: 300 }).catch((e: unknown) => e);
      assert.ok(err instanceof AbortedError, String(err));
      assert.equal((err.cause as Error).name, "TimeoutError");
      const st = await c1.status();
      assert.deepEqual(st.lock?.queue, []);
      // An aborted signal gives up the same way.
      const ctl = new AbortController();
      const p = c2.acquire({ signal: ctl.signal });
      await eventually("queued", async () => (await c1.status()).lock?.queue.includes(c2.clientId));
      ctl.abort();
      await assert.rejects(p, AbortedError);
      assert.deepEqual((await c1.status()).lock?.queue, []);
      await lk1.release();
      // Nothing was left behind for c2: c1 can take the lock at once.
      const again = await c1.tryAcquire();
      await again.release();
    } finally {
      await c1.close();
      await c2.close();
    }
  });

  test("withLock commits on success and aborts on failure", async () => {
    const c = await Client.open([srv.url], { transports: nodeTransports() });
    try {
      await c.withLock(async (lk) => lk.append("file_21", "kept\n"));
      await assert.rejects(
        c.withLock(async (lk) => {
          await lk.append("file_21", "dropped\n");
          throw new Error("boom");
        }),
        /boom/,
      );
      assert.equal(text(await c.readFile("file_21")), "kept\n");
    } finally {
      await c.close();
    }
  });

  test("close releases a held lock and commits", async () => {
    const c = await Client.open([srv.url], { transports: nodeTransports() });
    const lk = await c.acquire();
    await lk.append("file_22", "closed\n");
    await c.close();
    assert.equal(lk.state, "released");
    const r = new Reader([srv.url]);
    assert.equal(text(await r.readFile("file_22")), "closed\n");
    assert.equal((await r.status()).lock?.holder, 0n);
  });
});

describe("typed errors", () => {
  test("bad input is refused with its own error class", async () => {
    const c = await Client.open([srv.url], { transports: nodeTransports() });
    try {
      const lk = await c.acquire();
      await assert.rejects(lk.append("file_999", "x"), FileNotFoundError);
      await assert.rejects(lk.append("../x", "x"), InvalidFileNameError);
      await assert.rejects(lk.append("file_1", ""), DataEmptyError);
      // Still held after refused appends.
      assert.equal(lk.state, "held");
      await assert.rejects(c.acquire(), /already holds the lock/);
      await lk.release();
      await assert.rejects(lk.release(), LockExpiredError);
      await assert.rejects(c.readFile("../x"), InvalidFileNameError);
      await assert.rejects(c.readFile("file_999"), FileNotFoundError);
    } finally {
      await c.close();
    }
  });
});
