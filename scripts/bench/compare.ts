/**
 * Runs every benchmark scenario against Mosquitto, Aedes and our broker (memory and kv stores) and
 * writes the comparison to docs/benchmarks.md.
 *
 * ```sh
 * deno task bench:compare            # full run, < 15 minutes
 * deno task bench:compare --quick    # short subset, scaled down (about 3 minutes)
 * deno task bench:compare --brokers mosquitto,ours-memory --scenarios fanin,latency --out /tmp/b.md
 * ```
 *
 * The broker is pinned to core 0 and the load generator to core 1 with taskset (when there are two
 * cores and taskset exists). Every child is started by PID and killed by PID, on success, on error and
 * on SIGINT/SIGTERM; every temporary directory is removed. Each run has a timeout and the whole
 * comparison a time budget: what does not fit is reported as skipped.
 *
 * @module
 */

import { parseArgs } from "node:util";
import denoJson from "../../deno.json" with { type: "json" };
import {
  BROKER_LABELS,
  BROKER_NAMES,
  type BrokerName,
  mosquittoConf,
  mosquittoVersion,
  OUR_FLAGS,
  repoRoot,
  type RunningBroker,
  startBroker,
  V8_FLAGS,
} from "./brokers.ts";
import { openFilesLimit } from "../../src/transport/fd_table.ts";
import { loadAverage, machineInfo, ProcessMonitor, readMachineCpu, stealPercent } from "./proc_stats.ts";
import { HEADLINES, renderReport, type ReportMeta, type ScenarioRun } from "./report.ts";
import { analyze, quantile } from "./residence.ts";
import { type LoadResult, SCENARIO_NAMES, type ScenarioName } from "./scenarios.ts";

/** Load generator arguments per scenario, full and quick; null = not part of that mode. */
export const PLAN: Record<ScenarioName, { full: string[] | null; quick: string[] | null }> = {
  fanin: { full: ["--duration", "5"], quick: ["--duration", "2"] },
  fanout: { full: ["--duration", "5"], quick: ["--duration", "2"] },
  qos1: { full: ["--duration", "5"], quick: ["--duration", "2"] },
  qos1_window10: { full: ["--duration", "5"], quick: ["--duration", "2"] },
  qos1_persistent: { full: ["--duration", "5"], quick: ["--duration", "2"] },
  latency: { full: ["--duration", "5"], quick: ["--duration", "2"] },
  idle: { full: ["--connections", "10000", "--hold", "3"], quick: ["--connections", "2000", "--hold", "3"] },
  retained: { full: ["--retained", "100000"], quick: ["--retained", "20000"] },
  p2p: {
    full: ["--duration", "10"],
    quick: ["--duration", "3", "--publishers", "200", "--subscribers", "200"],
  },
  fanout_1k: { full: ["--duration", "10"], quick: null },
  shared: {
    full: ["--duration", "10", "--mqtt5"],
    quick: ["--duration", "3", "--publishers", "200", "--mqtt5"],
  },
  conn: { full: ["--connections", "10000", "--connect-rate", "1000", "--hold", "2"], quick: null },
};

/**
 * Scenarios in which Mosquitto runs with Nagle's algorithm on (its default, `set_tcp_nodelay false`). It
 * writes every packet with a send() of its own, so with Nagle off a saturating QoS 0 stream leaves as one TCP
 * segment per packet: measured here, fan-in 60k/s with Nagle off against 73k/s on (and the load generator,
 * reading one packet per read, at 98% CPU instead of 6%), fan-out 85k/s against 101k/s, 100,000 retained
 * delivered in 1.12 s against 0.80 s. In the QoS 1 scenarios (round trips through PUBACK), latency and
 * connection scenarios Nagle off is its better setting (QoS 1: 31k/s against 28k/s). Each broker is measured
 * at its best; ours and Aedes always run with Nagle off.
 */
export const MOSQUITTO_NAGLE: readonly ScenarioName[] = ["fanin", "fanout", "retained"];

