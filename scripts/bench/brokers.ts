/**
 * The brokers compared by compare.ts, and how to start and stop each as a child process.
 *
 * Every broker gets a fresh process, a fresh port and a fresh temporary directory per scenario, so
 * that no scenario sees another's backlog, retained messages or memory. Settings are chosen to be
 * comparable: the same queue bound and in-flight window where the broker has one (see
 * {@link MOSQUITTO_CONF} and {@link OUR_FLAGS}).
 *
 * @module
 */

import { fileURLToPath } from "node:url";
import denoJson from "../../deno.json" with { type: "json" };

/** Names of the brokers, as given to `--brokers`. */
export const BROKER_NAMES = ["mosquitto", "aedes", "ours-memory", "ours-kv", "deno-floor"] as const;

/** One broker name. */
export type BrokerName = typeof BROKER_NAMES[number];

/** Human-readable names for reports. */
export const BROKER_LABELS: Record<BrokerName, string> = {
  mosquitto: "Mosquitto",
  aedes: "Aedes",
  "ours-memory": "ours (memory)",
  "ours-kv": "ours (kv)",
  "deno-floor": "Deno floor",
};

/** Messages queued per client beyond the in-flight window, for every broker that has the setting. */
export const QUEUE_LIMIT = 200_000;
/** Outbound QoS 1/2 messages in flight per client, for every broker that has the setting. */
export const INFLIGHT_LIMIT = 100;
/** Connections accepted at once; above the 10,000 of the idle and conn scenarios. */
export const MAX_CLIENTS = 20_000;

/**
 * mosquitto.conf for the baseline (`PORT` and `NODELAY` are replaced). Why each line:
 * - listener on 127.0.0.1 only, anonymous allowed: loopback benchmark, no auth cost on any broker;
 * - max_queued_messages / max_inflight_messages: same bounds as ours (Mosquitto's defaults are
 *   1000 and 20, which would make it drop QoS 0 and stall QoS 1 earlier than the others);
 * - set_tcp_nodelay: whichever of Mosquitto's two settings is faster for the scenario (see
 *   {@link mosquittoConf}). Mosquitto writes each packet with its own send(), so with Nagle off a saturating
 *   scenario sends one TCP segment per 18-byte packet and runs at about a quarter of its speed; with Nagle on
 *   (its default) round trips wait for delayed ACKs;
 * - persistence false, no $SYS: nothing on disk, no background publishing;
 * - errors and warnings only on stderr.
 */
export const MOSQUITTO_CONF = `listener PORT 127.0.0.1
allow_anonymous true
max_connections -1
max_queued_messages ${QUEUE_LIMIT}
max_inflight_messages ${INFLIGHT_LIMIT}
set_tcp_nodelay NODELAY
persistence false
sys_interval 0
log_dest stderr
log_type error
log_type warning
`;

/** The mosquitto.conf text for a listener on `port`, with Nagle's algorithm off (`noDelay`) or on. */
export function mosquittoConf(port: number | string, noDelay: boolean): string {
  return MOSQUITTO_CONF.replace("PORT", String(port)).replace("NODELAY", String(noDelay));
}

/**
 * Flags of our broker besides port and store (`main.ts --help` lists them). The queue, in-flight and
 * client bounds match {@link MOSQUITTO_CONF}; QoS 2 is allowed because the default maximum is 1.
 */
export const OUR_FLAGS = [
  "--metrics.enabled",
  "false",
  "--log-level",
  "warn",
  "--qos.max_qos",
  "2",
  "--server.max_clients",
  String(MAX_CLIENTS),
  "--server.max_queued_messages",
  String(QUEUE_LIMIT),
  "--server.max_inflight",
  String(INFLIGHT_LIMIT),
];

/** A broker child process. */
export interface RunningBroker {
  name: BrokerName;
  pid: number;
  port: number;
  /** The argv it was started with (for the report). */
  argv: string[];
  /** The last few KiB of its stdout and stderr. */
  output(): string;
  /** True once the process has exited. */
  exited(): boolean;
  /** SIGTERM, then SIGKILL after `graceMs`; removes its temporary directory. Idempotent. */
  stop(graceMs?: number): Promise<void>;
}

/** Options of {@link startBroker}. */
export interface StartOptions {
  /** Repository root (where main.ts and deno.json are). */
  root: string;
  /** CPU to pin the broker to with taskset, or null for no pinning. */
  cpu: number | null;
  /** Milliseconds to wait for the port to accept connections. */
  readyTimeoutMs?: number;
  /** Mosquitto only: `set_tcp_nodelay` (default true). Our broker and Aedes always disable Nagle. */
  tcpNoDelay?: boolean;
}

/** The repository root, derived from this file's location (scripts/bench/). */
export function repoRoot(): string {
  return fileURLToPath(new URL("../../", import.meta.url)).replace(/\/$/, "");
}

/** A port that was free a moment ago on 127.0.0.1 (the broker binds it right after). */
export function freePort(): number {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const port = (listener.addr as Deno.NetAddr).port;
  listener.close();
  return port;
}

