/**
 * MQTT load generator.
 *
 * ```sh
 * deno run -A scripts/bench/loadgen.ts --scenario fanin --host 127.0.0.1 --port 1883 --duration 5
 * ```
 *
 * Prints progress events (`{"event":"ready",...}`) and, last, one JSON result line:
 * `{scenario, sent, received, rate, lost, duplicates, reordered, p50_us, p99_us, p999_us, ...}` (see
 * {@link LoadResult}). Loopback targets only; every run is bounded by `--duration`, `--drain` and a
 * hard `--timeout`. Exit code 0 on a completed run, 1 on a failed one, 2 on timeout.
 *
 * @module
 */

import { parseArgs } from "node:util";
import { isLoopback } from "./client.ts";
import { openFilesLimit, reserveDescriptors } from "../../src/transport/fd_table.ts";
import {
  type LoadOptions,
  type LoadResult,
  resolveOptions,
  runScenario,
  SCENARIO_NAMES,
  type ScenarioName,
  SCENARIOS,
} from "./scenarios.ts";

const HELP = `Usage: deno run -A scripts/bench/loadgen.ts --scenario NAME --port P [options]

Scenarios: ${SCENARIO_NAMES.join(", ")}
  --host H            broker address, loopback only (default 127.0.0.1)
  --port P            broker port (required)
  --duration S        seconds of publishing (scenario default); idle: most seconds spent
                      opening connections; retained: most seconds spent storing
  --drain S           seconds to wait for in-flight messages afterwards (default 10; retained 30)
  --warmup S          seconds of publishing before --duration, checked for loss but left out of
                      the latency percentiles (default 1 for paced scenarios, 0 for saturating ones)
  --publishers N      --subscribers N   --qos 0|1|2   --window N (unacked QoS 1/2 per publisher)
  --rate R            messages/s per publisher, 0 = saturate
  --count N           messages per publisher at most (0 = duration only)
  --connections N     --connect-rate R  --hold S      (idle, conn)
  --retained N        retained messages to store (retained)
  --payload-size B    payload bytes, >= 16 (default 16)
  --batch N           packets per write for saturating QoS 0 (default 256)
  --e2e-window N      saturating QoS 0: deliveries sent but not yet received, whole run
                      (default 4000); 0 = open loop, write as fast as TCP accepts
  --decoder fast|codec  parse PUBLISH in place (default) or through the codec
  --mqtt5             use MQTT 5.0 instead of 3.1.1
  --timeout S         hard limit for the whole run (default: duration + drain + 60)`;

/** Parses the command line into options; throws with the offending flag and value. */
export function parseLoadArgs(args: string[]): LoadOptions & { timeout: number } {
  const { values } = parseArgs({
    args,
    options: {
      scenario: { type: "string" },
      host: { type: "string", default: "127.0.0.1" },
      port: { type: "string" },
      duration: { type: "string" },
      drain: { type: "string" },
      warmup: { type: "string" },
      publishers: { type: "string" },
      subscribers: { type: "string" },
      qos: { type: "string" },
      window: { type: "string" },
      rate: { type: "string" },
      count: { type: "string" },
      connections: { type: "string" },
      "connect-rate": { type: "string" },
      hold: { type: "string" },
      retained: { type: "string" },
      "payload-size": { type: "string" },
      batch: { type: "string" },
      "e2e-window": { type: "string" },
      decoder: { type: "string" },
      mqtt5: { type: "boolean", default: false },
      timeout: { type: "string" },
    },
    strict: true,
  });
  const num = (flag: string, v: string | undefined): number | undefined => {
    if (v === undefined) return undefined;
    const n = Number(v);
    if (v.trim() === "" || !Number.isFinite(n)) throw new Error(`--${flag} must be a number, got "${v}"`);
    return n;
  };
  const scenario = values.scenario as ScenarioName | undefined;
  if (scenario === undefined || !(scenario in SCENARIOS)) {
    throw new Error(`--scenario must be one of ${SCENARIO_NAMES.join(", ")}, got "${scenario ?? ""}"`);
  }
  const host = values.host!;
  if (!isLoopback(host)) throw new Error(`--host must be a loopback address, got "${host}"`);
  const port = num("port", values.port);
  if (port === undefined) throw new Error("--port is required");
  const decoder = values.decoder ?? "fast";
  if (decoder !== "fast" && decoder !== "codec") {
    throw new Error(`--decoder must be fast or codec, got "${decoder}"`);
  }
  const o = resolveOptions(scenario, {
    host,
    port,
    mqtt5: values.mqtt5,
    duration: num("duration", values.duration),
    drain: num("drain", values.drain),
    warmup: num("warmup", values.warmup),
    publishers: num("publishers", values.publishers),
    subscribers: num("subscribers", values.subscribers),
    qos: num("qos", values.qos) as LoadOptions["qos"] | undefined,
    window: num("window", values.window),
    rate: num("rate", values.rate),
    count: num("count", values.count),
    connections: num("connections", values.connections),
    connectRate: num("connect-rate", values["connect-rate"]),
    hold: num("hold", values.hold),
    retained: num("retained", values.retained),
    payloadSize: num("payload-size", values["payload-size"]),
    batch: num("batch", values.batch),
    e2eWindow: num("e2e-window", values["e2e-window"]),
    decoder,
  });
  // Paced connections take connections / rate seconds, plus 10 s for the last CONNACK; every other
  // phase is bounded by duration, drain and hold; closing takes at most 6 s.
  const connectPhase = o.connectRate > 0 ? o.connections / o.connectRate + 10 : 0;
  const timeout = num("timeout", values.timeout) ??
    o.duration + o.warmup + o.drain + o.hold + connectPhase + 30;
  return { ...o, timeout };
}

async function main(): Promise<number> {
  if (Deno.args.includes("--help") || Deno.args.includes("-h")) {
    console.log(HELP);
    return 0;
  }
  let options: LoadOptions & { timeout: number };
  try {
    options = parseLoadArgs(Deno.args);
  } catch (e) {
    console.error(`loadgen: ${e instanceof Error ? e.message : e}\n\n${HELP}`);
    return 1;
  }
  const sockets = options.connections + options.publishers + options.subscribers + 32;
  const limit = openFilesLimit();
  if (limit !== null && sockets > limit) {
    console.error(
      `loadgen: needs about ${sockets} open files but the limit is ${limit} (raise it with ulimit -n)`,
    );
    return 1;
  }
  // The load generator is a multi-threaded Deno process too: without this, its own socket() calls wait for
  // each doubling of its descriptor table, and those waits land in every broker's connect percentiles.
  reserveDescriptors(sockets, sockets);
  const write = (obj: unknown) => console.log(JSON.stringify(obj));
  options.onEvent = write;
  options.log = (line) => console.error(line);
  const timer = setTimeout(() => {
    write({ scenario: options.scenario, error: `timed out after ${options.timeout} s` });
    Deno.exit(2);
  }, options.timeout * 1000);
  try {
    const result: LoadResult = await runScenario(options);
    write(result);
    return 0;
  } catch (e) {
    write({ scenario: options.scenario, error: e instanceof Error ? e.message : String(e) });
    return 1;
  } finally {
    clearTimeout(timer);
  }
}

if (import.meta.main) Deno.exit(await main());
