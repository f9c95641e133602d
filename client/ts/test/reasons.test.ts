// The client's reading of the proto's reason_spec and retry_policy options,
// and its memory of refused endpoints. No server needed.
import assert from "node:assert/strict";
import { test } from "node:test";

import { Code, ConnectError } from "@connectrpc/connect";
import { createConnectTransport } from "@connectrpc/connect-node";

import { ErrorReason, ErrorReasonSchema, RetryClass } from "../src/api.ts";
import { DlmError, errorClass, retryable } from "../src/errors.ts";
import { policy, reasonSpecs } from "../src/reasons.ts";
import { backoff, Endpoints } from "../src/retry.ts";

test("every reason has a spec and an error class", () => {
  for (const v of ErrorReasonSchema.values) {
    if (v.number === ErrorReason.UNSPECIFIED) {
      continue;
    }
    const spec = reasonSpecs.get(v.number);
    assert.ok(spec, `${v.name} has no reason_spec`);
    assert.notEqual(spec.retry, RetryClass.UNSPECIFIED, v.name);
    assert.ok(errorClass(v.number), `${v.name}: no class named ${spec.clientError}`);
  }
  assert.ok(policy.backoffBaseMs > 0 && policy.backoffMaxMs >= policy.backoffBaseMs);
  assert.ok(policy.refusedForMs > 0 && policy.maxRedirects > 0);
});

test("backoff stays within the proto's cap", () => {
  for (let n = 1; n <= 40; n++) {
    const ceiling = Math.min(policy.backoffBaseMs * 2 ** (n - 1), policy.backoffMaxMs);
    for (let i = 0; i < 50; i++) {
      const d = backoff(n);
      assert.ok(d >= ceiling / 2 && d <= ceiling, `backoff(${n}) = ${d}`);
    }
  }
});

test("a reason newer than the client falls back on the code", () => {
  const err = new ConnectError("later", Code.Unavailable);
  assert.equal(retryable(err), true);
});

test("a refused endpoint is not taken as the leader on a follower's word", () => {
  const urls = ["http://127.0.0.1:1", "http://127.0.0.1:2", "http://127.0.0.1:3"];
  const eps = new Endpoints(urls, (u) => createConnectTransport({ baseUrl: u, httpVersion: "2" }));
  // The first endpoint refuses the connection: no answer, no reason.
  assert.equal(eps.failed(urls[0], new DlmError("refused", { code: Code.Unavailable })), false);
  assert.equal(eps.pick().url, urls[1]);
  // The second, a follower, still names the first as the leader: the
  // client moves on to the third instead of bouncing back.
  const notLeader = new DlmError("not leader", { code: Code.Unavailable, reason: ErrorReason.NOT_LEADER, leaderUrl: urls[0] });
  assert.equal(eps.failed(urls[1], notLeader), false);
  assert.equal(eps.pick().url, urls[2]);
  // A leader named by a follower that did not refuse is followed at once.
  const toSecond = new DlmError("not leader", { code: Code.Unavailable, reason: ErrorReason.NOT_LEADER, leaderUrl: urls[1] });
  assert.equal(eps.failed(urls[2], toSecond), true);
  assert.equal(eps.pick().url, urls[1]);
});
