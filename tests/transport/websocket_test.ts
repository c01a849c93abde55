/**
 * ws / wss listeners through the real broker: MQTT.js over WebSocket, raw WebSocket framing (a packet split
 * over messages, several packets in one message), text frames, HTTP answers and wss.
 */

import assert from "node:assert/strict";
import type { ListenerConfig } from "../../src/config/types.ts";
import { PacketDecoder } from "../../src/mqtt/decode.ts";
import { encode } from "../../src/mqtt/encode.ts";
import type { ConnackPacket, Packet, PublishPacket, SubackPacket } from "../../src/mqtt/types.ts";
import { chooseSubprotocol } from "../../src/transport/websocket.ts";
import {
  collect,
  delay,
  mqttConnect,
  mqttEnd,
  startBroker,
  td,
  te,
  type TestBroker,
  waitFor,
} from "../helpers.ts";
import { CLIENT_CN, sharedPki } from "./certs.ts";

const WS: ListenerConfig = { type: "ws", host: "127.0.0.1", port: 0 };

function portOf(b: TestBroker, type: ListenerConfig["type"]): number {
  const l = b.broker.addresses.find((a) => a.type === type);
  if (l === undefined) throw new Error(`no ${type} listener in ${JSON.stringify(b.broker.addresses)}`);
  return l.port;
}

/** A raw WebSocket MQTT client (Deno's WebSocket and our codec): sends bytes as given, one message each. */
class RawWs {
  readonly received: Packet[] = [];
  readonly decoder = new PacketDecoder({ protocolVersion: 4 });
  closeCode?: number;
  #ws: WebSocket;
  #closed: Promise<void>;

  private constructor(ws: WebSocket) {
    this.#ws = ws;
    ws.binaryType = "arraybuffer";
    ws.onmessage = (e) => {
      this.decoder.push(new Uint8Array(e.data as ArrayBuffer));
      let p: Packet | null;
      while ((p = this.decoder.next()) !== null) this.received.push(p);
    };
    this.#closed = new Promise((resolve) => {
      ws.onclose = (e) => {
        this.closeCode = e.code;
        resolve();
      };
    });
  }

  static async open(url: string, protocols: string[] = ["mqtt"]): Promise<RawWs> {
    const ws = new WebSocket(url, protocols);
    const raw = new RawWs(ws);
    await new Promise<void>((resolve, reject) => {
      ws.onopen = () => resolve();
      ws.onerror = (e) => reject(new Error(`WebSocket to ${url} failed: ${(e as ErrorEvent).message}`));
    });
    return raw;
  }

  get protocol(): string {
    return this.#ws.protocol;
  }

  send(message: Uint8Array | string): void {
    this.#ws.send(message);
  }

  async expect(type: number, timeoutMs = 3000): Promise<Packet> {
    await waitFor(() => this.received.some((p) => p.type === type), `packet type ${type}`, timeoutMs);
    return this.received.splice(this.received.findIndex((p) => p.type === type), 1)[0];
  }

  /** Waits for the close (either side). */
  closed(timeoutMs = 3000): Promise<void> {
    return Promise.race([
      this.#closed,
      new Promise<void>((_, reject) => {
        const t = setTimeout(() => reject(new Error("WebSocket still open")), timeoutMs);
        this.#closed.then(() => clearTimeout(t));
      }),
    ]);
  }

  async close(): Promise<void> {
    this.#ws.close();
    await this.#closed;
  }
}

const connect = (clientId: string) =>
  encode({ type: 1, protocolName: "MQTT", protocolVersion: 4, clean: true, keepAlive: 30, clientId }, 4);

Deno.test("ws: MQTT.js over WebSocket and a TCP client exchange messages; port 0 reports the bound port", async () => {
  const b = await startBroker({ listeners: [WS], qos: { max_qos: 2 } });
  try {
    const port = portOf(b, "ws");
    assert.ok(port > 0 && port !== b.port, `ws port ${port}`);
    const ws = await mqttConnect(`ws://127.0.0.1:${port}/mqtt`, { clientId: "ws-client" });
    const tcp = await mqttConnect(b.url, { clientId: "tcp-client" });
    const wsGot = collect(ws);
    const tcpGot = collect(tcp);
    await ws.subscribeAsync("from/tcp", { qos: 1 });
    await tcp.subscribeAsync("from/ws", { qos: 2 });
    await tcp.publishAsync("from/tcp", "hello ws", { qos: 1 });
    await ws.publishAsync("from/ws", "hello tcp", { qos: 2 });
    // Larger than one TCP segment and than the transport's initial buffers.
    const big = "x".repeat(200_000);
    await tcp.publishAsync("from/tcp", big, { qos: 0 });
    await waitFor(() => wsGot.length === 2 && tcpGot.length === 1, "messages both ways");
    assert.deepEqual(wsGot.map((m) => [m.topic, m.payload.length]), [["from/tcp", 8], ["from/tcp", 200_000]]);
    assert.equal(wsGot[0].payload, "hello ws");
    assert.equal(wsGot[1].payload, big);
    assert.deepEqual(tcpGot.map((m) => [m.topic, m.payload, m.packet.qos]), [["from/ws", "hello tcp", 2]]);
    assert.match(b.broker.clients.get("ws-client")!.transport.remoteAddr, /^127\.0\.0\.1:\d+$/);
    await mqttEnd(ws);
    await mqttEnd(tcp);
  } finally {
    await b.stop();
  }
});

