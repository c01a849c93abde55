/**
 * Hostile input through the real broker: random bytes, an oversized Remaining Length, a CONNECT trickled
 * byte by byte, thousands of half-open connections, and a subscriber that never reads while ~50 MB is
 * published to it. The broker runs in this test's isolate, so what the isolate holds (its JS heap and its
 * ArrayBuffers, `heapUsed + external`) is the broker's memory. The process's RSS is not: the parallel suite
 * runs other test files in the same process at the same time.
 */

import assert from "node:assert/strict";
import { encode } from "../../src/mqtt/encode.ts";
import type { ConnackPacket, DisconnectPacket, Packet, ProtocolVersion } from "../../src/mqtt/types.ts";
import { delay, RawClient, startBroker, te, type TestBroker, waitFor } from "../helpers.ts";
import { sharedPki } from "../transport/certs.ts";

/** A small seeded PRNG (mulberry32), so a failing case can be replayed. */
function prng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

function connectBytes(clientId: string, version: ProtocolVersion = 4, keepAlive = 30): Uint8Array {
  return encode({
    type: 1,
    protocolName: version === 3 ? "MQIsdp" : "MQTT",
    protocolVersion: version,
    clean: true,
    keepAlive,
    clientId,
  }, version);
}

/** Log lines that mean a handler threw something other than a protocol error. */
function internalErrors(b: TestBroker): string[] {
  return b.logs.filter((l) => l.includes("connection handler failed") || l.includes("internal error"));
}

/** The broker still does its job: a fresh client subscribes and receives its own message. */
async function assertServes(b: TestBroker, label: string): Promise<void> {
  const c = await RawClient.connect(b.port, { clientId: `probe-${label}` });
  c.send({
    type: 8,
    packetId: 1,
    subscriptions: [{
      topicFilter: "probe",
      qos: 0,
      noLocal: false,
      retainAsPublished: false,
      retainHandling: 0,
    }],
  });
  await c.expect(9);
  c.send({ type: 3, topic: "probe", payload: te(label), qos: 0, retain: false, dup: false });
  await c.expect(3);
  await c.close();
}

Deno.test("random bytes, before and after CONNECT, never break the broker", async () => {
  const b = await startBroker({ server: { connect_timeout: 1 } });
  try {
    const random = prng(0x5eed);
    const clients: RawClient[] = [];
    for (let i = 0; i < 120; i++) {
      const version = ([3, 4, 5] as const)[i % 3];
      const c = await RawClient.open(b.port, version);
      const junk = new Uint8Array(1 + Math.floor(random() * 3000));
      for (let j = 0; j < junk.length; j++) junk[j] = Math.floor(random() * 256);
      // Half of them first connect properly (keep-alive 1 s, so a packet left incomplete times out).
      if (i % 2 === 1) {
        c.sendBytes(connectBytes(`fuzz-${i}`, version, 1));
        await c.expect(2);
      }
      c.sendBytes(junk);
      clients.push(c);
    }
    await assertServes(b, "during");
    // Malformed input closes at once; a plausible but incomplete packet waits for the connect timeout or
    // 1.5 x keep-alive, then closes.
    await waitFor(() => clients.every((c) => c.closed), "every fuzzed connection to be closed", 6000);
    await waitFor(() => [...b.broker.connections].every((c) => !c.clientId.startsWith("fuzz")), "cleanup");
    assert.deepEqual(internalErrors(b), []);
    await assertServes(b, "after");
    await Promise.all(clients.map((c) => c.close()));
  } finally {
    await b.stop();
  }
});

