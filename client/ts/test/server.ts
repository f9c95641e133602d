// Test helpers: build and run a real dlm server on loopback.
import { execFileSync, spawn, type ChildProcess } from "node:child_process";
import { createInterface } from "node:readline";
import { mkdtempSync, rmSync } from "node:fs";
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

/** ClusterNode is one node of a cluster run by the e2e harness. */
export interface ClusterNode {
  id: string;
  /** The base URL of its API. */
  url: string;
  raft: string;
  pid: number;
  data: string;
  log: string;
}

/** Cluster is a fixed dlm cluster run by the e2e harness (internal/e2e/cmd/e2e-cluster). */
export interface Cluster {
  nodes: ClusterNode[];
  /** kill kills a node with SIGKILL and waits until it is gone. */
  kill(id: string): Promise<void>;
  /** start starts a killed node again, on the same addresses and data, until it serves. */
  start(id: string): Promise<void>;
  /** leader waits (bounded) until the running nodes agree on a leader and returns its id. */
  leader(): Promise<string>;
  /** stop kills every node and removes their data. */
  stop(): Promise<void>;
}

export interface ClusterOptions {
  /** Number of nodes, 3 by default. */
  nodes?: number;
  lease?: string;
  minLease?: string;
  /** More dlm serve arguments for every node. */
  args?: string[];
  /** More dlm serve arguments for one node, by id ("n1"…). */
  nodeArgs?: Record<string, string[]>;
}

interface FixtureAnswer {
  nodes?: ClusterNode[];
  leader?: string;
  diffs?: string[];
  error?: string;
}

/**
 * startCluster runs a fixed cluster through the Go end-to-end harness (the
 * one the Go tests use), which reserves the addresses, starts the nodes and
 * waits until they agree on a leader; the test then drives it by commands.
 */
export async function startCluster(opts: ClusterOptions = {}): Promise<Cluster> {
  const dlm = goBinary("./cmd/dlm", "DLM_BIN");
  const fixture = goBinary("./internal/e2e/cmd/e2e-cluster", "DLM_E2E_CLUSTER_BIN");
  const args = ["--dlm", dlm, "--nodes", String(opts.nodes ?? 3)];
  for (const [id, extra] of Object.entries(opts.nodeArgs ?? {})) {
    for (const a of extra) {
      args.push("--arg", `${id}=${a}`);
    }
  }
  args.push("--");
  if (opts.lease) {
    args.push("--lease", opts.lease);
  }
  if (opts.minLease) {
    args.push("--min-lease", opts.minLease);
  }
  args.push(...(opts.args ?? []));
  const env = { ...process.env, DLM_TOKEN: process.env.DLM_TOKEN || testAdminToken };
  const proc = spawn(fixture, args, { stdio: ["pipe", "pipe", "pipe"], env });
  let stderr = "";
  proc.stderr?.on("data", (b: Buffer) => {
    stderr += b.toString();
  });
  const exited = new Promise<void>((res) => proc.once("exit", () => res()));
  // Answers arrive one JSON line each, in the order of the commands.
  const waiting: ((a: FixtureAnswer) => void)[] = [];
  const early: FixtureAnswer[] = [];
  createInterface({ input: proc.stdout! }).on("line", (line) => {
    const a = JSON.parse(line) as FixtureAnswer;
    const w = waiting.shift();
    if (w) {
      w(a);
    } else {
      early.push(a);
    }
  });
  const next = (timeoutMs: number): Promise<FixtureAnswer> =>
    new Promise((res, rej) => {
      const a = early.shift();
      if (a) {
        res(a);
        return;
      }
      const timer = setTimeout(() => rej(new Error(`e2e-cluster: no answer within ${timeoutMs}ms: ${stderr}`)), timeoutMs);
      const gone = () => rej(new Error(`e2e-cluster exited: ${stderr}`));
      proc.once("exit", gone);
      waiting.push((v) => {
        clearTimeout(timer);
        proc.off("exit", gone);
        res(v);
      });
    });
  const first = await next(90_000);
  if (first.error || !first.nodes) {
    throw new Error(`e2e-cluster: ${first.error ?? "no nodes"}`);
  }
  const nodes = first.nodes;
  const command = async (line: string): Promise<FixtureAnswer> => {
    const answer = next(60_000);
    proc.stdin?.write(`${line}\n`);
    const a = await answer;
    if (a.error) {
      throw new Error(`e2e-cluster ${line}: ${a.error}`);
    }
    return a;
  };
  const refresh = (a: FixtureAnswer) => {
    for (const n of a.nodes ?? []) {
      const i = nodes.findIndex((m) => m.id === n.id);
      if (i >= 0) {
        nodes[i] = n;
      }
    }
  };
  return {
    nodes,
    async kill(id) {
      refresh(await command(`kill ${id}`));
    },
    async start(id) {
      refresh(await command(`start ${id}`));
    },
    async leader() {
      const a = await command("leader");
      refresh(a);
      return a.leader as string;
    },
    async stop() {
      if (proc.exitCode === null && proc.signalCode === null) {
        proc.stdin?.end();
        const t = setTimeout(() => proc.kill("SIGKILL"), 20_000);
        await exited;
        clearTimeout(t);
      }
    },
  };
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
