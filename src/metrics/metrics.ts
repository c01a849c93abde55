/**
 * Broker metrics: the counters the broker increments, the gauges it reports on demand, and their
 * rendering as Prometheus text exposition format 0.0.4.
 *
 * {@link METRICS} is the one table of metric names, types and help texts. Counters are plain numeric
 * fields of {@link BrokerMetrics} (or a typed array indexed by packet type), so the publish path does
 * `metrics.publishReceived++` with no allocation and no Map lookup; everything else happens when
 * Prometheus scrapes.
 *
 * @module
 */

import { PACKET_TYPE_NAMES } from "../mqtt/types.ts";
import type { StoreStats } from "../store/store.ts";

/** Prometheus metric types used here. */
export type MetricType = "counter" | "gauge" | "histogram";

/** One row of the metric table. */
export interface MetricInfo {
  /** Metric family name as exposed (counters end in `_total`). */
  readonly name: string;
  readonly type: MetricType;
  readonly help: string;
  /** Label names, when the family has labels. */
  readonly labels?: readonly string[];
}

/** Lower-case packet type names; index = packet type 1..15 (§2.1.2), index 0 is reserved. */
export const PACKET_NAMES: readonly string[] = [
  "reserved",
  ...PACKET_TYPE_NAMES.slice(1).map((n) => n.toLowerCase()),
];

/** Why a message was not delivered, as the `reason` label of mqtt_messages_dropped_total. */
export const DROP_REASONS = [
  "queue_full",
  "too_large",
  "expired",
  "slow_consumer",
  "not_authorized",
  "no_subscribers",
  "session_ended",
] as const;

/** One of {@link DROP_REASONS}. */
export type DropReason = typeof DROP_REASONS[number];

/** Upper bounds (seconds) of the store commit latency histogram buckets; `+Inf` is implied. */
export const STORE_COMMIT_BUCKETS: readonly number[] = [
  0.0005,
  0.001,
  0.0025,
  0.005,
  0.01,
  0.025,
  0.05,
  0.1,
  0.25,
  0.5,
  1,
];

/** The metric table, keyed for the renderer; exported as the list {@link METRICS}. */
const M = {
  clientsConnected: { name: "mqtt_clients_connected", type: "gauge", help: "Clients currently connected." },
  connectionsTotal: {
    name: "mqtt_connections_total",
    type: "counter",
    help: "Client connections accepted with a successful CONNACK since start.",
  },
  messagesReceived: {
    name: "mqtt_messages_received_total",
    type: "counter",
    help: "MQTT control packets received, by packet type.",
    labels: ["type"],
  },
  messagesSent: {
    name: "mqtt_messages_sent_total",
    type: "counter",
    help: "MQTT control packets sent, by packet type.",
    labels: ["type"],
  },
  bytesReceived: { name: "mqtt_bytes_received_total", type: "counter", help: "Bytes received from clients." },
  bytesSent: { name: "mqtt_bytes_sent_total", type: "counter", help: "Bytes sent to clients." },
  publishReceived: {
    name: "mqtt_publish_received_total",
    type: "counter",
    help: "PUBLISH messages received from clients.",
  },
  publishSent: {
    name: "mqtt_publish_sent_total",
    type: "counter",
    help: "PUBLISH messages delivered to subscribers.",
  },
  subscriptions: { name: "mqtt_subscriptions", type: "gauge", help: "Subscriptions of all sessions." },
  retainedMessages: { name: "mqtt_retained_messages", type: "gauge", help: "Retained messages stored." },
  inflightMessages: {
    name: "mqtt_inflight_messages",
    type: "gauge",
    help: "Outbound QoS 1 and 2 messages sent and awaiting acknowledgement.",
  },
  queuedMessages: {
    name: "mqtt_queued_messages",
    type: "gauge",
    help: "Outbound messages queued for sessions and not yet sent.",
  },
  sessions: { name: "mqtt_sessions", type: "gauge", help: "Sessions, connected or not." },
  messagesDropped: {
    name: "mqtt_messages_dropped_total",
    type: "counter",
    help: "Messages not delivered, by reason.",
    labels: ["reason"],
  },
  authFailures: {
    name: "mqtt_auth_failures_total",
    type: "counter",
    help: "CONNECT attempts refused for a bad username or password or as not authorized.",
  },
  connectionsEvicted: {
    name: "mqtt_connections_evicted_total",
    type: "counter",
    help: "Connections closed before their CONNECT to make room: server.max_clients others were waiting too.",
  },
  publisherPauses: {
    name: "mqtt_publisher_pauses_total",
    type: "counter",
    help: "Times a publisher's socket was paused because a subscriber it feeds fell behind (flow control).",
  },
  storeCommits: { name: "mqtt_store_commits_total", type: "counter", help: "Store commits." },
  storeMutations: {
    name: "mqtt_store_mutations_total",
    type: "counter",
    help: "Keys written or deleted by store commits (after collapsing writes that cancel out).",
  },
  storeCommitFailures: {
    name: "mqtt_store_commit_failures_total",
    type: "counter",
    help: "Store commits that failed.",
  },
  storeCommitDuration: {
    name: "mqtt_store_commit_duration_seconds",
    type: "histogram",
    help: "Store commit latency in seconds.",
  },
  residentMemory: {
    name: "process_resident_memory_bytes",
    type: "gauge",
    help: "Resident set size of the process in bytes.",
  },
  heapUsed: { name: "process_heap_used_bytes", type: "gauge", help: "V8 heap in use in bytes." },
  uptime: { name: "process_uptime_seconds", type: "gauge", help: "Seconds since the broker started." },
} as const satisfies Record<string, MetricInfo>;

