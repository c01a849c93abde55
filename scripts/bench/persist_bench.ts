/**
 * Persistence benchmark (not a test): what durability costs, and how long a restart takes.
 *
 * ```sh
 * deno run -A scripts/bench/persist_bench.ts [--seconds 5] [--retained 100000] [--sessions 10000]
 * ```
 *
 * A. QoS 1 publishes/s into a persistent session (Clean Session 0, connected and acknowledging), with the
 *    broker on the `kv` store (every PUBACK waits for the commit) and on `memory`. 8 publishers, 100
 *    unacknowledged each, 16-byte payloads; the broker is pinned to core 0, this process to core 1. After the
 *    publishers stop, the subscriber must have received every acknowledged message.
 * B. Restart time: a `kv` broker is filled with N retained messages and M persistent sessions (one subscription
 *    each), stopped with SIGTERM and started again; the time comes from its `store restored ... ms=` log line.
 *
 * Loopback only; every process started is killed by PID; temp dirs are removed.
 *
 * @module
 */

import { PacketDecoder } from "../../src/mqtt/decode.ts";
import { encode } from "../../src/mqtt/encode.ts";
import type { Packet, PublishPacket } from "../../src/mqtt/types.ts";

const args = new Map<string, string>();
for (let i = 0; i < Deno.args.length; i += 2) args.set(Deno.args[i].replace(/^--/, ""), Deno.args[i + 1]);
const SECONDS = Number(args.get("seconds") ?? 5);
const RETAINED = Number(args.get("retained") ?? 100_000);
const SESSIONS = Number(args.get("sessions") ?? 10_000);

/** A minimal MQTT 3.1.1 client over a raw socket, enough for this benchmark. */
class Client {
  readonly decoder = new PacketDecoder({ protocolVersion: 4 });
  onPacket: (p: Packet) => void = () => {};
  #conn: Deno.TcpConn;
  #out: Uint8Array[] = [];
  #writing = false;
  closed = false;

  private constructor(conn: Deno.TcpConn) {
    this.#conn = conn;
    this.#read();
  }

  static async connect(port: number, clientId: string, clean: boolean): Promise<Client> {
    const conn = await Deno.connect({ hostname: "127.0.0.1", port });
    conn.setNoDelay(true);
    const c = new Client(conn);
    const connack = new Promise<void>((resolve) => c.onPacket = (p) => p.type === 2 && resolve());
    c.send({ type: 1, protocolName: "MQTT", protocolVersion: 4, clean, keepAlive: 300, clientId });
    c.flush();
    await connack;
    return c;
  }

  async #read(): Promise<void> {
    const buf = new Uint8Array(256 * 1024);
    try {
      while (true) {
        const n = await this.#conn.read(buf);
        if (n === null) break;
        this.decoder.push(buf.subarray(0, n));
        let p: Packet | null;
        while ((p = this.decoder.next()) !== null) this.onPacket(p);
        this.flush();
      }
    } catch {
      // closed
    }
    this.closed = true;
  }

  send(p: Packet): void {
    this.#out.push(encode(p, 4));
  }

  async flush(): Promise<void> {
    if (this.#writing || this.#out.length === 0) return;
    this.#writing = true;
    try {
      while (this.#out.length > 0) {
        const parts = this.#out;
        this.#out = [];
        let len = 0;
        for (const b of parts) len += b.length;
        const all = new Uint8Array(len);
        let off = 0;
        for (const b of parts) {
          all.set(b, off);
          off += b.length;
        }
        for (let w = 0; w < len;) w += await this.#conn.write(all.subarray(w));
      }
    } catch {
      this.closed = true;
    } finally {
      this.#writing = false;
    }
  }

  close(): void {
    try {
      this.#conn.close();
    } catch {
      // already closed
    }
  }
}

interface Broker {
  proc: Deno.ChildProcess;
  port: number;
  log: () => string;
  metricsUrl: string;
}

/** The store counters of a running broker, from its /metrics. */
async function storeCounters(b: Broker): Promise<string> {
  const text = await (await fetch(b.metricsUrl)).text();
  return text.split("\n").filter((l) => /^mqtt_store_(commits_total|mutations_total)/.test(l))
    .join(", ");
}

async function startBroker(backend: string, path: string): Promise<Broker> {
  const proc = new Deno.Command("taskset", {
    args: [
      "-c",
      "0",
      Deno.execPath(),
      "run",
      "-A",
      ...(Deno.env.get("BROKER_V8_FLAGS") ? [`--v8-flags=${Deno.env.get("BROKER_V8_FLAGS")}`] : []),
      "main.ts",
      "--port",
      "0",
      "--metrics.port",
      "0",
      "--storage.backend",
      backend,
      "--storage.path",
      path,
      "--server.max_queued_messages",
      "1000000",
      "--server.max_queued_bytes",
      "1000000000",
      "--server.max_clients",
      String(SESSIONS + 100),
      "--log-level",
      "info",
    ],
    stdout: "null",
    stderr: "piped",
  }).spawn();
  let text = "";
  (async () => {
    const dec = new TextDecoder();
    for await (const chunk of proc.stderr) text += dec.decode(chunk, { stream: true });
  })();
  const end = Date.now() + 120_000;
  while (Date.now() < end) {
    const m = text.match(/listening type=mqtt address=[^ ]*:(\d+)\s/);
    const metrics = text.match(/metrics url=(\S+)/);
    if (m && metrics) return { proc, port: Number(m[1]), log: () => text, metricsUrl: metrics[1] };
    await new Promise((r) => setTimeout(r, 20));
  }
  proc.kill("SIGKILL");
  throw new Error(`broker did not start:\n${text}`);
}

