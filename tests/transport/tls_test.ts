/**
 * mqtts listeners through the real broker: server-authenticated TLS, mutual TLS (client certificate
 * required, CN as username), TLS versions, and certificate reload.
 */

import assert from "node:assert/strict";
import mqtt from "mqtt";
import type { ListenerConfig } from "../../src/config/types.ts";
import { createLogger } from "../../src/log.ts";
import type { Transport } from "../../src/transport/connection.ts";
import { listenTls } from "../../src/transport/tls.ts";
import {
  collect,
  mqttConnect,
  mqttEnd,
  RawClient,
  startBroker,
  type TestBroker,
  waitFor,
} from "../helpers.ts";
import { CLIENT_CN, sharedPki } from "./certs.ts";

const pki = await sharedPki();

function tlsListener(extra: Partial<ListenerConfig> = {}): ListenerConfig {
  return {
    type: "mqtts",
    host: "127.0.0.1",
    port: 0,
    cert_file: pki.serverCert,
    key_file: pki.serverKey,
    ...extra,
  };
}

function mtlsListener(extra: Partial<ListenerConfig> = {}): ListenerConfig {
  return tlsListener({ ca_file: pki.caCert, require_client_cert: true, ...extra });
}

/** The port of the first listener of `type`. */
function portOf(b: TestBroker, type: ListenerConfig["type"]): number {
  const l = b.broker.addresses.find((a) => a.type === type);
  if (l === undefined) throw new Error(`no ${type} listener in ${JSON.stringify(b.broker.addresses)}`);
  return l.port;
}

/** Resolves with the error when MQTT.js cannot connect; rejects if it connects. */
function connectFailure(url: string, opts: mqtt.IClientOptions): Promise<string> {
  return new Promise((resolve, reject) => {
    const client = mqtt.connect(url, { reconnectPeriod: 0, connectTimeout: 3000, ...opts });
    let done = false;
    const finish = (why: string) => {
      if (done) return;
      done = true;
      client.end(true);
      resolve(why);
    };
    client.once("connect", () => {
      done = true;
      client.end(true);
      reject(new Error(`connected to ${url} but should have been refused`));
    });
    client.once("error", (err) => finish(err.message));
    client.once("close", () => finish("closed"));
  });
}

/** Reads until the peer closes (true) or 3 s pass (false); a TLS alert before the close is skipped. */
async function readUntilClosed(conn: Deno.Conn): Promise<boolean> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  const deadline = new Promise<boolean>((resolve) => (timer = setTimeout(() => resolve(false), 3000)));
  const closed = (async () => {
    const buf = new Uint8Array(256);
    try {
      while ((await conn.read(buf)) !== null) { /* skip */ }
    } catch {
      // reset: closed as well
    }
    return true;
  })();
  try {
    return await Promise.race([closed, deadline]);
  } finally {
    clearTimeout(timer);
  }
}

/** Runs `openssl s_client` against the port with extra arguments; returns its exit code and output. */
async function sClient(port: number, args: string[]): Promise<{ code: number; text: string }> {
  const out = await new Deno.Command("openssl", {
    args: ["s_client", "-connect", `127.0.0.1:${port}`, "-CAfile", pki.caCert, ...args],
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
  }).output();
  const text = new TextDecoder().decode(out.stdout) + new TextDecoder().decode(out.stderr);
  return { code: out.code, text };
}

Deno.test("mqtts: MQTT.js publishes and subscribes over TLS trusting our CA; port 0 reports the bound port", async () => {
  const b = await startBroker({ listeners: [tlsListener()] });
  try {
    const port = portOf(b, "mqtts");
    assert.ok(port > 0 && port !== b.port, `mqtts port ${port}`);
    const url = `mqtts://127.0.0.1:${port}`;
    const ca = pki.read(pki.caCert);
    const sub = await mqttConnect(url, { ca, clientId: "tls-sub" });
    const got = collect(sub);
    await sub.subscribeAsync("secure/#", { qos: 1 });
    const pub = await mqttConnect(url, { ca, clientId: "tls-pub" });
    await pub.publishAsync("secure/a", "over tls", { qos: 1 });
    // A plain TCP client on the main listener gets the same message.
    const tcp = await mqttConnect(b.url, { clientId: "tcp-sub" });
    const tcpGot = collect(tcp);
    await tcp.subscribeAsync("secure/#");
    await pub.publishAsync("secure/b", "to both", { qos: 0 });
    await waitFor(() => got.length === 2 && tcpGot.length === 1, "messages over TLS and TCP");
    assert.deepEqual(got.map((m) => [m.topic, m.payload]), [["secure/a", "over tls"], [
      "secure/b",
      "to both",
    ]]);
    assert.deepEqual(tcpGot.map((m) => m.payload), ["to both"]);
    assert.equal(b.broker.clients.get("tls-sub")?.transport.remoteAddr.startsWith("127.0.0.1:"), true);
    await mqttEnd(pub);
    await mqttEnd(sub);
    await mqttEnd(tcp);
  } finally {
    await b.stop();
  }
});