Deno.test("a Remaining Length of 268,435,455 is refused at once, before and after CONNECT", async () => {
  const b = await startBroker();
  try {
    const memBefore = isolateBytes();
    const started = Date.now();
    const before = await RawClient.open(b.port);
    before.sendBytes(new Uint8Array([0x10, 0xff, 0xff, 0xff, 0x7f, 0x00, 0x04]));
    // Well before the 10 s connect timeout: the length alone is enough to refuse.
    await before.expectClosed(1000);
    assert.ok(Date.now() - started < 1000);

    const v5 = await RawClient.connect(b.port, { clientId: "big5", version: 5 });
    v5.sendBytes(new Uint8Array([0x30, 0xff, 0xff, 0xff, 0x7f, 0x00, 0x01, 0x61]));
    const disconnect = await v5.expect(14) as DisconnectPacket;
    assert.equal(disconnect.reasonCode, 0x95); // Packet too large
    await v5.expectClosed(1000);

    const v4 = await RawClient.connect(b.port, { clientId: "big4", version: 4 });
    v4.sendBytes(new Uint8Array([0x30, 0xff, 0xff, 0xff, 0x7f]));
    await v4.expectClosed(1000);

    // A fifth length byte is malformed (§1.5.5).
    const v5b = await RawClient.connect(b.port, { clientId: "five", version: 5 });
    v5b.sendBytes(new Uint8Array([0x30, 0xff, 0xff, 0xff, 0xff, 0x01]));
    assert.equal((await v5b.expect(14) as DisconnectPacket).reasonCode, 0x81);
    await v5b.expectClosed(1000);

    // Half the announced size: well clear of garbage not collected yet, and still failing if a buffer for the
    // announced length were allocated.
    const grown = isolateBytes() - memBefore;
    assert.ok(grown < 128 * 1024 * 1024, `nothing near 256 MB was allocated (memory grew ${grown} bytes)`);
    assert.equal(b.broker.connections.size, 0);
    assert.deepEqual(internalErrors(b), []);
    await Promise.all([before.close(), v5.close(), v4.close(), v5b.close()]);
  } finally {
    await b.stop();
  }
});

