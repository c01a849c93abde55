/**
 * The benchmark scenarios and the code that drives them.
 *
 * Two families, both run by one process (the load generator, pinned to its own core by compare.ts):
 * - the saturation and latency scenarios (fanin, fanout, qos1, qos1_window10, qos1_persistent, latency, idle,
 *   retained), whose baselines are measured against Mosquitto and Aedes;
 * - the realistic use cases of the public Open MQTT Benchmark Suite (p2p, fanout_1k, shared, conn),
 *   scaled down in rate and duration so that a full comparison of four brokers stays under 15 minutes.
 *
 * Loss, duplicates, order and latency are measured at the subscribers from the stamp in each payload
 * (see delivery.ts), never inferred from what the publishers sent.
 *
 * @module
 */

import { PacketType, type ProtocolVersion, type QoS } from "../../src/mqtt/types.ts";
import { encode } from "../../src/mqtt/encode.ts";
import { BenchClient, type DecodeMode, settleWithin } from "./client.ts";
import { MAX_PUBLISHERS, newRunTag, Progress, Sink, STAMP_BYTES, writeStamp } from "./delivery.ts";
import { LatencyHistogram } from "./histogram.ts";
import { AckBatch, AckTemplate, PacketIdPool, PublishTemplate } from "./templates.ts";

/** Names of the scenarios, as given to `--scenario`. */
export const SCENARIO_NAMES = [
  "fanin",
  "fanout",
  "qos1",
  "qos1_window10",
  "qos1_persistent",
  "latency",
  "idle",
  "retained",
  "p2p",
  "fanout_1k",
  "shared",
  "conn",
] as const;

/** One scenario name. */
export type ScenarioName = typeof SCENARIO_NAMES[number];

/**
 * Who receives what: every subscriber gets every publisher's messages (`all`), subscriber i gets
 * publisher i's (`pair`), or the subscribers form one shared-subscription group (`shared`, §4.8.2).
 */
export type Routing = "all" | "pair" | "shared";

/** The shape of a scenario; every number can be overridden on the command line. */
export interface ScenarioSpec {
  kind: "pubsub" | "idle" | "conn" | "retained";
  /** One line for reports. */
  description: string;
  publishers: number;
  subscribers: number;
  qos: QoS;
  /** Unacknowledged QoS 1/2 messages each publisher keeps in flight. */
  window: number;
  /** Messages per second per publisher; 0 = as fast as the broker accepts them. */
  rate: number;
  /** Seconds of publishing (pubsub), or of loading retained messages at most (retained). */
  duration: number;
  routing: Routing;
  /** Topic name of publisher i. */
  topic: (publisher: number) => string;
  /** Topic filter of subscriber i. */
  filter: (subscriber: number) => string;
  /** Connections to open (idle, conn). */
  connections: number;
  /** New connections per second (conn); 0 = as fast as possible with bounded concurrency. */
  connectRate: number;
  /** Retained messages to store before subscribing (retained). */
  retained: number;
  /**
   * Subscribers keep their session (Clean Session 0 / Session Expiry "never"): a broker with a durable
   * store must store each message before it acknowledges it.
   */
  persistentSubscribers: boolean;
}

const base: ScenarioSpec = {
  kind: "pubsub",
  description: "",
  publishers: 1,
  subscribers: 1,
  qos: 0,
  window: 100,
  rate: 0,
  duration: 5,
  routing: "all",
  topic: (i) => `bench/${i}`,
  filter: () => "bench/#",
  connections: 0,
  connectRate: 0,
  retained: 0,
  persistentSubscribers: false,
};

