import assert from "node:assert/strict";
import { analyze, quantile } from "../scripts/bench/residence.ts";
import { writeStamp } from "../scripts/bench/delivery.ts";
import { encode, encodePublish } from "../src/mqtt/encode.ts";

const BROKER = 18830;

/** A classic pcap (nanosecond timestamps, Ethernet) of IPv4 TCP segments on loopback. */
class Capture {
  #records: Uint8Array[] = [];
  #seq = new Map<string, number>();

  /** One segment from `srcPort` to `dstPort` carrying `data` at `t` seconds. */
  segment(
    t: number,
    srcPort: number,
    dstPort: number,
    data: Uint8Array,
    opts: { syn?: boolean; seq?: number } = {},
  ) {
    const key = `${srcPort}>${dstPort}`;
    const seq = opts.seq ?? this.#seq.get(key) ?? 1000;
    if (opts.seq === undefined) this.#seq.set(key, seq + data.length + (opts.syn ? 1 : 0));
    const frame = new Uint8Array(14 + 20 + 20 + data.length);
    const v = new DataView(frame.buffer);
    v.setUint16(12, 0x0800);
    frame[14] = 0x45;
    v.setUint16(16, 20 + 20 + data.length);
    frame[23] = 6; // TCP
    frame.set([127, 0, 0, 1], 26);
    frame.set([127, 0, 0, 1], 30);
    v.setUint16(34, srcPort);
    v.setUint16(36, dstPort);
    v.setUint32(38, seq);
    frame[46] = 5 << 4;
    frame[47] = opts.syn ? 0x02 : 0x18;
    frame.set(data, 54);
    const rec = new Uint8Array(16 + frame.length);
    const rv = new DataView(rec.buffer);
    const ns = Math.round(t * 1e9);
    rv.setUint32(0, Math.floor(ns / 1e9), true);
    rv.setUint32(4, ns % 1e9, true);
    rv.setUint32(8, frame.length, true);
    rv.setUint32(12, frame.length, true);
    rec.set(frame, 16);
    this.#records.push(rec);
  }

  /** A connection's handshake and its CONNECT. */
  connect(t: number, clientPort: number, version: 4 | 5) {
    this.segment(t, clientPort, BROKER, new Uint8Array(0), { syn: true });
    this.segment(t, BROKER, clientPort, new Uint8Array(0), { syn: true });
    const connect = encode({
      type: 1,
      protocolName: "MQTT",
      protocolVersion: version,
      clientId: `c${clientPort}`,
      clean: true,
      keepAlive: 60,
    }, version);
    this.segment(t, clientPort, BROKER, connect);
  }