/**
 * Runs per broker for the tail-latency scenarios (full mode): one p99 swings by several times between runs
 * on this VM, for every broker, so the report takes the median run of three.
 */
const REPEATS: Partial<Record<ScenarioName, number>> = { latency: 3, p2p: 3, shared: 3 };

/** The run with the median headline value among `runs` (all of one scenario and broker), noting the others. */
export function medianRun(runs: ScenarioRun[]): ScenarioRun {
  const h = HEADLINES[runs[0].scenario];
  const measured = runs
    .map((run) => ({ run, v: run.status === "ok" ? h.value(run) : null }))
    .filter((x): x is { run: ScenarioRun; v: number } => x.v !== null)
    .sort((a, b) => a.v - b.v);
  if (measured.length === 0) return runs[runs.length - 1];
  const chosen = measured[Math.floor((measured.length - 1) / 2)].run;
  if (runs.length === 1) return chosen;
  const all = measured.map((x) => h.format(x.v)).join(", ");
  const failed = runs.length - measured.length;
  const note = `median of ${runs.length} runs (${all}${failed > 0 ? `; ${failed} failed` : ""})`;
  return { ...chosen, note: chosen.note ? `${chosen.note}; ${note}` : note };
}

/** Scenarios the Deno floor (scripts/bench/floor_forwarder.ts, not a broker) can take part in. */
const FLOOR_SCENARIOS: ScenarioName[] = [
  "fanin",
  "fanout",
  "qos1",
  "qos1_window10",
  "latency",
  "p2p",
  "fanout_1k",
  "shared",
  "conn",
];

/** Why a broker cannot run a scenario, or null when it can. */
export function unsupported(broker: BrokerName, scenario: ScenarioName): string | null {
  if (broker === "aedes" && scenario === "shared") return "Aedes has no $share subscriptions nor MQTT 5";
  if (broker === "deno-floor" && !FLOOR_SCENARIOS.includes(scenario)) {
    return "the Deno floor has no sessions or retained messages, and reads into 64 KiB per connection";
  }
  return null;
}

/** Seconds a single load generator run may take before it is killed. */
const RUN_TIMEOUT_S = 180;

/** Everything started, so that any exit path can kill it. */
const children = new Set<{ kill: () => void }>();
const brokers = new Set<RunningBroker>();

async function cleanup(): Promise<void> {
  for (const c of children) c.kill();
  children.clear();
  await Promise.all([...brokers].map((b) => b.stop(1000)));
  brokers.clear();
}

/** Registers `child` to be killed by {@link cleanup}; the handle kills it now. */
function track(child: Deno.ChildProcess): { kill: () => void } {
  const handle = {
    kill: () => {
      try {
        child.kill("SIGKILL");
      } catch {
        // Already exited.
      }
    },
  };
  children.add(handle);
  return handle;
}

/** Splits a child's stdout into lines as they arrive. */
async function eachLine(stream: ReadableStream<Uint8Array>, onLine: (line: string) => void): Promise<void> {
  let rest = "";
  for await (const chunk of stream.pipeThrough(new TextDecoderStream())) {
    rest += chunk;
    let nl: number;
    while ((nl = rest.indexOf("\n")) >= 0) {
      onLine(rest.slice(0, nl));
      rest = rest.slice(nl + 1);
    }
  }
  if (rest.length > 0) onLine(rest);
}

interface Options {
  quick: boolean;
  brokers: BrokerName[];
  scenarios: ScenarioName[];
  out: string;
  pin: boolean;
  budgetS: number;
}