Deno.test("mqtts: plain MQTT sent to the TLS port gets no CONNACK and is closed", async () => {
  const b = await startBroker({ listeners: [tlsListener()] });
  try {
    const raw = await RawClient.open(portOf(b, "mqtts"));
    raw.send({
      type: 1,
      protocolName: "MQTT",
      protocolVersion: 4,
      clean: true,
      keepAlive: 30,
      clientId: "plain",
    });
    await raw.expectClosed(3000);
    assert.equal(raw.received.length, 0);
    assert.equal(b.broker.clients.has("plain"), false);
    await raw.close();
  } finally {
    await b.stop();
  }
});

Deno.test("mqtts: a client that does not trust the server certificate fails", async () => {
  const b = await startBroker({ listeners: [tlsListener()] });
  try {
    const why = await connectFailure(`mqtts://127.0.0.1:${portOf(b, "mqtts")}`, {
      ca: pki.read(pki.otherCaCert),
    });
    assert.match(why, /certificate|closed/i);
    assert.equal(b.broker.clients.size, 0);
  } finally {
    await b.stop();
  }
});

Deno.test("mqtts: TLS 1.2 and 1.3 are accepted, TLS 1.1 is refused", async () => {
  const b = await startBroker({ listeners: [tlsListener()] });
  try {
    const port = portOf(b, "mqtts");
    const v12 = await sClient(port, ["-tls1_2"]);
    assert.equal(v12.code, 0, v12.text);
    assert.match(v12.text, /Protocol\s*:\s*TLSv1\.2/);
    const v13 = await sClient(port, ["-tls1_3"]);
    assert.equal(v13.code, 0, v13.text);
    assert.match(v13.text, /TLSv1\.3/);
    const v11 = await sClient(port, ["-tls1_1"]);
    assert.notEqual(v11.code, 0, v11.text);
    // s_client prints the version it asked for even when the handshake failed: the cipher says it did.
    assert.match(v11.text, /Cipher is \(NONE\)/);
  } finally {
    await b.stop();
  }
});

Deno.test("mutual TLS: no client certificate or one from another CA is refused, ours connects", async () => {
  const b = await startBroker({ listeners: [mtlsListener()] });
  try {
    const url = `mqtts://127.0.0.1:${portOf(b, "mqtts")}`;
    const ca = pki.read(pki.caCert);
    const noCert = await connectFailure(url, { ca, clientId: "no-cert" });
    assert.match(noCert, /certificate|closed|alert/i);
    const wrongCa = await connectFailure(url, {
      ca,
      clientId: "wrong-ca",
      cert: pki.read(pki.otherClientCert),
      key: pki.read(pki.otherClientKey),
    });
    assert.match(wrongCa, /certificate|closed|alert|unknown/i);
    assert.equal(b.logs.filter((l) => l.includes("TLS handshake refused")).length, 2, b.logs.join("\n"));
    // Deno's own TLS client, without a certificate: the handshake itself fails.
    await assert.rejects(async () => {
      const conn = await Deno.connectTls({ hostname: "127.0.0.1", port: portOf(b, "mqtts"), caCerts: [ca] });
      try {
        await conn.handshake();
        await conn.write(new Uint8Array([0xc0, 0x00]));
        const n = await conn.read(new Uint8Array(4));
        if (n === null) throw new Error("closed without a handshake error");
      } finally {
        conn.close();
      }
    });
    assert.equal(b.broker.connections.size, 0);

    const ok = await mqttConnect(url, {
      ca,
      clientId: "with-cert",
      cert: pki.read(pki.clientCert),
      key: pki.read(pki.clientKey),
      username: "claimed",
    });
    // Without use_cn_as_username the CONNECT username stands.
    assert.equal(b.broker.clients.get("with-cert")?.username, "claimed");
    const got = collect(ok);
    await ok.subscribeAsync("m/t", { qos: 1 });
    await ok.publishAsync("m/t", "round trip", { qos: 1 });
    await waitFor(() => got.length === 1, "own message over mutual TLS");
    assert.equal(got[0].payload, "round trip");
    await mqttEnd(ok);
  } finally {
    await b.stop();
  }
});