  bytes(): Uint8Array {
    const header = new Uint8Array(24);
    const v = new DataView(header.buffer);
    v.setUint32(0, 0xa1b23c4d, true);
    v.setUint16(4, 2, true);
    v.setUint16(6, 4, true);
    v.setUint32(16, 65535, true);
    v.setUint32(20, 1, true);
    const all = new Uint8Array(24 + this.#records.reduce((n, r) => n + r.length, 0));
    all.set(header);
    let at = 24;
    for (const r of this.#records) {
      all.set(r, at);
      at += r.length;
    }
    return all;
  }
}

function publish(publisher: number, seq: number, qos: 0 | 1, version: 4 | 5, withProps = false): Uint8Array {
  const payload = new Uint8Array(16);
  writeStamp(new DataView(payload.buffer), 0, 77, publisher, seq, 0);
  return encodePublish({
    type: 3,
    topic: "bench/t",
    payload,
    qos,
    retain: false,
    dup: false,
    packetId: qos > 0 ? 9 : undefined,
    properties: version === 5 && withProps ? { userProperties: [["k", "v"]] } : undefined,
  }, version);
}

Deno.test("residence: each delivery counts from the segment that completed its PUBLISH coming in", () => {
  const cap = new Capture();
  cap.connect(0.5, 40001, 4); // publisher, MQTT 3.1.1
  cap.connect(0.5, 40002, 5); // subscriber, MQTT 5
  cap.connect(0.5, 40003, 4); // subscriber, MQTT 3.1.1
  // Message 0 in one segment; out to both subscribers after 250 and 400 us.
  cap.segment(1.0, 40001, BROKER, publish(0, 0, 1, 4));
  cap.segment(1.00025, BROKER, 40002, publish(0, 0, 1, 5, true));
  cap.segment(1.0004, BROKER, 40003, publish(0, 0, 0, 4));
  // Message 1 split over two segments: it counts from the second (2.0001), not the first.
  const m1 = publish(0, 1, 1, 4);
  cap.segment(2.0, 40001, BROKER, m1.subarray(0, 5));
  cap.segment(2.0001, 40001, BROKER, m1.subarray(5));
  // Two PUBLISH in one outbound segment to the MQTT 5 subscriber: message 1, then one never sent in.
  const out = [...publish(0, 1, 1, 5), ...publish(3, 8, 0, 5)];
  cap.segment(2.0007, BROKER, 40002, new Uint8Array(out));
  // The segment that took message 0 to the 3.1.1 subscriber, retransmitted: not a second delivery.
  cap.segment(2.0009, BROKER, 40003, publish(0, 0, 0, 4), { seq: 1001 });
  cap.segment(2.001, BROKER, 40003, publish(0, 1, 0, 4));

  const r = analyze(cap.bytes(), BROKER);
  assert.deepEqual(Array.from(r.micros).map(Math.round), [250, 400, 600, 900]);
  assert.equal(r.unmatched, 1);
  assert.equal(r.brokenFlows, 0);
  assert.equal(quantile(r.micros, 0.5), r.micros[2]);

  // A warm-up of 0.9 s after the first inbound PUBLISH (1.0 s) leaves message 0 out.
  const w = analyze(cap.bytes(), BROKER, 0.9);
  assert.deepEqual(Array.from(w.micros).map(Math.round), [600, 900]);
  assert.equal(w.warmup, 2);
});

Deno.test("residence: a flow with bytes missing from the capture is parsed up to the gap only", () => {
  const cap = new Capture();
  cap.connect(0.5, 40001, 4);
  cap.connect(0.5, 40002, 4);
  cap.segment(1.0, 40001, BROKER, publish(0, 0, 0, 4));
  cap.segment(1.0001, BROKER, 40002, publish(0, 0, 0, 4));
  cap.segment(1.1, 40001, BROKER, publish(0, 1, 0, 4), { seq: 5000 }); // a gap before it
  cap.segment(1.1002, BROKER, 40002, publish(0, 1, 0, 4));
  const r = analyze(cap.bytes(), BROKER);
  assert.deepEqual(Array.from(r.micros).map(Math.round), [100]);
  assert.equal(r.brokenFlows, 1);
  assert.equal(r.unmatched, 1);
});

Deno.test("residence: a file that is not a classic pcap is refused by name", () => {
  assert.throws(() => analyze(new Uint8Array(64), BROKER), /not a classic pcap/);
});

Deno.test("residence: the command names a file that is not a capture, and a bad port, and exits 2", async () => {
  const script = new URL("../scripts/bench/residence.ts", import.meta.url).pathname;
  const notPcap = await Deno.makeTempFile({ suffix: ".pcap" });
  try {
    await Deno.writeTextFile(notPcap, "hello");
    for (
      const [args, message] of [
        [[notPcap, "--port", "1883"], /^residence: not a classic pcap file/],
        [[notPcap, "--port", "x"], /^residence: --port x: not a port/],
      ] as const
    ) {
      const out = await new Deno.Command(Deno.execPath(), { args: ["run", "-A", script, ...args] }).output();
      assert.equal(out.code, 2);
      assert.match(new TextDecoder().decode(out.stderr), message);
    }
  } finally {
    await Deno.remove(notPcap);
  }
});