Deno.test("ws: a packet split over two messages and two packets in one message both decode", async () => {
  const b = await startBroker({ listeners: [WS] });
  try {
    const ws = await RawWs.open(`ws://127.0.0.1:${portOf(b, "ws")}/mqtt`);
    assert.equal(ws.protocol, "mqtt");
    const bytes = connect("split");
    ws.send(bytes.subarray(0, 5));
    ws.send(bytes.subarray(5));
    const connack = await ws.expect(2) as ConnackPacket;
    assert.equal(connack.reasonCode, 0);
    assert.equal(b.broker.clients.has("split"), true);
    const subscribe = encode({
      type: 8,
      packetId: 3,
      subscriptions: [{
        topicFilter: "w/t",
        qos: 1,
        noLocal: false,
        retainAsPublished: false,
        retainHandling: 0,
      }],
    }, 4);
    const publish = encode({
      type: 3,
      topic: "w/t",
      payload: te("own"),
      qos: 1,
      packetId: 9,
      dup: false,
      retain: false,
    }, 4);
    const pingreq = new Uint8Array([0xc0, 0x00]);
    // SUBSCRIBE + PUBLISH + half of a PINGREQ in one message, the other half in the next.
    const joined = new Uint8Array(subscribe.length + publish.length + 1);
    joined.set(subscribe);
    joined.set(publish, subscribe.length);
    joined.set(pingreq.subarray(0, 1), subscribe.length + publish.length);
    ws.send(joined);
    ws.send(pingreq.subarray(1));
    const suback = await ws.expect(9) as SubackPacket;
    assert.deepEqual([suback.packetId, suback.reasonCodes], [3, [1]]);
    assert.equal((await ws.expect(4) as { packetId: number }).packetId, 9);
    const echoed = await ws.expect(3) as PublishPacket;
    assert.deepEqual([echoed.topic, td(echoed.payload), echoed.qos], ["w/t", "own", 1]);
    await ws.expect(13);
    await ws.close();
    await waitFor(() => b.broker.connections.size === 0, "broker side closed");
  } finally {
    await b.stop();
  }
});

Deno.test("ws: a text frame closes the connection (MQTT-6.0.0-1)", async () => {
  const b = await startBroker({ listeners: [WS] });
  try {
    const ws = await RawWs.open(`ws://127.0.0.1:${portOf(b, "ws")}/mqtt`);
    ws.send(connect("texter"));
    await ws.expect(2);
    ws.send("\xc0\x00");
    await ws.closed();
    assert.equal(ws.closeCode, 1003);
    await waitFor(() => !b.broker.clients.has("texter"), "client removed");
  } finally {
    await b.stop();
  }
});

Deno.test("ws: subprotocols mqtt and mqttv3.1 are accepted, others get 400; HTTP gets 426 or 404", async () => {
  const b = await startBroker({ listeners: [{ ...WS, path: "/broker" }] });
  try {
    const base = `127.0.0.1:${portOf(b, "ws")}`;
    const v31 = await RawWs.open(`ws://${base}/broker`, ["mqttv3.1"]);
    assert.equal(v31.protocol, "mqttv3.1");
    await v31.close();
    const both = await RawWs.open(`ws://${base}/broker`, ["mqttv3.1", "mqtt"]);
    assert.equal(both.protocol, "mqtt");
    await both.close();
    await assert.rejects(RawWs.open(`ws://${base}/broker`, ["chat"]), /WebSocket/);
    const plain = await fetch(`http://${base}/broker`);
    assert.equal(plain.status, 426);
    assert.equal(plain.headers.get("upgrade"), "websocket");
    await plain.body?.cancel();
    const elsewhere = await fetch(`http://${base}/mqtt`);
    assert.equal(elsewhere.status, 404);
    await elsewhere.body?.cancel();
    await assert.rejects(RawWs.open(`ws://${base}/mqtt`), /WebSocket/);
  } finally {
    await b.stop();
  }
});

