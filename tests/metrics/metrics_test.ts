import assert from "node:assert/strict";
import {
  BrokerMetrics,
  DROP_REASONS,
  type GaugeSource,
  METRICS,
  PACKET_NAMES,
  renderPrometheus,
  STORE_COMMIT_BUCKETS,
} from "../../src/metrics/metrics.ts";
import type { StoreStats } from "../../src/store/store.ts";
import { PacketType } from "../../src/mqtt/types.ts";

interface Sample {
  name: string;
  labels: Record<string, string>;
  value: number;
}

interface Family {
  help?: string;
  type?: string;
  samples: Sample[];
}

/**
 * A strict reader of text format 0.0.4: every sample must come after the HELP and TYPE lines of its
 * family (histograms own `_bucket`, `_sum` and `_count`), names and labels must be well formed and each
 * series appears once.
 */
function parseExposition(text: string): Map<string, Family> {
  assert.ok(text.endsWith("\n"), "the exposition ends with a line feed");
  const families = new Map<string, Family>();
  const series = new Set<string>();
  let current: string | undefined;
  for (const line of text.slice(0, -1).split("\n")) {
    const meta = /^# (HELP|TYPE) ([a-zA-Z_:][a-zA-Z0-9_:]*) (.+)$/.exec(line);
    if (meta) {
      const [, kind, name, rest] = meta;
      const family = families.get(name) ?? { samples: [] };
      families.set(name, family);
      if (kind === "HELP") {
        assert.equal(family.help, undefined, `second HELP for ${name}`);
        family.help = rest;
      } else {
        assert.equal(family.type, undefined, `second TYPE for ${name}`);
        assert.match(rest, /^(counter|gauge|histogram|summary|untyped)$/);
        family.type = rest;
      }
      current = name;
      continue;
    }
    assert.ok(!line.startsWith("#"), `unexpected comment line: ${line}`);
    const m = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{([^}]*)\})? (\S+)$/.exec(line);
    assert.ok(m, `malformed sample line: ${JSON.stringify(line)}`);
    const [, name, labelText, valueText] = m;
    const labels: Record<string, string> = {};
    if (labelText) {
      for (const pair of labelText.split(",")) {
        const lm = /^([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"$/.exec(pair);
        assert.ok(lm, `malformed label ${pair} in ${line}`);
        labels[lm[1]] = lm[2];
      }
    }
    const value = valueText === "+Inf" ? Infinity : valueText === "-Inf" ? -Infinity : Number(valueText);
    assert.ok(valueText === "NaN" || !Number.isNaN(value), `bad value in ${line}`);
    const family = families.get(current ?? "");
    assert.ok(family !== undefined && current !== undefined, `sample before any HELP/TYPE: ${line}`);
    const own = family.type === "histogram"
      ? [`${current}_bucket`, `${current}_sum`, `${current}_count`].includes(name)
      : name === current;
    assert.ok(own, `${name} is outside its family's HELP/TYPE block (${current})`);
    assert.ok(family.help !== undefined && family.type !== undefined, `${current} lacks HELP or TYPE`);
    assert.ok(!series.has(line.slice(0, line.lastIndexOf(" "))), `duplicate series ${line}`);
    series.add(line.slice(0, line.lastIndexOf(" ")));
    family.samples.push({ name, labels, value });
  }
  return families;
}

function gauges(values: Partial<Record<keyof GaugeSource, number>> = {}): GaugeSource {
  return {
    clientsConnected: () => values.clientsConnected ?? 0,
    subscriptions: () => values.subscriptions ?? 0,
    retainedMessages: () => values.retainedMessages ?? 0,
    inflightMessages: () => values.inflightMessages ?? 0,
    queuedMessages: () => values.queuedMessages ?? 0,
    sessions: () => values.sessions ?? 0,
  };
}

function value(families: Map<string, Family>, name: string, labels: Record<string, string> = {}): number {
  for (const family of families.values()) {
    for (const s of family.samples) {
      if (s.name === name && JSON.stringify(s.labels) === JSON.stringify(labels)) return s.value;
    }
  }
  throw new Error(`no sample ${name} ${JSON.stringify(labels)}`);
}

Deno.test("PACKET_NAMES maps packet types to lower-case names", () => {
  assert.equal(PACKET_NAMES.length, 16);
  assert.equal(PACKET_NAMES[PacketType.CONNECT], "connect");
  assert.equal(PACKET_NAMES[PacketType.PUBLISH], "publish");
  assert.equal(PACKET_NAMES[PacketType.PINGRESP], "pingresp");
  assert.equal(PACKET_NAMES[PacketType.AUTH], "auth");
});

