// The token option: every call, through every transport, carries it as
// `Authorization: Bearer <token>`. The servers here are a real Connect server
// (h2c for node:http2, HTTP/1.1 for fetch) that records the header of each
// call.
import assert from "node:assert/strict";
import { createServer as createHttp1Server, type Server as Http1Server } from "node:http";
import { createServer, type Http2Server } from "node:http2";
import type { AddressInfo } from "node:net";
import { after, before, describe, test } from "node:test";

import { Code, ConnectError } from "@connectrpc/connect";
import { connectNodeAdapter } from "@connectrpc/connect-node";

import { LockService } from "../src/api.ts";
import { Client, Reader, type Transports, webTransports } from "../src/index.ts";
import { nodeTransports } from "../src/node.ts";

/** The Authorization header of each call, with the method's name. */
let seen: { method: string; authorization: string | null }[] = [];
let h2: Http2Server;
let h1: Http1Server;
/** The base URLs of the HTTP/2 (h2c) and the HTTP/1.1 server. */
let h2url: string;
let h1url: string;

before(async () => {
  let nextId = 1n;
  const handler = connectNodeAdapter({
    routes(router) {
      router.service(LockService, {
        init: () => ({ clientId: nextId++, secret: "s", leaseMs: 10_000 }),
        keepAlive: () => ({ leaseMs: 10_000 }),
        close: () => ({}),
        status: () => ({}),
      });
    },
    interceptors: [
      (next) => async (req) => {
        seen.push({ method: req.method.name, authorization: req.header.get("Authorization") });
        if (req.header.get("Authorization") === "Bearer refuse-me") {
          throw new ConnectError("this server requires a token", Code.Unauthenticated);
        }
        return next(req);
      },
    ],
  });
  h2 = createServer(handler);
  h1 = createHttp1Server(handler);
  await new Promise<void>((res) => h2.listen(0, "127.0.0.1", res));
  await new Promise<void>((res) => h1.listen(0, "127.0.0.1", res));
  h2url = `http://127.0.0.1:${(h2.address() as AddressInfo).port}`;
  h1url = `http://127.0.0.1:${(h1.address() as AddressInfo).port}`;
});

after(async () => {
  h1?.closeAllConnections();
  await Promise.all([new Promise((r) => h2?.close(r)), new Promise((r) => h1?.close(r))]);
});

const transports: [string, () => Transports, () => string][] = [
  ["connect over node:http2", () => nodeTransports(), () => h2url],
  ["grpc over node:http2", () => nodeTransports({ protocol: "grpc" }), () => h2url],
  ["connect over fetch", () => webTransports(), () => h1url],
  ["grpc-web over fetch", () => webTransports({ protocol: "grpc-web" }), () => h1url],
];

describe("token", () => {
  for (const [name, make, base] of transports) {
    test(`every call carries it: ${name}`, async () => {
      const url = base();
      seen = [];
      const t = make();
      const reader = new Reader([url], { transports: t, token: "read-token_1.x" });
      await reader.status();
      t.close?.();
      const t2 = make();
      const c = await Client.open([url], { transports: t2, token: "client-token", keepAlive: true });
      await c.close();
      t2.close?.();
      const methods = seen.map((s) => s.method);
      assert.deepEqual(methods.slice(0, 2), ["Status", "Init"]);
      assert.ok(methods.includes("Close"), methods.join(","));
      assert.equal(seen[0].authorization, "Bearer read-token_1.x");
      for (const s of seen.slice(1)) {
        assert.equal(s.authorization, "Bearer client-token", s.method);
      }
    });

    test(`no token, no header: ${name}`, async () => {
      const url = base();
      seen = [];
      const t = make();
      await new Reader([url], { transports: t }).status();
      t.close?.();
      assert.deepEqual(seen, [{ method: "Status", authorization: null }]);
    });
  }

  test("a refused token is an Unauthenticated error, not retried as unavailable", async () => {
    seen = [];
    const reader = new Reader([h1url], { token: "refuse-me", retryBudgetMs: 5000 });
    await assert.rejects(reader.status(), (err: Error & { code?: Code }) => {
      assert.equal(err.code, Code.Unauthenticated, err.message);
      return true;
    });
    assert.equal(seen.length, 1);
  });

  test("a token that cannot go in a header is refused at once", () => {
    for (const bad of ["two words", "line\nbreak", "é"]) {
      assert.throws(() => new Reader([h1url], { token: bad }), TypeError);
    }
  });
});
