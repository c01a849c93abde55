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
 * A flow that loses bytes in the capture (a gap in its TCP sequence numbers) is not parsed past the gap,
 * and the report says how many were.
 *
 * @module
 */

import { parseArgs } from "node:util";
import { STAMP_BYTES } from "./delivery.ts";

/** The broker's residence times of one capture, in microseconds, sorted. */
export interface Residence {
  /** Residence of each matched delivery (broker -> subscriber), ascending. */
  micros: Float64Array;
  /** Deliveries of messages that came in during the warm-up: left out. */
  warmup: number;
  /** Deliveries whose stamp never came in from a publisher in the capture. */
  unmatched: number;
  /** TCP flows that lost bytes in the capture and were parsed only up to the gap. */
  brokenFlows: number;
}

interface Flow {
  /** Next TCP sequence number expected; -1 before the first segment. */
  next: number;
  broken: boolean;
  /** MQTT bytes not yet making up a whole packet. */
  pending: Uint8Array;
  /** The client's protocol level (3, 4, 5), from its CONNECT, shared by both directions of a connection. */
  conn: { version: number };
}

/** Publisher and sequence number of the stamp at `at` in one number (48 bits, exact). */
function stampKey(b: Uint8Array, at: number): number {
  const publisher = b[at + 2] | (b[at + 3] << 8);
  const seq = (b[at + 4] | (b[at + 5] << 8) | (b[at + 6] << 16)) + b[at + 7] * 0x1000000;
  return publisher * 0x100000000 + seq;
}

/** The run tag of the stamp at `at`. */
function stampTag(b: Uint8Array, at: number): number {
  return b[at] | (b[at + 1] << 8);
}

/** Variable byte integer at `at`: [value, bytes used], or null when incomplete or malformed. */
function varint(b: Uint8Array, at: number, end: number): [number, number] | null {
  let value = 0;
  let mult = 1;
  for (let i = 0; i < 4; i++) {
    if (at + i >= end) return null;
    const byte = b[at + i];
    value += (byte & 0x7f) * mult;
    if ((byte & 0x80) === 0) return [value, i + 1];
    mult *= 128;
  }
  return null;
}

/** Where the payload of the PUBLISH whose variable header starts at `at` begins, or -1. */
function publishPayload(b: Uint8Array, flags: number, at: number, end: number, version: number): number {
  if (at + 2 > end) return -1;
  let p = at + 2 + ((b[at] << 8) | b[at + 1]);
  if (((flags >> 1) & 3) > 0) p += 2;
  if (version === 5) {
    const props = varint(b, p, end);
    if (props === null) return -1;
    p += props[1] + props[0];
  }
  return p + STAMP_BYTES <= end ? p : -1;
}

/** Splits a flow's bytes into MQTT packets and hands each PUBLISH stamp (and CONNECT's version) on. */
function feed(flow: Flow, data: Uint8Array, onStamp: (tag: number, key: number) => void): void {
  let b = data;
  if (flow.pending.length > 0) {
    b = new Uint8Array(flow.pending.length + data.length);
    b.set(flow.pending);
    b.set(data, flow.pending.length);
  }
  let at = 0;
  while (at < b.length) {
    const len = varint(b, at + 1, b.length);
    if (len === null) break;
    const body = at + 1 + len[1];
    const end = body + len[0];
    if (end > b.length) break;
    const type = b[at] >> 4;
    if (type === 1 && end - body >= 7) {
      // CONNECT: protocol name (length-prefixed), then the protocol level.
      flow.conn.version = b[body + 2 + ((b[body] << 8) | b[body + 1])];
    } else if (type === 3) {
      const payload = publishPayload(b, b[at] & 15, body, end, flow.conn.version);
      if (payload >= 0) onStamp(stampTag(b, payload), stampKey(b, payload));
    }
    at = end;
  }
  flow.pending = at < b.length ? b.slice(at) : new Uint8Array(0);
}

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

/**
 * Residence times in `pcap` of the broker listening on `port`. Deliveries of messages that came in
 * before the first inbound PUBLISH + `warmupS` seconds are left out (and so is their inbound stamp).
 */
