// Operating the broker as a process: SIGTERM is a graceful stop that loses nothing acknowledged and
// publishes no wills; SIGHUP applies a new ACL and log level to clients that stay connected.
// (Start-up logs, exit codes and the log.format reload are in tests/cli_test.ts.)

import assert from "node:assert/strict";
import type {
  AckPacket,
  ConnackPacket,
  DisconnectPacket,
  Packet,
  PublishPacket,
  SubackPacket,
} from "../../src/mqtt/types.ts";
import { type BrokerProcess, RawClient, spawnBroker, td, te } from "../helpers.ts";
import { spawnMain } from "./main_process.ts";

/** A SUBSCRIBE of `filters` at QoS 1 with default options. */
function subscribe(packetId: number, ...filters: string[]): Packet {
  return {
    type: 8,
    packetId,
    subscriptions: filters.map((topicFilter) => ({
      topicFilter,
      qos: 1,
      noLocal: false,
      retainAsPublished: false,
      retainHandling: 0,
    })),
  };
}

function publish(topic: string, payload: string, packetId: number): PublishPacket {
  return { type: 3, topic, payload: te(payload), qos: 1, retain: false, dup: false, packetId };
}

const N = 50;

Deno.test("SIGTERM: exit 0 quickly, DISCONNECT 0x8B, no wills, and every acknowledged message survives", async () => {
  const dir = await Deno.makeTempDir({ prefix: "ops_shutdown_" });
  const args = ["--storage-backend", "kv", "--storage-path", `${dir}/mqtt.db`, "--sys.interval", "0"];
  let proc: BrokerProcess | undefined;
  const sockets: RawClient[] = [];
  try {
    proc = await spawnBroker(args);
    // A persistent 3.1.1 session that subscribes, then goes offline: it should get the N messages and,
    // if any will were (wrongly) published at shutdown, that will too.
    const sub = await RawClient.connect(proc.port, { clientId: "offline-sub", clean: false });
    sub.send(subscribe(1, "data/#", "will/#"));
    await sub.expect(9);
    sub.send({ type: 14 });
    await sub.expectClosed();

    // Clients connected at the moment of SIGTERM, each with a retained QoS 1 will.
    const will = (topic: string) => ({ topic, payload: te(`${topic} died`), qos: 1 as const, retain: true });
    const v5 = await RawClient.connect(proc.port, { clientId: "pub-5", version: 5, will: will("will/v5") });
    const v4 = await RawClient.connect(proc.port, { clientId: "idle-4", version: 4, will: will("will/v4") });
    sockets.push(v5, v4);
    for (let i = 0; i < N; i++) v5.send(publish("data/x", `m${i}`, i + 1));
    const acked = new Set<number>();
    for (let i = 0; i < N; i++) {
      const ack = await v5.expect(4, 10_000) as AckPacket;
      assert.equal(ack.reasonCode ?? 0, 0, `PUBACK ${ack.packetId}`);
      acked.add(ack.packetId);
    }
    assert.equal(acked.size, N);

    const signalled = Date.now();
    const code = await proc.terminate();
    const took = Date.now() - signalled;
    assert.equal(code, 0, proc.stderr());
    assert.ok(took < 5000, `SIGTERM took ${took} ms`);
    // MQTT 5: DISCONNECT 0x8B Server shutting down (§3.14.2.1); 3.1.1 has no server DISCONNECT, just a close.
    const disconnect = await v5.expect(14) as DisconnectPacket;
    assert.equal(disconnect.reasonCode, 0x8b);
    await v5.expectClosed();
    await v4.expectClosed();
    assert.deepEqual(v4.received, []);
    assert.match(proc.stderr(), /INFO {2}stopping signal=SIGTERM\n/);
    assert.match(proc.stderr(), /INFO {2}stopped\n/);
    assert.doesNotMatch(proc.stderr(), /ERROR|WARN/);

    // Restart on the same database: the session is there with all N messages, in order (§4.6), no will.
    proc = await spawnBroker(args);
    const back = await RawClient.connect(proc.port, { clientId: "offline-sub", clean: false });
    sockets.push(back);
    const received: string[] = [];
    while (received.length < N) {
      const p = await back.expect(3, 10_000) as PublishPacket;
      back.send({ type: 4, packetId: p.packetId! });
      received.push(`${p.topic}=${td(p.payload)}`);
    }
    assert.deepEqual(received, Array.from({ length: N }, (_, i) => `data/x=m${i}`));
    await back.expectNone(3, 200);
    // Nor was a will retained.
    const fresh = await RawClient.connect(proc.port, { clientId: "fresh", version: 4 });
    sockets.push(fresh);
    fresh.send(subscribe(2, "will/#"));
    await fresh.expect(9);
    await fresh.expectNone(3, 200);
    assert.equal(await proc.terminate(), 0, proc.stderr());
  } finally {
    for (const s of sockets) await s.close();
    await proc?.kill();
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("SIGTERM: the session-present flag and the queue survive for an MQTT 5 session with expiry", async () => {
  const dir = await Deno.makeTempDir({ prefix: "ops_shutdown5_" });
  const args = ["--storage-backend", "kv", "--storage-path", `${dir}/mqtt.db`, "--sys.interval", "0"];
  let proc: BrokerProcess | undefined;
  const sockets: RawClient[] = [];
  try {
    proc = await spawnBroker(args);
    const props = { sessionExpiryInterval: 3600 };
    const sub = await RawClient.connect(proc.port, { clientId: "sub-5", version: 5, properties: props });
    sockets.push(sub);
    sub.send(subscribe(1, "t/#"));
    await sub.expect(9);
    sub.send({ type: 14 });
    await sub.expectClosed();
    const pub = await RawClient.connect(proc.port, { clientId: "p", version: 4 });
    sockets.push(pub);
    pub.send(publish("t/1", "kept over restart", 1));
    await pub.expect(4);
    assert.equal(await proc.terminate(), 0, proc.stderr());

    proc = await spawnBroker(args);
    const back = await RawClient.open(proc.port, 5);
    sockets.push(back);
    back.send({
      type: 1,
      protocolName: "MQTT",
      protocolVersion: 5,
      clean: false,
      keepAlive: 60,
      clientId: "sub-5",
      properties: props,
    });
    assert.equal((await back.expect(2) as ConnackPacket).sessionPresent, true);
    assert.equal(td((await back.expect(3) as PublishPacket).payload), "kept over restart");
    assert.equal(await proc.terminate(), 0, proc.stderr());
  } finally {
    for (const s of sockets) await s.close();
    await proc?.kill();
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("SIGHUP: a new ACL and log level apply to connected clients; a broken ACL is rejected", async () => {
  const dir = await Deno.makeTempDir({ prefix: "ops_reload_" });
  const aclFile = `${dir}/acl`;
  const configFile = `${dir}/config.yaml`;
  const config = (level: string) =>
    [
      "server: {port: 0}",
      "metrics: {enabled: false}",
      "storage: {backend: memory}",
      "sys: {interval: 0}",
      `log: {level: ${level}}`,
      `auth: {acl_file: ${JSON.stringify(aclFile)}}`,
      "",
    ].join("\n");
  await Deno.writeTextFile(aclFile, "topic readwrite a/#\ntopic read b/#\n");
  await Deno.writeTextFile(configFile, config("info"));
  const proc = spawnMain(["--config", configFile]);
  const sockets: RawClient[] = [];
  try {
    const [, port] = await proc.waitFor(/listening type=mqtt address=127\.0\.0\.1:(\d+)/);
    const reader = await RawClient.connect(Number(port), { clientId: "reader", version: 4 });
    const writer = await RawClient.connect(Number(port), { clientId: "writer", version: 5 });
    sockets.push(reader, writer);
    reader.send(subscribe(1, "b/#", "a/#"));
    assert.deepEqual((await reader.expect(9) as SubackPacket).reasonCodes, [1, 1]);
    let packetId = 1;
    const send = async (topic: string) => {
      writer.send(publish(topic, `to ${topic}`, ++packetId));
      return (await writer.expect(4) as AckPacket).reasonCode ?? 0;
    };

    // Before: b/ is read-only for anonymous clients, and debug lines are off.
    assert.equal(await send("b/x"), 0x87);
    await reader.expectNone(3, 100);
    assert.doesNotMatch(proc.stderr, /publish refused/);

    // Reload: b/# becomes writable and the level drops to debug; nobody is disconnected.
    await Deno.writeTextFile(aclFile, "topic readwrite a/#\ntopic readwrite b/#\n");
    await Deno.writeTextFile(configFile, config("debug"));
    let from = proc.stderr.length;
    proc.signal("SIGHUP");
    await proc.waitFor(/configuration changed change="auth\.acl_file reloaded"/, { from });
    await proc.waitFor(/configuration changed change="log\.level info -> debug"/, { from });
    assert.equal(await send("b/x"), 0);
    assert.equal(td((await reader.expect(3) as PublishPacket).payload), "to b/x");
    // A refusal is now logged at debug level: the new level is in force, not just reported.
    assert.equal(await send("c/x"), 0x87);
    await proc.waitFor(/DEBUG publish refused client_id=writer topic=c\/x/, { from });

    // A broken ACL file is rejected as a whole: the running rules stay.
    await Deno.writeTextFile(aclFile, "topic readwrite a/#\nallow everything\n");
    from = proc.stderr.length;
    proc.signal("SIGHUP");
    await proc.waitFor(/ERROR configuration reload failed: .*acl:2: unknown keyword 'allow'/, { from });
    assert.equal(await send("b/x"), 0);
    assert.equal(td((await reader.expect(3) as PublishPacket).payload), "to b/x");

    // Read access is checked at delivery: revoking it silences an existing subscription. a/x is sent
    // after b/x on the same connection, so once a/x has arrived b/x would have been delivered before it.
    await Deno.writeTextFile(aclFile, "topic readwrite a/#\ntopic write b/#\n");
    from = proc.stderr.length;
    proc.signal("SIGHUP");
    await proc.waitFor(/configuration changed change="auth\.acl_file reloaded"/, { from });
    await send("b/x");
    assert.equal(await send("a/x"), 0);
    assert.equal((await reader.expect(3) as PublishPacket).topic, "a/x");
    assert.deepEqual(reader.received.filter((p) => p.type === 3), []);

    assert.equal(reader.closed || writer.closed, false, "no client was dropped by the reloads");
    assert.doesNotMatch(proc.stderr, /disconnecting client|client disconnected/);
    proc.signal("SIGTERM");
    assert.equal(await proc.exit(), 0, proc.stderr);
  } finally {
    for (const s of sockets) await s.close();
    await proc.kill();
    await Deno.remove(dir, { recursive: true });
  }
});