function parseOptions(args: string[]): Options {
  const { values } = parseArgs({
    args,
    options: {
      quick: { type: "boolean", default: false },
      brokers: { type: "string", default: BROKER_NAMES.join(",") },
      scenarios: { type: "string" },
      out: { type: "string", default: "docs/benchmarks.md" },
      "no-pin": { type: "boolean", default: false },
      budget: { type: "string", default: "840" },
    },
    strict: true,
  });
  const list = <T extends string>(flag: string, text: string, known: readonly T[]): T[] => {
    const items = text.split(",").map((s) => s.trim()).filter((s) => s !== "");
    for (const item of items) {
      if (!known.includes(item as T)) {
        throw new Error(`--${flag}: unknown "${item}"; known: ${known.join(", ")}`);
      }
    }
    return items as T[];
  };
  const quick = values.quick!;
  const planned = SCENARIO_NAMES.filter((s) => (quick ? PLAN[s].quick : PLAN[s].full) !== null);
  const budgetS = Number(values.budget);
  if (!(budgetS > 0)) {
    throw new Error(`--budget must be a positive number of seconds, got "${values.budget}"`);
  }
  return {
    quick,
    brokers: list("brokers", values.brokers!, BROKER_NAMES),
    scenarios: values.scenarios === undefined ? planned : list("scenarios", values.scenarios, SCENARIO_NAMES),
    out: values.out!,
    pin: !values["no-pin"],
    budgetS,
  };
}

/** Lowers connection counts to what the open-file limit allows (each process holds one end). */
function fitToFileLimit(args: string[], notes: string[]): string[] {
  const limit = openFilesLimit();
  const i = args.indexOf("--connections");
  if (limit === null || i < 0) return args;
  const wanted = Number(args[i + 1]);
  const allowed = limit - 500;
  if (wanted <= allowed) return args;
  notes.push(`connections lowered from ${wanted} to ${allowed} by the open-file limit (${limit})`);
  const copy = [...args];
  copy[i + 1] = String(allowed);
  return copy;
}

/**
 * Scenarios whose runs are also captured with `tcpdump` (when it can run: installed, and we are root) to
 * measure each broker's own residence per delivery (scripts/bench/residence.ts). Only the low-rate
 * latency scenario: a capture of the saturating ones would be gigabytes and would load the load
 * generator's core.
 */
const CAPTURE_SCENARIOS: ScenarioName[] = ["latency"];

let captureChecked: Promise<boolean> | undefined;

/** Whether `tcpdump` runs here with the rights to capture on loopback. */
function canCapture(): Promise<boolean> {
  return captureChecked ??= (async () => {
    if (Deno.uid() !== 0) return false;
    try {
      const out = await new Deno.Command("tcpdump", { args: ["--version"], stdout: "null", stderr: "null" })
        .output();
      return out.success;
    } catch {
      return false;
    }
  })();
}

/** A running `tcpdump` of one broker port into a temporary file. */
interface Capture {
  file: string;
  /** Stops tcpdump so that the file is complete; throws when it never captured. */
  stop(): Promise<void>;
  /** Kills tcpdump if it still runs and deletes the file. */
  discard(): Promise<void>;
}

/** Starts capturing loopback traffic of `port`; resolves once tcpdump listens. */
async function startCapture(port: number, pin: boolean): Promise<Capture> {
  const file = await Deno.makeTempFile({ prefix: "mqtt-bench-", suffix: ".pcap" });
  const argv = [
    "tcpdump",
    ...["-i", "lo", "-n", "-s", "0", "-B", "65536", "--time-stamp-precision=nano", "-w", file],
    ...["tcp", "port", String(port)],
  ];
  const full = pin ? ["taskset", "-c", "1", ...argv] : argv;
  const child = new Deno.Command(full[0], {
    args: full.slice(1),
    stdin: "null",
    stdout: "null",
    stderr: "piped",
  })
    .spawn();
  const handle = track(child);
  // tcpdump says "listening on lo" on stderr once its socket is bound; until then packets are missed.
  let stderr = "";
  const listening = new Promise<void>((resolve) => {
    child.stderr.pipeThrough(new TextDecoderStream()).pipeTo(
      new WritableStream({
        write: (c) => {
          stderr = (stderr + c).slice(-1000);
          if (stderr.includes("listening on")) resolve();
        },
      }),
    ).catch(() => {}).finally(() => resolve());
  });
  const timeout = new Promise<void>((resolve) => setTimeout(resolve, 3000));
  await Promise.race([listening, timeout]);
  return {
    file,
    stop: async () => {
      try {
        child.kill("SIGINT"); // tcpdump flushes its file on SIGINT
      } catch {
        // Already exited.
      }
      await child.status;
      children.delete(handle);
      if (!stderr.includes("listening on")) throw new Error(`tcpdump did not capture: ${stderr.trim()}`);
    },
    discard: async () => {
      handle.kill();
      children.delete(handle);
      await Deno.remove(file).catch(() => {});
    },
  };
}