export function analyze(pcap: Uint8Array, port: number, warmupS = 0): Residence {
  const view = new DataView(pcap.buffer, pcap.byteOffset, pcap.byteLength);
  const magicLE = view.getUint32(0, true);
  let little: boolean;
  let nano: boolean;
  if (magicLE === 0xa1b2c3d4 || magicLE === 0xa1b23c4d) {
    little = true;
    nano = magicLE === 0xa1b23c4d;
  } else {
    const magicBE = view.getUint32(0, false);
    if (magicBE !== 0xa1b2c3d4 && magicBE !== 0xa1b23c4d) {
      throw new Error("not a classic pcap file (pcapng is not read: write it with tcpdump -w)");
    }
    little = false;
    nano = magicBE === 0xa1b23c4d;
  }
  const linkType = view.getUint32(20, little) & 0xffff;
  if (ipOffset(linkType, new Uint8Array(64), 0) < 0) throw new Error(`link type ${linkType} is not read`);

  const flows = new Map<string, Flow>();
  const conns = new Map<string, { version: number }>();
  // Run tag -> stamp -> kernel time it came in, microseconds (a capture may hold several runs).
  const inbound = new Map<number, Map<number, number>>();
  const out: number[] = [];
  let unmatched = 0;
  let inWarmup = 0;
  let firstIn = -1;
  let now = 0;
  let outbound = false;

  const onStamp = (tag: number, key: number) => {
    let run = inbound.get(tag);
    if (!outbound) {
      if (firstIn < 0) firstIn = now;
      if (run === undefined) inbound.set(tag, run = new Map());
      if (!run.has(key)) run.set(key, now); // a retransmitted PUBLISH (DUP) counts from the first
      return;
    }
    const t = run?.get(key);
    if (t === undefined) unmatched++;
    else if (t - firstIn < warmupS * 1e6) inWarmup++;
    else out.push(now - t);
  };

  let at = 24;
  while (at + 16 <= pcap.length) {
    const seconds = view.getUint32(at, little);
    const fraction = view.getUint32(at + 4, little);
    const captured = view.getUint32(at + 8, little);
    const frame = at + 16;
    at = frame + captured;
    if (at > pcap.length) break; // a capture cut short
    now = seconds * 1e6 + (nano ? fraction / 1000 : fraction);

    const ip = ipOffset(linkType, pcap, frame);
    let tcp: number;
    let ipEnd: number;
    let src: string;
    let dst: string;
    const ipVersion = pcap[ip] >> 4;
    if (ipVersion === 4) {
      if (pcap[ip + 9] !== 6) continue;
      tcp = ip + (pcap[ip] & 15) * 4;
      ipEnd = Math.min(at, ip + view.getUint16(ip + 2));
      src = pcap.subarray(ip + 12, ip + 16).join(".");
      dst = pcap.subarray(ip + 16, ip + 20).join(".");
    } else if (ipVersion === 6) {
      if (pcap[ip + 6] !== 6) continue; // extension headers are not followed
      tcp = ip + 40;
      ipEnd = Math.min(at, tcp + view.getUint16(ip + 4));
      src = pcap.subarray(ip + 8, ip + 24).join(":");
      dst = pcap.subarray(ip + 24, ip + 40).join(":");
    } else {
      continue;
    }
    const srcPort = view.getUint16(tcp);
    const dstPort = view.getUint16(tcp + 2);
    if (srcPort !== port && dstPort !== port) continue;
    const seq = view.getUint32(tcp + 4);
    const tcpFlags = pcap[tcp + 13];
    const data = tcp + (pcap[tcp + 12] >> 4) * 4;
    const client = srcPort === port ? `${dst}/${dstPort}` : `${src}/${srcPort}`;
    const key = `${src}/${srcPort}>${dst}/${dstPort}`;
    let flow = flows.get(key);
    if (flow === undefined || (tcpFlags & 0x02) !== 0) {
      // A SYN starts the flow afresh (a port reused by a later connection).
      let conn = conns.get(client);
      if (conn === undefined || ((tcpFlags & 0x02) !== 0 && srcPort !== port)) {
        conn = { version: 4 };
        conns.set(client, conn);
      }
      flow = { next: -1, broken: false, pending: new Uint8Array(0), conn };
      flows.set(key, flow);
    }
    let len = ipEnd - data;
    if ((tcpFlags & 0x02) !== 0) {
      flow.next = (seq + 1) >>> 0;
      continue;
    }
    if (len <= 0 || flow.broken) continue;
    let start = data;
    if (flow.next >= 0) {
      const ahead = (seq - flow.next) | 0; // wrap-around safe
      if (ahead > 0) {
        flow.broken = true; // bytes missing from the capture
        continue;
      }
      if (ahead < 0) {
        // A retransmission, possibly with new bytes at its end.
        if (-ahead >= len) continue;
        start -= ahead;
        len += ahead;
      }
    }
    flow.next = (seq + (start - data) + len) >>> 0;
    outbound = srcPort === port;
    feed(flow, pcap.subarray(start, start + len), onStamp);
  }
  let brokenFlows = 0;
  for (const flow of flows.values()) if (flow.broken) brokenFlows++;
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

if (import.meta.main) Deno.exit(await main());