Deno.test("chooseSubprotocol prefers mqtt, accepts mqttv3.1, reports none or only others", () => {
  assert.equal(chooseSubprotocol("mqtt"), "mqtt");
  assert.equal(chooseSubprotocol("mqttv3.1, mqtt"), "mqtt");
  assert.equal(chooseSubprotocol("mqttv3.1"), "mqttv3.1");
  assert.equal(chooseSubprotocol(null), null);
  assert.equal(chooseSubprotocol(" "), null);
  assert.equal(chooseSubprotocol("chat, superchat"), undefined);
});

Deno.test("ws: the connect timeout closes a WebSocket that never sends CONNECT", async () => {
  const b = await startBroker({ listeners: [WS], server: { connect_timeout: 1 } });
  try {
    const ws = await RawWs.open(`ws://127.0.0.1:${portOf(b, "ws")}/mqtt`);
    await waitFor(() => b.broker.connections.size === 1, "connection registered");
    await ws.closed(4000);
    assert.equal(ws.closeCode, 1000);
    assert.equal(b.broker.connections.size, 0);
  } finally {
    await b.stop();
  }
});

Deno.test("wss: MQTT.js over TLS WebSocket with the generated certificate", async () => {
  const pki = await sharedPki();
  const b = await startBroker({
    listeners: [{
      type: "wss",
      host: "127.0.0.1",
      port: 0,
      cert_file: pki.serverCert,
      key_file: pki.serverKey,
    }],
  });
  try {
    const url = `wss://127.0.0.1:${portOf(b, "wss")}/mqtt`;
    const ca = pki.read(pki.caCert);
    const sub = await mqttConnect(url, { ca, clientId: "wss-sub" });
    const got = collect(sub);
    await sub.subscribeAsync("wss/#", { qos: 1 });
    const pub = await mqttConnect(b.url, { clientId: "tcp-pub" });
    await pub.publishAsync("wss/x", "secure ws", { qos: 1 });
    await waitFor(() => got.length === 1, "message over wss");
    assert.deepEqual([got[0].topic, got[0].payload], ["wss/x", "secure ws"]);
    await mqttEnd(pub);
    await mqttEnd(sub);
  } finally {
    await b.stop();
  }
});

Deno.test("wss: mutual TLS refuses a client without a certificate and maps the CN to the username", async () => {
  const pki = await sharedPki();
  const b = await startBroker({
    listeners: [{
      type: "wss",
      host: "127.0.0.1",
      port: 0,
      cert_file: pki.serverCert,
      key_file: pki.serverKey,
      ca_file: pki.caCert,
      require_client_cert: true,
      use_cn_as_username: true,
    }],
  });
  try {
    const url = `wss://127.0.0.1:${portOf(b, "wss")}/mqtt`;
    const ca = pki.read(pki.caCert);
    await assert.rejects(mqttConnect(url, { ca, clientId: "no-cert", connectTimeout: 2000 }));
    const c = await mqttConnect(url, {
      ca,
      cert: pki.read(pki.clientCert),
      key: pki.read(pki.clientKey),
      clientId: "with-cert",
    });
    assert.equal(b.broker.clients.get("with-cert")?.username, CLIENT_CN);
    await mqttEnd(c);
  } finally {
    await b.stop();
  }
});

Deno.test("ws: a TCP connection that never sends its HTTP upgrade is closed by the connect timeout", async () => {
  const b = await startBroker({ server: { connect_timeout: 1 }, listeners: [WS] });
  try {
    const conn = await Deno.connect({ hostname: "127.0.0.1", port: portOf(b, "ws") });
    await waitFor(() => b.broker.connections.size === 1, "the connection is counted");
    const buf = new Uint8Array(16);
    const n = await conn.read(buf); // the broker closes it: end of stream
    assert.equal(n, null);
    await waitFor(() => b.broker.connections.size === 0, "the connection is gone");
    conn.close();
  } finally {
    await b.stop();
  }
});

Deno.test("ws / wss: a port in use or a broken key pair fails start-up with a clear message", async () => {
  const pki = await sharedPki();
  const other = await startBroker();
  try {
    await assert.rejects(
      startBroker({ listeners: [{ ...WS, port: other.port }] }),
      (err: Error) => err.message === `ws listener 127.0.0.1:${other.port} is already in use`,
    );
  } finally {
    await other.stop();
  }
  await assert.rejects(
    startBroker({
      listeners: [{
        type: "wss",
        host: "127.0.0.1",
        port: 0,
        cert_file: pki.serverCert,
        key_file: pki.otherServerKey,
      }],
    }),
    (err: Error) => err.message.includes("wss listener") && err.message.includes(pki.otherServerKey),
  );
});