Deno.test("mutual TLS: use_cn_as_username makes the certificate CN the username", async () => {
  const b = await startBroker({ listeners: [mtlsListener({ use_cn_as_username: true })] });
  try {
    const url = `mqtts://127.0.0.1:${portOf(b, "mqtts")}`;
    const c = await mqttConnect(url, {
      ca: pki.read(pki.caCert),
      clientId: "cn-client",
      cert: pki.read(pki.clientCert),
      key: pki.read(pki.clientKey),
      username: "someone-else",
      password: "ignored",
    });
    assert.equal(b.broker.clients.get("cn-client")?.username, CLIENT_CN);
    assert.equal(b.broker.clients.get("cn-client")?.transport.peerCommonName, CLIENT_CN);
    assert.equal(b.broker.sessions.get("cn-client")?.username, CLIENT_CN);
    await mqttEnd(c);
    // Two CNs in the subject: the first is the username, as with Mosquitto (not the last, "admin").
    const two = await mqttConnect(url, {
      ca: pki.read(pki.caCert),
      clientId: "two-cn",
      cert: pki.read(pki.twoCnClientCert),
      key: pki.read(pki.twoCnClientKey),
    });
    assert.equal(b.broker.clients.get("two-cn")?.username, "device-7");
    await mqttEnd(two);
  } finally {
    await b.stop();
  }
});

Deno.test("mutual TLS: a refusing CONNACK still reaches the client before the socket closes", async () => {
  // The CONNACK goes through the node:tls adapter and is flushed before the close.
  const b = await startBroker({ listeners: [mtlsListener()], auth: { allow_anonymous: false } });
  try {
    const url = `mqtts://127.0.0.1:${portOf(b, "mqtts")}`;
    const why = await connectFailure(url, {
      ca: pki.read(pki.caCert),
      cert: pki.read(pki.clientCert),
      key: pki.read(pki.clientKey),
      protocolVersion: 5,
    });
    assert.match(why, /Not authorized/i);
  } finally {
    await b.stop();
  }
});

for (const mutual of [false, true]) {
  Deno.test(`${mutual ? "mutual TLS" : "mqtts"}: a TCP connection that never completes the handshake is closed`, async () => {
    // Deno.listenTls would keep this socket until the client gave up (see tls.ts); node:tls times it out.
    const logs: string[] = [];
    const logger = createLogger({ level: "debug", format: "text", write: (l) => logs.push(l) });
    const accepted: Transport[] = [];
    const listener = await listenTls(
      mutual ? mtlsListener() : tlsListener(),
      (t) => accepted.push(t),
      logger,
      { handshakeTimeoutMs: 300 },
    );
    try {
      // Timed from before the connect: the server's 300 ms run from its accept, which comes after it.
      const started = Date.now();
      const silent = await Deno.connect({ hostname: "127.0.0.1", port: listener.info.port });
      // One that sends half a ClientHello and stops.
      const partial = await Deno.connect({ hostname: "127.0.0.1", port: listener.info.port });
      await partial.write(new Uint8Array([0x16, 0x03, 0x01, 0x02, 0x00, 0x01]));
      assert.equal(await readUntilClosed(silent), true);
      const elapsed = Date.now() - started;
      assert.ok(elapsed >= 250 && elapsed < 2000, `closed after ${elapsed} ms`);
      assert.equal(await readUntilClosed(partial), true);
      assert.equal(accepted.length, 0);
      const timeouts = logs.filter((l) => l.includes("TLS handshake refused") && l.includes("timeout"));
      assert.equal(timeouts.length, 2, logs.join("\n"));
      silent.close();
      partial.close();
    } finally {
      await listener.close();
    }
  });
}

Deno.test("mqtts: unfinished handshakes are bounded by server.max_clients: one more closes the oldest, clients still connect", async () => {
  const b = await startBroker({ server: { max_clients: 3 }, listeners: [tlsListener()] });
  const silent: Deno.TcpConn[] = [];
  try {
    const port = portOf(b, "mqtts");
    for (let i = 0; i < 5; i++) {
      silent.push(await Deno.connect({ hostname: "127.0.0.1", port }));
      await new Promise((r) => setTimeout(r, 30)); // accepted in this order
    }
    // The two oldest go long before the 10 s handshake timeout; the three newest stay.
    const started = Date.now();
    assert.equal(await readUntilClosed(silent[0]), true);
    assert.equal(await readUntilClosed(silent[1]), true);
    assert.ok(Date.now() - started < 2000);
    assert.ok(b.logs.some((l) => l.includes("oldest unfinished TLS handshake")), b.logs.join("\n"));
    const client = await mqttConnect(`mqtts://127.0.0.1:${port}`, {
      ca: pki.read(pki.caCert),
      clientId: "tls-ok",
    });
    await client.publishAsync("t", "x", { qos: 1 });
    await mqttEnd(client);
  } finally {
    for (const c of silent) {
      try {
        c.close();
      } catch {
        // closed by the broker
      }
    }
    await b.stop();
  }
});

