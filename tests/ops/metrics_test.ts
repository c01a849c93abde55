// The monitoring endpoint of a whole broker, scraped over HTTP while real clients (MQTT.js) talk to it:
// every counter and gauge must move by exactly what the traffic caused. The renderer alone is tested in
// tests/metrics/; here the question is whether the broker counts the right things at the right places.

import assert from "node:assert/strict";
import { METRICS, PROMETHEUS_CONTENT_TYPE } from "../../src/metrics/metrics.ts";
import { MemoryStore } from "../../src/store/memory.ts";
import type { OutboundSource, RestoredState, Store, StoreOp, StoreStats } from "../../src/store/store.ts";
import { collect, mqttConnect, mqttEnd, RawClient, startBroker, waitFor } from "../helpers.ts";
import { startByteProxy } from "./byte_proxy.ts";
import { get, sample, type Scrape, scrape } from "./scrape.ts";

const METRICS_ON = { enabled: true, port: 0, host: "127.0.0.1" };

/** Asserts that every listed sample has exactly the expected value, reporting all mismatches at once. */
function assertSamples(s: Scrape, expected: Record<string, number>, when: string): void {
  const actual: Record<string, number | undefined> = {};
  for (const key of Object.keys(expected)) actual[key] = s.samples.get(key);
  assert.deepEqual(actual, expected, `metrics ${when}`);
}

/** Every `type` label value of a per-packet family that is not listed must be 0. */
function assertOtherPacketTypesZero(s: Scrape, family: string, listed: Record<string, number>): void {
  for (const [key, value] of s.samples) {
    const m = key.match(new RegExp(`^${family}\\{type="(\\w+)"\\}$`));
    if (m === null || `${family}{type="${m[1]}"}` in listed) continue;
    assert.equal(value, 0, `${key} should be 0`);
  }
}

