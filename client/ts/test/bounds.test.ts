// Session limits and bounded Status, against a real dlm server.
import assert from "node:assert/strict";
import { after, before, test } from "node:test";

import { Client, InitRateLimitedError, Reader, TooManySessionsError } from "../src/index.ts";
import { type Server, startServer } from "./server.ts";

let srv: Server;
before(async () => {
  srv = await startServer({ lease: "30s", args: ["--max-sessions", "6", "--init-burst", "7", "--init-rate", "0.01"] });
});
after(async () => {
  await srv?.stop();
});

test("session cap, rate limit, Status pages and long poll", async () => {
  const clients: Client[] = [];
  try {
    const r = new Reader([srv.url], { retryBudgetMs: 20_000 });
    const first = await r.status();
    for (let i = 0; i < 5; i++) {
      clients.push(await Client.open([srv.url], { name: `c${i}`, retryBudgetMs: 5000 }));
    }
    // Pages of two list every session once.
    const seen: bigint[] = [];
    let token = "";
    for (let pages = 0; pages < 10; pages++) {
      const st = await r.status({ pageSize: 2, pageToken: token });
      assert.equal(st.sessionCount, 5n);
      assert.ok(st.sessions.length <= 2);
      seen.push(...st.sessions.map((s) => s.clientId));
      token = st.nextPageToken;
      if (token === "") {
        break;
      }
    }
    assert.deepEqual(seen, clients.map((c) => c.clientId));

    // A long poll answers at once on a change: the sixth open.
    const before = await r.status();
    const poll = r.status({ knownStateIndex: before.stateIndex, waitMs: 20_000 });
    const started = Date.now();
    clients.push(await Client.open([srv.url], { name: "c5", retryBudgetMs: 5000 }));
    const changed = await poll;
    assert.ok(changed.stateIndex > before.stateIndex && changed.sessionCount === 6n);
    assert.ok(Date.now() - started < 10_000, "the long poll waited past the change");
    assert.ok(first.stateIndex > 0n);

    // The seventh open is over the cap, and is not retried.
    await assert.rejects(Client.open([srv.url], { name: "c6", retryBudgetMs: 5000 }), TooManySessionsError);
    // The refused open gave its token back: after a close, the seventh
    // token opens a session, and then the address is rate limited.
    await clients.shift()?.close();
    clients.push(await Client.open([srv.url], { name: "c7", retryBudgetMs: 5000 }));
    await clients.shift()?.close();
    await assert.rejects(Client.open([srv.url], { name: "c8", retryBudgetMs: 5000 }), (err: Error) => {
      assert.ok(err instanceof InitRateLimitedError, String(err));
      assert.match(err.message, /retry in/);
      return true;
    });
    r.close();
  } finally {
    await Promise.all(clients.map((c) => c.close()));
  }
});
