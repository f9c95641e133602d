// The conformance table (testdata/conformance/scenarios.json), shared with
// the Go client's TestConformance: each scenario against a fresh real dlm
// server, the same reasons, errors and retry decisions.
import assert from "node:assert/strict";
import { chmodSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { type AddressInfo, createServer } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { test } from "node:test";

import { fromJson, type JsonValue } from "@bufbuild/protobuf";
import { Code, createClient } from "@connectrpc/connect";
import { createConnectTransport } from "@connectrpc/connect-node";

import {
  AppendFileRequestSchema,
  CheckTokenRequestSchema,
  CloseRequestSchema,
  ErrorReason,
  InitRequestSchema,
  ListLocksRequestSchema,
  LockAcquireRequestSchema,
  LockHistoryRequestSchema,
  LockReleaseRequestSchema,
  LockService,
} from "../src/api.ts";
import {
  AddMemberRequestSchema,
  ClusterService,
  ListMembersRequestSchema,
  RemoveMemberRequestSchema,
} from "../../../gen/ts/dlm/v1/cluster_pb.js";
import { retryable, toDlmError } from "../src/errors.ts";
import * as dlm from "../src/index.ts";
import { withToken } from "../src/token.ts";
import { type Cluster, eventually, repoRoot, type Server, startCluster, startServer, testAdminToken } from "./server.ts";

interface Expect {
  ok?: boolean;
  reason?: string;
  code?: string;
  error?: string;
  retried?: boolean;
}
interface Step {
  rpc?: string;
  /** "follower" sends a raw call to a follower of a server.nodes cluster. */
  at?: string;
  request?: JsonValue;
  save?: string;
  client?: string;
  file?: string;
  data?: string;
  /** acquire: the lock's name (unset: the default lock) and mode. */
  lock?: string;
  mode?: dlm.LockMode;
  expect: Expect;
}
interface Scenario {
  name: string;
  family: string;
  server?: {
    max_append?: number;
    max_section?: number;
    max_file_size?: number;
    max_sessions?: number;
    init_rate?: number;
    init_burst?: number;
    auth_tokens?: boolean;
    min_free_space?: number;
    nodes?: number;
    max_locks?: number;
  };
  client_options?: { token?: string; dead_endpoint_first?: boolean; follower_first?: boolean };
  steps: Step[];
}
const table = JSON.parse(readFileSync(join(repoRoot, "testdata/conformance/scenarios.json"), "utf8")) as {
  tokens: Record<string, string>;
  scenarios: Scenario[];
};

test("the table covers every family", () => {
  assert.ok(table.scenarios.length >= 12);
  assert.ok(new Set(table.scenarios.map((s) => s.family)).size >= 7);
});

/** snake turns Code names (FailedPrecondition) into the wire's (failed_precondition). */
function snake(c: Code): string {
  return Code[c].replace(/[A-Z]/g, (m, i: number) => (i > 0 ? "_" : "") + m.toLowerCase());
}

/** silentEndpoint is a real listener that closes every connection at once: a server that gives no answer. */
async function silentEndpoint(): Promise<{ url: string; close(): Promise<void> }> {
  const srv = createServer((sock) => sock.destroy());
  await new Promise<void>((res) => srv.listen(0, "127.0.0.1", () => res()));
  return {
    url: `http://127.0.0.1:${(srv.address() as AddressInfo).port}`,
    close: () => new Promise((res) => srv.close(() => res())),
  };
}

const schemas = {
  Init: InitRequestSchema,
  LockAcquire: LockAcquireRequestSchema,
  LockRelease: LockReleaseRequestSchema,
  AppendFile: AppendFileRequestSchema,
  Close: CloseRequestSchema,
  CheckToken: CheckTokenRequestSchema,
  ListLocks: ListLocksRequestSchema,
  LockHistory: LockHistoryRequestSchema,
} as const;
const clusterSchemas = {
  AddMember: AddMemberRequestSchema,
  RemoveMember: RemoveMemberRequestSchema,
  ListMembers: ListMembersRequestSchema,
} as const;

for (const sc of table.scenarios) {
  test(`${sc.family}: ${sc.name}`, async () => {
    const args: string[] = [];
    const s = sc.server ?? {};
    const dir = mkdtempSync(join(tmpdir(), "dlm-conformance-"));
    if (s.max_append) args.push("--max-append", String(s.max_append));
    if (s.max_section) args.push("--max-section", String(s.max_section));
    if (s.max_file_size) args.push("--max-file-size", String(s.max_file_size));
    if (s.max_sessions) args.push("--max-sessions", String(s.max_sessions));
    if (s.init_rate) args.push("--init-rate", String(s.init_rate), "--init-burst", String(s.init_burst ?? 1));
    if (s.min_free_space) args.push("--min-free-space", String(s.min_free_space));
    if (s.max_locks) args.push("--max-locks", String(s.max_locks));
    if (s.auth_tokens) {
      const f = join(dir, "tokens");
      writeFileSync(f, `client ${table.tokens.client}\nread ${table.tokens.read}\n`);
      chmodSync(f, 0o600);
      args.push("--auth-tokens", f);
    }
    // A cluster (server.nodes, default configuration) lets steps go to a
    // follower; otherwise one server.
    let srv: Server | undefined;
    let cluster: Cluster | undefined;
    let leaderURL: string;
    if ((s.nodes ?? 1) > 1) {
      cluster = await startCluster({ nodes: s.nodes });
      const leader = await cluster.leader();
      leaderURL = cluster.nodes.find((n) => n.id === leader)!.url;
    } else {
      srv = await startServer({ args });
      leaderURL = srv.url;
    }
    const silent = sc.client_options?.dead_endpoint_first ? await silentEndpoint() : undefined;
    const endpoints = [leaderURL];
    if (silent) endpoints.unshift(silent.url);
    // An election can move the lead, so a follower is picked when needed:
    // a node that follows a known leader now.
    const followerNow = async (): Promise<string> =>
      (await eventually(
        "a node follows a known leader",
        async () => {
          for (const n of cluster?.nodes ?? []) {
            const c = rawAt(n.url).lock;
            const st = await c.status({}).catch(() => undefined);
            if (st?.node?.role === "follower" && st.node.leaderUrl) return n.url;
          }
          return undefined;
        },
        30_000,
      )) as string;
    // The raw calls carry the admin token, which every server takes.
    const rawAt = (url: string) => {
      const transport = withToken(
        createConnectTransport({ baseUrl: url, httpVersion: "2" }),
        process.env.DLM_TOKEN || testAdminToken,
      );
      return { lock: createClient(LockService, transport), cluster: createClient(ClusterService, transport) };
    };
    if (sc.client_options?.follower_first) endpoints.unshift(await followerNow());
    const atLeader = rawAt(leaderURL);
    const raw = atLeader.lock;
    // The raw steps go to the server as it is: wait until it leads.
    await eventually("the server leads", async () => (await raw.status({ consistent: true }), true), 30_000);
    let retries = 0;
    const opts: dlm.ClientOptions = {
      retryBudgetMs: 10_000,
      attemptTimeoutMs: 2000,
      keepAlive: false,
      logger: {
        debug: (msg) => {
          if (msg === "dlm: retrying") retries++;
        },
        info() {},
        warn() {},
      },
    };
    const tok = sc.client_options?.token;
    if (tok) opts.token = table.tokens[tok];
    const vars = new Map<string, string>();
    const clients: dlm.Client[] = [];
    let lock: dlm.Lock | undefined;
    try {
      for (const [i, st] of sc.steps.entries()) {
        const what = `step ${i + 1} (${st.rpc ?? st.client})`;
        retries = 0;
        let err: unknown;
        try {
          if (st.rpc) {
            let body = JSON.stringify(st.request ?? {});
            for (const [k, v] of vars) body = body.replaceAll("${" + k + "}", v);
            const onCluster = st.rpc in clusterSchemas;
            const schema = onCluster
              ? clusterSchemas[st.rpc as keyof typeof clusterSchemas]
              : schemas[st.rpc as keyof typeof schemas];
            assert.ok(schema, `no rpc ${st.rpc} in the runner`);
            const req = fromJson(schema, JSON.parse(body) as JsonValue);
            const at = st.at === "follower" ? rawAt(await followerNow()) : atLeader;
            const service = onCluster ? at.cluster : at.lock;
            const call = (service as unknown as Record<string, (r: unknown) => Promise<Record<string, unknown>>>)[
              st.rpc[0].toLowerCase() + st.rpc.slice(1)
            ];
            const res = await call(req);
            // ListMembers saves the first member's id and Raft address.
            const members = res.members as { id: string; raftAddress: string }[] | undefined;
            if (st.save && members?.length) {
              vars.set(`${st.save}.id`, members[0].id);
              vars.set(`${st.save}.raft_address`, members[0].raftAddress);
            }
            if (st.save) {
              for (const [field, key] of [
                ["client_id", "clientId"],
                ["secret", "secret"],
                ["token", "token"],
              ]) {
                if (res[key] !== undefined) vars.set(`${st.save}.${field}`, String(res[key]));
              }
            }
          } else {
            switch (st.client) {
              case "open":
                clients.push(await dlm.Client.open(endpoints, opts));
                break;
              case "acquire":
                lock = await clients[clients.length - 1].acquire({ lock: st.lock, mode: st.mode });
                break;
              case "append":
                await lock?.append(st.file ?? "", new TextEncoder().encode(st.data ?? ""));
                break;
              case "release":
                await lock?.release();
                break;
              case "close":
                await clients.pop()?.close();
                break;
              default:
                assert.fail(`${what}: no client call ${st.client}`);
            }
          }
        } catch (e) {
          err = e;
        }
        const x = st.expect;
        const retried = st.rpc && err !== undefined ? retryable(err) : retries > 0;
        if (x.retried !== undefined) {
          assert.equal(retried, x.retried, `${what}: retried ${retried}, want ${x.retried} (${String(err)})`);
        }
        if (x.ok) {
          assert.equal(err, undefined, `${what}: ${String(err)}`);
          continue;
        }
        assert.notEqual(err, undefined, `${what} succeeded; want ${x.reason}`);
        const e = toDlmError(err);
        assert.equal(`ERROR_REASON_${ErrorReason[e.reason]}`, x.reason, `${what}: ${e.message}`);
        assert.equal(snake(e.code), x.code, `${what}: ${e.message}`);
        const cls = (dlm as unknown as Record<string, unknown>)[`${x.error}Error`];
        assert.ok(typeof cls === "function" && e instanceof cls, `${what}: ${e.name} is not ${x.error}Error`);
      }
    } finally {
      await Promise.all(clients.map((c) => c.close().catch(() => {})));
      await silent?.close();
      await srv?.stop();
      await cluster?.stop();
      rmSync(dir, { recursive: true, force: true });
    }
  });
}