/** Default shape of every scenario. */
export const SCENARIOS: Record<ScenarioName, ScenarioSpec> = {
  fanin: {
    ...base,
    description: "QoS 0, 8 publishers -> 1 subscriber on bench/#, saturating (closed loop)",
    publishers: 8,
  },
  fanout: {
    ...base,
    description: "QoS 0, 1 publisher -> 50 subscribers, saturating (closed loop)",
    subscribers: 50,
    topic: () => "bench/fanout",
    filter: () => "bench/fanout",
  },
  qos1: {
    ...base,
    description: "QoS 1, 8 publishers with 100 unacked each -> 1 QoS 1 subscriber",
    publishers: 8,
    qos: 1,
  },
  qos1_window10: {
    ...base,
    description: "QoS 1, 1 publisher with 10 unacked -> 1 QoS 1 subscriber (round trips, Nagle)",
    qos: 1,
    window: 10,
  },
  qos1_persistent: {
    ...base,
    description: "QoS 1, 8 publishers with 100 unacked each -> 1 QoS 1 subscriber with a persistent session",
    publishers: 8,
    qos: 1,
    persistentSubscribers: true,
  },
  latency: { ...base, description: "QoS 0, 1 publisher at 5,000 msg/s -> 1 subscriber", rate: 5000 },
  idle: {
    ...base,
    kind: "idle",
    description: "10,000 idle connections (broker RSS per connection)",
    connections: 10_000,
    // For idle, --duration bounds the time spent opening connections.
    duration: 60,
  },
  retained: {
    ...base,
    kind: "retained",
    description: "100,000 retained messages, then subscribe r/#: time until all arrive",
    window: 1000,
    duration: 60,
    retained: 100_000,
  },
  p2p: {
    ...base,
    description: "Open MQTT suite p2p: 1k publishers -> 1k subscribers on 1k topics, 1 msg/s each, QoS 1",
    publishers: 1000,
    subscribers: 1000,
    qos: 1,
    rate: 1,
    duration: 10,
    routing: "pair",
    topic: (i) => `p2p/${i}`,
    filter: (i) => `p2p/${i}`,
  },
  fanout_1k: {
    ...base,
    description:
      "Open MQTT suite fan-out: 1 publisher -> 1,000 subscribers, 10 msg/s (10k deliveries/s), QoS 1",
    subscribers: 1000,
    qos: 1,
    rate: 10,
    duration: 10,
    topic: () => "fan/1k",
    filter: () => "fan/1k",
  },
  shared: {
    ...base,
    description:
      "Open MQTT suite shared subscription: 1k publishers, 1 msg/s each -> 5 subscribers in $share/g",
    publishers: 1000,
    subscribers: 5,
    qos: 1,
    rate: 1,
    duration: 10,
    routing: "shared",
    topic: (i) => `share/${i}`,
    filter: () => "$share/g/share/#",
  },
  conn: {
    ...base,
    kind: "conn",
    description: "Open MQTT suite connection: 10,000 connections at 1,000/s (suite: 100/s, scaled)",
    connections: 10_000,
    connectRate: 1000,
  },
};

/** Everything a run needs; {@link resolveOptions} fills the scenario's defaults. */
export interface LoadOptions {
  scenario: ScenarioName;
  host: string;
  port: number;
  /** MQTT 5.0 instead of 3.1.1. */
  mqtt5: boolean;
  publishers: number;
  subscribers: number;
  qos: QoS;
  window: number;
  rate: number;
  /**
   * Seconds of publishing; for `idle`, the most time spent opening connections; for `retained`, the
   * most time spent storing the retained messages.
   */
  duration: number;
  /** Seconds to wait after publishing for messages still on their way. */
  drain: number;
  /**
   * Seconds of publishing before `duration` whose messages are checked for loss, duplicates and order but
   * left out of the latency percentiles (see `Sink.latencyFrom`). Default 1 for paced scenarios, 0 otherwise.
   */
  warmup: number;
  /** Messages per publisher at most; 0 = bounded by duration only. */
  count: number;
  connections: number;
  connectRate: number;
  retained: number;
  /** Seconds the idle / conn scenarios keep their connections open once all are up. */
  hold: number;
  /** Payload bytes (at least the 16-byte stamp). */
  payloadSize: number;
  /** PUBLISH packets per write of a saturating QoS 0 publisher. */
  batch: number;
  /**
   * Saturating QoS 0 is closed-loop: at most this many deliveries (summed over publishers and the
   * subscribers each message is due at) may be sent but not yet received, so the rate measured is what
   * the broker sustains rather than how much it drops, and latency stays near window / rate.
   * 0 = open loop: write as fast as TCP accepts.
   */
  e2eWindow: number;
  decoder: DecodeMode;
  /** Progress events (e.g. `{event: "ready"}` once idle connections are up). */
  onEvent?: (event: Record<string, unknown>) => void;
  /** Diagnostics, one line each. */
  log?: (line: string) => void;
}

/** The measurements of one run. Fields that do not apply to a scenario are null. */
export interface LoadResult {
  scenario: ScenarioName;
  protocol: "3.1.1" | "5.0";
  qos: QoS;
  publishers: number;
  subscribers: number;
  /** Messages written by the publishers (retained: acknowledged retained messages). */
  sent: number;
  /** Distinct messages received, summed over subscribers (deliveries). */
  received: number;
  /** Deliveries that should have happened. */
  expected: number;
  /** Deliveries per second at the subscribers (first to last delivery). */
  rate: number;
  /** Messages per second written by the publishers during the publishing window. */
  send_rate: number;
  /** QoS 1/2 acknowledgements (PUBACK / PUBCOMP) received by the publishers. */
  acked: number | null;
  /** Acknowledgements per second, from the first send to the last acknowledgement. */
  ack_rate: number | null;
  lost: number;
  duplicates: number;
  reordered: number | null;
  p50_us: number | null;
  p99_us: number | null;
  p999_us: number | null;
  max_us: number | null;
  /** Seconds of publishing. */
  duration_s: number;
  /** Seconds at the start of `duration_s` whose messages are left out of the latency percentiles. */
  warmup_s: number;
  /** Seconds the whole run took, connection set-up and drain included. */
  elapsed_s: number;
  connections: number | null;
  connected: number | null;
  connect_failed: number | null;
  connect_p50_us: number | null;
  connect_p99_us: number | null;
  /** Connections per second actually achieved. */
  connect_rate: number | null;
  /** retained: milliseconds from SUBSCRIBE to the last retained message. */
  retained_ms: number | null;
  /** retained: milliseconds to store the retained messages (publish until the last PUBACK). */
  load_ms: number | null;
  /** Connections the broker closed during the run. */
  disconnects: number;
  /** Up to five distinct error messages. */
  errors: string[];
}