Deno.test("the metric table lists every required name once with its type", () => {
  const want: Record<string, string> = {
    mqtt_clients_connected: "gauge",
    mqtt_connections_total: "counter",
    mqtt_messages_received_total: "counter",
    mqtt_messages_sent_total: "counter",
    mqtt_bytes_received_total: "counter",
    mqtt_bytes_sent_total: "counter",
    mqtt_publish_received_total: "counter",
    mqtt_publish_sent_total: "counter",
    mqtt_subscriptions: "gauge",
    mqtt_retained_messages: "gauge",
    mqtt_inflight_messages: "gauge",
    mqtt_queued_messages: "gauge",
    mqtt_sessions: "gauge",
    mqtt_messages_dropped_total: "counter",
    mqtt_auth_failures_total: "counter",
    mqtt_connections_evicted_total: "counter",
    mqtt_publisher_pauses_total: "counter",
    mqtt_store_commits_total: "counter",
    mqtt_store_mutations_total: "counter",
    mqtt_store_commit_failures_total: "counter",
    mqtt_store_commit_duration_seconds: "histogram",
    process_resident_memory_bytes: "gauge",
    process_heap_used_bytes: "gauge",
    process_uptime_seconds: "gauge",
  };
  assert.deepEqual(Object.fromEntries(METRICS.map((m) => [m.name, m.type])), want);
  assert.equal(new Set(METRICS.map((m) => m.name)).size, METRICS.length);
  for (const m of METRICS) {
    assert.ok(m.help.length > 0, m.name);
    if (m.type === "counter") assert.ok(m.name.endsWith("_total"), m.name);
  }
});

Deno.test("renderPrometheus output parses, and exposes exactly the table's families", () => {
  const families = parseExposition(renderPrometheus(new BrokerMetrics(), gauges()));
  assert.deepEqual([...families.keys()], METRICS.map((m) => m.name));
  for (const info of METRICS) {
    const family = families.get(info.name)!;
    assert.equal(family.type, info.type, info.name);
    assert.equal(family.help, info.help, info.name);
    assert.ok(family.samples.length > 0, `${info.name} has samples`);
  }
  // Labelled families are initialised for every label value, so rates work from the first scrape.
  assert.equal(families.get("mqtt_messages_received_total")!.samples.length, 15);
  assert.deepEqual(
    families.get("mqtt_messages_dropped_total")!.samples.map((s) => s.labels.reason),
    [...DROP_REASONS],
  );
});

Deno.test("counters and gauges move with the broker's fields", () => {
  const m = new BrokerMetrics();
  const before = parseExposition(renderPrometheus(m, gauges()));
  m.connectionsTotal += 3;
  m.packetsReceived[PacketType.PUBLISH] += 5;
  m.packetsReceived[PacketType.CONNECT]++;
  m.packetsSent[PacketType.PUBACK] += 2;
  m.bytesReceived += 1234;
  m.bytesSent += 99;
  m.publishReceived += 5;
  m.publishSent += 7;
  m.dropped.queue_full++;
  m.dropped.not_authorized += 4;
  m.authFailures++;
  const after = parseExposition(renderPrometheus(
    m,
    gauges({
      clientsConnected: 2,
      subscriptions: 11,
      retainedMessages: 3,
      inflightMessages: 4,
      queuedMessages: 6,
      sessions: 9,
    }),
  ));
  assert.equal(value(before, "mqtt_connections_total"), 0);
  assert.equal(value(after, "mqtt_connections_total"), 3);
  assert.equal(value(before, "mqtt_messages_received_total", { type: "publish" }), 0);
  assert.equal(value(after, "mqtt_messages_received_total", { type: "publish" }), 5);
  assert.equal(value(after, "mqtt_messages_received_total", { type: "connect" }), 1);
  assert.equal(value(after, "mqtt_messages_received_total", { type: "puback" }), 0);
  assert.equal(value(after, "mqtt_messages_sent_total", { type: "puback" }), 2);
  assert.equal(value(after, "mqtt_bytes_received_total"), 1234);
  assert.equal(value(after, "mqtt_bytes_sent_total"), 99);
  assert.equal(value(after, "mqtt_publish_received_total"), 5);
  assert.equal(value(after, "mqtt_publish_sent_total"), 7);
  assert.equal(value(after, "mqtt_messages_dropped_total", { reason: "queue_full" }), 1);
  assert.equal(value(after, "mqtt_messages_dropped_total", { reason: "not_authorized" }), 4);
  assert.equal(value(after, "mqtt_messages_dropped_total", { reason: "expired" }), 0);
  assert.equal(value(after, "mqtt_auth_failures_total"), 1);
  assert.equal(value(after, "mqtt_clients_connected"), 2);
  assert.equal(value(after, "mqtt_subscriptions"), 11);
  assert.equal(value(after, "mqtt_retained_messages"), 3);
  assert.equal(value(after, "mqtt_inflight_messages"), 4);
  assert.equal(value(after, "mqtt_queued_messages"), 6);
  assert.equal(value(after, "mqtt_sessions"), 9);
  assert.ok(value(after, "process_resident_memory_bytes") > 0);
  assert.ok(value(after, "process_heap_used_bytes") > 0);
});

