// The publishable package (client/ts/build.mjs): installed into a project
// outside the workspace, its declarations typecheck and its JavaScript runs
// in plain Node, without tsx, against a real server.
import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { mkdirSync, mkdtempSync, rmSync, symlinkSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, test } from "node:test";
import { promisify } from "node:util";

import { repoRoot, type Server, startServer } from "./server.ts";

const execFileP = promisify(execFile);

/** run runs a command; its failure carries the command's output. */
async function run(cmd: string, args: string[], opts: Parameters<typeof execFileP>[2]) {
  try {
    return await execFileP(cmd, args, { ...opts, encoding: "utf8" });
  } catch (err) {
    const e = err as Error & { stdout?: string; stderr?: string };
    e.message += `\nstdout: ${e.stdout ?? ""}\nstderr: ${e.stderr ?? ""}`;
    throw e;
  }
}
let srv: Server;
let dir: string;

before(async () => {
  srv = await startServer();
  dir = mkdtempSync(join(tmpdir(), "dlm-ts-pkg-"));
});
after(async () => {
  await srv?.stop();
  if (dir) {
    rmSync(dir, { recursive: true, force: true });
  }
});

// Valid as TypeScript and as JavaScript: the same text is typechecked and run.
const consumer = `import { Client, LockExpiredError } from "@dlm/client";
import { nodeTransports } from "@dlm/client/node";

const c = await Client.open([process.env.DLM_URL ?? ""], { transports: nodeTransports(), name: "pkg" });
const lock = await c.acquire();
await lock.append("file_9", "from the package\\n");
await lock.release();
const err = await lock.append("file_9", "late").catch((e) => e);
const text = new TextDecoder().decode(await c.readFile("file_9"));
await c.close();
console.log(JSON.stringify({ token: String(lock.token), text, expired: err instanceof LockExpiredError }));
`;

test("the built package installs, typechecks and runs in plain Node", async () => {
  const pkg = join(dir, "node_modules", "@dlm", "client");
  await run(process.execPath, [join(repoRoot, "client", "ts", "build.mjs"), "--out", pkg], { timeout: 120_000 });
  for (const scope of ["@bufbuild", "@connectrpc", "@types"]) {
    symlinkSync(join(repoRoot, "node_modules", scope), join(dir, "node_modules", scope));
  }
  mkdirSync(join(dir, "src"));
  writeFileSync(join(dir, "package.json"), '{"type": "module"}\n');
  writeFileSync(join(dir, "src", "main.ts"), consumer);
  writeFileSync(join(dir, "src", "main.mjs"), consumer);
  const tsc = join(repoRoot, "node_modules", "typescript", "bin", "tsc");
  await run(
    process.execPath,
    [tsc, "--noEmit", "--strict", "--target", "es2022", "--module", "nodenext", "--types", "node", "src/main.ts"],
    { cwd: dir, timeout: 120_000 },
  );
  const { stdout } = await run(process.execPath, ["src/main.mjs"], {
    cwd: dir,
    env: { ...process.env, DLM_URL: srv.url },
    timeout: 60_000,
  });
  const got = JSON.parse(stdout);
  assert.equal(got.text, "from the package\n");
  assert.equal(got.expired, true);
  assert.ok(BigInt(got.token) > 0n);
});
