/**
 * Test helpers: an in-process broker on a free port, a raw MQTT client over a real socket (our codec),
 * MQTT.js clients, and waiting utilities. Every helper cleans up what it starts.
 *
 * @module
 */

import mqtt from "mqtt";
import { Broker } from "../src/broker/broker.ts";
import { defaultConfig } from "../src/config/schema.ts";
import type { Config } from "../src/config/types.ts";
import { createLogger } from "../src/log.ts";
import { PacketDecoder } from "../src/mqtt/decode.ts";
import { encode } from "../src/mqtt/encode.ts";
import type { Packet, ProtocolVersion, QoS } from "../src/mqtt/types.ts";
import { KvStore } from "../src/store/kv.ts";
import { createStore } from "../src/store/mod.ts";
import type { Store } from "../src/store/store.ts";

/** Nested partial of the config, for overrides. */
export type ConfigOverrides = {
  [S in keyof Config]?: Config[S] extends unknown[] ? Config[S] : Partial<Config[S]>;
};

/** A broker running inside the test process. */
export interface TestBroker {
  broker: Broker;
  port: number;
  config: Config;
  /** Log lines written so far. */
  logs: string[];
  url: string;
  stop(): Promise<void>;
}

/** Builds a config for tests: free ports, memory store, quiet logs, no $SYS timer unless asked. */
export function testConfig(overrides: ConfigOverrides = {}): Config {
  const config = defaultConfig();
  config.server.port = 0;
  config.metrics.enabled = false;
  config.metrics.port = 0;
  config.storage.backend = "memory";
  config.sys.interval = 0;
  config.log.level = "debug";
  for (const [section, values] of Object.entries(overrides)) {
    if (Array.isArray(values)) (config as unknown as Record<string, unknown>)[section] = values;
    else Object.assign((config as unknown as Record<string, Record<string, unknown>>)[section], values);
  }
  return config;
}

/** Starts a broker in this process on a free port. */
export async function startBroker(overrides: ConfigOverrides = {}, store?: Store): Promise<TestBroker> {
  const config = testConfig(overrides);
  const logs: string[] = [];
  const logger = createLogger({ level: config.log.level, format: "text", write: (line) => logs.push(line) });
  const broker = new Broker({ config, store: store ?? createStore(config.storage), logger });
  await broker.start();
  const port = broker.addresses[0].port;
  let stopped = false;
  return {
    broker,
    port,
    config,
    logs,
    url: `mqtt://127.0.0.1:${port}`,
    stop: async () => {
      if (stopped) return;
      stopped = true;
      await broker.stop();
    },
  };
}

/** Sleeps. */
export function delay(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

/** Polls `cond` until it is true or `timeoutMs` passes (then throws with `what`). */
export async function waitFor(cond: () => boolean, what: string, timeoutMs = 5000): Promise<void> {
  const end = Date.now() + timeoutMs;
  while (!cond()) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await delay(10);
  }
}

/** A raw MQTT client over a real TCP socket, using our codec: for protocol-level tests. */
export class RawClient {
  readonly decoder: PacketDecoder;
  readonly received: Packet[] = [];
  closed = false;
  #conn: Deno.TcpConn;
  #reader: Promise<void>;
  #waiters: (() => void)[] = [];
  error?: unknown;

  private constructor(conn: Deno.TcpConn, readonly version: ProtocolVersion) {
    this.#conn = conn;
    this.decoder = new PacketDecoder({ protocolVersion: version });
    this.#reader = this.#read();
  }

  /** Opens a socket to the broker (no CONNECT sent). */
  static async open(port: number, version: ProtocolVersion = 4): Promise<RawClient> {
    const conn = await Deno.connect({ hostname: "127.0.0.1", port });
    conn.setNoDelay(true);
    return new RawClient(conn, version);
  }

  /** Opens a socket and completes CONNECT / CONNACK. */
  static async connect(
    port: number,
    opts:
      & { clientId?: string; version?: ProtocolVersion; clean?: boolean; keepAlive?: number }
      & Record<
        string,
        unknown
      > = {},
  ): Promise<RawClient> {
    const version = opts.version ?? 4;
    const c = await RawClient.open(port, version);
    c.send({
      type: 1,
      protocolName: version === 3 ? "MQIsdp" : "MQTT",
      protocolVersion: version,
      clean: opts.clean ?? true,
      keepAlive: opts.keepAlive ?? 60,
      clientId: opts.clientId ?? `raw-${crypto.randomUUID().slice(0, 8)}`,
      ...(opts as object),
    } as Packet);
    const connack = await c.expect(2);
    if ((connack as { reasonCode: number }).reasonCode !== 0) {
      throw new Error(`CONNACK refused: ${(connack as { reasonCode: number }).reasonCode}`);
    }
    return c;
  }

