/**
 * Durability across a crash: the broker (a child process on the Deno KV store) is killed with SIGKILL in the
 * middle of a publish stream. After restart, a persistent subscriber gets every message whose PUBACK (QoS 1)
 * or PUBREC (QoS 2) the publisher had received, in order, and retained messages and subscriptions are back.
 */

import assert from "node:assert/strict";
import type { ConnackPacket, Packet, PublishPacket, QoS } from "../../src/mqtt/types.ts";
import { delay, RawClient, spawnBroker, td, te, waitFor } from "../helpers.ts";

async function crashRun(qos: QoS): Promise<void> {
  const dir = await Deno.makeTempDir({ prefix: "mqtt-crash-" });
  const store = [
    "--storage.backend",
    "kv",
    "--storage.path",
    `${dir}/mqtt.db`,
    "--qos.max_qos",
    "2",
    "--server.max_queued_messages",
    "50000",
  ];
  let broker = await spawnBroker(store);
  try {
    const sub = await RawClient.connect(broker.port, { clientId: "crash-sub", clean: false });
    sub.send({
      type: 8,
      packetId: 1,
      subscriptions: [{
        topicFilter: "crash/#",
        qos,
        noLocal: false,
        retainAsPublished: false,
        retainHandling: 0,
      }],
    });
    await sub.expect(9);
    await sub.close();

    const pub = await RawClient.connect(broker.port, { clientId: "crash-pub" });
    pub.send({
      type: 3,
      topic: "crash/retained",
      payload: te("kept"),
      qos: 1,
      retain: true,
      dup: false,
      packetId: 1,
    });
    await pub.expect(4);
    // Stream publishes without waiting; once a good number are acknowledged, put a burst more on the wire
    // and kill the broker at once: it dies with messages in flight whatever its speed.
    const ackType = qos === 1 ? 4 : 5;
    let sent = 0;
    const stream = (n: number) => {
      for (const end = sent + n; sent < end; sent++) {
        pub.send({
          type: 3,
          topic: "crash/data",
          payload: te(`m${sent}`),
          qos,
          retain: false,
          dup: false,
          packetId: sent + 2,
        });
      }
    };
    stream(5000);
    let acks = 0;
    await waitFor(
      () => {
        // Complete QoS 2 exchanges like a real client: PUBREL for each PUBREC.
        for (const p of pub.received) {
          if (p.type === 5 && !(p as { seen?: boolean }).seen) {
            (p as { seen?: boolean }).seen = true;
            pub.send({ type: 6, packetId: (p as { packetId: number }).packetId });
          }
        }
        acks = pub.received.filter((p) => p.type === ackType).length;
        return acks >= 500;
      },
      "500 acks",
      20000,
    );
    stream(10000);
    await broker.kill();
    await delay(50);
    const acked = new Set(
      pub.received.filter((p) => p.type === ackType).map((p) => (p as { packetId: number }).packetId - 2),
    );
    await pub.close();
    assert.ok(acked.size >= 500 && acked.size < sent, `killed mid-stream: ${acked.size} of ${sent} acked`);

    broker = await spawnBroker(store);
    assert.match(broker.stderr(), /store restored .*sessions=1 retained=1/);
    const again = await RawClient.open(broker.port);
    again.send({
      type: 1,
      protocolName: "MQTT",
      protocolVersion: 4,
      clean: false,
      keepAlive: 30,
      clientId: "crash-sub",
    });
    const connack = await again.expect(2) as ConnackPacket;
    assert.equal(connack.sessionPresent, true);
    const got: string[] = [];
    const maxAcked = Math.max(...acked);
    const deadline = Date.now() + 20000;
    // Receive and acknowledge everything until the stream has been quiet for 500 ms.
    let lastActivity = Date.now();
    while (Date.now() < deadline && Date.now() - lastActivity < 500) {
      let p: Packet | undefined;
      while ((p = again.received.shift()) !== undefined) {
        lastActivity = Date.now();
        if (p.type === 3) {
          const pp = p as PublishPacket;
          if (pp.topic === "crash/data") got.push(td(pp.payload));
          if (pp.qos === 1) again.send({ type: 4, packetId: pp.packetId! });
          if (pp.qos === 2) again.send({ type: 5, packetId: pp.packetId! });
        } else if (p.type === 6) {
          again.send({ type: 7, packetId: (p as { packetId: number }).packetId });
        }
      }
      await delay(20);
    }
    assert.ok(got.includes(`m${maxAcked}`), "the last acknowledged message arrived");
    const numbers = got.map((s) => Number(s.slice(1)));
    const missing = [...acked].filter((n) => !numbers.includes(n));
    assert.deepEqual(
      missing,
      [],
      `acknowledged messages lost (got ${numbers.length}, acked ${acked.size}, first got ${
        numbers.slice(0, 5)
      })`,
    );
    for (let i = 1; i < numbers.length; i++) assert.ok(numbers[i] > numbers[i - 1], `order broken at ${i}`);
    assert.equal(new Set(numbers).size, numbers.length, "duplicates delivered");
    // Retained and subscription are back.
    again.send({
      type: 8,
      packetId: 3,
      subscriptions: [
        {
          topicFilter: "crash/retained",
          qos: 1,
          noLocal: false,
          retainAsPublished: false,
          retainHandling: 0,
        },
      ],
    });
    await again.expect(9);
    const retained = await again.expect(3) as PublishPacket;
    assert.equal(td(retained.payload), "kept");
    assert.equal(retained.retain, true);
    await again.close();
  } finally {
    await broker.kill();
    await Deno.remove(dir, { recursive: true });
  }
}