Deno.test("ws: at broker stop an MQTT 5 WebSocket client gets DISCONNECT 0x8B and its will is not published", async () => {
  const b = await startBroker({ listeners: [WS] });
  let stopped = false;
  try {
    const c = await mqttConnect(`ws://127.0.0.1:${portOf(b, "ws")}/mqtt`, {
      clientId: "ws-will",
      protocolVersion: 5,
      will: { topic: "wills/ws", payload: "lost", qos: 0, retain: true },
    });
    let reason: number | undefined;
    c.on("disconnect", (p) => (reason = p.reasonCode));
    await b.stop();
    stopped = true;
    await waitFor(() => reason !== undefined, "DISCONNECT at the WebSocket client");
    assert.equal(reason, 0x8b); // Server shutting down
    assert.equal(b.broker.retained.get("wills/ws"), undefined);
    c.end(true);
  } finally {
    if (!stopped) await b.stop();
  }
});

/** A WebSocket client over a raw TCP socket, for frames Deno's WebSocket will not send. */
async function rawWsTcp(
  port: number,
): Promise<{ conn: Deno.TcpConn; frame: (b0: number, payload: Uint8Array) => Uint8Array }> {
  const conn = await Deno.connect({ hostname: "127.0.0.1", port });
  await conn.write(te(
    "GET /mqtt HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n" +
      "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Protocol: mqtt\r\n\r\n",
  ));
  // The 101 response ends with an empty line.
  let head = "";
  const buf = new Uint8Array(1024);
  while (!head.includes("\r\n\r\n")) {
    const n = await conn.read(buf);
    if (n === null) throw new Error("closed during the upgrade");
    head += td(buf.subarray(0, n));
  }
  assert.match(head, /^HTTP\/1.1 101/);
  const frame = (b0: number, payload: Uint8Array) => {
    // Masked with a zero key: the payload goes as it is.
    return new Uint8Array([b0, 0x80 | payload.length, 0, 0, 0, 0, ...payload]);
  };
  return { conn, frame };
}

/** Reads server frames until a close frame; returns its code (or undefined at the end of the stream). */
async function closeCodeOf(conn: Deno.TcpConn): Promise<number | undefined> {
  let data = new Uint8Array(0);
  const buf = new Uint8Array(4096);
  for (;;) {
    for (let i = 0; i + 2 <= data.length;) {
      const op = data[i] & 0x0f;
      const len = data[i + 1] & 0x7f;
      if (len > 125 || i + 2 + len > data.length) break;
      if (op === 0x8) return len >= 2 ? (data[i + 2] << 8) | data[i + 3] : 1005;
      i += 2 + len;
      if (i === data.length) data = new Uint8Array(0);
    }
    const n = await conn.read(buf).catch(() => null);
    if (n === null) return undefined;
    data = new Uint8Array([...data, ...buf.subarray(0, n)]);
  }
}

Deno.test("ws: a bad close frame, a reserved close code and a message inside a fragmented one get 1002", async () => {
  const b = await startBroker({ listeners: [WS] });
  try {
    const port = portOf(b, "ws");
    const cases: [string, (f: (b0: number, p: Uint8Array) => Uint8Array) => Uint8Array][] = [
      ["close with a 1-byte body", (f) => f(0x88, new Uint8Array([3]))],
      ["close code 1004", (f) => f(0x88, new Uint8Array([0x03, 0xec]))],
      [
        "a new binary message before the last fragment",
        (f) => new Uint8Array([...f(0x02, new Uint8Array([0x10])), ...f(0x82, new Uint8Array([0x00]))]),
      ],
      ["a continuation frame outside a message", (f) => f(0x80, new Uint8Array([0x10]))],
    ];
    for (const [name, bytes] of cases) {
      const { conn, frame } = await rawWsTcp(port);
      await conn.write(bytes(frame));
      assert.equal(await closeCodeOf(conn), 1002, name);
      conn.close();
    }
    // A valid application code is echoed.
    const { conn, frame } = await rawWsTcp(port);
    await conn.write(frame(0x88, new Uint8Array([0x0f, 0xa0]))); // 4000
    assert.equal(await closeCodeOf(conn), 4000);
    conn.close();
  } finally {
    await b.stop();
  }
});