/** Merges the scenario's defaults with explicit overrides (undefined fields keep the default). */
export function resolveOptions(
  scenario: ScenarioName,
  overrides: Partial<LoadOptions> & { host: string; port: number },
): LoadOptions {
  const spec = SCENARIOS[scenario];
  if (spec === undefined) {
    throw new Error(`unknown scenario "${scenario}"; known: ${SCENARIO_NAMES.join(", ")}`);
  }
  const defined = Object.fromEntries(Object.entries(overrides).filter(([, v]) => v !== undefined));
  const o: LoadOptions = {
    scenario,
    host: "127.0.0.1",
    port: 1883,
    mqtt5: false,
    publishers: spec.publishers,
    subscribers: spec.subscribers,
    qos: spec.qos,
    window: spec.window,
    rate: spec.rate,
    duration: spec.duration,
    drain: spec.kind === "retained" ? 30 : 10,
    warmup: 0,
    count: 0,
    connections: spec.connections,
    connectRate: spec.connectRate,
    retained: spec.retained,
    hold: 2,
    payloadSize: STAMP_BYTES,
    batch: 256,
    e2eWindow: 4000,
    decoder: "fast",
    ...defined,
  };
  if (defined.warmup === undefined) o.warmup = o.rate > 0 ? 1 : 0;
  const positive: (keyof LoadOptions)[] = ["port", "window", "batch", "payloadSize"];
  for (const k of positive) {
    const v = o[k] as number;
    if (!Number.isInteger(v) || v < 1) throw new RangeError(`--${k} must be a positive integer, got ${v}`);
  }
  if (o.payloadSize < STAMP_BYTES) {
    throw new RangeError(`--payload-size must be at least ${STAMP_BYTES} (the stamp), got ${o.payloadSize}`);
  }
  if (![0, 1, 2].includes(o.qos)) throw new RangeError(`--qos must be 0, 1 or 2, got ${o.qos}`);
  if (o.window > 65535) throw new RangeError(`--window must be at most 65535, got ${o.window}`);
  if (o.publishers > MAX_PUBLISHERS) {
    throw new RangeError(`--publishers must be at most ${MAX_PUBLISHERS}, got ${o.publishers}`);
  }
  for (
    const k of ["duration", "drain", "warmup", "rate", "count", "hold", "connectRate", "e2eWindow"] as const
  ) {
    if (!(o[k] >= 0)) throw new RangeError(`--${k} must be a non-negative number, got ${o[k]}`);
  }
  return o;
}

/** Runs one scenario against a broker and returns its measurements. */
export function runScenario(options: LoadOptions): Promise<LoadResult> {
  const spec = SCENARIOS[options.scenario];
  switch (spec.kind) {
    case "pubsub":
      return runPubSub(options, spec);
    case "idle":
    case "conn":
      return runConnections(options);
    case "retained":
      return runRetained(options);
  }
}

const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

/** Collects a few distinct error messages for the result, and counts the rest. */
class ErrorLog {
  readonly messages: string[] = [];
  disconnects = 0;
  #seen = new Set<string>();

