/**
 * How long a broker itself holds each message: reads a packet capture of a load-generator run and, for
 * every PUBLISH the broker sent, subtracts the kernel's timestamp of the packet that brought it in from
 * the one that took it out. The load generator's latency is end to end (its own event loop, GC and
 * scheduling included); this is the broker's share alone, from the same clock for every broker.
 *
 *   tcpdump -i lo -s 0 -B 65536 --time-stamp-precision=nano -w /tmp/run.pcap tcp port 18830 &
 *   deno run -A scripts/bench/loadgen.ts --scenario latency --port 18830 --duration 5
 *   deno run -A scripts/bench/residence.ts /tmp/run.pcap --port 18830 [--warmup 1] [--json]
 *
 * Messages are matched by the stamp at the start of each payload (scripts/bench/delivery.ts: run tag,
 * publisher, sequence number), so fan-out and many publishers work; each delivery counts once. Start the
 * capture before the load generator connects: the protocol version of each connection (where an MQTT 5
 * PUBLISH has its properties) is read from its CONNECT. A PUBLISH
 * split over several segments counts from the segment that completes it. Reads classic pcap files
 * (microsecond or nanosecond timestamps) of Ethernet, Linux cooked, BSD loopback or raw IP, IPv4 and IPv6.
 * Packets are split and decoded by the project's own decoder (src/mqtt/decode.ts). A flow that loses
 * bytes in the capture (a gap in its TCP sequence numbers) is not parsed past the gap, and the report says
 * how many were.
 *
 * @module
 */

import { parseArgs } from "node:util";
import { PacketDecoder } from "../../src/mqtt/decode.ts";
import { STAMP_BYTES } from "./delivery.ts";

/** The broker's residence times of one capture, in microseconds, sorted. */
export interface Residence {
  /** Residence of each matched delivery (broker -> subscriber), ascending. */
  micros: Float64Array;
  /** Deliveries of messages that came in during the warm-up: left out. */
  warmup: number;
  /** Deliveries whose stamp never came in from a publisher in the capture. */
  unmatched: number;
  /** TCP flows that lost bytes in the capture (or could not be decoded) and were parsed only up to there. */
  brokenFlows: number;
}

/** One TCP segment of the capture. */
interface Segment {
  /** Kernel timestamp, microseconds. */
  t: number;
  src: string;
  dst: string;
  srcPort: number;
  dstPort: number;
  seq: number;
  syn: boolean;
  data: Uint8Array;
}

/** One direction of a connection: where its byte stream is, and the project's decoder over it. */
interface Flow {
  /** Next TCP sequence number expected; -1 before the first segment. */
  next: number;
  broken: boolean;
  decoder: PacketDecoder;
}

/** Both directions of one client's connection. The client's CONNECT sets both decoders' protocol level. */
interface Connection {
  toBroker: Flow;
  fromBroker: Flow;
}

const newFlow = (): Flow => ({ next: -1, broken: false, decoder: new PacketDecoder() });

/** Offset of the IP header in a frame of `linkType`, or -1 for link types this does not read. */
function ipOffset(linkType: number, frame: Uint8Array, at: number): number {
  switch (linkType) {
    case 1: { // Ethernet, possibly with one 802.1Q tag
      const etherType = (frame[at + 12] << 8) | frame[at + 13];
      return at + (etherType === 0x8100 ? 18 : 14);
    }
    case 113: // Linux cooked (SLL)
      return at + 16;
    case 276: // Linux cooked v2 (SLL2)
      return at + 20;
    case 0: // BSD loopback
    case 108:
      return at + 4;
    case 101: // raw IP
    case 12:
      return at;
    default:
      return -1;
  }
}

