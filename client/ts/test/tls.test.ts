// The Node client against real TLS servers from the e2e harness: a node
// with the API and Raft over TLS (a throw-away CA), and a server that
// requires client certificates (mutual TLS).
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { after, before, test } from "node:test";

import { Client } from "../src/index.ts";
import { nodeTransports } from "../src/node.ts";
import { type Cluster, type Server, startCluster, startServer } from "./server.ts";

const text = (b: Uint8Array) => new TextDecoder().decode(b);

let cluster: Cluster | undefined;
let url = "";
let caFile = "";

before(async () => {
  cluster = await startCluster({ nodes: 1, tls: true });
  url = cluster.nodes[0].url;
  caFile = cluster.tls!.ca;
});

after(async () => {
  await cluster?.stop();
});

for (const protocol of ["connect", "grpc"] as const) {
  test(`${protocol} over TLS with the CA`, async () => {
    const c = await Client.open([url], { transports: nodeTransports({ protocol, ca: readFileSync(caFile) }) });
    try {
      const file = protocol === "connect" ? "file_1" : "file_2";
      const lk = await c.acquire();
      await lk.append(file, "over tls\n");
      await lk.release();
      assert.equal(text(await c.readFile(file)), "over tls\n");
    } finally {
      await c.close();
    }
  });
}

test("a server whose CA is not trusted is refused", async () => {
  await assert.rejects(
    Client.open([url], { transports: nodeTransports(), retryBudgetMs: 2000 }),
    /certificate/,
  );
});

test("mutual TLS: a client certificate is required", async () => {
  let srv: Server | undefined;
  try {
    srv = await startServer({ tls: "mutual" });
    assert.match(srv.url, /^https:\/\//);
    const files = srv.tls!;
    const ca = readFileSync(files.ca);
    await assert.rejects(Client.open([srv.url], { transports: nodeTransports({ ca }), retryBudgetMs: 2000 }));
    const c = await Client.open([srv.url], {
      transports: nodeTransports({ ca, cert: readFileSync(files.cert), key: readFileSync(files.key) }),
    });
    const st = await c.status();
    assert.equal(st.node?.role, "leader");
    await c.close();
  } finally {
    await srv?.stop();
  }
});