Deno.test("ws: pings from a client that does not read its pongs queue one pong at most", async () => {
  const b = await startBroker({ listeners: [WS] });
  try {
    const { conn, frame } = await rawWsTcp(portOf(b, "ws"));
    const ping = frame(0x89, new Uint8Array(125));
    const burst = new Uint8Array(ping.length * 1000);
    for (let i = 0; i < 1000; i++) burst.set(ping, i * ping.length);
    // 16 MB of pings, more than the socket buffers hold in pongs, while nothing is read.
    const pings = 128_000;
    for (let sent = 0; sent < pings; sent += 1000) {
      for (let off = 0; off < burst.length;) off += await conn.write(burst.subarray(off));
    }
    await delay(300);
    // Now read: far fewer pongs than pings (one per moment the writer was free), then CONNECT still works.
    await conn.write(
      frame(
        0x82,
        encode({
          type: 1,
          protocolName: "MQTT",
          protocolVersion: 4,
          clean: true,
          keepAlive: 60,
          clientId: "pinger",
        }, 4),
      ),
    );
    let pongs = 0;
    let connack = false;
    let data = new Uint8Array(0);
    const buf = new Uint8Array(65536);
    while (!connack) {
      const n = await conn.read(buf);
      if (n === null) throw new Error("closed");
      data = new Uint8Array([...data, ...buf.subarray(0, n)]);
      let i = 0;
      while (i + 2 <= data.length) {
        const len = data[i + 1] & 0x7f;
        if (i + 2 + len > data.length) break;
        if ((data[i] & 0x0f) === 0xa) pongs++;
        if ((data[i] & 0x0f) === 0x2 && data[i + 2] === 0x20) connack = true;
        i += 2 + len;
      }
      data = data.slice(i);
    }
    assert.ok(pongs > 0 && pongs < pings / 2, `${pongs} pongs for ${pings} pings`);
    conn.close();
  } finally {
    await b.stop();
  }
});

/** Sends an upgrade request with `lines` as its headers and returns the response head. */
async function upgradeResponse(port: number, requestLine: string, lines: string[]): Promise<string> {
  const conn = await Deno.connect({ hostname: "127.0.0.1", port });
  try {
    await conn.write(te(`${requestLine}\r\n${lines.join("\r\n")}\r\n\r\n`));
    let head = "";
    const buf = new Uint8Array(1024);
    while (!head.includes("\r\n\r\n")) {
      const n = await conn.read(buf).catch(() => null);
      if (n === null) break;
      head += td(buf.subarray(0, n));
    }
    return head;
  } finally {
    conn.close();
  }
}

Deno.test("ws: the upgrade needs HTTP/1.1, version 13 and a 16-byte key; a repeated protocol header is one list", async () => {
  const b = await startBroker({ listeners: [WS] });
  try {
    const port = portOf(b, "ws");
    const base = [
      "Host: 127.0.0.1",
      "Upgrade: websocket",
      "Connection: Upgrade",
      "Sec-WebSocket-Protocol: mqtt",
    ];
    const key = "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==";
    const get = "GET /mqtt HTTP/1.1";
    const old = await upgradeResponse(port, get, [...base, key, "Sec-WebSocket-Version: 8"]);
    assert.match(old, /^HTTP\/1.1 426/);
    assert.match(old, /sec-websocket-version: 13/i);
    assert.match(await upgradeResponse(port, get, [...base, key]), /^HTTP\/1.1 426/);
    const shortKey = await upgradeResponse(port, get, [
      ...base,
      "Sec-WebSocket-Key: abc",
      "Sec-WebSocket-Version: 13",
    ]);
    assert.match(shortKey, /^HTTP\/1.1 400/);
    const http10 = await upgradeResponse(port, "GET /mqtt HTTP/1.0", [
      ...base,
      key,
      "Sec-WebSocket-Version: 13",
    ]);
    assert.match(http10, /^HTTP\/1.1 400/);
    const twice = await upgradeResponse(port, get, [
      ...base.slice(0, 3),
      "Sec-WebSocket-Protocol: mqtt",
      "Sec-WebSocket-Protocol: foo",
      key,
      "Sec-WebSocket-Version: 13",
    ]);
    assert.match(twice, /^HTTP\/1.1 101/);
    assert.match(twice, /Sec-WebSocket-Protocol: mqtt/);
  } finally {
    await b.stop();
  }
});

Deno.test("ws: a close frame whose reason is not UTF-8 gets 1007", async () => {
  const b = await startBroker({ listeners: [WS] });
  try {
    const { conn, frame } = await rawWsTcp(portOf(b, "ws"));
    await conn.write(frame(0x88, new Uint8Array([0x03, 0xe8, 0xff, 0xfe])));
    assert.equal(await closeCodeOf(conn), 1007);
    conn.close();
  } finally {
    await b.stop();
  }
});