Deno.test("a CONNECT trickled one byte per 100 ms works within connect_timeout and is cut off after", async () => {
  const b = await startBroker({ server: { connect_timeout: 3 } });
  try {
    const trickle = async (c: RawClient, bytes: Uint8Array) => {
      for (let i = 0; i < bytes.length && !c.closed; i++) {
        await c.sendBytes(bytes.subarray(i, i + 1));
        await delay(100);
      }
    };
    const short = connectBytes("slow"); // 18 bytes: about 1.8 s
    const long = connectBytes(`slower-${"x".repeat(60)}`); // 83 bytes: 8.3 s, past the 3 s timeout
    assert.ok(short.length * 100 < 2500 && long.length * 100 > 5000);
    const a = await RawClient.open(b.port);
    const z = await RawClient.open(b.port);
    const started = Date.now();
    await Promise.all([
      (async () => {
        await trickle(a, short);
        const connack = await a.expect(2) as ConnackPacket;
        assert.equal(connack.reasonCode, 0);
        assert.equal(b.broker.clients.has("slow"), true);
      })(),
      (async () => {
        await trickle(z, long);
        // The trickle stopped because the broker closed the connection, not because it finished.
        await z.expectClosed(1000);
        const elapsed = Date.now() - started;
        assert.ok(elapsed >= 3000 && elapsed < 5500, `closed after ${elapsed} ms`);
        assert.equal(z.received.length, 0);
      })(),
    ]);
    assert.equal(b.broker.connections.size, 1);
    assert.ok(
      b.logs.some((l) => /closing connection .*reason="?no CONNECT within 3 s/.test(l)),
      `no log line for the connect timeout in:\n${b.logs.join("\n")}`,
    );
    await Promise.all([a.close(), z.close()]);
  } finally {
    await b.stop();
  }
});

Deno.test("2,000 half-open connections are closed after connect_timeout while a normal client is served", async () => {
  // max_clients above the 2,000: fewer would close the oldest half-open ones early to make room.
  const b = await startBroker({ server: { connect_timeout: 1, max_clients: 3000 } });
  const conns: Deno.TcpConn[] = [];
  try {
    // Opened 200 at a time, so all 2,000 are open well within the 1 s timeout.
    const opened: number[] = [];
    const ended: number[] = [];
    for (let i = 0; i < 2000; i += 200) {
      const batch = await Promise.all(
        Array.from({ length: 200 }, () => Deno.connect({ hostname: "127.0.0.1", port: b.port })),
      );
      for (const conn of batch) {
        const at = Date.now();
        opened.push(at);
        // The read resolves (null, or a reset) when the broker closes the socket.
        const done = () => void ended.push(Date.now() - at);
        conn.read(new Uint8Array(16)).then(done, done);
        conns.push(conn);
      }
    }
    const openingMs = opened[opened.length - 1] - opened[0];
    await waitFor(() => b.broker.connections.size >= 2000, "the broker to accept 2,000 sockets", 1000);

    const normal = await RawClient.connect(b.port, { clientId: "normal", keepAlive: 60 });
    assert.equal(ended.length, 0, "nothing closed yet: they are still within their timeout");
    const t0 = Date.now();
    normal.send({ type: 12 });
    await normal.expect(13);
    assert.ok(Date.now() - t0 < 500, `PINGRESP took ${Date.now() - t0} ms`);

    await waitFor(() => ended.length === 2000, "all 2,000 half-open sockets to be closed", 5000);
    // Each one lived at least its 1 s (less the opening time, during which the broker's clock had started
    // on it before our timestamp), and at most the timeout plus one 1 s sweep plus slack.
    assert.ok(Math.min(...ended) >= 1000 - openingMs, `one closed after ${Math.min(...ended)} ms`);
    assert.ok(Math.max(...ended) < 3500, `one closed only after ${Math.max(...ended)} ms`);
    assert.deepEqual([...b.broker.connections].map((c) => c.clientId), ["normal"]);
    assert.equal(normal.closed, false);
    await assertServes(b, "after-half-open");
    await normal.close();
  } finally {
    for (const c of conns) {
      try {
        c.close();
      } catch {
        // closed by the broker
      }
    }
    await b.stop();
  }
});

/** How the stuck subscriber reaches the broker. */
type Via = "tcp" | "mqtts" | "ws";

/** Reads exactly `n` bytes. */
async function readExactly(conn: Deno.Conn, n: number): Promise<Uint8Array> {
  const buf = new Uint8Array(n);
  for (let got = 0; got < n;) {
    const k = await conn.read(buf.subarray(got));
    if (k === null) throw new Error(`connection closed after ${got} of ${n} bytes`);
    got += k;
  }
  return buf;
}

/** A masked client-to-server WebSocket binary frame (RFC 6455 §5.2), payload below 126 bytes. */
function wsFrame(payload: Uint8Array): Uint8Array {
  const mask = crypto.getRandomValues(new Uint8Array(4));
  const out = new Uint8Array(6 + payload.length);
  out.set([0x82, 0x80 | payload.length, ...mask]);
  for (let i = 0; i < payload.length; i++) out[6 + i] = payload[i] ^ mask[i % 4];
  return out;
}

/**
 * A subscriber over a raw socket (TCP, TLS, or a hand-made WebSocket) that reads its CONNACK and SUBACK and
 * then never reads again.
 */
async function stuckSubscriber(b: TestBroker, via: Via, topic: string, qos: 0 | 1): Promise<Deno.Conn> {
  const port = b.broker.addresses.find((a) => a.type === (via === "tcp" ? "mqtt" : via))!.port;
  const subscribe = encode({
    type: 8,
    packetId: 1,
    subscriptions: [{ topicFilter: topic, qos, noLocal: false, retainAsPublished: false, retainHandling: 0 }],
  }, 4);
  const hello = new Uint8Array([...connectBytes("stuck", 4, 0), ...subscribe]);
  if (via === "mqtts") {
    const pki = await sharedPki();
    const conn = await Deno.connectTls({ hostname: "127.0.0.1", port, caCerts: [pki.read(pki.caCert)] });
    await conn.write(hello);
    await readExactly(conn, 9); // CONNACK (4 bytes) + SUBACK (5 bytes)
    return conn;
  }
  const conn = await Deno.connect({ hostname: "127.0.0.1", port });
  if (via === "tcp") {
    await conn.write(hello);
    await readExactly(conn, 9);
    return conn;
  }
  await conn.write(te(
    "GET /mqtt HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n" +
      "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n" +
      "Sec-WebSocket-Protocol: mqtt\r\n\r\n",
  ));
  let head = "";
  while (!head.endsWith("\r\n\r\n")) head += String.fromCharCode((await readExactly(conn, 1))[0]);
  assert.match(head, /^HTTP\/1\.1 101/);
  await conn.write(wsFrame(hello));
  // CONNACK and SUBACK, in one or two unmasked server frames (2-byte headers: lengths below 126).
  for (let mqttBytes = 0; mqttBytes < 9;) {
    const header = await readExactly(conn, 2);
    mqttBytes += (await readExactly(conn, header[1] & 0x7f)).length;
  }
  return conn;
}

/** Publishes `total` bytes of `size`-byte payloads to `topic` as fast as the socket takes them. */
async function flood(port: number, topic: string, qos: 0 | 1, size: number, total: number): Promise<number> {
  const conn = await Deno.connect({ hostname: "127.0.0.1", port });
  // Read and discard CONNACK / PUBACKs so the broker never waits on us.
  const drain = (async () => {
    const buf = new Uint8Array(65536);
    try {
      while ((await conn.read(buf)) !== null) { /* discard */ }
    } catch {
      // closed
    }
  })();
  await conn.write(connectBytes("flooder", 4, 0));
  // One batch of 16 packets, encoded once and written again and again: the flooder itself allocates
  // nothing per message, so the growth is the broker's. (QoS 1 packet ids repeat per batch; each is
  // acknowledged before the next batch's copy arrives.)
  const payload = new Uint8Array(size).fill(0x61);
  const perBatch = 16;
  const packets = Array.from(
    { length: perBatch },
    (_, i) =>
      encode(
        { type: 3, topic, payload, qos, packetId: qos ? i + 1 : undefined, retain: false, dup: false },
        4,
      ),
  );
  const bytes = new Uint8Array(packets.reduce((n, p) => n + p.length, 0));
  let off = 0;
  for (const p of packets) {
    bytes.set(p, off);
    off += p.length;
  }
  let sent = 0;
  while (sent < total) {
    for (let w = 0; w < bytes.length;) w += await conn.write(bytes.subarray(w));
    sent += perBatch * size;
  }
  conn.close();
  await drain;
  return sent;
}

/** Bytes this isolate holds: its JS heap in use and the memory of its ArrayBuffers. */
function isolateBytes(): number {
  const m = Deno.memoryUsage();
  return m.heapUsed + m.external;
}

/** Samples {@link isolateBytes} every 25 ms until stopped; returns the highest value seen. */
function sampleMemory(): { stop(): number } {
  let max = isolateBytes();
  const timer = setInterval(() => {
    const bytes = isolateBytes();
    if (bytes > max) max = bytes;
  }, 25);
  return {
    stop: () => {
      clearInterval(timer);
      return Math.max(max, isolateBytes());
    },
  };
}

const MB = 1024 * 1024;

const SLOW_CASES: [Via, 0 | 1][] = [["tcp", 0], ["tcp", 1], ["mqtts", 0], ["ws", 0]];

for (const [via, qos] of SLOW_CASES) {
  Deno.test(`a QoS ${qos} ${via} subscriber that never reads gets ~50 MB published: memory stays bounded`, async () => {
    const pki = await sharedPki();
    const b = await startBroker({
      qos: { max_qos: 1 },
      server: {
        max_output_buffer: 256 * 1024,
        max_inflight: 20,
        max_queued_messages: 100,
        max_queued_bytes: 4 * MB,
      },
      listeners: via === "tcp" ? [] : [{
        type: via,
        host: "127.0.0.1",
        port: 0,
        ...(via === "mqtts" ? { cert_file: pki.serverCert, key_file: pki.serverKey } : {}),
      }],
    });
    const stuck = await stuckSubscriber(b, via, "firehose", qos);
    try {
      const other = await RawClient.connect(b.port, { clientId: "other" });
      other.send({
        type: 8,
        packetId: 1,
        subscriptions: [{
          topicFilter: "other/t",
          qos: 1,
          noLocal: false,
          retainAsPublished: false,
          retainHandling: 0,
        }],
      });
      await other.expect(9);
      const memBefore = isolateBytes();
      const sampler = sampleMemory();
      const started = Date.now();
      const flooding = flood(b.port, "firehose", qos, 64 * 1024, 50 * MB);
      // Other clients keep getting service during the flood.
      const latencies: number[] = [];
      let done = false;
      flooding.finally(() => (done = true));
      let n = 0;
      while (!done) {
        const t0 = Date.now();
        other.send({
          type: 3,
          topic: "other/t",
          payload: te(`m${n}`),
          qos: 1,
          packetId: ++n,
          retain: false,
          dup: false,
        });
        await other.expect(4);
        const p = await other.expect(3) as Packet & { packetId: number };
        other.send({ type: 4, packetId: p.packetId });
        latencies.push(Date.now() - t0);
        await delay(50);
      }
      const sent = await flooding;
      const seconds = (Date.now() - started) / 1000;
      const memPeak = sampler.stop();
      const memAfter = isolateBytes();
      const growthPeak = (memPeak - memBefore) / MB;
      const growthAfter = (memAfter - memBefore) / MB;
      const mb = (bytes: number) => (bytes / MB).toFixed(0);
      console.log(
        `QoS ${qos} ${via}: published ${mb(sent)} MB in ${seconds.toFixed(1)} s; ` +
          `memory before ${mb(memBefore)} MB, peak ${mb(memPeak)} MB (+${growthPeak.toFixed(0)}), ` +
          `after ${mb(memAfter)} MB; dropped ${JSON.stringify(b.broker.metrics.dropped)}; ` +
          `other client round trips ${latencies.length}, max ${Math.max(...latencies)} ms`,
      );
      assert.ok(sent >= 50 * MB);
      // Most of the growth is garbage the GC has not collected yet (the broker copies each payload out of
      // the read buffer); it levels off: 200 MB published grows it no more than 50 MB does.
      assert.ok(growthAfter < 100, `memory grew ${growthAfter.toFixed(0)} MB`);
      assert.ok(growthPeak < 150, `memory peaked ${growthPeak.toFixed(0)} MB above the start`);
      assert.ok(latencies.length >= 1 && Math.max(...latencies) < 2000, `latencies ${latencies}`);
      const stuckClient = b.broker.clients.get("stuck");
      if (qos === 0) {
        // At most max_output_buffer is kept for it; the rest of the 800 messages are dropped and counted.
        assert.ok(
          b.broker.metrics.dropped.slow_consumer > 600,
          `dropped ${b.broker.metrics.dropped.slow_consumer}`,
        );
      } else {
        // QoS 1: the in-flight window, then the session queue, then drops.
        assert.ok(
          b.broker.metrics.dropped.queue_full > 600,
          `dropped ${b.broker.metrics.dropped.queue_full}`,
        );
        const session = b.broker.sessions.get("stuck")!;
        assert.ok(session.inflight.size <= 20 && session.queuedCount <= 100);
      }
      if (stuckClient !== undefined) {
        assert.ok(
          stuckClient.transport.pendingBytes < 8 * MB,
          `pending ${stuckClient.transport.pendingBytes}`,
        );
      }
      await other.close();
    } finally {
      stuck.close();
      await b.stop();
    }
  });
}
