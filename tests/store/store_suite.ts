/**
 * Behaviour every {@link Store} must show, run against each back end by `memory_test.ts` and
 * `kv_test.ts`. The fixture gives a fresh store and a way to reopen its data (a new KvStore on the
 * same file; the same MemoryStore closed and opened again).
 *
 * @module
 */

import assert from "node:assert/strict";
import type {
  OutboundRecord,
  OutboundSource,
  RestoredState,
  SessionRecord,
  Store,
  StoredMessage,
  StoreOp,
} from "../../src/store/store.ts";
import { outboundRecordOf, StoreError } from "../../src/store/store.ts";

/** One store under test and its data. */
export interface Fixture {
  /** A new store, not opened yet. */
  store: Store;
  /** Closes `store` (the current handle) and returns an opened store on the same data. */
  reopen(store: Store): Promise<Store>;
  /** Removes whatever the fixture created (temp dirs). The test closes its stores first. */
  cleanup(): Promise<void>;
}

/** How to make fixtures for one back end. */
export interface StoreHarness {
  name: string;
  setup(): Promise<Fixture>;
}

/** A retained / queued message with sensible defaults. */
export function message(
  topic: string,
  payload: Uint8Array | string,
  extra: Partial<StoredMessage> = {},
): StoredMessage {
  return {
    topic,
    payload: typeof payload === "string" ? new TextEncoder().encode(payload) : payload,
    qos: 1,
    retain: false,
    receivedAt: 1_700_000_000_000,
    ...extra,
  };
}

/** A session with one subscription. */
export function session(clientId: string, filters: string[] = ["a/#"]): SessionRecord {
  return {
    clientId,
    protocolVersion: 5,
    expiryInterval: 3600,
    subscriptions: filters.map((filter) => ({
      filter,
      qos: 1,
      noLocal: false,
      retainAsPublished: false,
      retainHandling: 0,
    })),
  };
}

/** A queued outbound record. */
export function queued(
  clientId: string,
  seq: number,
  payload: Uint8Array | string = `m${seq}`,
): OutboundRecord {
  return { clientId, seq, state: "queued", message: message(`q/${clientId.slice(0, 20)}`, payload) };
}

/** Bytes whose content depends on `seed`, so a mix-up between records shows. */
export function pattern(length: number, seed: number): Uint8Array {
  const b = new Uint8Array(length);
  for (let i = 0; i < length; i++) b[i] = (i * 31 + seed * 7 + (i >> 8)) & 0xff;
  return b;
}

/**
 * Asserts two byte arrays are equal. assert.deepEqual would build a diff of every element on failure,
 * which takes minutes for a 100 KiB payload; this names the first difference instead.
 */
export function assertBytes(actual: Uint8Array | undefined, expected: Uint8Array, what: string): void {
  assert.ok(actual instanceof Uint8Array, `${what}: expected a Uint8Array, got ${typeof actual}`);
  assert.equal(actual.length, expected.length, `${what}: length`);
  const i = actual.findIndex((b, j) => b !== expected[j]);
  assert.equal(i, -1, `${what}: first difference at byte ${i}`);
}

/** Runs `body` on an opened store of a fresh fixture and always closes and cleans up. */
export async function withStore(
  h: StoreHarness,
  body: (store: Store, reopen: (s: Store) => Promise<Store>) => Promise<Store | void>,
): Promise<void> {
  const fx = await h.setup();
  let current = fx.store;
  try {
    await current.open();
    const reopen = async (s: Store) => current = await fx.reopen(s);
    const last = await body(current, reopen);
    if (last) current = last;
  } finally {
    await current.close().catch(() => {});
    await fx.cleanup();
  }
}

function applyAll(store: Store, ops: StoreOp[]): void {
  for (const op of ops) store.apply(op);
}

/** A session entry as the broker hands it to putOutbound. */
export function source(seq: number, extra: Partial<OutboundSource> = {}): OutboundSource {
  return { seq, qos: 1, retain: false, msg: message(`s/${seq}`, `payload ${seq}`), ...extra };
}

function outboundKeys(state: RestoredState): string[] {
  return state.outbound.map((r) => `${r.clientId}/${r.seq}`);
}