/** The TCP segments of a classic pcap file, in capture order. */
function* segments(pcap: Uint8Array): Generator<Segment> {
  const view = new DataView(pcap.buffer, pcap.byteOffset, pcap.byteLength);
  const magics = [0xa1b2c3d4, 0xa1b23c4d]; // microsecond, nanosecond timestamps
  const little = magics.includes(view.getUint32(0, true));
  const magic = view.getUint32(0, little);
  if (!magics.includes(magic)) {
    throw new Error("not a classic pcap file (pcapng is not read: write it with tcpdump -w)");
  }
  const nano = magic === 0xa1b23c4d;
  const linkType = view.getUint32(20, little) & 0xffff;
  if (ipOffset(linkType, new Uint8Array(64), 0) < 0) throw new Error(`link type ${linkType} is not read`);

  let at = 24;
  while (at + 16 <= pcap.length) {
    const seconds = view.getUint32(at, little);
    const fraction = view.getUint32(at + 4, little);
    const frame = at + 16;
    at = frame + view.getUint32(at + 8, little);
    if (at > pcap.length) return; // a capture cut short
    const ip = ipOffset(linkType, pcap, frame);
    let tcp: number, ipEnd: number, src: string, dst: string;
    if (pcap[ip] >> 4 === 4) {
      if (pcap[ip + 9] !== 6) continue;
      tcp = ip + (pcap[ip] & 15) * 4;
      ipEnd = Math.min(at, ip + view.getUint16(ip + 2));
      src = pcap.subarray(ip + 12, ip + 16).join(".");
      dst = pcap.subarray(ip + 16, ip + 20).join(".");
    } else if (pcap[ip] >> 4 === 6) {
      if (pcap[ip + 6] !== 6) continue; // extension headers are not followed
      tcp = ip + 40;
      ipEnd = Math.min(at, tcp + view.getUint16(ip + 4));
      src = pcap.subarray(ip + 8, ip + 24).join(":");
      dst = pcap.subarray(ip + 24, ip + 40).join(":");
    } else {
      continue;
    }
    yield {
      t: seconds * 1e6 + (nano ? fraction / 1000 : fraction),
      src,
      dst,
      srcPort: view.getUint16(tcp),
      dstPort: view.getUint16(tcp + 2),
      seq: view.getUint32(tcp + 4),
      syn: (pcap[tcp + 13] & 0x02) !== 0,
      data: pcap.subarray(tcp + (pcap[tcp + 12] >> 4) * 4, ipEnd),
    };
  }
}

/**
 * The bytes of `seg` that continue `flow`'s stream (a retransmission may bring some new ones at its end),
 * or null when it brings none; a gap breaks the flow.
 */
function newBytes(flow: Flow, seg: Segment): Uint8Array | null {
  let data = seg.data;
  if (flow.next >= 0) {
    const ahead = (seg.seq - flow.next) | 0; // wrap-around safe
    if (ahead > 0) {
      flow.broken = true; // bytes missing from the capture
      return null;
    }
    if (-ahead >= data.length) return null;
    data = data.subarray(-ahead);
  }
  flow.next = (seg.seq + seg.data.length) >>> 0;
  return data;
}

/**
 * Residence times in `pcap` of the broker listening on `port`. Deliveries of messages that came in
 * before the first inbound PUBLISH + `warmupS` seconds are left out.
 */