Deno.test("metrics: real traffic moves counters and gauges by exactly what happened", async () => {
  const b = await startBroker({ metrics: METRICS_ON });
  const proxy = startByteProxy(b.port);
  const url = `mqtt://127.0.0.1:${proxy.port}`;
  const port = b.broker.metricsPort!;
  try {
    assert.ok(port > 0, "the bound metrics port is reported");
    // Nothing has happened yet: every traffic counter starts at zero.
    const fresh = await scrape(port);
    assert.equal(sample(fresh, "mqtt_connections_total"), 0);
    assert.equal(sample(fresh, 'mqtt_messages_received_total{type="connect"}'), 0);
    assert.equal(sample(fresh, "mqtt_bytes_received_total"), 0);

    const sub = await mqttConnect(url, { clientId: "ops-sub", protocolVersion: 4, keepalive: 60 });
    const pub = await mqttConnect(url, { clientId: "ops-pub", protocolVersion: 5, keepalive: 60 });
    const got = collect(sub);
    await sub.subscribeAsync("ops/#", { qos: 1 });
    await pub.subscribeAsync("ops/b/+", { qos: 0 });
    await pub.publishAsync("ops/t", "zero", { qos: 0 });
    await pub.publishAsync("ops/t", "one", { qos: 1 });
    await pub.publishAsync("ops/retained", "kept", { qos: 1, retain: true });
    await pub.publishAsync("nobody/here", "lost", { qos: 0 });
    // MQTT 5: PUBACK 0x10 No matching subscribers, which MQTT.js treats as success.
    await pub.publishAsync("nobody/here", "lost too", { qos: 1 });
    await waitFor(() => got.length === 3, "three messages for ops-sub");
    assert.deepEqual(got.map((m) => `${m.topic}=${m.payload}`), [
      "ops/t=zero",
      "ops/t=one",
      "ops/retained=kept",
    ]);
    // ops-sub acknowledges its two QoS 1 messages: wait until the broker has them and all bytes are through.
    await waitFor(() => b.broker.gauges().inflightMessages() === 0, "ops-sub's PUBACKs");
    await waitFor(
      () =>
        b.broker.metrics.bytesSent === proxy.toClients && b.broker.metrics.bytesReceived === proxy.toBroker,
      "every byte forwarded by the proxy",
    );

    const during = await scrape(port);
    assert.equal(during.status, 200);
    assert.equal(during.contentType, PROMETHEUS_CONTENT_TYPE);
    const received = {
      'mqtt_messages_received_total{type="connect"}': 2,
      'mqtt_messages_received_total{type="subscribe"}': 2,
      'mqtt_messages_received_total{type="publish"}': 5,
      'mqtt_messages_received_total{type="puback"}': 2, // ops-sub's acks of "one" and "kept"
    };
    const sent = {
      'mqtt_messages_sent_total{type="connack"}': 2,
      'mqtt_messages_sent_total{type="suback"}': 2,
      'mqtt_messages_sent_total{type="publish"}': 3,
      'mqtt_messages_sent_total{type="puback"}': 3, // to ops-pub for "one", "kept" and "lost too"
    };
    assertSamples(during, {
      mqtt_connections_total: 2,
      mqtt_clients_connected: 2,
      mqtt_sessions: 2,
      mqtt_subscriptions: 2,
      mqtt_retained_messages: 1,
      mqtt_inflight_messages: 0,
      mqtt_queued_messages: 0,
      mqtt_publish_received_total: 5,
      mqtt_publish_sent_total: 3,
      ...received,
      ...sent,
      'mqtt_messages_dropped_total{reason="no_subscribers"}': 2,
      'mqtt_messages_dropped_total{reason="queue_full"}': 0,
      'mqtt_messages_dropped_total{reason="not_authorized"}': 0,
      mqtt_auth_failures_total: 0,
      mqtt_bytes_received_total: proxy.toBroker,
      mqtt_bytes_sent_total: proxy.toClients,
    }, "with both clients connected");
    assertOtherPacketTypesZero(during, "mqtt_messages_received_total", received);
    assertOtherPacketTypesZero(during, "mqtt_messages_sent_total", sent);

    // One client leaves with DISCONNECT: its clean session, and with it its subscription, is gone.
    await mqttEnd(sub);
    await waitFor(() => b.broker.clients.size === 1, "ops-sub's DISCONNECT to be handled");
    await waitFor(() => b.broker.metrics.bytesReceived === proxy.toBroker, "the DISCONNECT bytes");
    const after = await scrape(port);
    assertSamples(after, {
      mqtt_connections_total: 2,
      mqtt_clients_connected: 1,
      mqtt_sessions: 1,
      mqtt_subscriptions: 1,
      mqtt_retained_messages: 1,
      'mqtt_messages_received_total{type="disconnect"}': 1,
      'mqtt_messages_sent_total{type="disconnect"}': 0, // a client's DISCONNECT is not answered
      mqtt_bytes_received_total: proxy.toBroker,
      mqtt_bytes_sent_total: proxy.toClients,
    }, "after ops-sub disconnected");

    // Clearing the retained message (empty retained payload, §3.3.1.3) moves the gauge back.
    await pub.publishAsync("ops/retained", "", { qos: 1, retain: true });
    assert.equal(sample(await scrape(port), "mqtt_retained_messages"), 0);
    await mqttEnd(pub);
  } finally {
    await proxy.close();
    await b.stop();
  }
});

Deno.test("metrics: every family has HELP and TYPE lines, in table order, and uptime moves", async () => {
  const b = await startBroker({ metrics: METRICS_ON });
  try {
    const s = await scrape(b.broker.metricsPort!);
    let last = -1;
    for (const info of METRICS) {
      const help = s.text.indexOf(`# HELP ${info.name} ${info.help}\n`);
      assert.ok(help >= 0, `no HELP line for ${info.name}`);
      assert.ok(
        s.text.includes(`\n# TYPE ${info.name} ${info.type}\n`),
        `no TYPE ${info.type} line for ${info.name}`,
      );
      assert.ok(help > last, `${info.name} is out of table order`);
      last = help;
    }
    // A histogram exposes its buckets, sum and count; the rest one sample per family or label value.
    assert.equal(sample(s, 'mqtt_store_commit_duration_seconds_bucket{le="+Inf"}'), 0);
    assert.ok(sample(s, "process_resident_memory_bytes") > 0);
    assert.ok(sample(s, "process_heap_used_bytes") > 0);
    const uptime = sample(s, "process_uptime_seconds");
    assert.ok(uptime >= 0 && uptime < 60, `uptime ${uptime}`);
  } finally {
    await b.stop();
  }
});