/** Every metric the broker exposes, in exposition order: the one table of names, types and help. */
export const METRICS: readonly MetricInfo[] = Object.values(M);

/** Counters of one broker. Fields are incremented in place by the broker; read by {@link renderPrometheus}. */
export class BrokerMetrics {
  /** Network connections accepted. */
  connectionsTotal = 0;
  /** Control packets received; index = packet type (§2.1.2), length 16. */
  packetsReceived: Float64Array = new Float64Array(16);
  /** Control packets sent; index = packet type, length 16. */
  packetsSent: Float64Array = new Float64Array(16);
  bytesReceived = 0;
  bytesSent = 0;
  /** PUBLISH packets received from clients. */
  publishReceived = 0;
  /** PUBLISH deliveries to subscribers. */
  publishSent = 0;
  /** Undelivered messages, by reason. A fixed-shape object: `dropped.queue_full++` costs no lookup. */
  dropped: Record<DropReason, number> = {
    queue_full: 0,
    too_large: 0,
    expired: 0,
    slow_consumer: 0,
    not_authorized: 0,
    no_subscribers: 0,
    session_ended: 0,
  };
  /** CONNECTs refused for bad username / password or not authorized. */
  authFailures = 0;
  /** Connections without CONNECT closed to make room for a newer one (server.max_clients were waiting). */
  connectionsEvicted = 0;
  /** Publisher sockets paused for a subscriber that fell behind. */
  publisherPauses = 0;
  /** ms since the epoch when the broker started. */
  startedAt: number = Date.now();
  /**
   * Store commit latency histogram, filled from {@link StoreStats.latencies} at each render: count per
   * bucket of {@link STORE_COMMIT_BUCKETS} (not cumulative), the last slot being `+Inf`.
   */
  storeCommitBuckets: Float64Array = new Float64Array(STORE_COMMIT_BUCKETS.length + 1);
  /** Sum of the store commit latencies observed, seconds. */
  storeCommitSum = 0;
  /** Number of store commit latencies observed. */
  storeCommitCount = 0;

  /** Adds store commit latencies (seconds) to the histogram. */
  observeStoreCommits(latencies: readonly number[]): void {
    for (const seconds of latencies) {
      let i = 0;
      while (i < STORE_COMMIT_BUCKETS.length && seconds > STORE_COMMIT_BUCKETS[i]) i++;
      this.storeCommitBuckets[i]++;
      this.storeCommitSum += seconds;
      this.storeCommitCount++;
    }
  }
}

/** Gauges read at render time from the broker's own structures. */
export interface GaugeSource {
  clientsConnected(): number;
  subscriptions(): number;
  retainedMessages(): number;
  inflightMessages(): number;
  queuedMessages(): number;
  sessions(): number;
}