Deno.test("SIGKILL during a QoS 1 stream loses no acknowledged message", () => crashRun(1));

Deno.test("SIGKILL during a QoS 2 stream loses nothing acknowledged and delivers no duplicates", () =>
  crashRun(2));

Deno.test("a database locked by another running broker is a clear start-up error", async () => {
  const dir = await Deno.makeTempDir({ prefix: "mqtt-lock-" });
  const store = ["--storage.backend", "kv", "--storage.path", `${dir}/mqtt.db`];
  const first = await spawnBroker(store);
  try {
    const second = new Deno.Command(Deno.execPath(), {
      args: ["run", "-A", "main.ts", "--port", "0", "--metrics.enabled", "false", ...store],
      stdout: "null",
      stderr: "piped",
    });
    const out = await second.output();
    assert.notEqual(out.code, 0);
    const err = td(out.stderr);
    assert.match(err, /locked/);
    assert.ok(!err.includes("    at "), `stack trace printed:\n${err}`);
  } finally {
    await first.kill();
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("a database file cut to 0 bytes starts an empty broker with a warning that names it", async () => {
  const dir = await Deno.makeTempDir({ prefix: "mqtt-empty-" });
  const path = `${dir}/mqtt.db`;
  await Deno.writeFile(path, new Uint8Array(0));
  const broker = await spawnBroker(["--storage.backend", "kv", "--storage.path", path]);
  try {
    await waitFor(() => broker.stderr().includes("empty (0-byte) file"), "the warning");
    assert.match(
      broker.stderr(),
      new RegExp(`WARN .*empty \\(0-byte\\) file.*${path.replaceAll("/", "\\/")}`),
    );
  } finally {
    await broker.kill();
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("SIGKILL with QoS 2 in flight to an online subscriber: nothing it completed comes back, no new ids", async () => {
  // Exactly once to the subscriber (§4.3.3): the broker sends a QoS 2 PUBLISH only once its packet id is
  // committed, and PUBREL only once the "released" state is. Otherwise a crash between the two brings back
  // a message the subscriber already completed (or under a new packet id), which it takes for a new one.
  const dir = await Deno.makeTempDir({ prefix: "mqtt-crash-q2-" });
  const store = ["--storage.backend", "kv", "--storage.path", `${dir}/mqtt.db`, "--qos.max_qos", "2"];
  let broker = await spawnBroker(store);
  const completed = new Set<number>(); // messages whose PUBCOMP the subscriber sent
  const firstId = new Map<number, number>(); // message -> packet id it first arrived with
  const idToMessage = new Map<number, number>();
  const problems: string[] = [];
  let phase = 0;
  let responding = true;
  /** The subscriber answers at once: PUBREC for each PUBLISH, PUBCOMP for each PUBREL. */
  const respond = async (c: RawClient) => {
    while (responding && !c.closed) {
      for (const p of c.received.splice(0)) {
        if (p.type === 3) {
          const publish = p as PublishPacket;
          const n = Number(td(publish.payload).slice(1));
          const id = publish.packetId!;
          if (phase === 1 && completed.has(n)) problems.push(`m${n} again after its PUBCOMP (id ${id})`);
          const known = firstId.get(n);
          if (known !== undefined && known !== id) problems.push(`m${n} came back as id ${id}, was ${known}`);
          if (known === undefined) firstId.set(n, id);
          idToMessage.set(id, n);
          c.send({ type: 5, packetId: id });
        } else if (p.type === 6) {
          const id = (p as { packetId: number }).packetId;
          const n = idToMessage.get(id);
          if (n !== undefined && phase === 0) completed.add(n);
          c.send({ type: 7, packetId: id });
        }
      }
      await delay(1);
    }
  };
  try {
    const sub = await RawClient.connect(broker.port, { clientId: "q2-sub", clean: false });
    await sub.subscribe("q2/#", 2);
    const responder = respond(sub);
    // Four publishers with unique packet ids, each releasing what the broker PUBRECs.
    const pubs = await Promise.all(
      [0, 1, 2, 3].map((i) => RawClient.connect(broker.port, { clientId: `q2-pub${i}`, clean: false })),
    );
    let next = 0;
    const releasing = pubs.map(async (pub) => {
      while (!pub.closed) {
        for (const p of pub.received.splice(0)) {
          if (p.type === 5) pub.send({ type: 6, packetId: (p as { packetId: number }).packetId });
        }
        await delay(1);
      }
    });
    for (let round = 0; round < 40 && completed.size < 3000; round++) {
      for (const pub of pubs) {
        for (let k = 0; k < 100; k++) {
          const n = next++;
          pub.send({
            type: 3,
            topic: "q2/data",
            payload: te(`m${n}`),
            qos: 2,
            retain: false,
            dup: false,
            packetId: 1 + (n % 60000),
          });
        }
      }
      await delay(20);
    }
    await broker.kill();
    assert.ok(completed.size > 0, "the subscriber completed messages before the crash");
    await Promise.all(pubs.map((p) => p.close()));
    await Promise.all(releasing);
    responding = false;
    await responder;
    await sub.close();

    broker = await spawnBroker(store);
    phase = 1;
    responding = true;
    const again = await RawClient.connect(broker.port, { clientId: "q2-sub", clean: false });
    const responder2 = respond(again);
    await delay(1500); // redeliveries come right after CONNACK
    responding = false;
    await responder2;
    await again.close();
    assert.deepEqual(problems.slice(0, 10), [], `${problems.length} exactly-once violations`);
  } finally {
    responding = false;
    await broker.kill();
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("SIGKILL with QoS 1 in flight: the reconnect resends queued and live messages in their order, with DUP", async () => {
  // Three messages wait for an offline session, go out from its queue when it connects (their stored
  // records stay "queued"), then two more go straight into flight; none is acknowledged before the crash.
  const dir = await Deno.makeTempDir({ prefix: "mqtt-crash-q1-" });
  const store = ["--storage.backend", "kv", "--storage.path", `${dir}/mqtt.db`];
  let broker = await spawnBroker(store);
  try {
    const sub = await RawClient.connect(broker.port, { clientId: "q1-sub", clean: false });
    await sub.subscribe("q1/#", 1);
    const pub = await RawClient.connect(broker.port, { clientId: "q1-pub" });
    const publish = async (n: number) => {
      pub.send({
        type: 3,
        topic: "q1/data",
        payload: te(`m${n}`),
        qos: 1,
        retain: false,
        dup: false,
        packetId: n + 10,
      });
      await pub.expect(4); // committed: the store holds the message for the session
    };
    // One message delivered and acknowledged first, so the session's packet ids no longer start at 1.
    await publish(0);
    sub.send({ type: 4, packetId: ((await sub.expect(3)) as PublishPacket).packetId! });
    await sub.close();
    for (const n of [1, 2, 3]) await publish(n);
    const online = await RawClient.connect(broker.port, { clientId: "q1-sub", clean: false });
    await waitFor(() => online.received.filter((p) => p.type === 3).length === 3, "the queued three");
    for (const n of [4, 5]) await publish(n);
    await waitFor(() => online.received.filter((p) => p.type === 3).length === 5, "all five");
    await broker.kill();
    await Promise.all([pub.close(), online.close()]);
    const firstIds = (online.received.filter((p) => p.type === 3) as PublishPacket[]).map((p) => p.packetId);

    broker = await spawnBroker(store);
    const again = await RawClient.connect(broker.port, { clientId: "q1-sub", clean: false });
    await waitFor(() => again.received.filter((p) => p.type === 3).length >= 5, "five resent");
    await delay(200);
    const resent = again.received.filter((p) => p.type === 3) as PublishPacket[];
    assert.deepEqual(resent.map((p) => `${td(p.payload)}${p.dup ? " dup" : ""}`), [
      "m1 dup",
      "m2 dup",
      "m3 dup",
      "m4 dup",
      "m5 dup",
    ]);
    // MQTT-4.4.0-1: resent under their original packet ids, also those whose stored record holds none.
    assert.deepEqual(resent.map((p) => p.packetId), firstIds);
    await again.close();
  } finally {
    await broker.kill();
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("SIGKILL while messages sent from the queue are unacknowledged: they come back with DUP", async () => {
  // No in-flight record is stored for them (a QoS 1 message sent from the queue keeps its "queued" one);
  // the session was connected at the crash, so the front of its queue, up to its window, is resent as
  // possibly sent before. A message beyond the window was never sent: it comes without DUP.
  const dir = await Deno.makeTempDir({ prefix: "mqtt-crash-q1q-" });
  const store = ["--storage.backend", "kv", "--storage.path", `${dir}/mqtt.db`, "--server.max_inflight", "3"];
  let broker = await spawnBroker(store);
  try {
    const sub = await RawClient.connect(broker.port, { clientId: "q1q-sub", clean: false });
    await sub.subscribe("q1q/#", 1);
    const pub = await RawClient.connect(broker.port, { clientId: "q1q-pub" });
    for (const n of [0, 1, 2, 3, 4]) {
      if (n === 1) {
        // m0 delivered and acknowledged first, so the session's packet ids no longer start at 1.
        sub.send({ type: 4, packetId: ((await sub.expect(3)) as PublishPacket).packetId! });
        await sub.close();
      }
      pub.send({
        type: 3,
        topic: "q1q/data",
        payload: te(`m${n}`),
        qos: 1,
        retain: false,
        dup: false,
        packetId: n + 10,
      });
      await pub.expect(4);
    }
    const online = await RawClient.connect(broker.port, { clientId: "q1q-sub", clean: false });
    await waitFor(() => online.received.filter((p) => p.type === 3).length === 3, "the window of three");
    await broker.kill();
    await Promise.all([pub.close(), online.close()]);
    const firstIds = (online.received.filter((p) => p.type === 3) as PublishPacket[]).map((p) => p.packetId);

    broker = await spawnBroker(store);
    const again = await RawClient.connect(broker.port, { clientId: "q1q-sub", clean: false });
    await waitFor(() => again.received.filter((p) => p.type === 3).length >= 3, "the window resent");
    const first = again.received.splice(0).filter((p) => p.type === 3) as PublishPacket[];
    assert.deepEqual(first.map((p) => p.packetId), firstIds, "resent under their original packet ids");
    for (const p of first) again.send({ type: 4, packetId: p.packetId! });
    await waitFor(() => again.received.some((p) => p.type === 3), "the fourth");
    const all = [...first, ...(again.received.filter((p) => p.type === 3) as PublishPacket[])]
      .map((p) => `${td(p.payload)}${p.dup ? " dup" : ""}`);
    assert.deepEqual(all, ["m1 dup", "m2 dup", "m3 dup", "m4"]);
    // m4 is in flight now, sent from the queue; the client leaves before the crash this time. Its in-flight
    // record, written at the disconnect, brings it back with DUP and its packet id.
    const m4 = (again.received.filter((p) => p.type === 3) as PublishPacket[])[0];
    await again.close();
    await delay(200);
    await broker.kill();
    broker = await spawnBroker(store);
    const last = await RawClient.connect(broker.port, { clientId: "q1q-sub", clean: false });
    const resent = (await last.expect(3)) as PublishPacket;
    assert.deepEqual([td(resent.payload), resent.packetId, resent.dup], ["m4", m4.packetId, true]);
    await last.close();
  } finally {
    await broker.kill();
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("SIGKILL after a message from the queue went out under an id not of its sequence: it keeps that id", async () => {
  // With a window of 2 and m1 never acknowledged, the in-flight table keeps 8 slots, so the id that m9's
  // sequence number names shares m1's slot and m9 goes out under another one: that id must be stored, since
  // m9's "queued" record holds none. After the crash m1 and m9 come back under the ids they first had, then
  // m10-m12, which never went out.
  const dir = await Deno.makeTempDir({ prefix: "mqtt-crash-q1id-" });
  const store = ["--storage.backend", "kv", "--storage.path", `${dir}/mqtt.db`, "--server.max_inflight", "2"];
  let broker = await spawnBroker(store);
  try {
    const sub = await RawClient.connect(broker.port, { clientId: "q1id-sub", clean: false });
    await sub.subscribe("q1id/#", 1);
    await sub.close();
    const pub = await RawClient.connect(broker.port, { clientId: "q1id-pub" });
    for (let n = 1; n <= 12; n++) {
      pub.send({
        type: 3,
        topic: "q1id/data",
        payload: te(`m${n}`),
        qos: 1,
        retain: false,
        dup: false,
        packetId: n,
      });
      await pub.expect(4);
    }
    const online = await RawClient.connect(broker.port, { clientId: "q1id-sub", clean: false });
    const firstIds = new Map<string, number>();
    while (firstIds.size < 9) { // then m1 and m9 fill the window
      const p = (await online.expect(3)) as PublishPacket;
      const name = td(p.payload);
      firstIds.set(name, p.packetId!);
      if (name !== "m1" && name !== "m9") online.send({ type: 4, packetId: p.packetId! });
    }
    await delay(300); // the acknowledged ones are deleted from the store
    await online.close();
    await delay(100);
    await broker.kill();
    await pub.close();

    broker = await spawnBroker(store);
    const again = await RawClient.connect(broker.port, { clientId: "q1id-sub", clean: false });
    await waitFor(() => again.received.filter((p) => p.type === 3).length >= 2, "m1 and m9 resent");
    await delay(200); // nothing else comes while they fill the window
    const resent = (again.received.filter((p) => p.type === 3) as PublishPacket[])
      .map((p) => `${td(p.payload)} ${p.packetId}${p.dup ? " dup" : ""}`);
    assert.deepEqual(resent, [`m1 ${firstIds.get("m1")} dup`, `m9 ${firstIds.get("m9")} dup`]);
    for (const p of again.received.splice(0) as PublishPacket[]) {
      again.send({ type: 4, packetId: p.packetId! });
    }
    const rest: string[] = [];
    while (rest.length < 3) {
      const p = (await again.expect(3)) as PublishPacket;
      rest.push(`${td(p.payload)}${p.dup ? " dup" : ""}`);
      again.send({ type: 4, packetId: p.packetId! });
    }
    assert.deepEqual(rest, ["m10", "m11", "m12"]);
    await again.close();
  } finally {
    await broker.kill();
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("wills of persistent sessions survive a restart: a delayed one pending at a stop, one connected at a kill", async () => {
  const dir = await Deno.makeTempDir({ prefix: "mqtt-crash-will-" });
  const store = ["--storage.backend", "kv", "--storage.path", `${dir}/mqtt.db`];
  let broker = await spawnBroker(store);
  const connect5 = async (clientId: string, extra: Record<string, unknown> = {}) => {
    const c = await RawClient.open(broker.port, 5);
    c.send({
      type: 1,
      protocolName: "MQTT",
      protocolVersion: 5,
      clean: false,
      keepAlive: 60,
      clientId,
      properties: { sessionExpiryInterval: 600 },
      ...extra,
    } as Packet);
    assert.equal(((await c.expect(2)) as ConnackPacket).reasonCode, 0);
    return c;
  };
  const will = (topic: string, willDelayInterval: number) => ({
    will: { topic, payload: te(`gone ${topic}`), qos: 1, retain: false, properties: { willDelayInterval } },
  });
  try {
    const watcher = await connect5("will-watcher");
    watcher.send({
      type: 8,
      packetId: 1,
      subscriptions: [{
        topicFilter: "wl/#",
        qos: 1,
        noLocal: false,
        retainAsPublished: false,
        retainHandling: 0,
      }],
    });
    await watcher.expect(9);
    await watcher.close();
    // Drops its connection; its will is due in 2 s, and the broker stops (SIGTERM) before then.
    const delayed = await connect5("will-delayed", will("wl/delayed", 2));
    await delayed.close();
    await delay(100);
    assert.equal(await broker.terminate(), 0);
    broker = await spawnBroker(store);
    const back = await connect5("will-watcher");
    const first = (await back.expect(3, 5000)) as PublishPacket;
    assert.equal(td(first.payload), "gone wl/delayed");
    back.send({ type: 4, packetId: first.packetId! });

    // Connected when the broker is killed: the connection ended without DISCONNECT, so after the restart its
    // will goes out (delay 0: at the first sweep).
    const connected = await connect5("will-connected", will("wl/connected", 0));
    await delay(100);
    await broker.kill();
    await Promise.all([back.close(), connected.close()]);
    broker = await spawnBroker(store);
    // The client is back at once: its will was due at the restart, the reconnect must not cancel it.
    const returned = await connect5("will-connected");
    await returned.close();
    const again = await connect5("will-watcher");
    const second = (await again.expect(3, 5000)) as PublishPacket;
    assert.equal(td(second.payload), "gone wl/connected");
    again.send({ type: 4, packetId: second.packetId! });
    await delay(300); // the acknowledgement and the published will are committed

    // Published wills do not come back after one more restart.
    await broker.kill();
    await again.close();
    broker = await spawnBroker(store);
    const last = await connect5("will-watcher");
    await last.expectNone(3, 2000);
    await last.close();
  } finally {
    await broker.kill();
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("messages in flight whose Message Expiry passed are resent after a restart too, as without one", async () => {
  // Sent from the queue (their records stay "queued") and unacknowledged when the client left; their expiry
  // passes, then the broker restarts. Onward delivery had started: they are resent (MQTT-4.4.0-1) with DUP,
  // their packet ids and 0 seconds left, like in-flight messages are without a restart. A queued one that
  // was never sent is deleted (MQTT-3.3.2-5).
  const dir = await Deno.makeTempDir({ prefix: "mqtt-crash-expired-inflight-" });
  const store = ["--storage.backend", "kv", "--storage.path", `${dir}/mqtt.db`];
  let broker = await spawnBroker(store);
  try {
    const props = { sessionExpiryInterval: 300 };
    const connect = () =>
      RawClient.connect(broker.port, { version: 5, clientId: "xif-sub", clean: false, properties: props });
    const sub = await connect();
    await sub.subscribe("xif/#", 1);
    await sub.close();
    const pub = await RawClient.connect(broker.port, { version: 5, clientId: "xif-pub" });
    const send = (payload: string, id: number, expiry?: number) => {
      pub.send({
        type: 3,
        topic: "xif/t",
        payload: te(payload),
        qos: 1,
        retain: false,
        dup: false,
        packetId: id,
        properties: expiry === undefined ? undefined : { messageExpiryInterval: expiry },
      });
      return pub.expect(4);
    };
    await send("m1", 1, 1);
    await send("m2", 2, 1);
    await send("m3", 3);
    const online = await RawClient.connect(broker.port, {
      version: 5,
      clientId: "xif-sub",
      clean: false,
      properties: { ...props, receiveMaximum: 3 },
    });
    await waitFor(() => online.received.filter((p) => p.type === 3).length === 3, "the three from the queue");
    const sent = online.received.splice(0) as PublishPacket[];
    await online.close();
    await send("m4 never sent", 4, 1);
    await delay(1300);
    await broker.kill();
    await pub.close();

    broker = await spawnBroker(store);
    const again = await connect();
    await waitFor(() => again.received.filter((p) => p.type === 3).length >= 3, "the resends");
    await delay(200); // and nothing more
    const resent = (again.received.filter((p) => p.type === 3) as PublishPacket[])
      .map((p) => [td(p.payload), p.packetId, p.dup, p.properties?.messageExpiryInterval]);
    assert.deepEqual(resent, [
      ["m1", sent[0].packetId, true, 0],
      ["m2", sent[1].packetId, true, 0],
      ["m3", sent[2].packetId, true, undefined],
    ]);
    again.send({ type: 14, reasonCode: 0, properties: { sessionExpiryInterval: 0 } });
    await again.expectClosed();
  } finally {
    await broker.kill();
    await Deno.remove(dir, { recursive: true });
  }
});
