import assert from "node:assert/strict";
import { InflightTable, NO_INFLIGHT } from "../../src/broker/inflight.ts";
import { type OutEntry, packetIdOfSeq, Session } from "../../src/broker/session.ts";

function entry(packetId: number, seq: number): OutEntry {
  const msg = { topic: "t", payload: new Uint8Array(0), qos: 1 as const, retain: false, receivedAt: 0 };
  return { seq, msg, qos: 1, retain: false, state: "publish", packetId };
}

Deno.test("inflight table: ids that share a slot (as from the store) are all kept", () => {
  const table = new InflightTable();
  // 1, 9, 17, ... all map to slot 1 of 8 slots; 65535 and 32767 differ only in the top bit.
  const ids = [1, 9, 17, 25, 33, 1025, 32767, 65535];
  ids.forEach((id, i) => table.add(entry(id, 100 + i)));
  assert.equal(table.size, ids.length);
  for (const id of ids) assert.equal(table.get(id)?.packetId, id);
  assert.equal(table.get(2), undefined);
  assert.equal(table.has(41), false);
  assert.deepEqual(table.values().map((e) => e.packetId), ids);
});

Deno.test("inflight table: delete, replace and values in seq order", () => {
  const table = new InflightTable();
  table.add(entry(5, 30));
  table.add(entry(3, 10));
  table.add(entry(4, 20));
  assert.equal(table.delete(4), true);
  assert.equal(table.delete(4), false);
  assert.equal(table.delete(12), false); // same slot as 4 in a table of 8, not in it
  table.add(entry(3, 40)); // same id again: replaces
  assert.equal(table.size, 2);
  assert.deepEqual(table.values().map((e) => [e.packetId, e.seq]), [[5, 30], [3, 40]]);
  assert.equal(table.delete(5) && table.delete(3), true);
  assert.equal(table.size, 0);
  assert.deepEqual(table.values(), []);
});

Deno.test("inflight table: the packet id allocator never hands out an id in flight, across wrap-around", () => {
  const session = new Session("c");
  const live: number[] = [];
  const seen = new Set<number>();
  // A window of 100 where every 7th message is never acknowledged, over three passes of the id space.
  for (let n = 0; n < 200_000; n++) {
    const id = session.allocatePacketId();
    assert.ok(id >= 1 && id <= 65535, `id ${id}`);
    assert.equal(session.inflight.has(id), false, `id ${id} handed out while in flight`);
    session.setInflight(entry(id, n));
    if (n % 7 === 0 && seen.size < 50) seen.add(id);
    else live.push(id);
    if (live.length > 100) session.deleteInflight(live.shift()!);
  }
  assert.equal(session.inflight.size, live.length + seen.size);
  for (const id of [...live, ...seen]) assert.equal(session.inflight.get(id)?.packetId, id);
});

Deno.test("inflight table: the shared empty table reads as empty", () => {
  assert.equal(NO_INFLIGHT.size, 0);
  assert.equal(NO_INFLIGHT.get(1), undefined);
  assert.equal(NO_INFLIGHT.isFree(1), true);
  assert.deepEqual(NO_INFLIGHT.values(), []);
  assert.equal(new Session("x").inflight, NO_INFLIGHT);
});

Deno.test("packet ids follow the sequence number while it names a free id, and say when they do not", () => {
  const session = new Session("c");
  const make = (seq: number): OutEntry => ({ ...entry(0, seq), state: "queued" });
  const first = make(65534 * 3 + 5); // names id 6
  assert.equal(session.assignPacketId(first), true);
  assert.equal(first.packetId, packetIdOfSeq(first.seq));
  assert.equal(first.packetId, (first.seq % 65535) + 1);
  session.setInflight(first);
  const next = make(first.seq + 1);
  assert.equal(session.assignPacketId(next), true);
  assert.equal(next.packetId, first.packetId + 1);
  // 8 slots: the id 8 further on shares the slot of the first, which is still in flight.
  const clash = make(first.seq + 8);
  assert.equal(session.assignPacketId(clash), false);
  assert.notEqual(clash.packetId, packetIdOfSeq(clash.seq));
  assert.notEqual(clash.packetId, first.packetId);
  assert.equal(packetIdOfSeq(65534), 65535);
  assert.equal(packetIdOfSeq(65535), 1);
  const big = Date.now() * 1000 + 7; // sequence numbers start from the clock
  assert.equal(packetIdOfSeq(big), (big % 65535) + 1);
});
