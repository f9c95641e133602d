// The Node client against real TLS servers: dev-cluster --tls (API and Raft
// over TLS, with a throw-away CA), and a server that requires client
// certificates (mutual TLS).
import assert from "node:assert/strict";
import { spawn, type ChildProcess } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, test } from "node:test";

import { Client } from "../src/index.ts";
import { nodeTransports } from "../src/node.ts";
import { goBinary, type Server, startServer } from "./server.ts";

const text = (b: Uint8Array) => new TextDecoder().decode(b);

let cluster: ChildProcess | undefined;
let dataDir = "";
let url = "";
let caFile = "";

before(async () => {
  const bin = goBinary("./cmd/dlm", "DLM_BIN");
  dataDir = mkdtempSync(join(tmpdir(), "dlm-ts-tls-"));
  const proc = spawn(bin, ["dev-cluster", "--tls", "--nodes", "1", "--port", "0", "--data", dataDir], {
    stdio: ["ignore", "pipe", "pipe"],
  });
  cluster = proc;
  let stderr = "";
  proc.stderr?.on("data", (b: Buffer) => (stderr += b.toString()));
  await new Promise<void>((res, rej) => {
    let out = "";
    const timer = setTimeout(() => rej(new Error(`dev-cluster --tls did not start within 30s: ${out} ${stderr}`)), 30_000);
    proc.stdout?.on("data", (b: Buffer) => {
      out += b.toString();
      const u = /\bn1\s+(https:\/\/\S+)/.exec(out);
      const ca = /CA certificate: (\S+)/.exec(out);
      if (u && ca && out.includes("Ctrl-C")) {
        clearTimeout(timer);
        url = u[1];
        caFile = ca[1];
        res();
      }
    });
    proc.once("exit", (code) => {
      clearTimeout(timer);
      rej(new Error(`dev-cluster exited (${code}): ${stderr}`));
    });
  });
});

after(async () => {
  if (cluster && cluster.exitCode === null) {
    const exited = new Promise((r) => cluster?.once("exit", r));
    cluster.kill("SIGTERM");
    await exited;
  }
  rmSync(dataDir, { recursive: true, force: true });
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
  // The dev-cluster's node certificate serves as a client certificate too.
  const tlsDir = join(dataDir, "tls");
  const cert = join(tlsDir, "n1.pem");
  const key = join(tlsDir, "n1-key.pem");
  let srv: Server | undefined;
  try {
    srv = await startServer({ args: ["--tls-cert", cert, "--tls-key", key, "--tls-client-ca", caFile] });
    assert.match(srv.url, /^https:\/\//);
    const ca = readFileSync(caFile);
    await assert.rejects(Client.open([srv.url], { transports: nodeTransports({ ca }), retryBudgetMs: 2000 }));
    const c = await Client.open([srv.url], {
      transports: nodeTransports({ ca, cert: readFileSync(cert), key: readFileSync(key) }),
    });
    const st = await c.status();
    assert.equal(st.node?.role, "leader");
    await c.close();
  } finally {
    await srv?.stop();
  }
});
