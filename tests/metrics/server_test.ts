import assert from "node:assert/strict";
import { startMetricsServer } from "../../src/metrics/server.ts";
import { BrokerMetrics, PROMETHEUS_CONTENT_TYPE, renderPrometheus } from "../../src/metrics/metrics.ts";

const gauges = {
  clientsConnected: () => 1,
  subscriptions: () => 0,
  retainedMessages: () => 0,
  inflightMessages: () => 0,
  queuedMessages: () => 0,
  sessions: () => 1,
};

Deno.test("the metrics server answers /metrics, /healthz, /readyz and 404 over HTTP", async () => {
  const metrics = new BrokerMetrics();
  let ready = false;
  const server = startMetricsServer({
    host: "127.0.0.1",
    port: 0,
    render: () => renderPrometheus(metrics, gauges),
    ready: () => ready,
  });
  try {
    assert.ok(server.port > 0);
    const base = `http://127.0.0.1:${server.port}`;

    metrics.connectionsTotal = 42;
    let res = await fetch(`${base}/metrics`);
    assert.equal(res.status, 200);
    assert.equal(res.headers.get("content-type"), PROMETHEUS_CONTENT_TYPE);
    assert.equal(PROMETHEUS_CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8");
    const body = await res.text();
    assert.match(body, /^# HELP mqtt_clients_connected /);
    assert.match(body, /\nmqtt_connections_total 42\n/);
    assert.match(body, /\nmqtt_clients_connected 1\n/);

    res = await fetch(`${base}/healthz`);
    assert.equal(res.status, 200);
    assert.equal(await res.text(), "ok");

    res = await fetch(`${base}/readyz`);
    assert.equal(res.status, 503);
    await res.body?.cancel();
    ready = true;
    res = await fetch(`${base}/readyz`);
    assert.equal(res.status, 200);
    assert.equal(await res.text(), "ok");

    for (const path of ["/", "/metric", "/metrics/x", "/favicon.ico"]) {
      res = await fetch(`${base}${path}`);
      assert.equal(res.status, 404, path);
      await res.body?.cancel();
    }
    res = await fetch(`${base}/metrics`, { method: "POST", body: "x" });
    assert.equal(res.status, 405);
    assert.equal(res.headers.get("allow"), "GET, HEAD");
    await res.body?.cancel();
  } finally {
    await server.close();
  }
  // Closed: nothing listens any more, and closing again is harmless.
  await assert.rejects(fetch(`http://127.0.0.1:${server.port}/healthz`));
  await server.close();
});

Deno.test("a render error becomes a 500 and is reported to onError", async () => {
  const errors: Error[] = [];
  const server = startMetricsServer({
    host: "127.0.0.1",
    port: 0,
    render: () => {
      throw new Error("gauge source broke");
    },
    ready: () => true,
    onError: (e) => errors.push(e),
  });
  try {
    const res = await fetch(`http://127.0.0.1:${server.port}/metrics`);
    assert.equal(res.status, 500);
    await res.body?.cancel();
    assert.equal(errors.length, 1);
    assert.equal(errors[0].message, "gauge source broke");
  } finally {
    await server.close();
  }
});

Deno.test("a busy port fails with a one-line message naming port and host", () => {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const port = (listener.addr as Deno.NetAddr).port;
  try {
    assert.throws(
      () => startMetricsServer({ host: "127.0.0.1", port, render: () => "", ready: () => true }),
      { message: `metrics.port ${port} on 127.0.0.1 is already in use` },
    );
  } finally {
    listener.close();
  }
});