/** Copies the first PEM pair over the listener's files (what an operator's renewal does). */
async function replaceFiles(dir: string, cert: string, key: string): Promise<{ cert: string; key: string }> {
  const paths = { cert: `${dir}/live.crt`, key: `${dir}/live.key` };
  await Deno.writeTextFile(paths.cert, pki.read(cert));
  await Deno.writeTextFile(paths.key, pki.read(key));
  return paths;
}

for (const mutual of [false, true]) {
  const kind = mutual ? "mutual TLS" : "mqtts";
  Deno.test(`${kind}: a reload serves new handshakes with new files; open connections stay; a bad pair changes nothing`, async () => {
    const dir = await Deno.makeTempDir({ prefix: "mqtt-tls-reload-" });
    const live = await replaceFiles(dir, pki.serverCert, pki.serverKey);
    const extra = mutual ? { ca_file: pki.caCert, require_client_cert: true } : {};
    const b = await startBroker({
      listeners: [tlsListener({ cert_file: live.cert, key_file: live.key, ...extra })],
    });
    try {
      const port = portOf(b, "mqtts");
      const url = `mqtts://127.0.0.1:${port}`;
      const clientAuth = mutual ? { cert: pki.read(pki.clientCert), key: pki.read(pki.clientKey) } : {};
      const oldCa = { ca: pki.read(pki.caCert), ...clientAuth };
      const newCa = { ca: pki.read(pki.otherCaCert), ...clientAuth };
      const before = await mqttConnect(url, { ...oldCa, clientId: "before" });
      const got = collect(before);
      await before.subscribeAsync("r/#", { qos: 1 });

      // Unchanged files: nothing to do.
      assert.deepEqual(await b.broker.reload(b.config), []);

      // A key that does not match the certificate is refused and the old pair keeps serving.
      await Deno.writeTextFile(live.key, pki.read(pki.otherServerKey));
      // Nothing else of that reload is applied either (here: a new log level).
      const level = b.broker.config.log.level;
      await assert.rejects(
        b.broker.reload({
          ...b.config,
          log: { ...b.config.log, level: level === "error" ? "warn" : "error" },
        }),
        /cert_file .* key_file|KeyMismatch|consistent/i,
      );
      assert.equal(b.broker.config.log.level, level, "a failed reload applied its log level");
      const still = await mqttConnect(url, { ...oldCa, clientId: "still-old" });
      await mqttEnd(still);

      await replaceFiles(dir, pki.otherServerCert, pki.otherServerKey);
      const changes = await b.broker.reload(b.config);
      assert.deepEqual(changes, [`TLS certificates of mqtts 127.0.0.1:${port} reloaded`]);
      assert.equal(portOf(b, "mqtts"), port);

      // New handshakes present the new certificate: trusted by the other CA only.
      const why = await connectFailure(url, { ...oldCa, clientId: "old-trust" });
      assert.match(why, /certificate|closed/i);
      const after = await mqttConnect(url, { ...newCa, clientId: "after" });
      // The connection opened before the reload still works, both ways.
      await after.publishAsync("r/1", "after reload", { qos: 1 });
      await before.publishAsync("r/2", "from before", { qos: 1 });
      await waitFor(() => got.length === 2, "messages to the pre-reload connection");
      assert.deepEqual(got.map((m) => m.payload).sort(), ["after reload", "from before"]);
      await mqttEnd(after);
      await mqttEnd(before);
    } finally {
      await b.stop();
      await Deno.remove(dir, { recursive: true });
    }
  });
}

Deno.test("mqtts: unreadable or broken certificate files, or a port in use, fail start-up with a clear message", async () => {
  await assert.rejects(
    startBroker({ listeners: [tlsListener({ cert_file: `${pki.dir}/missing.crt` })] }),
    (err: Error) => err.message.includes("cert_file") && err.message.includes("missing.crt"),
  );
  await assert.rejects(
    startBroker({ listeners: [tlsListener({ key_file: pki.otherServerKey })] }),
    (err: Error) => err.message.includes(pki.otherServerKey) && err.message.includes("mqtts listener"),
  );
  await assert.rejects(
    startBroker({ listeners: [mtlsListener({ key_file: pki.otherServerKey })] }),
    (err: Error) => err.message.includes(pki.otherServerKey),
  );
  const other = await startBroker();
  try {
    await assert.rejects(
      startBroker({ listeners: [tlsListener({ port: other.port })] }),
      (err: Error) => err.message === `mqtts listener 127.0.0.1:${other.port} is already in use`,
    );
  } finally {
    await other.stop();
  }
  await assert.rejects(
    startBroker({ listeners: [mtlsListener({ ca_file: pki.serverKey })] }),
    (err: Error) => err.message.includes("ca_file") && err.message.includes("no PEM certificate"),
  );
});