/** Runs one scenario against one fresh broker. */
async function runOne(
  scenario: ScenarioName,
  brokerName: BrokerName,
  baseArgs: string[],
  root: string,
  pin: boolean,
): Promise<ScenarioRun> {
  const notes: string[] = [];
  const args = fitToFileLimit(baseArgs, notes);
  const run: ScenarioRun = { scenario, broker: brokerName, status: "failed", loadgenArgs: [] };
  let broker: RunningBroker | undefined;
  let capture: Capture | undefined;
  try {
    const nagle = brokerName === "mosquitto" && MOSQUITTO_NAGLE.includes(scenario);
    if (nagle) notes.push("Nagle on (set_tcp_nodelay false, faster for Mosquitto here)");
    broker = await startBroker(brokerName, { root, cpu: pin ? 0 : null, tcpNoDelay: !nagle });
    brokers.add(broker);
    // Let a freshly started runtime settle (JIT, GC) before the baseline memory sample.
    await new Promise((r) => setTimeout(r, 300));
    const monitor = new ProcessMonitor(broker.pid);
    run.rssBefore = monitor.sample()?.rss ?? null;
    const lgArgs = ["--scenario", scenario, "--host", "127.0.0.1", "--port", String(broker.port), ...args];
    run.loadgenArgs = ["--scenario", scenario, "--port", "P", ...args];
    const argv = [Deno.execPath(), "run", "-A", `${root}/scripts/bench/loadgen.ts`, ...lgArgs];
    const full = pin ? ["taskset", "-c", "1", ...argv] : argv;
    capture = CAPTURE_SCENARIOS.includes(scenario) && await canCapture()
      ? await startCapture(broker.port, pin).catch((e) => {
        notes.push(`no packet capture: ${e instanceof Error ? e.message : e}`);
        return undefined;
      })
      : undefined;
    monitor.start();
    const cpuBefore = readMachineCpu();
    const child = new Deno.Command(full[0], {
      args: full.slice(1),
      stdin: "null",
      stdout: "piped",
      stderr: "piped",
    }).spawn();
    const handle = track(child);
    const timer = setTimeout(() => {
      notes.push(`load generator killed after ${RUN_TIMEOUT_S} s`);
      handle.kill();
    }, RUN_TIMEOUT_S * 1000);
    let last: Record<string, unknown> | null = null;
    let stderr = "";
    const pending: Promise<void>[] = [];
    const reading = eachLine(child.stdout, (line) => {
      let obj: Record<string, unknown>;
      try {
        obj = JSON.parse(line);
      } catch {
        return;
      }
      if (obj.event === "ready") {
        // Idle connections are all open: measure the broker now and once more after it settled.
        pending.push((async () => {
          run.rssReady = monitor.sample()?.rss ?? null;
          await new Promise((r) => setTimeout(r, 1000));
          const later = monitor.sample()?.rss;
          if (later !== undefined && (run.rssReady == null || later > run.rssReady)) run.rssReady = later;
        })());
      } else if (obj.scenario !== undefined) {
        last = obj;
      }
    });
    const readingErr = child.stderr.pipeThrough(new TextDecoderStream()).pipeTo(
      new WritableStream({ write: (c) => void (stderr = (stderr + c).slice(-2000)) }),
    ).catch(() => {});
    const status = await child.status;
    clearTimeout(timer);
    children.delete(handle);
    await Promise.all([reading, readingErr, ...pending]);
    const usage = monitor.stop();
    run.stealPercent = stealPercent(cpuBefore, readMachineCpu());
    run.cpuPercent = usage.cpuPercent;
    run.peakRss = usage.peakRss;
    const result = last as (LoadResult & { error?: string }) | null;
    if (broker.exited()) notes.push(`broker exited during the run: ${broker.output().trim().slice(-300)}`);
    if (result === null) {
      notes.push(`no result (exit code ${status.code}): ${stderr.trim().slice(-300)}`);
    } else if (result.error !== undefined) {
      notes.push(`load generator error: ${result.error}`);
    } else {
      run.result = result;
      run.status = "ok";
    }
    if (capture !== undefined) {
      try {
        await new Promise((r) => setTimeout(r, 200)); // the last deliveries reach the capture
        await capture.stop();
        const res = analyze(await Deno.readFile(capture.file), broker.port, result?.warmup_s ?? 0);
        if (res.micros.length > 0) {
          run.residence = {
            p50Us: quantile(res.micros, 0.5),
            p99Us: quantile(res.micros, 0.99),
            deliveries: res.micros.length,
          };
        }
        if (res.brokenFlows > 0) notes.push(`packet capture lost bytes in ${res.brokenFlows} flows`);
      } catch (e) {
        notes.push(`packet capture failed: ${e instanceof Error ? e.message : e}`);
      }
    }
  } catch (e) {
    notes.push(e instanceof Error ? e.message : String(e));
  } finally {
    await capture?.discard();
    if (broker !== undefined) {
      await broker.stop();
      brokers.delete(broker);
    }
  }
  if (notes.length > 0) run.note = notes.join("; ").replaceAll("\n", " ");
  return run;
}

