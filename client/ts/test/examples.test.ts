// The Node example, run as a person would, against a real server.
import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { join } from "node:path";
import { after, before, test } from "node:test";
import { promisify } from "node:util";

import { Client, Reader } from "../src/index.ts";
import { repoRoot, type Server, startServer } from "./server.ts";

let srv: Server;
before(async () => {
  srv = await startServer();
});
after(async () => {
  await srv?.stop();
});

test("examples/node appends a line under the lock", async () => {
  const run = (text: string) =>
    promisify(execFile)(process.execPath, ["--import", "tsx", join("examples", "node", "append.ts"), "file_7", text], {
      cwd: repoRoot,
      env: { ...process.env, DLM_SERVERS: srv.url },
      timeout: 60_000,
    });
  // Two copies at once queue for the lock; each line lands whole.
  const [a, b] = await Promise.all([run("first"), run("second")]);
  assert.match(a.stdout, /fencing token \d+/);
  assert.match(b.stdout, /file_7 \(\d+ bytes\) ends with:/);
  const r = new Reader([srv.url]);
  const lines = new TextDecoder().decode(await r.readFile("file_7")).split("\n").filter(Boolean).sort();
  assert.deepEqual(lines, ["first", "second"]);
});

test("examples/node/named takes a named lock, shared or not, and gives up at once with --try", async () => {
  const run = (...args: string[]) =>
    promisify(execFile)(process.execPath, ["--import", "tsx", join("examples", "node", "named.ts"), ...args], {
      cwd: repoRoot,
      env: { ...process.env, DLM_SERVERS: srv.url },
      timeout: 60_000,
    }).then(
      (r) => ({ code: 0, ...r }),
      (e: { code: number; stdout: string; stderr: string }) => e,
    );
  const c = await Client.open([srv.url]);
  try {
    const held = await c.acquire({ lock: "jobs/example", mode: "shared" });
    const shared = await run("--shared", "jobs/example", "0");
    assert.equal(shared.code, 0, shared.stderr);
    assert.match(shared.stdout, /holding jobs\/example \(shared\) with fencing token \d+\ncheckToken: current=true/);
    const busy = await run("--try", "jobs/example", "0");
    assert.equal(busy.code, 2, busy.stderr);
    assert.match(busy.stderr, /jobs\/example is busy/);
    await held.release();
    const mine = await run("--try", "jobs/example", "0");
    assert.equal(mine.code, 0, mine.stderr);
    assert.match(mine.stdout, /\(exclusive\)[^]*released jobs\/example/);
  } finally {
    await c.close();
  }
});