  async #read(): Promise<void> {
    const buf = new Uint8Array(65536);
    try {
      while (true) {
        const n = await this.#conn.read(buf);
        if (n === null) break;
        this.decoder.push(buf.subarray(0, n));
        let p: Packet | null;
        while ((p = this.decoder.next()) !== null) this.received.push(p);
        this.#wake();
      }
    } catch (err) {
      this.error = err;
    }
    this.closed = true;
    this.#wake();
  }

  #wake(): void {
    for (const w of this.#waiters.splice(0)) w();
  }

  /** Sends a packet. */
  send(packet: Packet): void {
    this.sendBytes(encode(packet, this.version));
  }

  /** Subscribes to one filter with default options and waits for the SUBACK. */
  async subscribe(topicFilter: string, qos: QoS, packetId = 1): Promise<Packet> {
    this.send({
      type: 8,
      packetId,
      subscriptions: [{ topicFilter, qos, noLocal: false, retainAsPublished: false, retainHandling: 0 }],
    });
    return await this.expect(9);
  }

  /** Sends raw bytes (for malformed input). */
  async sendBytes(bytes: Uint8Array): Promise<void> {
    let off = 0;
    try {
      while (off < bytes.length) off += await this.#conn.write(bytes.subarray(off));
    } catch {
      // the broker may close on us: that is what many tests check
    }
  }

  /** Waits until a packet of `type` arrives and removes it from `received`. */
  async expect(type: number, timeoutMs = 3000): Promise<Packet> {
    const end = Date.now() + timeoutMs;
    while (true) {
      const i = this.received.findIndex((p) => p.type === type);
      if (i >= 0) return this.received.splice(i, 1)[0];
      if (this.closed) throw new Error(`connection closed while waiting for packet type ${type}`);
      const left = end - Date.now();
      if (left <= 0) {
        throw new Error(
          `timed out waiting for packet type ${type}; got ${
            JSON.stringify(this.received.map((p) => p.type))
          }`,
        );
      }
      await new Promise<void>((resolve) => {
        const t = setTimeout(resolve, left);
        this.#waiters.push(() => {
          clearTimeout(t);
          resolve();
        });
      });
    }
  }

  /** Waits until the broker closes the connection; throws if it stays open. */
  async expectClosed(timeoutMs = 3000): Promise<void> {
    const end = Date.now() + timeoutMs;
    while (!this.closed) {
      if (Date.now() > end) throw new Error("connection still open");
      await delay(10);
    }
  }

  /** Asserts nothing of `type` arrives within `ms`. */
  async expectNone(type: number, ms = 300): Promise<void> {
    await delay(ms);
    const p = this.received.find((x) => x.type === type);
    if (p) throw new Error(`unexpected packet ${JSON.stringify(p)}`);
  }

  /** Closes the socket without DISCONNECT (an abnormal end: the will is published). */
  async close(): Promise<void> {
    try {
      this.#conn.close();
    } catch {
      // already closed
    }
    await this.#reader;
  }
}

/** Connects an MQTT.js client and waits for CONNACK. */
export function mqttConnect(url: string, opts: mqtt.IClientOptions = {}): Promise<mqtt.MqttClient> {
  return new Promise((resolve, reject) => {
    const client = mqtt.connect(url, { reconnectPeriod: 0, connectTimeout: 5000, ...opts });
    client.once("connect", () => resolve(client));
    client.once("error", (err) => {
      client.end(true);
      reject(err);
    });
  });
}

/** Ends an MQTT.js client and waits for it. */
export function mqttEnd(client: mqtt.MqttClient, force = false): Promise<void> {
  return new Promise((resolve) => client.end(force, {}, () => resolve()));
}

/** Collects messages of an MQTT.js client. */
export function collect(
  client: mqtt.MqttClient,
): { topic: string; payload: string; packet: mqtt.IPublishPacket }[] {
  const out: { topic: string; payload: string; packet: mqtt.IPublishPacket }[] = [];
  client.on("message", (topic, payload, packet) => out.push({ topic, payload: payload.toString(), packet }));
  return out;
}