/** Content-Type of {@link renderPrometheus}'s output. */
export const PROMETHEUS_CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8";

/** A sample value as the text format writes it (`+Inf`, `-Inf`, `NaN` spelled out). */
function formatValue(v: number): string {
  if (Number.isNaN(v)) return "NaN";
  if (v === Infinity) return "+Inf";
  if (v === -Infinity) return "-Inf";
  return String(v);
}

/** Escapes a label value: backslash, double quote and line feed (text format 0.0.4). */
function escapeLabel(value: string): string {
  return value.replaceAll("\\", "\\\\").replaceAll('"', '\\"').replaceAll("\n", "\\n");
}

function header(out: string[], info: MetricInfo): void {
  out.push(`# HELP ${info.name} ${info.help}`, `# TYPE ${info.name} ${info.type}`);
}

function single(out: string[], info: MetricInfo, value: number): void {
  header(out, info);
  out.push(`${info.name} ${formatValue(value)}`);
}

function labelled(out: string[], info: MetricInfo, label: string, values: [string, number][]): void {
  header(out, info);
  for (const [labelValue, v] of values) {
    out.push(`${info.name}{${label}="${escapeLabel(labelValue)}"} ${formatValue(v)}`);
  }
}

function byPacketType(counts: Float64Array): [string, number][] {
  const out: [string, number][] = [];
  for (let type = 1; type < PACKET_NAMES.length; type++) out.push([PACKET_NAMES[type], counts[type]]);
  return out;
}

/**
 * Renders every metric of {@link METRICS} as Prometheus text 0.0.4. When `store` is given its pending
 * latencies are drained into `m`'s histogram (the array is emptied in place); without a store the store
 * metrics read zero.
 */
export function renderPrometheus(m: BrokerMetrics, g: GaugeSource, store?: StoreStats): string {
  if (store !== undefined && store.latencies.length > 0) {
    m.observeStoreCommits(store.latencies);
    store.latencies.length = 0;
  }
  const memory = Deno.memoryUsage();
  const out: string[] = [];
  single(out, M.clientsConnected, g.clientsConnected());
  single(out, M.connectionsTotal, m.connectionsTotal);
  labelled(out, M.messagesReceived, "type", byPacketType(m.packetsReceived));
  labelled(out, M.messagesSent, "type", byPacketType(m.packetsSent));
  single(out, M.bytesReceived, m.bytesReceived);
  single(out, M.bytesSent, m.bytesSent);
  single(out, M.publishReceived, m.publishReceived);
  single(out, M.publishSent, m.publishSent);
  single(out, M.subscriptions, g.subscriptions());
  single(out, M.retainedMessages, g.retainedMessages());
  single(out, M.inflightMessages, g.inflightMessages());
  single(out, M.queuedMessages, g.queuedMessages());
  single(out, M.sessions, g.sessions());
  labelled(out, M.messagesDropped, "reason", DROP_REASONS.map((r) => [r, m.dropped[r]]));
  single(out, M.authFailures, m.authFailures);
  single(out, M.connectionsEvicted, m.connectionsEvicted);
  single(out, M.publisherPauses, m.publisherPauses);
  single(out, M.storeCommits, store?.commits ?? 0);
  single(out, M.storeMutations, store?.mutations ?? 0);
  single(out, M.storeCommitFailures, store?.failures ?? 0);

  const h = M.storeCommitDuration;
  header(out, h);
  let cumulative = 0;
  for (let i = 0; i <= STORE_COMMIT_BUCKETS.length; i++) {
    cumulative += m.storeCommitBuckets[i];
    const le = i < STORE_COMMIT_BUCKETS.length ? formatValue(STORE_COMMIT_BUCKETS[i]) : "+Inf";
    out.push(`${h.name}_bucket{le="${le}"} ${formatValue(cumulative)}`);
  }
  out.push(
    `${h.name}_sum ${formatValue(m.storeCommitSum)}`,
    `${h.name}_count ${formatValue(m.storeCommitCount)}`,
  );

  single(out, M.residentMemory, memory.rss);
  single(out, M.heapUsed, memory.heapUsed);
  single(out, M.uptime, Math.max(0, (Date.now() - m.startedAt) / 1000));
  return out.join("\n") + "\n";
}
