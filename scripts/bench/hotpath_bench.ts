/**
 * The broker's per-message cost without the kernel: nanoseconds per delivery through the real Broker,
 * Client, decoder, router, encoder and StreamTransport, over in-memory connections instead of sockets.
 *
 * ```sh
 * deno task bench:hotpath [--messages 2000000] [--rounds 5] [--only qos0,qos1]
 * taskset -c 0 deno task bench:hotpath    # pinned, as the numbers in docs/performance_log.md were taken
 * ```
 *
 * Socket benchmarks on a shared VM swing by a factor of two between runs (CPU steal, cache neighbours); this
 * one does no I/O, so before/after numbers of a change to the hot path are comparable within one run.
 * Each scenario runs `--rounds` times; the best round is printed (the least disturbed one). Not a test.
 * With `HOTPATH_STATS=1` in the environment each round also prints the store's commits and mutations.
 *
 * - `qos0`: 1 publisher -> 1 subscriber, QoS 0 (the fan-in path)
 * - `qos0_fanout50`: 1 publisher -> 50 subscribers, QoS 0 (ns per delivery)
 * - `qos1`: QoS 1 publisher -> QoS 1 subscriber that acknowledges every delivery (PUBACK both ways)
 * - `qos1_mqtt5`: the same in MQTT 5
 * - `qos1_persistent_kv`: the QoS 1 flow into a persistent session on the kv store (in a temporary
 *   directory): each message is committed before its PUBACK, so this one includes Deno KV's commits
 *
 * @module
 */

import { parseArgs } from "node:util";
import { Broker } from "../../src/broker/broker.ts";
import { defaultConfig } from "../../src/config/schema.ts";
import { createLogger } from "../../src/log.ts";
import { encode } from "../../src/mqtt/encode.ts";
import type { Packet, ProtocolVersion, QoS } from "../../src/mqtt/types.ts";
import { createStore } from "../../src/store/mod.ts";
import { type ByteConn, StreamTransport } from "../../src/transport/connection.ts";

const { values } = parseArgs({
  args: Deno.args,
  options: {
    messages: { type: "string", default: "2000000" },
    rounds: { type: "string", default: "5" },
    only: { type: "string" },
  },
});
const MESSAGES = Number(values.messages);
const ROUNDS = Number(values.rounds);

const ADDR: Deno.NetAddr = { transport: "tcp", hostname: "127.0.0.1", port: 1 };

/**
 * An in-memory connection: reads come from `feed` (a repeated byte pattern, or one-off bytes), writes are
 * counted and, for subscribers that acknowledge, scanned for PUBLISH packet ids.
 */
class MemConn implements ByteConn {
  readonly remoteAddr = ADDR;
  written = 0;
  publishes = 0;
  /** Bytes to hand to the broker, in order. */
  #pending: Uint8Array[] = [];
  #pendingOff = 0;
  #waiting?: { p: Uint8Array; resolve: (n: number | null) => void };
  /** Called with each write (a subscriber answering its PUBLISH packets). */
  onWrite?: (bytes: Uint8Array) => void;