  add(message: string): void {
    if (this.#seen.has(message) || this.messages.length >= 5) return;
    this.#seen.add(message);
    this.messages.push(message);
  }

  /** A `BenchClient.handlers.onClose` that counts unexpected closes. */
  onClose = (error?: Error): void => {
    if (error) {
      this.disconnects++;
      this.add(error.message);
    }
  };
}

/** Runs `task(i)` for i in [0, n) with at most `limit` in progress. */
async function forEachLimit(n: number, limit: number, task: (i: number) => Promise<void>): Promise<void> {
  let next = 0;
  const worker = async () => {
    while (next < n) await task(next++);
  };
  await Promise.all(Array.from({ length: Math.min(limit, n) }, worker));
}

/** A short random tag that keeps client identifiers of concurrent runs apart. */
function runTag(): string {
  return Math.random().toString(36).slice(2, 6);
}

function emptyResult(o: LoadOptions): LoadResult {
  return {
    scenario: o.scenario,
    protocol: o.mqtt5 ? "5.0" : "3.1.1",
    qos: o.qos,
    publishers: o.publishers,
    subscribers: o.subscribers,
    sent: 0,
    received: 0,
    expected: 0,
    rate: 0,
    send_rate: 0,
    acked: null,
    ack_rate: null,
    lost: 0,
    duplicates: 0,
    reordered: null,
    p50_us: null,
    p99_us: null,
    p999_us: null,
    max_us: null,
    duration_s: 0,
    warmup_s: o.warmup,
    elapsed_s: 0,
    connections: null,
    connected: null,
    connect_failed: null,
    connect_p50_us: null,
    connect_p99_us: null,
    connect_rate: null,
    retained_ms: null,
    load_ms: null,
    disconnects: 0,
    errors: [],
  };
}

function fillLatency(r: LoadResult, h: LatencyHistogram): void {
  r.p50_us = h.percentile(50);
  r.p99_us = h.percentile(99);
  r.p999_us = h.percentile(99.9);
  r.max_us = h.count > 0 ? h.max : null;
}

/** One publishing connection and its counters. */
interface Publisher {
  index: number;
  client: BenchClient;
  template: PublishTemplate;
  ids: PacketIdPool;
  window: number;
  /** Messages written so far; also the next sequence number. */
  sent: number;
  acked: number;
  lastAckAt: number;
  /** Fraction of a period by which this publisher's paced sends are offset, spreading the load. */
  phase: number;
}

/**
 * Subscribes `client` to `filter` and accounts its deliveries in `sink`, acknowledging QoS 1 with
 * PUBACK and QoS 2 with PUBREC / PUBCOMP (§4.3), all acknowledgements of a read chunk in one write.
 */
function attachSubscriber(client: BenchClient, sink: Sink, errors: ErrorLog, progress?: Progress): void {
  const puback = new AckTemplate(PacketType.PUBACK, client.version);
  const pubrec = new AckTemplate(PacketType.PUBREC, client.version);
  const pubcomp = new AckTemplate(PacketType.PUBCOMP, client.version);
  const acks = new AckBatch();
  client.handlers = {
    onPublish: (view, start, end, qos, packetId, retain) => {
      sink.record(view, start, end, client.readAt, retain);
      if (qos === 1) acks.add(puback, packetId);
      else if (qos === 2) acks.add(pubrec, packetId);
    },
    onPacket: (p) => {
      if (p.type === PacketType.PUBREL) acks.add(pubcomp, p.packetId);
    },
    onChunkEnd: () => {
      const bytes = acks.take();
      if (bytes !== null) client.write(bytes).catch((e) => errors.add(String(e)));
      progress?.notify();
    },
    onClose: errors.onClose,
  };
}

/** Connects `n` clients, at most 64 handshakes at a time. */
async function connectAll(
  o: LoadOptions,
  n: number,
  id: (i: number) => string,
  readBufferSize: number,
  persistent = false,
): Promise<BenchClient[]> {
  const clients: BenchClient[] = new Array(n);
  const version: ProtocolVersion = o.mqtt5 ? 5 : 4;
  try {
    await forEachLimit(n, 64, async (i) => {
      clients[i] = await BenchClient.connect({
        host: o.host,
        port: o.port,
        clientId: id(i),
        version,
        readBufferSize,
        decoder: o.decoder,
        persistent,
      });
    });
  } catch (e) {
    // The caller never sees a partial list: close what did connect before reporting the failure.
    await closeAll(clients);
    throw e;
  }
  return clients;
}

/**
 * Closes many connections at once: DISCONNECT to all, then the broker closes them (§3.14.4, which keeps
 * TIME_WAIT off this machine's ephemeral ports, see {@link BenchClient.close}), then whatever is still
 * open is closed by us. Each phase is bounded in time, so 10,000 connections close in seconds even when
 * the broker is slow.
 */
async function closeAll(clients: (BenchClient | undefined)[], timeoutMs = 3000): Promise<void> {
  const open = clients.filter((c): c is BenchClient => c !== undefined && !c.closed);
  await settleWithin(Promise.all(open.map((c) => c.disconnect())), timeoutMs);
  await settleWithin(Promise.all(open.map((c) => c.finished)), timeoutMs);
  for (const c of open) c.abort();
  await settleWithin(Promise.all(open.map((c) => c.finished)), timeoutMs);
}

async function runPubSub(o: LoadOptions, spec: ScenarioSpec): Promise<LoadResult> {
  const began = performance.now();
  const result = emptyResult(o);
  const errors = new ErrorLog();
  const latency = new LatencyHistogram();
  const tag = runTag();
  const stampTag = newRunTag();
  const delivered = new Float64Array(o.publishers);
  const progress = new Progress();
  const sinks = Array.from(
    { length: spec.routing === "shared" ? 1 : o.subscribers },
    () => new Sink(latency, stampTag, delivered),
  );
  let subs: BenchClient[] = [];
  let pubClients: BenchClient[] = [];
  try {
    subs = await connectAll(o, o.subscribers, (i) => `${tag}-s${i}`, 64 * 1024, spec.persistentSubscribers);
    await forEachLimit(subs.length, 64, async (i) => {
      attachSubscriber(subs[i], sinks[spec.routing === "shared" ? 0 : i], errors, progress);
      const granted = await subs[i].subscribe(spec.filter(i), o.qos);
      if (granted >= 0x80) {
        throw new Error(
          `broker refused subscription "${spec.filter(i)}" with reason code 0x${granted.toString(16)}`,
        );
      }
      if (granted < o.qos) errors.add(`subscription "${spec.filter(i)}" granted QoS ${granted} < ${o.qos}`);
    });
    pubClients = await connectAll(o, o.publishers, (i) => `${tag}-p${i}`, 4 * 1024);
    const pubs = pubClients.map((client, index): Publisher => {
      // MQTT 5: never exceed the broker's Receive Maximum (§3.3.4, MQTT-3.3.4-7).
      const receiveMaximum = client.connack?.properties?.receiveMaximum ?? 65535;
      return {
        index,
        client,
        template: new PublishTemplate(spec.topic(index), o.qos, o.payloadSize, client.version),
        ids: new PacketIdPool(),
        window: Math.min(o.window, receiveMaximum),
        sent: 0,
        acked: 0,
        lastAckAt: 0,
        phase: index / Math.max(1, o.publishers),
      };
    });

    let stopped = false;
    const start = performance.now();
    const publishMs = (o.warmup + o.duration) * 1000;
    const deadline = start + publishMs;
    const stopTimer = setTimeout(() => stopped = true, publishMs);
    for (const sink of sinks) sink.latencyFrom = start + o.warmup * 1000;
    const canSend = (p: Publisher) => o.count === 0 ? Number.MAX_SAFE_INTEGER : o.count - p.sent;

    /** Writes `k` messages of `p` in one buffer, taking packet ids for QoS > 0. */
    const sendNow = (p: Publisher, k: number): Promise<void> => {
      const buf = p.template.batch(k);
      const view = new DataView(buf.buffer);
      const now = performance.now();
      for (let s = 0; s < k; s++) {
        p.template.stamp(view, s, o.qos > 0 ? p.ids.acquire() : 0, stampTag, p.index, p.sent++, now);
      }
      return p.client.write(buf);
    };
    const refill = (p: Publisher) => {
      if (stopped || p.client.closed) return;
      const k = Math.min(p.window - p.ids.inUse, canSend(p));
      if (k > 0) sendNow(p, k).catch((e) => errors.add(String(e)));
    };

    for (const p of pubs) {
      const pubrel = new AckTemplate(PacketType.PUBREL, p.client.version);
      const acks = new AckBatch();
      p.client.handlers = {
        onPacket: (packet) => {
          if (packet.type === PacketType.PUBACK || packet.type === PacketType.PUBCOMP) {
            if (packet.type === PacketType.PUBACK ? o.qos !== 1 : o.qos !== 2) {
              errors.add(`unexpected packet type ${packet.type} for QoS ${o.qos}`);
            }
            if ((packet.reasonCode ?? 0) >= 0x80) {
              errors.add(`broker refused a PUBLISH with reason code 0x${packet.reasonCode!.toString(16)}`);
            }
            if (p.ids.release(packet.packetId)) {
              p.acked++;
              p.lastAckAt = p.client.readAt;
            } else {
              errors.add(`acknowledgement for packet id ${packet.packetId} that was not in flight`);
            }
          } else if (packet.type === PacketType.PUBREC) {
            acks.add(pubrel, packet.packetId);
          }
        },
        onChunkEnd: () => {
          const bytes = acks.take();
          if (bytes !== null) p.client.write(bytes).catch((e) => errors.add(String(e)));
          // Saturating QoS 1/2: top the window up once per chunk of acknowledgements.
          if (o.rate === 0 && o.qos > 0) refill(p);
        },
        onClose: errors.onClose,
      };
    }

    const pumps: Promise<void>[] = [];
    if (o.rate > 0) {
      pumps.push((async () => {
        // One scheduler for all paced publishers: publisher i sends its k-th message at
        // (k + phase_i) / rate seconds, so 1,000 publishers at 1 msg/s spread evenly over each second.
        while (!stopped) {
          const now = performance.now();
          if (now >= deadline) break;
          const elapsed = (now - start) / 1000;
          for (const p of pubs) {
            if (p.client.closed) continue;
            let due = Math.floor(elapsed * o.rate + 1 - p.phase) - p.sent;
            due = Math.min(due, canSend(p));
            if (o.qos > 0) due = Math.min(due, p.window - p.ids.inUse);
            if (due > 0) sendNow(p, due).catch((e) => errors.add(String(e)));
          }
          await sleep(1);
        }
      })());
    } else if (o.qos === 0) {
      // Each message of publisher p is due at this many sinks; the window is split among publishers
      // and counted in messages per publisher; a batch is at most a quarter of it, so writes pipeline.
      const fanout = spec.routing === "all" ? sinks.length : 1;
      const window = Math.max(1, Math.floor(o.e2eWindow / fanout / pubs.length));
      const batch = o.e2eWindow > 0 ? Math.min(o.batch, Math.max(1, Math.floor(window / 4))) : o.batch;
      for (const p of pubs) {
        pumps.push(
          (async () => {
            // Saturating QoS 0: one reused buffer of `batch` packets per write; awaiting the write is
            // TCP back-pressure from the broker, and the end-to-end window keeps the broker's queues short.
            const buf = p.template.batch(batch);
            const view = new DataView(buf.buffer);
            let written = 0; // messages no longer counted in flight: delivered, or given up as lost
            let lastDelivered = 0;
            let stalledSince = 0;
            while (!stopped && !p.client.closed) {
              const k = Math.min(batch, canSend(p));
              if (k <= 0) break;
              if (o.e2eWindow > 0) {
                const got = delivered[p.index] / fanout;
                if (p.sent - written - got + k > window) {
                  const now = performance.now();
                  if (got !== lastDelivered) {
                    lastDelivered = got;
                    stalledSince = now;
                  } else if (now - stalledSince > 500) {
                    // Nothing arrived for 500 ms: the broker dropped what is in flight (QoS 0 may be
                    // dropped, §4.3.1). Stop waiting for it; it is counted as lost at the end.
                    written = p.sent - got;
                    stalledSince = now;
                    continue;
                  }
                  await progress.wait(5);
                  continue;
                }
              }
              const now = performance.now();
              for (let s = 0; s < k; s++) p.template.stamp(view, s, 0, stampTag, p.index, p.sent++, now);
              await p.client.write(k === batch ? buf : buf.subarray(0, k * p.template.length));
            }
          })().catch((e) => errors.add(String(e))),
        );
      }
    } else {
      for (const p of pubs) refill(p);
    }

    // Publishing window: until the deadline, or until every publisher has sent --count.
    while (!stopped && performance.now() < deadline) {
      if (o.count > 0 && pubs.every((p) => p.sent >= o.count)) break;
      await sleep(10);
    }
    stopped = true;
    clearTimeout(stopTimer);
    const publishEnd = performance.now();
    result.duration_s = (publishEnd - start) / 1000;

    // Drain: wait for in-flight messages until all expected deliveries arrived, nothing moved for 2 s,
    // or --drain seconds passed.
    const drainEnd = publishEnd + o.drain * 1000;
    await settleWithin(Promise.all(pumps), o.drain * 1000);
    const expectedOf = () => expectedDeliveries(spec.routing, pubs, sinks);
    let lastProgress = -1;
    let lastMoveAt = performance.now();
    while (performance.now() < drainEnd) {
      const received = sinks.reduce((a, s) => a + s.unique, 0);
      const acked = pubs.reduce((a, p) => a + p.acked, 0);
      const inFlight = pubs.reduce((a, p) => a + p.ids.inUse, 0);
      if (received >= expectedOf().expected && inFlight === 0) break;
      if (received + acked !== lastProgress) {
        lastProgress = received + acked;
        lastMoveAt = performance.now();
      } else if (performance.now() - lastMoveAt > 2000) {
        break;
      }
      await sleep(20);
    }

    const { expected, lost } = expectedOf();
    result.sent = pubs.reduce((a, p) => a + p.sent, 0);
    result.expected = expected;
    result.lost = lost;
    result.received = sinks.reduce((a, s) => a + s.unique, 0);
    result.duplicates = sinks.reduce((a, s) => a + s.duplicates, 0);
    result.reordered = sinks.reduce((a, s) => a + s.reordered, 0);
    const firstAt = Math.min(...sinks.filter((s) => s.unique > 0).map((s) => s.firstAt));
    const lastAt = Math.max(...sinks.filter((s) => s.unique > 0).map((s) => s.lastAt));
    result.rate = result.received > 1 && lastAt > firstAt
      ? Math.round(result.received / ((lastAt - firstAt) / 1000))
      : 0;
    result.send_rate = result.duration_s > 0 ? Math.round(result.sent / result.duration_s) : 0;
    if (o.qos > 0) {
      result.acked = pubs.reduce((a, p) => a + p.acked, 0);
      const lastAck = Math.max(...pubs.map((p) => p.lastAckAt));
      result.ack_rate = lastAck > start ? Math.round(result.acked / ((lastAck - start) / 1000)) : 0;
    }
    fillLatency(result, latency);
    const foreign = sinks.reduce((a, s) => a + s.foreign, 0);
    if (foreign > 0) errors.add(`${foreign} deliveries without this run's stamp (ignored)`);
  } finally {
    await closeAll([...pubClients, ...subs]);
  }
  result.disconnects = errors.disconnects;
  result.errors = errors.messages;
  result.elapsed_s = (performance.now() - began) / 1000;
  return result;
}

/** Deliveries due and missing, per publisher, given who should receive whom. */
function expectedDeliveries(
  routing: Routing,
  pubs: Publisher[],
  sinks: Sink[],
): { expected: number; lost: number } {
  let expected = 0;
  let lost = 0;
  const account = (sink: Sink, p: Publisher) => {
    expected += p.sent;
    lost += Math.max(0, p.sent - sink.uniqueFrom(p.index));
  };
  if (routing === "pair") {
    for (let i = 0; i < pubs.length && i < sinks.length; i++) account(sinks[i], pubs[i]);
  } else {
    for (const sink of sinks) for (const p of pubs) account(sink, p);
  }
  return { expected, lost };
}

/** idle and conn: open many connections, hold them, close them. */
async function runConnections(o: LoadOptions): Promise<LoadResult> {
  const began = performance.now();
  const result = emptyResult(o);
  result.publishers = 0;
  result.subscribers = 0;
  const errors = new ErrorLog();
  const connectLatency = new LatencyHistogram();
  const tag = runTag();
  const clients: (BenchClient | undefined)[] = new Array(o.connections);
  let failed = 0;
  const open = async (i: number) => {
    const t = performance.now();
    try {
      const c = await BenchClient.connect({
        host: o.host,
        port: o.port,
        clientId: `${tag}-c${i}`,
        version: o.mqtt5 ? 5 : 4,
        // Idle connections receive nothing after CONNACK: a small buffer keeps the generator's memory flat.
        readBufferSize: 256,
        decoder: o.decoder,
      });
      c.handlers = { onClose: errors.onClose };
      clients[i] = c;
      connectLatency.record((performance.now() - t) * 1000);
    } catch (e) {
      failed++;
      errors.add(e instanceof Error ? e.message : String(e));
    }
  };
  try {
    const start = performance.now();
    if (o.connectRate > 0) {
      // Paced: connection i starts at i / rate seconds, whatever the broker's speed (open loop).
      const pending: Promise<void>[] = [];
      let i = 0;
      while (i < o.connections) {
        const due = Math.min(
          o.connections,
          Math.floor(((performance.now() - start) / 1000) * o.connectRate) + 1,
        );
        for (; i < due; i++) pending.push(open(i));
        await sleep(1);
      }
      await Promise.all(pending);
    } else {
      // As fast as the broker answers, 64 handshakes at a time, for at most --duration seconds.
      const stopAt = start + o.duration * 1000;
      await forEachLimit(o.connections, 64, async (i) => {
        if (performance.now() < stopAt) await open(i);
      });
      const skipped = o.connections - clients.filter((c) => c !== undefined).length - failed;
      if (skipped > 0) errors.add(`${skipped} connections not attempted: --duration ${o.duration} s ran out`);
    }
    const upAt = performance.now();
    const connected = clients.filter((c) => c !== undefined && !c.closed).length;
    result.connections = o.connections;
    result.connected = connected;
    result.connect_failed = failed;
    result.connect_p50_us = connectLatency.percentile(50);
    result.connect_p99_us = connectLatency.percentile(99);
    result.connect_rate = Math.round((o.connections - failed) / ((upAt - start) / 1000));
    result.duration_s = (upAt - start) / 1000;
    o.onEvent?.({ event: "ready", scenario: o.scenario, connections: connected, failed });
    await sleep(o.hold * 1000);
    const still = clients.filter((c) => c !== undefined && !c.closed).length;
    if (still < connected) errors.add(`${connected - still} connections closed by the broker while idle`);
  } finally {
    await closeAll(clients);
  }
  result.disconnects = errors.disconnects;
  result.errors = errors.messages;
  result.elapsed_s = (performance.now() - began) / 1000;
  return result;
}

/** retained: store N retained messages (QoS 1, windowed), then time a subscription to all of them. */
async function runRetained(o: LoadOptions): Promise<LoadResult> {
  const began = performance.now();
  const result = emptyResult(o);
  result.qos = 1;
  const errors = new ErrorLog();
  const tag = runTag();
  const stampTag = newRunTag();
  const version: ProtocolVersion = o.mqtt5 ? 5 : 4;
  let pub: BenchClient | undefined;
  let sub: BenchClient | undefined;
  try {
    pub = await BenchClient.connect({
      host: o.host,
      port: o.port,
      clientId: `${tag}-rp`,
      version,
      decoder: o.decoder,
    });
    const publisher = pub;
    const ids = new PacketIdPool();
    const window = Math.min(o.window, publisher.connack?.properties?.receiveMaximum ?? 65535);
    let sent = 0;
    let acked = 0;
    let lastAckAt = 0;
    const total = o.count > 0 ? Math.min(o.count, o.retained) : o.retained;
    const payload = new Uint8Array(o.payloadSize);
    const payloadView = new DataView(payload.buffer);
    const refill = () => {
      // Every message has its own topic (r/<i>), so each is encoded by the codec, a window at a time.
      const parts: Uint8Array[] = [];
      let size = 0;
      const now = performance.now();
      while (sent < total && ids.inUse < window) {
        writeStamp(payloadView, 0, stampTag, 0, sent, now);
        const bytes = encode({
          type: PacketType.PUBLISH,
          topic: `r/${sent}`,
          payload,
          qos: 1,
          retain: true,
          dup: false,
          packetId: ids.acquire(),
        }, version);
        parts.push(bytes);
        size += bytes.length;
        sent++;
      }
      if (parts.length === 0) return;
      const out = new Uint8Array(size);
      let off = 0;
      for (const part of parts) {
        out.set(part, off);
        off += part.length;
      }
      publisher.write(out).catch((e) => errors.add(String(e)));
    };
    publisher.handlers = {
      onPacket: (p) => {
        if (p.type === PacketType.PUBACK && ids.release(p.packetId)) {
          acked++;
          lastAckAt = publisher.readAt;
        }
      },
      onChunkEnd: refill,
      onClose: errors.onClose,
    };
    const loadStart = performance.now();
    refill();
    const loadDeadline = loadStart + o.duration * 1000;
    while (acked < total && !publisher.closed && performance.now() < loadDeadline) await sleep(5);
    result.load_ms = Math.round((lastAckAt || performance.now()) - loadStart);
    result.sent = acked;
    result.acked = acked;
    result.ack_rate = result.load_ms > 0 ? Math.round(acked / (result.load_ms / 1000)) : 0;
    if (acked < total) {
      errors.add(`only ${acked} of ${total} retained messages acknowledged in ${o.duration} s`);
    }

    sub = await BenchClient.connect({
      host: o.host,
      port: o.port,
      clientId: `${tag}-rs`,
      version,
      readBufferSize: 64 * 1024,
      decoder: o.decoder,
    });
    // Latency from the original publish is meaningless for retained messages: a throwaway histogram.
    const sink = new Sink(new LatencyHistogram(), stampTag);
    attachSubscriber(sub, sink, errors);
    const subscribedAt = performance.now();
    const granted = await sub.subscribe("r/#", 0);
    if (granted >= 0x80) {
      throw new Error(`broker refused subscription "r/#" with reason code 0x${granted.toString(16)}`);
    }
    const drainEnd = performance.now() + o.drain * 1000;
    let last = -1;
    let lastMoveAt = performance.now();
    while (sink.unique < acked && performance.now() < drainEnd && !sub.closed) {
      if (sink.unique !== last) {
        last = sink.unique;
        lastMoveAt = performance.now();
      } else if (performance.now() - lastMoveAt > 3000) {
        break;
      }
      await sleep(5);
    }
    result.received = sink.unique;
    result.expected = acked;
    result.lost = Math.max(0, acked - sink.unique);
    result.duplicates = sink.duplicates;
    result.retained_ms = sink.unique > 0 ? Math.round(sink.lastAt - subscribedAt) : null;
    result.rate = sink.unique > 0 && sink.lastAt > subscribedAt
      ? Math.round(sink.unique / ((sink.lastAt - subscribedAt) / 1000))
      : 0;
    result.duration_s = (performance.now() - loadStart) / 1000;
    if (sink.retainedFlag < sink.unique) {
      errors.add(`${sink.unique - sink.retainedFlag} messages arrived without the RETAIN flag (§3.3.1.3)`);
    }
  } finally {
    await closeAll([pub, sub]);
  }
  result.disconnects = errors.disconnects;
  result.errors = errors.messages;
  result.elapsed_s = (performance.now() - began) / 1000;
  return result;
}
