// The client against a real three-node cluster: it finds the leader from
// any endpoint (NOT_LEADER answers and refused connections), and a held lock
// survives the leader's crash.
import assert from "node:assert/strict";
import { after, before, test } from "node:test";

import { Client, Reader } from "../src/index.ts";
import { nodeTransports } from "../src/node.ts";
import { type Cluster, eventually, startCluster } from "./server.ts";

const text = (b: Uint8Array) => new TextDecoder().decode(b);

let cluster: Cluster;

before(async () => {
  cluster = await startCluster({ lease: "5s" });
});

after(async () => {
  await cluster?.stop();
});

async function leaderOf(urls: string[]): Promise<number> {
  return eventually(
    "a leader",
    async () => {
      for (const [i, u] of urls.entries()) {
        const r = new Reader([u], { retryBudgetMs: 300 });
        try {
          const st = await r.status();
          if (st.node?.role === "leader") {
            return i + 1;
          }
        } catch {
          // down or not answering: try the next
        } finally {
          r.close();
        }
      }
      return 0;
    },
    20_000,
    100,
  ).then((i) => i - 1);
}

test("a held lock and its appends survive the leader's crash", async () => {
  const urls = cluster.nodes.map((n) => n.url);
  const first = await leaderOf(urls);
  // List the followers first, so the client must follow NOT_LEADER.
  const order = [...urls.filter((_, i) => i !== first), urls[first]];
  const c = await Client.open(order, { transports: nodeTransports(), name: "failover" });
  try {
    const lk = await c.acquire();
    await lk.append("file_40", "before\n");
    await cluster.kill(cluster.nodes[first].id);
    const alive = urls.filter((_, i) => i !== first);
    const next = await leaderOf(alive);
    assert.ok(next >= 0);
    await lk.append("file_40", "after\n");
    await lk.release();
    assert.equal(lk.state, "released");
    assert.equal(text(await c.readFile("file_40")), "before\nafter\n");
    // And the next grant carries a larger token.
    const lk2 = await c.acquire();
    assert.ok(lk2.token > lk.token);
    await lk2.release();
  } finally {
    await c.close();
  }
});