  feed(bytes: Uint8Array): void {
    this.#pending.push(bytes);
    const w = this.#waiting;
    if (w !== undefined) {
      this.#waiting = undefined;
      w.resolve(this.#take(w.p));
    }
  }

  #take(p: Uint8Array): number {
    const chunk = this.#pending[0];
    const n = Math.min(p.length, chunk.length - this.#pendingOff);
    p.set(chunk.subarray(this.#pendingOff, this.#pendingOff + n));
    this.#pendingOff += n;
    if (this.#pendingOff === chunk.length) {
      this.#pending.shift();
      this.#pendingOff = 0;
    }
    return n;
  }

  read(p: Uint8Array): Promise<number | null> {
    if (this.#pending.length > 0) return Promise.resolve(this.#take(p));
    return new Promise((resolve) => this.#waiting = { p, resolve });
  }

  write(p: Uint8Array): Promise<number> {
    this.written += p.length;
    this.onWrite?.(p);
    return Promise.resolve(p.length);
  }

  close(): void {
    this.#waiting?.resolve(null);
    this.#waiting = undefined;
  }
}

/** Counts PUBLISH packets in a subscriber's output and answers each QoS 1 one with a PUBACK. */
function acknowledger(conn: MemConn): (bytes: Uint8Array) => void {
  let carry = new Uint8Array(0);
  return (chunk) => {
    let bytes = chunk;
    if (carry.length > 0) {
      bytes = new Uint8Array(carry.length + chunk.length);
      bytes.set(carry);
      bytes.set(chunk, carry.length);
    }
    const acks: number[] = [];
    let pos = 0;
    while (pos + 2 <= bytes.length) {
      let len = 0, mult = 1, i = pos + 1;
      for (; i < bytes.length; i++) {
        len += (bytes[i] & 0x7f) * mult;
        mult *= 128;
        if ((bytes[i] & 0x80) === 0) break;
      }
      const start = i + 1;
      if (i >= bytes.length || start + len > bytes.length) break;
      if (bytes[pos] >>> 4 === 3) {
        conn.publishes++;
        if ((bytes[pos] & 0x06) !== 0) {
          const at = start + 2 + ((bytes[start] << 8) | bytes[start + 1]);
          acks.push((bytes[at] << 8) | bytes[at + 1]);
        }
      }
      pos = start + len;
    }
    carry = bytes.slice(pos);
    if (acks.length > 0) {
      const out = new Uint8Array(acks.length * 4);
      for (let k = 0; k < acks.length; k++) {
        out[k * 4] = 0x40;
        out[k * 4 + 1] = 2;
        out[k * 4 + 2] = acks[k] >>> 8;
        out[k * 4 + 3] = acks[k] & 0xff;
      }
      conn.feed(out);
    }
  };
}

const pkt = (p: Packet, v: ProtocolVersion) => encode(p, v);

function connect(broker: Broker, id: string, v: ProtocolVersion, clean = true): MemConn {
  const conn = new MemConn();
  broker.accept(new StreamTransport(conn));
  conn.feed(pkt({
    type: 1,
    protocolName: v === 3 ? "MQIsdp" : "MQTT",
    protocolVersion: v,
    clean,
    keepAlive: 0,
    clientId: id,
  }, v));
  return conn;
}

/** Resolves after every pending microtask ran: a macrotask through a MessageChannel (setTimeout clamps). */
const channel = new MessageChannel();
const waiters: (() => void)[] = [];
channel.port1.onmessage = () => waiters.shift()?.();
const tick = () =>
  new Promise<void>((r) => {
    waiters.push(r);
    channel.port2.postMessage(0);
  });

interface Shape {
  name: string;
  version: ProtocolVersion;
  qos: QoS;
  subscribers: number;
  /** The subscriber keeps a persistent session on the kv store: every message is stored before its PUBACK. */
  persistent?: boolean;
}

const SHAPES: Shape[] = [
  { name: "qos0", version: 4, qos: 0, subscribers: 1 },
  { name: "qos0_fanout50", version: 4, qos: 0, subscribers: 50 },
  { name: "qos1", version: 4, qos: 1, subscribers: 1 },
  { name: "qos1_mqtt5", version: 5, qos: 1, subscribers: 1 },
  { name: "qos1_persistent_kv", version: 4, qos: 1, subscribers: 1, persistent: true },
];

/** One round: wall-clock nanoseconds per delivery (the process does nothing else). */
async function round(shape: Shape): Promise<number> {
  const config = defaultConfig();
  config.server.port = 0;
  config.metrics.enabled = false;
  config.sys.interval = 0;
  const dir = shape.persistent ? await Deno.makeTempDir({ prefix: "hotpath-" }) : undefined;
  config.storage.backend = dir === undefined ? "memory" : "kv";
  if (dir !== undefined) config.storage.path = `${dir}/mqtt.db`;
  config.log.level = "warn";
  config.server.max_queued_messages = 1_000_000;
  const logger = createLogger({ level: "warn", format: "text", write: (l) => console.error(l) });
  const broker = new Broker({ config, store: createStore(config.storage), logger });
  await broker.start();
  try {
    const v = shape.version;
    const subs: MemConn[] = [];
    for (let i = 0; i < shape.subscribers; i++) {
      const s = connect(broker, `sub${i}`, v, !shape.persistent);
      s.onWrite = acknowledger(s);
      s.feed(
        pkt({
          type: 8,
          packetId: 1,
          subscriptions: [{
            topicFilter: "bench/#",
            qos: shape.qos,
            noLocal: false,
            retainAsPublished: false,
            retainHandling: 0,
          }],
        }, v),
      );
      subs.push(s);
    }
    const pub = connect(broker, "pub", v);
    await tick();
    // A batch of 100 PUBLISH per read, like a pipelining client; QoS 1 packet ids cycle through 1..100,
    // which the publisher's PUBACKs free before the next batch is read.
    const batch: Uint8Array[] = [];
    const payload = new Uint8Array(16).fill(7);
    for (let k = 0; k < 100; k++) {
      batch.push(pkt({
        type: 3,
        topic: `bench/${k % 8}`,
        payload,
        qos: shape.qos,
        retain: false,
        dup: false,
        packetId: shape.qos > 0 ? k + 1 : undefined,
      }, v));
    }
    const chunk = new Uint8Array(batch.reduce((a, b) => a + b.length, 0));
    let off = 0;
    for (const b of batch) {
      chunk.set(b, off);
      off += b.length;
    }
    const batches = Math.ceil(MESSAGES / shape.subscribers / 100);
    const expected = batches * 100 * shape.subscribers;
    const delivered = () => subs.reduce((a, s) => a + s.publishes, 0);
    const t0 = performance.now();
    for (let b = 0; b < batches; b++) {
      pub.feed(chunk);
      // Let the broker read, route and flush this batch (and take the subscribers' PUBACKs).
      await tick();
    }
    // Every delivery must arrive: a stall of 5 s means the broker lost some, which is a bug, not a result.
    let seen = -1, since = performance.now();
    while (delivered() < expected) {
      const now = performance.now();
      if (delivered() !== seen) [seen, since] = [delivered(), now];
      else if (now - since > 5000) {
        throw new Error(
          `${shape.name}: ${seen} of ${expected} deliveries arrived; dropped ${
            JSON.stringify(broker.metrics.dropped)
          }`,
        );
      }
      await tick();
    }
    const ns = ((performance.now() - t0) * 1e6) / expected;
    if (Deno.env.get("HOTPATH_STATS")) {
      const st = broker.store.stats;
      const lat = st.latencies.slice().sort((a, b) => a - b);
      console.error(
        `${shape.name}: ${st.commits} commits, ${st.mutations} mutations, commit p50 ${
          lat[lat.length >> 1]
        } ms`,
      );
    }
    return ns;
  } finally {
    await broker.stop();
    if (dir !== undefined) await Deno.remove(dir, { recursive: true });
  }
}

for (const shape of SHAPES) {
  if (values.only !== undefined && !values.only.split(",").includes(shape.name)) continue;
  let best = Infinity;
  for (let r = 0; r < ROUNDS; r++) best = Math.min(best, await round(shape));
  console.log(`${shape.name.padEnd(18)} ${best.toFixed(0).padStart(6)} ns per delivery (best of ${ROUNDS})`);
}
channel.port1.close();
