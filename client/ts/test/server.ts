// Test helpers: real dlm servers and clusters on loopback, run by the Go
// end-to-end harness (internal/e2e/cmd/e2e-cluster).
import { execFileSync, spawn } from "node:child_process";
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

/** TLSFiles are the PEM files of a TLS server's CA and of a client certificate it signed. */
export interface TLSFiles {
  ca: string;
  cert: string;
  key: string;
}

/** Server is one running dlm node. */
export interface Server {
  /** The base URL of its API, such as http://127.0.0.1:40123. */
  url: string;
  dataDir: string;
  /** With ServerOptions.tls: the CA the server's certificate comes from, and a client certificate. */
  tls?: TLSFiles;
  /** stop ends the server and removes its data. */
  stop(): Promise<void>;
}

export interface ServerOptions {
  /** Default session lease, such as "2s". */
  lease?: string;
  /** Shortest lease a session may ask for, such as "200ms". */
  minLease?: string;
  /** The test uses the dashboard, which dlm serve always serves at /. */
  dashboard?: boolean;
  /** More arguments for dlm serve, such as --cors-origin. */
  args?: string[];
  /** Serve over TLS with a throw-away CA; "mutual" also requires a client certificate. */
  tls?: boolean | "mutual";
}

/** testAdminToken is the admin token of every test server. */
export const testAdminToken = "ts-test-admin-token-0123456789abcdef";

/**
 * startServer starts one dlm server without Raft, on a loopback port it
 * chooses with fresh data, through the Go end-to-end harness (e2e-cluster
 * --single), as the Go tests start theirs.
 */
export async function startServer(opts: ServerOptions = {}): Promise<Server> {
  const f = await runFixture(["--single"], opts);
  const n = f.nodes[0];
  return { url: n.url, dataDir: n.data, tls: f.tls, stop: f.stop };
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

/** Cluster is a dlm cluster run by the e2e harness (internal/e2e/cmd/e2e-cluster). */
export interface Cluster {
  nodes: ClusterNode[];
  /** With ClusterOptions.tls: the CA the nodes' certificates come from, and a client certificate. */
  tls?: TLSFiles;
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
  /** API and Raft over TLS with a throw-away CA; "mutual" also requires client certificates. */
  tls?: boolean | "mutual";
}

interface FixtureAnswer {
  nodes?: ClusterNode[];
  tls?: TLSFiles;
  leader?: string;
  diffs?: string[];
  error?: string;
}

/**
 * startCluster runs a cluster through the Go end-to-end harness (the one
 * the Go tests use): the first node starts it, the others join it on ports
 * they choose, and it waits until every node is a voter and they agree on
 * a leader; the test then drives it by commands.
 */
export async function startCluster(opts: ClusterOptions = {}): Promise<Cluster> {
  const args = ["--nodes", String(opts.nodes ?? 3)];
  for (const [id, extra] of Object.entries(opts.nodeArgs ?? {})) {
    for (const a of extra) {
      args.push("--arg", `${id}=${a}`);
    }
  }
  const f = await runFixture(args, opts);
  const nodes = f.nodes;
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
    tls: f.tls,
    async kill(id) {
      refresh(await f.command(`kill ${id}`));
    },
    async start(id) {
      refresh(await f.command(`start ${id}`));
    },
    async leader() {
      const a = await f.command("leader");
      refresh(a);
      return a.leader as string;
    },
    stop: f.stop,
  };
}

interface Fixture {
  nodes: ClusterNode[];
  tls?: TLSFiles;
  command(line: string): Promise<FixtureAnswer>;
  stop(): Promise<void>;
}

/**
 * runFixture starts e2e-cluster with args (before the serve arguments that
 * opts give) and waits for its first answer, which names the nodes once
 * they agree on a leader.
 */
async function runFixture(
  args: string[],
  opts: { lease?: string; minLease?: string; args?: string[]; tls?: boolean | "mutual" },
): Promise<Fixture> {
  const dlm = goBinary("./cmd/dlm", "DLM_BIN");
  const fixture = goBinary("./internal/e2e/cmd/e2e-cluster", "DLM_E2E_CLUSTER_BIN");
  args = ["--dlm", dlm, ...args];
  if (opts.tls) {
    args.push("--tls");
  }
  if (opts.tls === "mutual") {
    args.push("--tls-client-certs");
  }
  args.push("--");
  if (opts.lease) {
    args.push("--lease", opts.lease);
  }
  if (opts.minLease) {
    args.push("--min-lease", opts.minLease);
  }
  args.push(...(opts.args ?? []));
  // Members of a cluster share one admin token (they join and announce
  // themselves with it), as do the harness's own calls.
  const env = { ...process.env, DLM_TOKEN: process.env.DLM_TOKEN || testAdminToken };
  const proc = spawn(fixture, args, { stdio: ["pipe", "pipe", "pipe"], env });
  let stderr = "";
  proc.stderr?.on("data", (b: Buffer) => {
    stderr += b.toString();
    if (process.env.DLM_TEST_VERBOSE) {
      process.stderr.write(b);
    }
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
  const stop = async () => {
    if (proc.exitCode === null && proc.signalCode === null) {
      proc.stdin?.end();
      const t = setTimeout(() => proc.kill("SIGKILL"), 20_000);
      await exited;
      clearTimeout(t);
    }
  };
  let first: FixtureAnswer;
  try {
    first = await next(90_000);
  } catch (err) {
    await stop();
    throw err;
  }
  if (first.error || !first.nodes) {
    await stop();
    throw new Error(`e2e-cluster: ${first.error ?? "no nodes"}`);
  }
  const command = async (line: string): Promise<FixtureAnswer> => {
    const answer = next(60_000);
    proc.stdin?.write(`${line}\n`);
    const a = await answer;
    if (a.error) {
      throw new Error(`e2e-cluster ${line}: ${a.error}`);
    }
    return a;
  };
  return { nodes: first.nodes, tls: first.tls, command, stop };
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