/** Keeps the tail of a child's output stream, so that a failed start can say why. */
function drainInto(stream: ReadableStream<Uint8Array>, sink: { text: string }): Promise<void> {
  return stream.pipeThrough(new TextDecoderStream()).pipeTo(
    new WritableStream({
      write(chunk) {
        sink.text = (sink.text + chunk).slice(-4096);
      },
    }),
  ).catch(() => {});
}

/** The V8 flags `deno task start` runs the broker with (deno.json), so the benchmark measures the same. */
export const V8_FLAGS: string[] = denoJson.tasks.start.split(" ").filter((a) => a.startsWith("--v8-flags="));

/** The argv that starts `name` on `port`, with `dir` as its scratch directory. */
export function brokerArgv(name: BrokerName, port: number, dir: string, root: string): string[] {
  const deno = Deno.execPath();
  switch (name) {
    case "mosquitto":
      return ["mosquitto", "-c", `${dir}/mosquitto.conf`];
    case "aedes":
      return [deno, "run", "-A", `${root}/scripts/bench/aedes_server.ts`, "--port", String(port)];
    case "deno-floor":
      return [
        deno,
        "run",
        ...V8_FLAGS,
        "-A",
        `${root}/scripts/bench/floor_forwarder.ts`,
        "--port",
        String(port),
      ];
    case "ours-memory":
    case "ours-kv":
      return [
        deno,
        "run",
        ...V8_FLAGS,
        "-A",
        `${root}/main.ts`,
        "--port",
        String(port),
        "--storage.backend",
        name === "ours-kv" ? "kv" : "memory",
        "--storage.path",
        `${dir}/mqtt.db`,
        ...OUR_FLAGS,
      ];
  }
}

/**
 * Starts a broker on a free port and waits until the port accepts TCP connections. Throws (after
 * killing the child) when it exits or does not listen within the timeout.
 */
export async function startBroker(name: BrokerName, opts: StartOptions): Promise<RunningBroker> {
  const dir = await Deno.makeTempDir({ prefix: `mqtt-bench-${name}-` });
  const port = freePort();
  if (name === "mosquitto") {
    await Deno.writeTextFile(`${dir}/mosquitto.conf`, mosquittoConf(port, opts.tcpNoDelay ?? true));
  }
  const argv = brokerArgv(name, port, dir, opts.root);
  // taskset execs the broker, so the child's PID is the broker's PID (what /proc is read for).
  const full = opts.cpu === null ? argv : ["taskset", "-c", String(opts.cpu), ...argv];
  const child = new Deno.Command(full[0], {
    args: full.slice(1),
    cwd: dir,
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  const log = { text: "" };
  const drained = Promise.all([drainInto(child.stdout, log), drainInto(child.stderr, log)]);
  let exited = false;
  const status = child.status.then((s) => {
    exited = true;
    return s;
  });
  let stopped = false;
  const broker: RunningBroker = {
    name,
    pid: child.pid,
    port,
    argv: full,
    output: () => log.text,
    exited: () => exited,
    async stop(graceMs = 3000) {
      if (stopped) return;
      stopped = true;
      if (!exited) {
        try {
          child.kill("SIGTERM");
        } catch {
          // Exited between the check and the kill.
        }
        const timer = setTimeout(() => {
          try {
            if (!exited) child.kill("SIGKILL");
          } catch {
            // Already gone.
          }
        }, graceMs);
        await status;
        clearTimeout(timer);
      }
      await drained;
      await Deno.remove(dir, { recursive: true }).catch(() => {});
    },
  };
  try {
    await waitForPort(port, opts.readyTimeoutMs ?? 30_000, () => exited);
  } catch (e) {
    await broker.stop(500);
    const why = e instanceof Error ? e.message : String(e);
    throw new Error(`${name} did not start (${why}); its output: ${log.text.trim().slice(-600) || "(none)"}`);
  }
  return broker;
}

/** Polls until 127.0.0.1:port accepts a TCP connection. */
async function waitForPort(port: number, timeoutMs: number, gone: () => boolean): Promise<void> {
  const deadline = performance.now() + timeoutMs;
  while (performance.now() < deadline) {
    if (gone()) throw new Error("the process exited");
    try {
      const conn = await Deno.connect({ hostname: "127.0.0.1", port });
      conn.close();
      return;
    } catch {
      await new Promise((r) => setTimeout(r, 50));
    }
  }
  throw new Error(`port ${port} not listening after ${timeoutMs} ms`);
}

/** First line of `mosquitto -h` ("mosquitto version X"), or null when it cannot run. */
export async function mosquittoVersion(): Promise<string | null> {
  try {
    const out = await new Deno.Command("mosquitto", { args: ["-h"], stdout: "piped", stderr: "piped" })
      .output();
    const text = new TextDecoder().decode(out.stdout) + new TextDecoder().decode(out.stderr);
    return text.match(/mosquitto version (\S+)/)?.[1] ?? null;
  } catch {
    return null;
  }
}
