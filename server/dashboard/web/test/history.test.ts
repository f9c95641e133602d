// Tests of the lock views' pure parts: the sample ring, counting new grants
// by token, and the timeline's rows and lanes. No browser needed.
import assert from "node:assert/strict";
import { describe, test } from "node:test";

import { create } from "@bufbuild/protobuf";

import { LockEnd, type LockEvent, LockEventSchema, LockMode } from "../../../../client/ts/src/api.ts";
import { backfill, endLabel, layout, lockLabel, newGrants, niceMax, Ring } from "../src/history.ts";

function ev(lock: string, token: number, granted: number, ended = 0, end = LockEnd.UNSPECIFIED, mode = LockMode.EXCLUSIVE): LockEvent {
  return create(LockEventSchema, { lock, token: BigInt(token), grantedUnixMs: BigInt(granted), endedUnixMs: BigInt(ended), end, mode });
}

describe("history", () => {
  test("the ring keeps the newest items only", () => {
    const r = new Ring<number>(3);
    for (let i = 1; i <= 5; i++) {
      r.push(i);
    }
    assert.deepEqual(r.all(), [3, 4, 5]);
    assert.deepEqual(r.since(4, (x) => x), [4, 5]);
  });

  test("new grants are counted by token, and a turned-over ring says so", () => {
    const events = [ev("a", 5, 0), ev("b", 7, 0), ev("a", 9, 0)];
    assert.deepEqual(newGrants(events, 0n, 1024), { count: 3, last: 9n, clipped: false });
    assert.deepEqual(newGrants(events, 7n, 1024), { count: 1, last: 9n, clipped: false });
    assert.deepEqual(newGrants(events, 9n, 1024), { count: 0, last: 9n, clipped: false });
    // Every event of a full ring is new: more may have been granted.
    assert.deepEqual(newGrants(events, 2n, 3), { count: 3, last: 9n, clipped: true });
  });

  test("the timeline has a row per lock, the default first, and stacks overlapping grants in lanes", () => {
    const events = [
      ev("b", 1, 100, 200, LockEnd.RELEASED),
      ev("", 2, 150, 300, LockEnd.EXPIRED),
      ev("b", 3, 200, 400, LockEnd.CLOSED, LockMode.SHARED),
      ev("b", 4, 250, 0, LockEnd.UNSPECIFIED, LockMode.SHARED),
      ev("b", 5, 350, 500, LockEnd.ABORTED),
      ev("old", 6, 0, 50, LockEnd.RELEASED),
    ];
    const { rows, more } = layout(events, 90, 1000, 10);
    assert.equal(more, 0);
    assert.deepEqual(rows.map((r) => r.lock), ["", "b"], "a grant that ended before the window has no row");
    const b = rows[1];
    assert.equal(b.lanes, 3);
    // 1 ends as 3 starts: 3 reuses its lane; 4 overlaps 3; 5 overlaps 3
    // and the held 4.
    assert.deepEqual(b.bars.map((x) => [Number(x.event.token), x.lane]), [[1, 0], [3, 0], [4, 1], [5, 2]]);
    const held = b.bars.find((x) => x.event.token === 4n);
    assert.equal(held?.end, 1000, "a held grant runs to now");
    assert.equal(rows[0].bars[0].start, 150);
  });

  test("the timeline keeps the locks granted most recently", () => {
    const events = [ev("x", 1, 10, 20, LockEnd.RELEASED), ev("y", 2, 30, 40, LockEnd.RELEASED), ev("z", 3, 50, 0)];
    const { rows, more } = layout(events, 0, 100, 2);
    assert.deepEqual(rows.map((r) => r.lock), ["y", "z"]);
    assert.equal(more, 1);
  });

  test("the chart's past is rebuilt from the grant times, from the oldest one a full ring remembers", () => {
    const events = [ev("a", 1, 1500), ev("a", 2, 2200), ev("b", 3, 2900), ev("a", 4, 3000)];
    // Bins of 1 s ending at 4000: (1000, 2000], (2000, 3000], (3000, 4000].
    assert.deepEqual(
      backfill(events, 1024, 1000, 4000, 1000).map((s) => [s.t, s.rate, s.queue]),
      [[2000, 1, undefined], [3000, 3, undefined], [4000, 0, undefined]],
    );
    // A full ring forgot what came before its oldest grant.
    assert.deepEqual(backfill(events, 4, 0, 4000, 1000).map((s) => [s.t, s.rate]), [[3000, 3], [4000, 0]]);
  });

  test("labels and scales", () => {
    assert.equal(lockLabel(""), "(default)");
    assert.equal(endLabel(LockEnd.EXPIRED), "expired");
    assert.equal(endLabel(LockEnd.UNSPECIFIED), "held");
    assert.deepEqual([0, 0.3, 1, 3, 7, 12, 250].map(niceMax), [1, 0.5, 1, 5, 10, 20, 500]);
  });
});