/** Text to bytes. */
export const te = (s: string): Uint8Array => new TextEncoder().encode(s);
/** Bytes to text. */
export const td = (b: Uint8Array): string => new TextDecoder().decode(b);

/** A broker running as a child process (`deno run main.ts`), for crash and CLI tests. */
export interface BrokerProcess {
  proc: Deno.ChildProcess;
  port: number;
  /** Everything written to stderr so far. */
  stderr: () => string;
  /** SIGKILL, then wait for exit. */
  kill: () => Promise<void>;
  /** SIGTERM, then wait for the exit code. */
  terminate: () => Promise<number>;
  exited: Promise<Deno.CommandStatus>;
}

/**
 * Starts `main.ts` with `args` on a free port and waits for its "listening" log line. With `openFiles`, the
 * broker runs under that open-files limit (`ulimit -n`, through bash).
 */
export async function spawnBroker(
  args: string[],
  timeoutMs = 20000,
  options: { openFiles?: number } = {},
): Promise<BrokerProcess> {
  const deno = Deno.execPath();
  const limited = options.openFiles !== undefined;
  const proc = new Deno.Command(limited ? "bash" : deno, {
    args: [
      ...(limited ? ["-c", `ulimit -n ${options.openFiles} && exec "$0" "$@"`, deno] : []),
      "run",
      "-A",
      "main.ts",
      "--port",
      "0",
      "--metrics.enabled",
      "false",
      "--log-level",
      "info",
      ...args,
    ],
    stdin: "null",
    stdout: "null",
    stderr: "piped",
  }).spawn();
  let text = "";
  const decoder = new TextDecoder();
  const reader = proc.stderr.getReader();
  (async () => {
    try {
      while (true) {
        const { value, done } = await reader.read();
        if (done) break;
        text += decoder.decode(value, { stream: true });
      }
    } catch {
      // process gone
    }
  })();
  const exited = proc.status;
  let exitedEarly = false;
  exited.then(() => exitedEarly = true);
  const end = Date.now() + timeoutMs;
  let port = 0;
  while (port === 0) {
    const m = text.match(/listening type=mqtt address=[^ ]*:(\d+)\s/);
    if (m) port = Number(m[1]);
    else if (exitedEarly) throw new Error(`broker exited before listening:\n${text}`);
    else if (Date.now() > end) {
      proc.kill("SIGKILL");
      await exited;
      throw new Error(`broker did not start:\n${text}`);
    } else await delay(20);
  }
  return {
    proc,
    port,
    stderr: () => text,
    exited,
    kill: async () => {
      try {
        proc.kill("SIGKILL");
      } catch {
        // already gone
      }
      await exited;
    },
    terminate: async () => {
      try {
        proc.kill("SIGTERM");
      } catch {
        // already gone
      }
      return (await exited).code;
    },
  };
}

/** True when an external command (mosquitto_pub, openssl...) is installed. */
export function hasCommand(name: string): boolean {
  for (const dir of (Deno.env.get("PATH") ?? "").split(":").concat(["/usr/sbin", "/usr/bin"])) {
    try {
      if (Deno.statSync(`${dir}/${name}`).isFile) return true;
    } catch {
      // not here
    }
  }
  return false;
}

/**
 * A Deno KV store whose commits can be held: flush() waits for {@link HeldKv.release} while held, so a
 * CONNECT that must wait for its session's commit stays waiting as long as a test needs.
 */
export function heldKv(path: string): { store: Store; hold: () => void; release: () => void } {
  const inner = new KvStore({ path });
  let held: Promise<void> | undefined;
  let release = () => {};
  const store = new Proxy(inner, {
    get(target, prop) {
      if (prop === "flush") {
        return () => {
          const p = target.flush();
          return held === undefined ? p : held.then(() => p);
        };
      }
      if (prop === "idle") return held === undefined && target.idle;
      const v = Reflect.get(target, prop, target);
      return typeof v === "function" ? v.bind(target) : v;
    },
  }) as unknown as Store;
  return {
    store,
    hold: () => held = new Promise((resolve) => release = resolve),
    release: () => {
      held = undefined;
      release();
    },
  };
}