Deno.test("metrics: in-flight and queued gauges follow an unacknowledging, then offline subscriber", async () => {
  const b = await startBroker({ metrics: METRICS_ON });
  const port = b.broker.metricsPort!;
  try {
    // A persistent 3.1.1 session that never acknowledges.
    const slow = await RawClient.connect(b.port, { clientId: "slow", clean: false });
    slow.send({
      type: 8,
      packetId: 1,
      subscriptions: [{
        topicFilter: "q/#",
        qos: 1,
        noLocal: false,
        retainAsPublished: false,
        retainHandling: 0,
      }],
    });
    await slow.expect(9);
    const pub = await RawClient.connect(b.port, { clientId: "pub" });
    const publish = (id: number) => {
      pub.send({
        type: 3,
        topic: "q/x",
        payload: new Uint8Array([id]),
        qos: 1,
        retain: false,
        dup: false,
        packetId: id,
      });
      return pub.expect(4);
    };
    await publish(1);
    await slow.expect(3);
    let s = await scrape(port);
    assertSamples(s, { mqtt_inflight_messages: 1, mqtt_queued_messages: 0, mqtt_sessions: 2 }, "one unacked");

    // Offline: new messages wait in the session's queue; the unacknowledged one stays in flight (§4.4).
    await slow.close();
    await waitFor(() => b.broker.clients.size === 1, "slow's connection to end");
    await publish(2);
    await publish(3);
    s = await scrape(port);
    assertSamples(s, {
      mqtt_clients_connected: 1,
      mqtt_sessions: 2,
      mqtt_inflight_messages: 1,
      mqtt_queued_messages: 2,
      mqtt_publish_sent_total: 1,
    }, "slow offline");

    // Back online, it gets all three and acknowledges them: both gauges return to zero.
    const back = await RawClient.connect(b.port, { clientId: "slow", clean: false });
    for (let i = 0; i < 3; i++) {
      const p = await back.expect(3) as { packetId: number };
      back.send({ type: 4, packetId: p.packetId });
    }
    await waitFor(() => b.broker.gauges().inflightMessages() === 0, "the PUBACKs of slow");
    s = await scrape(port);
    assertSamples(
      s,
      { mqtt_inflight_messages: 0, mqtt_queued_messages: 0, mqtt_publish_sent_total: 4 },
      "drained",
    );
    await back.close();
    await pub.close();
  } finally {
    await b.stop();
  }
});

Deno.test("metrics: refused CONNECTs count as auth failures, not as connections", async () => {
  const b = await startBroker({ metrics: METRICS_ON, auth: { allow_anonymous: false } });
  try {
    await assert.rejects(RawClient.connect(b.port, { version: 4 }), /CONNACK refused: 5/);
    const s = await scrape(b.broker.metricsPort!);
    assertSamples(s, {
      mqtt_auth_failures_total: 1,
      mqtt_connections_total: 0,
      mqtt_clients_connected: 0,
      'mqtt_messages_received_total{type="connect"}': 1,
      'mqtt_messages_sent_total{type="connack"}': 1,
    }, "after a refused anonymous CONNECT");
  } finally {
    await b.stop();
  }
});