Deno.test("process_uptime_seconds counts from startedAt", () => {
  const m = new BrokerMetrics();
  m.startedAt = Date.now() - 90_000;
  const uptime = value(parseExposition(renderPrometheus(m, gauges())), "process_uptime_seconds");
  assert.ok(uptime >= 90 && uptime < 100, `uptime ${uptime}`);
});

Deno.test("store latencies are drained into a cumulative histogram", () => {
  const m = new BrokerMetrics();
  const stats: StoreStats = { commits: 4, mutations: 10, latencies: [0.0002, 0.003, 0.003, 2], failures: 1 };
  const first = parseExposition(renderPrometheus(m, gauges(), stats));
  assert.equal(stats.latencies.length, 0, "latencies are drained");
  assert.equal(value(first, "mqtt_store_commits_total"), 4);
  assert.equal(value(first, "mqtt_store_mutations_total"), 10);
  assert.equal(value(first, "mqtt_store_commit_failures_total"), 1);

  const buckets = first.get("mqtt_store_commit_duration_seconds")!.samples.filter((s) =>
    s.name.endsWith("_bucket")
  );
  const bound = (le: string) => le === "+Inf" ? Infinity : Number(le);
  assert.deepEqual(buckets.map((b) => bound(b.labels.le)), [...STORE_COMMIT_BUCKETS, Infinity]);
  assert.equal(STORE_COMMIT_BUCKETS[0], 0.0005);
  assert.equal(STORE_COMMIT_BUCKETS[STORE_COMMIT_BUCKETS.length - 1], 1);
  for (let i = 1; i < buckets.length; i++) {
    assert.ok(buckets[i].value >= buckets[i - 1].value, `bucket le=${buckets[i].labels.le} is cumulative`);
  }
  const le = (bound: string) => buckets.find((b) => b.labels.le === bound)!.value;
  assert.equal(le("0.0005"), 1);
  assert.equal(le("0.0025"), 1);
  assert.equal(le("0.005"), 3);
  assert.equal(le("1"), 3);
  assert.equal(le("+Inf"), 4);
  assert.equal(value(first, "mqtt_store_commit_duration_seconds_count"), 4);
  assert.ok(Math.abs(value(first, "mqtt_store_commit_duration_seconds_sum") - 2.0062) < 1e-9);

  // A second render adds only the new latencies; the histogram keeps what it saw.
  stats.latencies.push(0.0005, 0.7);
  stats.commits = 6;
  const second = parseExposition(renderPrometheus(m, gauges(), stats));
  assert.equal(value(second, "mqtt_store_commit_duration_seconds_bucket", { le: "0.0005" }), 2);
  assert.equal(value(second, "mqtt_store_commit_duration_seconds_bucket", { le: "1" }), 5);
  assert.equal(value(second, "mqtt_store_commit_duration_seconds_count"), 6);
  assert.equal(value(second, "mqtt_store_commits_total"), 6);
  const third = parseExposition(renderPrometheus(m, gauges(), stats));
  assert.equal(value(third, "mqtt_store_commit_duration_seconds_count"), 6, "nothing counted twice");
});

Deno.test("without a store the store metrics read zero", () => {
  const families = parseExposition(renderPrometheus(new BrokerMetrics(), gauges()));
  assert.equal(value(families, "mqtt_store_commits_total"), 0);
  assert.equal(value(families, "mqtt_store_commit_duration_seconds_bucket", { le: "+Inf" }), 0);
  assert.equal(value(families, "mqtt_store_commit_duration_seconds_count"), 0);
});