/** Registers the shared tests for one back end. */
export function storeSuite(h: StoreHarness): void {
  const test = (name: string, fn: () => Promise<void>) => Deno.test(`${h.name}: ${name}`, fn);

  test("every op type is applied and survives a reopen", async () => {
    await withStore(h, async (store, reopen) => {
      const full: SessionRecord = {
        clientId: "client-1",
        protocolVersion: 4,
        expiryInterval: 0xffffffff,
        disconnectedAt: 1_700_000_123_456,
        subscriptions: [
          {
            filter: "a/+/c",
            qos: 2,
            noLocal: true,
            retainAsPublished: true,
            retainHandling: 2,
            subscriptionId: 268435455,
          },
          { filter: "$share/g/x/#", qos: 0, noLocal: false, retainAsPublished: false, retainHandling: 1 },
        ],
        username: "ünïcode user",
        will: {
          topic: "wills/client-1",
          payload: new Uint8Array(70_000).fill(7), // more than one value: chunked in kv
          qos: 1,
          retain: true,
          properties: { willDelayInterval: 30, contentType: "text/plain", userProperties: [["a", "b"]] },
        },
        willDueAt: 1_700_000_153_456,
      };
      const retained = message("r/1", "retained", {
        qos: 2,
        retain: true,
        expiresAt: 1_800_000_000_000,
        properties: {
          payloadFormatIndicator: 1,
          messageExpiryInterval: 600,
          contentType: "text/plain; charset=ütf-8",
          responseTopic: "reply/to",
          correlationData: new Uint8Array([0, 1, 2, 255]),
          subscriptionIdentifiers: [1, 300000],
          userProperties: [["k", "v"], ["k", "v2"], ["ключ", "значение"]],
        },
      });
      const publish: OutboundRecord = {
        clientId: "client-1",
        seq: 2,
        state: "publish",
        packetId: 65535,
        message: message("o/2", new Uint8Array(0), { qos: 2 }),
      };
      const pubrel: OutboundRecord = { clientId: "client-1", seq: 3, state: "pubrel", packetId: 7 };
      applyAll(store, [
        { op: "session.put", session: full },
        { op: "session.put", session: session("client-2") },
        { op: "retained.put", message: retained },
        { op: "retained.put", message: message("r/2", "gone soon") },
        { op: "outbound.put", record: queued("client-1", 1) },
        { op: "outbound.put", record: publish },
        { op: "outbound.put", record: pubrel },
        { op: "outbound.put", record: queued("client-2", 9) },
        { op: "incoming.put", clientId: "client-1", packetId: 1 },
        { op: "incoming.put", clientId: "client-1", packetId: 65535 },
        { op: "incoming.put", clientId: "client-2", packetId: 5 },
      ]);
      await store.flush();
      // Deletes in a later batch, so they hit committed records.
      applyAll(store, [
        { op: "retained.delete", topic: "r/2" },
        { op: "outbound.delete", clientId: "client-1", seq: 1 },
        { op: "incoming.delete", clientId: "client-1", packetId: 1 },
        { op: "session.delete", clientId: "client-2" },
      ]);
      await store.flush();
      const reopened = await reopen(store);
      const state = await reopened.load();
      assert.deepEqual(state.sessions, [full]);
      assert.deepEqual(state.retained, [retained]);
      assert.deepEqual(state.outbound, [publish, pubrel]);
      assert.deepEqual(state.incoming, [{ clientId: "client-1", packetId: 65535 }]);
      return reopened;
    });
  });

  test("records are copied at apply: later changes by the caller do not leak in", async () => {
    await withStore(h, async (store, reopen) => {
      const s = session("c", ["x"]);
      const payload = new TextEncoder().encode("original");
      store.apply({ op: "session.put", session: s });
      store.apply({ op: "retained.put", message: message("t", payload) });
      s.subscriptions.push({
        filter: "y",
        qos: 0,
        noLocal: false,
        retainAsPublished: false,
        retainHandling: 0,
      });
      payload.fill(0);
      await store.flush();
      const reopened = await reopen(store);
      const state = await reopened.load();
      assert.deepEqual(state.sessions[0].subscriptions.map((x) => x.filter), ["x"]);
      assert.equal(new TextDecoder().decode(state.retained[0].payload), "original");
      return reopened;
    });
  });

  test("putOutbound stores the record outbound.put would, and deleteOutbound removes it", async () => {
    await withStore(h, async (store, reopen) => {
      const props = message("x", "", { properties: { contentType: "text/plain" }, qos: 2, retain: true });
      const sent = source(2, {
        qos: 2,
        retain: true,
        subscriptionIds: [3, 4],
        msg: { ...props, topic: "s/2" },
        share: { group: "g", filter: "s/#" },
      });
      const sources = [source(1), sent, source(3), source(4, { qos: 2 })];
      store.putOutbound("c", "queued", 0, sources[0]);
      store.putOutbound("c", "publish", 9, sent);
      store.putOutbound("c", "queued", 0, sources[2]);
      store.deleteOutbound("c", 3); // put and deleted in one batch
      await store.flush();
      store.putOutbound("c", "publish", 65535, sources[3]);
      store.deleteOutbound("c", 1); // committed in the batch before
      await store.flush();
      const reopened = await reopen(store);
      const state = await reopened.load();
      assert.deepEqual(
        JSON.parse(JSON.stringify(state.outbound, (_, v) => v instanceof Uint8Array ? [...v] : v)),
        JSON.parse(JSON.stringify(
          [outboundRecordOf("c", "publish", 9, sent), outboundRecordOf("c", "publish", 65535, sources[3])],
          (_, v) => v instanceof Uint8Array ? [...v] : v,
        )),
      );
      assert.deepEqual(state.outbound[0].message?.properties, {
        contentType: "text/plain",
        subscriptionIdentifiers: [3, 4],
      });
      assert.deepEqual(state.outbound[0].share, { group: "g", filter: "s/#" });
      assert.equal(state.outbound[1].share, undefined);
      return reopened;
    });
  });

  test("outbound comes back ordered by clientId then seq, whatever the apply order", async () => {
    await withStore(h, async (store, reopen) => {
      const seqs = [300, 2, 2 ** 40, 1, 256, 0, 65536, 255];
      for (const seq of seqs) store.apply({ op: "outbound.put", record: queued("b", seq) });
      await store.flush();
      for (const seq of [5, 3]) store.apply({ op: "outbound.put", record: queued("a", seq) });
      store.apply({ op: "outbound.put", record: queued("a".repeat(300), 1) }); // hashed key, sorts by id anyway
      await store.flush();
      const reopened = await reopen(store);
      const state = await reopened.load();
      const sorted = [...seqs].sort((x, y) => x - y);
      assert.deepEqual(outboundKeys(state), [
        "a/3",
        "a/5",
        `${"a".repeat(300)}/1`,
        ...sorted.map((s) => `b/${s}`),
      ]);
      return reopened;
    });
  });

  test("a 200 KiB payload is stored and restored byte for byte", async () => {
    await withStore(h, async (store, reopen) => {
      const big = pattern(200 * 1024, 1);
      const big2 = pattern(200 * 1024 + 17, 2);
      store.apply({ op: "retained.put", message: message("big", big) });
      store.apply({ op: "outbound.put", record: queued("c", 1, big2) });
      store.apply({ op: "outbound.put", record: queued("c", 2, "small after big") });
      await store.flush();
      const reopened = await reopen(store);
      const state = await reopened.load();
      assert.equal(state.retained.length, 1);
      assertBytes(state.retained[0].payload, big, "retained payload");
      assert.equal(state.outbound.length, 2);
      assertBytes(state.outbound[0].message!.payload, big2, "outbound 1 payload");
      assert.equal(new TextDecoder().decode(state.outbound[1].message!.payload), "small after big");
      return reopened;
    });
  });

  test("a big record can be replaced by a smaller one and deleted", async () => {
    await withStore(h, async (store, reopen) => {
      store.apply({ op: "retained.put", message: message("t", pattern(300 * 1024, 3)) });
      store.apply({ op: "retained.put", message: message("u", pattern(150 * 1024, 4)) });
      await store.flush();
      store.apply({ op: "retained.put", message: message("t", pattern(70 * 1024, 5)) });
      store.apply({ op: "retained.delete", topic: "u" });
      await store.flush();
      let reopened = await reopen(store);
      let state = await reopened.load();
      assert.deepEqual(state.retained.map((m) => m.topic), ["t"]);
      assertBytes(state.retained[0].payload, pattern(70 * 1024, 5), "replaced payload");
      reopened.apply({ op: "retained.put", message: message("t", "tiny") });
      await reopened.flush();
      reopened = await reopen(reopened);
      state = await reopened.load();
      assert.deepEqual(state.retained.map((m) => [m.topic, new TextDecoder().decode(m.payload)]), [[
        "t",
        "tiny",
      ]]);
      return reopened;
    });
  });

  test("a 5000-character topic and a long client id work in every bucket", async () => {
    await withStore(h, async (store, reopen) => {
      const topic = "t/" + "ü/".repeat(1666) + "x"; // 5000+ chars, multi-byte UTF-8
      const other = topic.slice(0, -1) + "y"; // same long prefix: hashes must differ
      const clientId = "client-" + "é".repeat(3000);
      applyAll(store, [
        { op: "retained.put", message: message(topic, "long") },
        { op: "retained.put", message: message(other, "other") },
        { op: "session.put", session: session(clientId, [topic]) },
        { op: "outbound.put", record: { clientId, seq: 1, state: "queued", message: message(topic, "q") } },
        { op: "incoming.put", clientId, packetId: 42 },
      ]);
      await store.flush();
      store.apply({ op: "retained.delete", topic: other });
      await store.flush();
      const reopened = await reopen(store);
      const state = await reopened.load();
      assert.deepEqual(state.retained.map((m) => m.topic), [topic]);
      assert.deepEqual(state.sessions.map((s) => [s.clientId, s.subscriptions[0].filter]), [[
        clientId,
        topic,
      ]]);
      assert.deepEqual(state.outbound.map((r) => [r.clientId, r.message!.topic]), [[clientId, topic]]);
      assert.deepEqual(state.incoming, [{ clientId, packetId: 42 }]);
      return reopened;
    });
  });

  test("a batch of more than 1000 records and more than 800 KB in one tick is stored whole", async () => {
    await withStore(h, async (store, reopen) => {
      for (let seq = 1; seq <= 2500; seq++) store.apply({ op: "outbound.put", record: queued("many", seq) });
      for (let i = 0; i < 30; i++) {
        store.apply({ op: "retained.put", message: message(`big/${i}`, pattern(40 * 1024, i)) });
      }
      for (let i = 0; i < 1200; i++) {
        store.apply({ op: "incoming.put", clientId: `c${i % 7}`, packetId: i + 1 });
      }
      await store.flush();
      const reopened = await reopen(store);
      const state = await reopened.load();
      assert.equal(state.outbound.length, 2500);
      assert.deepEqual(state.outbound.map((r) => r.seq), Array.from({ length: 2500 }, (_, i) => i + 1));
      assert.equal(state.retained.length, 30);
      for (const m of state.retained) {
        assertBytes(m.payload, pattern(40 * 1024, Number(m.topic.slice(4))), m.topic);
      }
      assert.equal(state.incoming.length, 1200);
      return reopened;
    });
  });

  test("ops on one key within a batch: the last one wins", async () => {
    await withStore(h, async (store, reopen) => {
      applyAll(store, [
        // put then delete: gone
        { op: "outbound.put", record: queued("c", 1) },
        { op: "outbound.delete", clientId: "c", seq: 1 },
        // put, delete, put again: the last put
        { op: "outbound.put", record: queued("c", 2, "first") },
        { op: "outbound.delete", clientId: "c", seq: 2 },
        { op: "outbound.put", record: queued("c", 2, "second") },
        // state changes of one in-flight message: the last state
        { op: "outbound.put", record: { ...queued("c", 3), state: "publish", packetId: 10 } },
        { op: "outbound.put", record: { clientId: "c", seq: 3, state: "pubrel", packetId: 10 } },
        // several session.put: the last
        { op: "session.put", session: session("c", ["one"]) },
        { op: "session.put", session: session("c", ["two"]) },
        { op: "session.put", session: session("c", ["three"]) },
        { op: "incoming.put", clientId: "c", packetId: 1 },
        { op: "incoming.delete", clientId: "c", packetId: 1 },
        { op: "retained.put", message: message("r", "x") },
        { op: "retained.delete", topic: "r" },
        { op: "retained.delete", topic: "never-existed" },
      ]);
      await store.flush();
      const reopened = await reopen(store);
      const state = await reopened.load();
      assert.deepEqual(outboundKeys(state), ["c/2", "c/3"]);
      assert.equal(new TextDecoder().decode(state.outbound[0].message!.payload), "second");
      assert.equal(state.outbound[1].state, "pubrel");
      assert.deepEqual(state.sessions.map((s) => s.subscriptions[0].filter), ["three"]);
      assert.deepEqual(state.incoming, []);
      assert.deepEqual(state.retained, []);
      return reopened;
    });
  });

  test("session.delete removes the client's outbound and inbound records, committed or not", async () => {
    await withStore(h, async (store, reopen) => {
      applyAll(store, [
        { op: "session.put", session: session("gone") },
        { op: "session.put", session: session("kept") },
        { op: "outbound.put", record: queued("gone", 1) },
        { op: "outbound.put", record: queued("gone", 2, pattern(150 * 1024, 9)) },
        { op: "incoming.put", clientId: "gone", packetId: 3 },
        { op: "outbound.put", record: queued("kept", 1) },
        { op: "incoming.put", clientId: "kept", packetId: 3 },
        { op: "retained.put", message: message("gone", "retained is not owned by a session") },
      ]);
      await store.flush();
      applyAll(store, [
        { op: "outbound.put", record: queued("gone", 3) }, // uncommitted, before the delete
        { op: "session.delete", clientId: "gone" },
        { op: "outbound.put", record: queued("gone", 2, "after the delete") }, // same seq as an old one
      ]);
      await store.flush();
      let reopened = await reopen(store);
      let state = await reopened.load();
      assert.deepEqual(state.sessions.map((s) => s.clientId), ["kept"]);
      assert.deepEqual(outboundKeys(state), ["gone/2", "kept/1"]);
      assert.equal(new TextDecoder().decode(state.outbound[0].message!.payload), "after the delete");
      assert.deepEqual(state.incoming, [{ clientId: "kept", packetId: 3 }]);
      assert.equal(state.retained.length, 1);
      // And a delete in a batch of its own, after a reopen.
      reopened.apply({ op: "session.delete", clientId: "gone" });
      await reopened.flush();
      reopened = await reopen(reopened);
      state = await reopened.load();
      assert.deepEqual(outboundKeys(state), ["kept/1"]);
      return reopened;
    });
  });

  test("flush with nothing pending resolves, and flush calls in one tick share a promise", async () => {
    await withStore(h, async (store) => {
      await store.flush();
      store.apply({ op: "session.put", session: session("c") });
      const a = store.flush();
      const b = store.flush();
      assert.equal(a, b);
      await a;
    });
  });

  test("apply rejects a malformed op with the bad value, and refuses before open", async () => {
    await withStore(h, async (store) => {
      assert.throws(() => store.apply({ op: "outbound.delete", clientId: "c", seq: -1 }), /seq.*-1/);
      assert.throws(() => store.apply({ op: "incoming.put", clientId: "c", packetId: 0 }), /packetId.*0/);
      assert.throws(
        () => store.apply({ op: "retained.put", message: { ...message("t", "x"), qos: 3 as 0 } }),
        /qos.*3/,
      );
      assert.throws(() => store.apply({ op: "nope" } as unknown as StoreOp), /unknown store op "nope"/);
      await store.flush();
    });
    const fx = await h.setup();
    try {
      assert.throws(() => fx.store.apply({ op: "session.delete", clientId: "c" }), StoreError);
    } finally {
      await fx.cleanup();
    }
  });
}