export function analyze(pcap: Uint8Array, port: number, warmupS = 0): Residence {
  const connections = new Map<string, Connection>();
  // Run tag -> publisher and sequence number -> kernel time it came in (a capture may hold several runs).
  const inbound = new Map<number, Map<number, number>>();
  const out: number[] = [];
  let unmatched = 0;
  let inWarmup = 0;
  let firstIn = -1;
  let brokenFlows = 0;

  for (const seg of segments(pcap)) {
    const toBroker = seg.dstPort === port;
    if (!toBroker && seg.srcPort !== port) continue;
    const client = toBroker ? `${seg.src}/${seg.srcPort}` : `${seg.dst}/${seg.dstPort}`;
    let conn = connections.get(client);
    if (conn === undefined || (seg.syn && toBroker)) {
      // A client's SYN starts the connection afresh (a port reused by a later connection).
      conn = { toBroker: newFlow(), fromBroker: newFlow() };
      connections.set(client, conn);
    }
    const flow = toBroker ? conn.toBroker : conn.fromBroker;
    if (seg.syn) {
      flow.next = (seg.seq + 1) >>> 0;
      continue;
    }
    if (flow.broken || seg.data.length === 0) continue;
    const data = newBytes(flow, seg);
    if (data === null) {
      if (flow.broken) brokenFlows++;
      continue;
    }
    // What the broker sends is decoded in the client's protocol level, which its CONNECT set.
    if (!toBroker) flow.decoder.protocolVersion = conn.toBroker.decoder.protocolVersion;
    flow.decoder.push(data);
    try {
      for (let p = flow.decoder.next(); p !== null; p = flow.decoder.next()) {
        if (p.type !== 3 || p.payload.length < STAMP_BYTES) continue;
        const b = p.payload;
        const tag = b[0] | (b[1] << 8);
        // Publisher (u16) and sequence number (u32) of the stamp, as one exact number.
        const key = (b[2] | (b[3] << 8)) * 0x100000000 + (b[4] | (b[5] << 8) | (b[6] << 16)) +
          b[7] * 0x1000000;
        let run = inbound.get(tag);
        if (toBroker) {
          if (firstIn < 0) firstIn = seg.t;
          if (run === undefined) inbound.set(tag, run = new Map());
          if (!run.has(key)) run.set(key, seg.t); // a retransmitted PUBLISH (DUP) counts from the first
          continue;
        }
        const t = run?.get(key);
        if (t === undefined) unmatched++;
        else if (t - firstIn < warmupS * 1e6) inWarmup++;
        else out.push(seg.t - t);
      }
    } catch {
      flow.broken = true; // not MQTT from here on (a capture started mid-stream)
      brokenFlows++;
    }
  }
  const micros = Float64Array.from(out).sort();
  return { micros, warmup: inWarmup, unmatched, brokenFlows };
}

/** The value at quantile `q` (0..1) of ascending `sorted`, or NaN when empty. */
export function quantile(sorted: Float64Array, q: number): number {
  if (sorted.length === 0) return NaN;
  return sorted[Math.min(sorted.length - 1, Math.floor(q * sorted.length))];
}

async function main(): Promise<number> {
  const { values, positionals } = parseArgs({
    args: Deno.args,
    options: {
      port: { type: "string" },
      warmup: { type: "string", default: "0" },
      json: { type: "boolean", default: false },
      help: { type: "boolean", short: "h", default: false },
    },
    allowPositionals: true,
  });
  if (values.help || positionals.length !== 1 || values.port === undefined) {
    console.log("usage: residence.ts FILE.pcap --port BROKER_PORT [--warmup SECONDS] [--json]");
    return values.help ? 0 : 2;
  }
  const port = Number(values.port);
  const warmup = Number(values.warmup);
  if (!Number.isInteger(port) || port < 1 || port > 65535) {
    throw new Error(`--port ${values.port}: not a port`);
  }
  if (!(warmup >= 0)) throw new Error(`--warmup ${values.warmup}: not a number of seconds`);
  const r = analyze(await Deno.readFile(positionals[0]), port, warmup);
  const summary = {
    deliveries: r.micros.length,
    warmup: r.warmup,
    unmatched: r.unmatched,
    broken_flows: r.brokenFlows,
    p50_us: quantile(r.micros, 0.5),
    p90_us: quantile(r.micros, 0.9),
    p99_us: quantile(r.micros, 0.99),
    p999_us: quantile(r.micros, 0.999),
    max_us: quantile(r.micros, 1),
  };
  if (values.json) {
    console.log(JSON.stringify(summary));
  } else {
    const us = (v: number) => Number.isNaN(v) ? "-" : `${Math.round(v)} us`;
    console.log(
      `${summary.deliveries} deliveries (${summary.warmup} in the warm-up left out, ${summary.unmatched} unmatched, ` +
        `${summary.broken_flows} flows cut short): ` +
        `residence p50 ${us(summary.p50_us)}, p90 ${us(summary.p90_us)}, p99 ${us(summary.p99_us)}, ` +
        `p99.9 ${us(summary.p999_us)}, max ${us(summary.max_us)}`,
    );
  }
  return 0;
}

if (import.meta.main) {
  try {
    Deno.exit(await main());
  } catch (e) {
    // A bad flag, a missing or foreign file: one line naming it, no stack.
    console.error(`residence: ${e instanceof Error ? e.message : e}`);
    Deno.exit(2);
  }
}
