// Test helpers: build and run a real dlm server on loopback.
import { execFileSync, spawn, type ChildProcess } from "node:child_process";
import { mkdtempSync, rmSync } from "node:fs";
import { type AddressInfo, createServer as createNetServer, type Server as NetServer } from "node:net";
import { tmpdir } from "node:os";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";

/** The repository's root folder. */
export const repoRoot = resolve(dirname(fileURLToPath(import.meta.url)), "../../..");

const built = new Map<string, string>();

/**
 * goBinary builds the Go main package pkg (such as "./cmd/dlm") into a
 * temporary folder, once per process, and returns its path. The environment
 * variable env, when set, names a binary built already (scripts/test builds
 * them once for all test files).
 */
export function goBinary(pkg: string, env: string): string {
  const given = process.env[env];
  if (given) {
    return given;
  }
  let bin = built.get(pkg);
  if (bin === undefined) {
    const dir = mkdtempSync(join(tmpdir(), "dlm-ts-bin-"));
    bin = join(dir, pkg.split("/").pop() as string);
    execFileSync("go", ["build", "-o", bin, pkg], { cwd: repoRoot, stdio: "inherit", timeout: 300_000 });
    built.set(pkg, bin);
    process.on("exit", () => rmSync(dir, { recursive: true, force: true }));
  }
  return bin;
}

/** Server is one running dlm node. */
export interface Server {
  /** The base URL of its API, such as http://127.0.0.1:40123. */
  url: string;
  dataDir: string;
  proc: ChildProcess;
  /** stop ends the server (SIGTERM, then SIGKILL after 5 s) and removes its data. */
  stop(): Promise<void>;
}

export interface ServerOptions {
  /** Default session lease, such as "2s". */
  lease?: string;
  /** Shortest lease a session may ask for, such as "200ms". */
  minLease?: string;
  /** The test uses the dashboard, which dlm serve always serves at /. */
  dashboard?: boolean;
  /** More arguments for dlm serve, such as --id, --raft and --peers. */
  args?: string[];
}

/** testAdminToken is the admin token of every test server. */
export const testAdminToken = "ts-test-admin-token-0123456789abcdef";

/** startServer starts a dlm node on a free loopback port with fresh data. */
export async function startServer(opts: ServerOptions = {}): Promise<Server> {
  const bin = goBinary("./cmd/dlm", "DLM_BIN");
  const dataDir = mkdtempSync(join(tmpdir(), "dlm-ts-data-"));
  const args = ["serve"];
  args.push("--listen", "127.0.0.1:0", "--data", dataDir);
  if (opts.lease) {
    args.push("--lease", opts.lease);
  }
  if (opts.minLease) {
    args.push("--min-lease", opts.minLease);
  }
  args.push(...(opts.args ?? []));
  // Members of a cluster share one admin token (they announce themselves to
  // the leader with it); a node started alone writes it to its data folder.
  const env = { ...process.env, DLM_TOKEN: process.env.DLM_TOKEN || testAdminToken };
  const proc = spawn(bin, args, { stdio: ["ignore", "pipe", "pipe"], env });
  let stderr = "";
  proc.stderr?.on("data", (b: Buffer) => {
    stderr += b.toString();
    if (process.env.DLM_TEST_VERBOSE) {
      process.stderr.write(b);
    }
  });
  const exited = new Promise<void>((res) => proc.once("exit", () => res()));
  const url = await new Promise<string>((res, rej) => {
    let out = "";
    const timer = setTimeout(() => rej(new Error(`dlm did not start within 30s: ${stderr}`)), 30_000);
    proc.stdout?.on("data", (b: Buffer) => {
      out += b.toString();
      const m = /serving on (https?:\/\/\S+)/.exec(out);
      if (m) {
        clearTimeout(timer);
        res(m[1]);
      }
    });
    proc.once("exit", (code) => {
      clearTimeout(timer);
      rej(new Error(`dlm exited (${code}) before serving: ${stderr}`));
    });
  });
  return {
    url,
    dataDir,
    proc,
    async stop() {
      if (proc.exitCode === null && proc.signalCode === null) {
        proc.kill("SIGTERM");
        const t = setTimeout(() => proc.kill("SIGKILL"), 5000);
        await exited;
        clearTimeout(t);
      }
      rmSync(dataDir, { recursive: true, force: true });
    },
  };
}

/** freePorts finds n free loopback ports (for Raft addresses named up front). */
export async function freePorts(n: number): Promise<number[]> {
  const servers = await Promise.all(
    Array.from({ length: n }, () => {
      const srv = createNetServer();
      return new Promise<NetServer>((res) => srv.listen(0, "127.0.0.1", () => res(srv)));
    }),
  );
  const ports = servers.map((s) => (s.address() as AddressInfo).port);
  await Promise.all(servers.map((s) => new Promise((r) => s.close(r))));
  return ports;
}

/**
 * eventually polls cond every intervalMs until it returns a truthy value,
 * and fails after timeoutMs: tests wait for conditions, never for time.
 */
export async function eventually<T>(
  what: string,
  cond: () => T | Promise<T>,
  timeoutMs = 10_000,
  intervalMs = 25,
): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  let last: unknown;
  for (;;) {
    try {
      const v = await cond();
      if (v) {
        return v;
      }
    } catch (err) {
      last = err;
    }
    if (Date.now() > deadline) {
      throw new Error(`timed out after ${timeoutMs}ms waiting for ${what}${last ? `: ${String(last)}` : ""}`);
    }
    await new Promise((r) => setTimeout(r, intervalMs));
  }
}