Deno.test("metrics: a durable store reports its commits and their latency histogram", async () => {
  const dir = await Deno.makeTempDir({ prefix: "ops_metrics_" });
  const b = await startBroker({ metrics: METRICS_ON, storage: { backend: "kv", path: `${dir}/mqtt.db` } });
  try {
    const c = await RawClient.connect(b.port, { clientId: "durable" });
    c.send({
      type: 3,
      topic: "r/1",
      payload: new Uint8Array([1]),
      qos: 1,
      retain: true,
      dup: false,
      packetId: 7,
    });
    await c.expect(4); // sent only after the retained message is committed
    const s = await scrape(b.broker.metricsPort!);
    const commits = sample(s, "mqtt_store_commits_total");
    assert.ok(commits >= 1, `commits ${commits}`);
    assert.equal(sample(s, "mqtt_store_commit_failures_total"), 0);
    assert.equal(sample(s, "mqtt_store_commit_duration_seconds_count"), commits);
    assert.equal(sample(s, 'mqtt_store_commit_duration_seconds_bucket{le="+Inf"}'), commits);
    assert.ok(sample(s, "mqtt_store_commit_duration_seconds_sum") > 0);
    await c.close();
  } finally {
    await b.stop();
    await Deno.remove(dir, { recursive: true });
  }
});

/** A memory store whose flush can be held, to look at the broker in the middle of stopping. */
class HeldStore implements Store {
  readonly #inner = new MemoryStore();
  #hold?: Promise<void>;
  #release?: () => void;
  get durable(): boolean {
    return this.#inner.durable;
  }
  get idle(): boolean {
    return this.#hold === undefined;
  }
  get stats(): StoreStats {
    return this.#inner.stats;
  }
  /** From now on flush() waits until {@link release} is called. */
  hold(): void {
    this.#hold = new Promise((resolve) => this.#release = resolve);
  }
  release(): void {
    this.#release?.();
  }
  open(): Promise<void> {
    return this.#inner.open();
  }
  load(): Promise<RestoredState> {
    return this.#inner.load();
  }
  putOutbound(clientId: string, state: "queued" | "publish", packetId: number, source: OutboundSource): void {
    this.#inner.putOutbound(clientId, state, packetId, source);
  }
  deleteOutbound(clientId: string, seq: number): void {
    this.#inner.deleteOutbound(clientId, seq);
  }
  apply(op: StoreOp): void {
    this.#inner.apply(op);
  }
  async flush(): Promise<void> {
    await this.#hold;
    return this.#inner.flush();
  }
  close(): Promise<void> {
    return this.#inner.close();
  }
}

Deno.test("health: /healthz and /readyz are 200 while serving; /readyz is 503 once stopping", async () => {
  const store = new HeldStore();
  const b = await startBroker({ metrics: METRICS_ON }, store);
  const port = b.broker.metricsPort!;
  try {
    assert.deepEqual(await get(port, "/healthz"), { status: 200, body: "ok" });
    assert.deepEqual(await get(port, "/readyz"), { status: 200, body: "ok" });

    // Stop, held at the store flush: the process is alive but no longer takes clients.
    store.hold();
    const stopping = b.stop();
    assert.deepEqual(await get(port, "/readyz"), { status: 503, body: "not ready" });
    assert.deepEqual(await get(port, "/healthz"), { status: 200, body: "ok" });
    store.release();
    await stopping;
    // Stopped: the endpoint is gone, which a probe also reads as not ready.
    await assert.rejects(get(port, "/readyz"));
  } finally {
    store.release();
    await b.stop();
  }
});

Deno.test("README: the Metrics section names every metric of the table", async () => {
  const readme = await Deno.readTextFile(new URL("../../README.md", import.meta.url));
  const start = readme.indexOf("\n## Metrics\n");
  assert.ok(start >= 0, "README has no '## Metrics' section");
  const end = readme.indexOf("\n## ", start + 1);
  const section = readme.slice(start, end < 0 ? undefined : end);
  const missing = METRICS.filter((m) => !section.includes(`\`${m.name}\``)).map((m) => m.name);
  assert.deepEqual(missing, [], "metrics missing from README's Metrics section");
  // And the other way round: every mqtt_/process_ name the section mentions exists.
  const known = new Set(METRICS.map((m) => m.name));
  const named = [...section.matchAll(/`((?:mqtt|process)_[a-z_]+)(?:\{[^`]*\})?`/g)].map((m) => m[1]);
  const unknown = named.filter((n) => !known.has(n) && !known.has(n.replace(/_(bucket|sum|count)$/, "")));
  assert.deepEqual(unknown, [], "README names metrics that do not exist");
});