async function main(): Promise<number> {
  let opts: Options;
  try {
    opts = parseOptions(Deno.args);
  } catch (e) {
    console.error(`compare: ${e instanceof Error ? e.message : e}`);
    return 2;
  }
  const root = repoRoot();
  const began = performance.now();
  const onSignal = () => {
    console.error("compare: interrupted, stopping every process it started");
    cleanup().finally(() => Deno.exit(130));
  };
  Deno.addSignalListener("SIGINT", onSignal);
  Deno.addSignalListener("SIGTERM", onSignal);

  const machine = machineInfo();
  let pin = opts.pin && machine.cores >= 2;
  if (pin) {
    try {
      await new Deno.Command("taskset", { args: ["-c", "0", "true"], stdout: "null", stderr: "null" })
        .output();
    } catch {
      pin = false;
    }
  }
  const loadBefore = loadAverage();
  const cpuBefore = readMachineCpu();
  const runs: ScenarioRun[] = [];
  const failedStarts = new Map<BrokerName, number>();
  try {
    for (const scenario of opts.scenarios) {
      const args = (opts.quick ? PLAN[scenario].quick : PLAN[scenario].full) ?? PLAN[scenario].full!;
      const repeats = opts.quick ? 1 : REPEATS[scenario] ?? 1;
      const attempts = new Map<BrokerName, ScenarioRun[]>();
      // Rounds go over every broker in turn, so a noisy minute of the VM hits all of them alike.
      for (let round = 0; round < repeats; round++) {
        for (const broker of opts.brokers) {
          const elapsed = (performance.now() - began) / 1000;
          const why = unsupported(broker, scenario);
          let run: ScenarioRun;
          if (why !== null) {
            if (round > 0) continue;
            run = { scenario, broker, status: "unsupported", note: why, loadgenArgs: [] };
          } else if (elapsed > opts.budgetS) {
            if (round > 0) continue;
            run = {
              scenario,
              broker,
              status: "skipped",
              note: `time budget of ${opts.budgetS} s used`,
              loadgenArgs: [],
            };
          } else if ((failedStarts.get(broker) ?? 0) >= 2) {
            if (round > 0) continue;
            run = {
              scenario,
              broker,
              status: "skipped",
              note: "broker failed to start twice",
              loadgenArgs: [],
            };
          } else {
            const of = repeats > 1 ? ` (run ${round + 1} of ${repeats})` : "";
            console.error(`[${Math.round(elapsed)} s] ${scenario} on ${BROKER_LABELS[broker]}${of}...`);
            run = await runOne(scenario, broker, args, root, pin);
            if (run.status === "failed" && run.note?.includes("did not start")) {
              failedStarts.set(broker, (failedStarts.get(broker) ?? 0) + 1);
            }
          }
          const list = attempts.get(broker) ?? [];
          list.push(run);
          attempts.set(broker, list);
          const h = HEADLINES[scenario];
          const v = run.status === "ok" ? h.value(run) : null;
          console.error(
            `    ${run.status}${v !== null ? `: ${h.label} ${h.format(v)}` : ""}${
              run.note ? ` (${run.note})` : ""
            }`,
          );
        }
      }
      for (const broker of opts.brokers) {
        const list = attempts.get(broker);
        if (list !== undefined) runs.push(medianRun(list));
      }
    }
  } finally {
    await cleanup();
  }

  const meta: ReportMeta = {
    date: new Date().toISOString().replace(/\.\d+Z$/, "Z"),
    command: ["deno task bench:compare", ...Deno.args].join(" "),
    quick: opts.quick,
    machine,
    versions: {
      Deno: `${Deno.version.deno} (V8 ${Deno.version.v8}, TypeScript ${Deno.version.typescript})`,
      Mosquitto: (await mosquittoVersion()) ?? "not found",
      Aedes: `${denoJson.imports.aedes.replace(/^npm:aedes@/, "")} (npm, run by Deno's Node compatibility)`,
      ours: `${denoJson.version} (main.ts, \`deno run ${V8_FLAGS.join(" ")} -A\`)`,
    },
    pinning: pin
      ? "broker pinned to core 0, load generator to core 1 (taskset)"
      : "not pinned (taskset missing, fewer than 2 cores, or --no-pin)",
    loadBefore,
    loadAfter: loadAverage(),
    stealPercent: stealPercent(cpuBefore, readMachineCpu()),
    elapsedS: (performance.now() - began) / 1000,
    brokers: opts.brokers,
    settings: {
      "mosquitto.conf": mosquittoConf("P", true) +
        `(set_tcp_nodelay false in ${MOSQUITTO_NAGLE.join(", ")})\n`,
      "Our broker": `deno run ${
        V8_FLAGS.join(" ")
      } -A main.ts --port P --storage.backend memory|kv --storage.path DIR/mqtt.db ${OUR_FLAGS.join(" ")}`,
      "Aedes":
        "deno run -A scripts/bench/aedes_server.ts --port P   (defaults: in-memory persistence, concurrency 100)",
      "Deno floor": `deno run ${
        V8_FLAGS.join(" ")
      } -A scripts/bench/floor_forwarder.ts --port P   (not a broker: forwards each PUBLISH to exact-topic and wildcard subscribers, acknowledges QoS 1; what Deno and this machine cost by themselves)`,
    },
  };
  const markdown = renderReport(meta, runs);
  const outPath = opts.out.startsWith("/") ? opts.out : `${root}/${opts.out}`;
  await Deno.writeTextFile(outPath, markdown);
  console.error(`compare: wrote ${outPath} in ${Math.round(meta.elapsedS)} s`);
  Deno.removeSignalListener("SIGINT", onSignal);
  Deno.removeSignalListener("SIGTERM", onSignal);
  return runs.some((x) => x.status === "failed") ? 1 : 0;
}

if (import.meta.main) Deno.exit(await main());