async function stopBroker(b: Broker): Promise<void> {
  try {
    b.proc.kill("SIGTERM");
  } catch {
    // gone
  }
  await b.proc.status;
}

async function qos1Persistent(
  backend: string,
): Promise<{ rate: number; acked: number; received: number; store: string }> {
  const dir = await Deno.makeTempDir({ prefix: "persist-bench-" });
  const broker = await startBroker(backend, `${dir}/mqtt.db`);
  try {
    const sub = await Client.connect(broker.port, "bench-persistent-sub", false);
    let received = 0;
    const subscribed = new Promise<void>((resolve) => {
      sub.onPacket = (p) => {
        if (p.type === 9) resolve();
        if (p.type === 3) {
          received++;
          sub.send({ type: 4, packetId: (p as PublishPacket).packetId! });
        }
      };
    });
    sub.send({
      type: 8,
      packetId: 1,
      subscriptions: [{
        topicFilter: "p/#",
        qos: 1,
        noLocal: false,
        retainAsPublished: false,
        retainHandling: 0,
      }],
    });
    sub.flush();
    await subscribed;
    const payload = new Uint8Array(16);
    let acked = 0;
    let running = true;
    const pubs: Client[] = [];
    for (let i = 0; i < 8; i++) {
      const pub = await Client.connect(broker.port, `bench-pub-${i}`, true);
      let nextId = 1;
      const sendOne = () => {
        pub.send({ type: 3, topic: `p/${i}`, payload, qos: 1, retain: false, dup: false, packetId: nextId });
        nextId = nextId === 65535 ? 1 : nextId + 1;
      };
      pub.onPacket = (p) => {
        if (p.type === 4) {
          acked++;
          if (running) sendOne();
        }
      };
      for (let k = 0; k < 100; k++) sendOne();
      pub.flush();
      pubs.push(pub);
    }
    const start = performance.now();
    await new Promise((r) => setTimeout(r, SECONDS * 1000));
    running = false;
    const rate = acked / ((performance.now() - start) / 1000);
    const drainEnd = Date.now() + 30_000;
    let last = -1;
    while (Date.now() < drainEnd && received !== last) {
      last = received;
      await new Promise((r) => setTimeout(r, 500));
    }
    for (const c of [...pubs, sub]) c.close();
    return { rate, acked, received, store: await storeCounters(broker) };
  } finally {
    await stopBroker(broker);
    await Deno.remove(dir, { recursive: true });
  }
}

async function restartTime(): Promise<{ fillSeconds: number; restoreMs: number; line: string }> {
  const dir = await Deno.makeTempDir({ prefix: "persist-bench-" });
  const path = `${dir}/mqtt.db`;
  let broker = await startBroker("kv", path);
  try {
    const t0 = performance.now();
    const pub = await Client.connect(broker.port, "bench-retainer", true);
    let acked = 0;
    pub.onPacket = (p) => {
      if (p.type === 4) acked++;
    };
    const payload = new TextEncoder().encode("retained value 0123456789");
    for (let i = 0; i < RETAINED; i++) {
      pub.send({
        type: 3,
        topic: `r/${i % 100}/${i}`,
        payload,
        qos: 1,
        retain: true,
        dup: false,
        packetId: (i % 65535) + 1,
      });
      if (i % 1000 === 999) {
        await pub.flush();
        while (acked < i - 20_000) await new Promise((r) => setTimeout(r, 5));
      }
    }
    await pub.flush();
    while (acked < RETAINED) await new Promise((r) => setTimeout(r, 10));
    pub.close();
    // Persistent sessions, 100 connecting at a time.
    for (let i = 0; i < SESSIONS; i += 100) {
      await Promise.all(
        Array.from({ length: Math.min(100, SESSIONS - i) }, async (_, k) => {
          const c = await Client.connect(broker.port, `bench-session-${i + k}`, false);
          const done = new Promise<void>((resolve) => c.onPacket = (p) => p.type === 9 && resolve());
          c.send({
            type: 8,
            packetId: 1,
            subscriptions: [
              {
                topicFilter: `dev/${i + k}/#`,
                qos: 1,
                noLocal: false,
                retainAsPublished: false,
                retainHandling: 2,
              },
            ],
          });
          c.flush();
          await done;
          c.close();
        }),
      );
    }
    const fillSeconds = (performance.now() - t0) / 1000;
    await stopBroker(broker);
    broker = await startBroker("kv", path);
    const line = broker.log().split("\n").find((l) => l.includes("store restored")) ?? "";
    const restoreMs = Number(line.match(/ms=(\d+)/)?.[1] ?? NaN);
    return { fillSeconds, restoreMs, line };
  } finally {
    await stopBroker(broker);
    await Deno.remove(dir, { recursive: true });
  }
}

if (import.meta.main) {
  const results: string[] = [];
  for (const backend of (args.get("backends") ?? "memory,kv").split(",")) {
    const r = await qos1Persistent(backend);
    const lost = r.acked - r.received;
    results.push(
      `QoS 1 into a persistent session, ${backend}: ${Math.round(r.rate)} PUBACKs/s, ` +
        `${r.acked} acknowledged, ${r.received} delivered, ${Math.max(0, lost)} missing; ${r.store}`,
    );
    console.log(results[results.length - 1]);
  }
  const t = await restartTime();
  results.push(
    `restart with ${RETAINED} retained + ${SESSIONS} sessions: restore ${t.restoreMs} ms (filling took ${
      t.fillSeconds.toFixed(1)
    } s)\n  ${t.line.trim()}`,
  );
  console.log(results[results.length - 1]);
}
