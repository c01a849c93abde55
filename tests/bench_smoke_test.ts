/**
 * Tests of the benchmark suite itself (scripts/bench/): the load generator must count what a real
 * broker delivers, with zero loss on a healthy run, and its accounting must detect loss, duplicates
 * and reordering when they happen. Runs against a Mosquitto started on a free port (skipped when
 * mosquitto is not installed). Speed is never asserted: only that messages were measured correctly.
 *
 * @module
 */

import assert from "node:assert/strict";
import { type RunningBroker, startBroker } from "../scripts/bench/brokers.ts";
import { medianRun } from "../scripts/bench/compare.ts";
import { newRunTag, Sink, STAMP_BYTES, writeStamp } from "../scripts/bench/delivery.ts";
import { summarize } from "../scripts/bench/heap_sample.ts";
import { LatencyHistogram } from "../scripts/bench/histogram.ts";
import { parseCpuTicks, parseMachineCpu, parseMemory, stealPercent } from "../scripts/bench/proc_stats.ts";
import {
  ratio,
  renderReport,
  type ReportMeta,
  rssPerConnection,
  type ScenarioRun,
} from "../scripts/bench/report.ts";
import { type LoadResult, resolveOptions, runScenario } from "../scripts/bench/scenarios.ts";
import { hasCommand, startBroker as startOurBroker } from "./helpers.ts";

const ROOT = new URL("../", import.meta.url).pathname.replace(/\/$/, "");
const noMosquitto = !hasCommand("mosquitto");

/** Runs `fn` with a Mosquitto on a free port, stopped (by PID) and its temp dir removed afterwards. */
async function withMosquitto(fn: (broker: RunningBroker) => Promise<void>): Promise<void> {
  const broker = await startBroker("mosquitto", { root: ROOT, cpu: null });
  try {
    await fn(broker);
  } finally {
    await broker.stop();
  }
}

/** The assertions every healthy pub/sub run must pass. */
function assertLossless(r: LoadResult, what: string): void {
  assert.ok(r.sent > 0, `${what}: nothing was sent`);
  assert.ok(r.received > 0, `${what}: nothing was received`);
  assert.equal(r.received, r.expected, `${what}: received ${r.received} of ${r.expected}`);
  assert.equal(r.lost, 0, `${what}: lost ${r.lost}`);
  assert.equal(r.duplicates, 0, `${what}: ${r.duplicates} duplicates`);
  assert.equal(r.disconnects, 0, `${what}: broker closed connections: ${r.errors.join("; ")}`);
  assert.ok(r.p50_us !== null && r.p99_us !== null && r.p50_us <= r.p99_us, `${what}: latency not measured`);
  assert.ok(r.rate > 0, `${what}: no delivery rate`);
}

Deno.test({
  name: "loadgen CLI: fanin QoS 0 against mosquitto for 1 s measures every message, zero loss",
  ignore: noMosquitto,
  fn: () =>
    withMosquitto(async (broker) => {
      const out = await new Deno.Command(Deno.execPath(), {
        args: [
          "run",
          "-A",
          `${ROOT}/scripts/bench/loadgen.ts`,
          "--scenario",
          "fanin",
          "--host",
          "127.0.0.1",
          "--port",
          String(broker.port),
          "--duration",
          "1",
          "--timeout",
          "60",
        ],
        stdout: "piped",
        stderr: "piped",
      }).output();
      const stdout = new TextDecoder().decode(out.stdout).trim().split("\n");
      assert.equal(
        out.code,
        0,
        `loadgen failed: ${new TextDecoder().decode(out.stderr)} ${stdout.join("\n")}`,
      );
      const r = JSON.parse(stdout[stdout.length - 1]) as LoadResult;
      assert.equal(r.scenario, "fanin");
      assert.equal(r.publishers, 8);
      // One subscriber on bench/#: every message sent is due exactly once.
      assert.equal(r.expected, r.sent);
      assert.equal(r.reordered, 0, "MQTT keeps each publisher's order on one subscription (§4.6)");
      assertLossless(r, "fanin");
    }),
});

Deno.test({
  name: "loadgen: QoS 1 window and QoS 0 fan-out through the codec decoder, zero loss, every PUBACK",
  ignore: noMosquitto,
  fn: () =>
    withMosquitto(async (broker) => {
      const base = { host: "127.0.0.1", port: broker.port, duration: 0.7, drain: 5 };
      const q1 = await runScenario(resolveOptions("qos1", { ...base, publishers: 2, window: 20 }));
      assertLossless(q1, "qos1");
      assert.equal(q1.acked, q1.sent, "every QoS 1 PUBLISH must be acknowledged");
      assert.ok(q1.ack_rate !== null && q1.ack_rate > 0);

      const fan = await runScenario(resolveOptions("fanout", { ...base, subscribers: 4, decoder: "codec" }));
      assertLossless(fan, "fanout (codec decoder)");
      assert.equal(fan.expected, fan.sent * 4, "each message is due at each of the 4 subscribers");

      const q2 = await runScenario(resolveOptions("latency", { ...base, qos: 2, rate: 500 }));
      assertLossless(q2, "QoS 2 paced");
      assert.equal(q2.acked, q2.sent, "every QoS 2 PUBLISH must complete with PUBCOMP");
    }),
});

Deno.test({
  name: "loadgen: retained messages are all received with the RETAIN flag; idle connections are held",
  ignore: noMosquitto,
  fn: () =>
    withMosquitto(async (broker) => {
      const base = { host: "127.0.0.1", port: broker.port };
      const ret = await runScenario(resolveOptions("retained", { ...base, retained: 500 }));
      assert.equal(ret.sent, 500);
      assert.equal(ret.received, 500);
      assert.equal(ret.lost, 0);
      assert.ok(ret.retained_ms !== null, "time to receive all retained messages was not measured");
      assert.deepEqual(ret.errors, [], "a message without RETAIN, or another error");

      const events: Record<string, unknown>[] = [];
      const idle = await runScenario(
        resolveOptions("idle", { ...base, connections: 40, hold: 0.2, onEvent: (e) => events.push(e) }),
      );
      assert.equal(idle.connected, 40);
      assert.equal(idle.connect_failed, 0);
      assert.deepEqual(events, [{ event: "ready", scenario: "idle", connections: 40, failed: 0 }]);
    }),
});

Deno.test("hotpath bench: every shape delivers all of its messages through the in-memory connections", async () => {
  const out = await new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", `${ROOT}/scripts/bench/hotpath_bench.ts`, "--messages", "20000", "--rounds", "1"],
    stdout: "piped",
    stderr: "piped",
  }).output();
  const stdout = new TextDecoder().decode(out.stdout);
  assert.equal(out.code, 0, `hotpath bench failed: ${new TextDecoder().decode(out.stderr)} ${stdout}`);
  const names = [...stdout.matchAll(/^(\S+) +\d+ ns per delivery/gm)].map((m) => m[1]);
  assert.deepEqual(names, ["qos0", "qos0_fanout50", "qos1", "qos1_mqtt5", "qos1_persistent_kv"]);
});

Deno.test("delivery accounting detects duplicates, late messages, foreign stamps and latency", () => {
  const tag = newRunTag();
  const sink = new Sink(new LatencyHistogram(), tag);
  const payload = new Uint8Array(STAMP_BYTES);
  const view = new DataView(payload.buffer);
  const deliver = (seq: number, runTag = tag) => {
    writeStamp(view, 0, runTag, 3, seq, 1000);
    sink.record(view, 0, STAMP_BYTES, 1002.5, false);
  };
  for (const seq of [0, 1, 1, 3, 2]) deliver(seq);
  deliver(9, (tag + 1) % 65536); // an earlier run's backlog: ignored
  sink.record(view, 0, STAMP_BYTES - 1, 1003, false); // too short for a stamp: ignored
  assert.equal(sink.unique, 4);
  assert.equal(sink.duplicates, 1);
  assert.equal(sink.reordered, 1, "seq 2 arrived after seq 3");
  assert.equal(sink.foreign, 2);
  assert.equal(sink.uniqueFrom(3), 4);
  assert.equal(sink.uniqueFrom(0), 0);
  // 1002.5 - 1000 ms = 2,500 µs, within the histogram's 1.6 % resolution.
  const p50 = sink.latency.percentile(50)!;
  assert.ok(Math.abs(p50 - 2500) <= 2500 * 0.016, `p50 ${p50} µs`);
});

Deno.test("latency histogram percentiles stay within 1.6 % and track min/max exactly", () => {
  const h = new LatencyHistogram();
  assert.equal(h.percentile(99), null);
  for (let v = 1; v <= 100_000; v++) h.record(v);
  for (const [p, exact] of [[50, 50_000], [99, 99_000], [99.9, 99_900]]) {
    const got = h.percentile(p)!;
    assert.ok(Math.abs(got - exact) / exact <= 0.016, `p${p}: ${got} vs ${exact}`);
  }
  assert.equal(h.percentile(100), 100_000);
  assert.equal(h.min, 1);
  assert.equal(h.max, 100_000);
  assert.throws(() => h.percentile(101), /0\.\.100, got 101/);
});

Deno.test("/proc parsing: CPU ticks after a comm with spaces, VmRSS and VmHWM in bytes", () => {
  const stat = "4242 (deno worker) S 1 4242 4242 0 -1 4194560 500 0 0 0 157 43 0 0 20 0 9 0 100 0 0";
  assert.equal(parseCpuTicks(stat), 200);
  const status = "Name:\tmosquitto\nVmHWM:\t    8680 kB\nVmRSS:\t    8584 kB\n";
  assert.deepEqual(parseMemory(status), { rss: 8584 * 1024, hwm: 8680 * 1024 });
  assert.throws(() => parseMemory("Name: x\n"), /no VmRSS/);
});

Deno.test("/proc parsing: machine CPU steal from the aggregate line of /proc/stat", () => {
  const before = parseMachineCpu("cpu  100 0 50 800 10 0 5 35 7 0\ncpu0 50 0 25 400 5 0 2 18 0 0\n");
  assert.deepEqual(before, { total: 1000, steal: 35 });
  const after = parseMachineCpu("cpu  150 0 60 1700 10 0 5 75 9 0\n");
  assert.equal(stealPercent(before, after), 4);
  assert.equal(stealPercent(after, after), null, "no time passed");
  assert.equal(stealPercent(null, after), null);
  assert.throws(() => parseMachineCpu("intr 1 2 3\n"), /no aggregate cpu line/);
});

Deno.test("report: ratios ours / Mosquitto and RSS per idle connection", () => {
  assert.equal(ratio(150, 100), "1.50x");
  assert.equal(ratio(null, 100), "n/a");
  assert.equal(ratio(5, 0), "n/a");
  const idle: ScenarioRun = {
    scenario: "idle",
    broker: "mosquitto",
    status: "ok",
    rssBefore: 1_000_000,
    rssReady: 3_000_000,
    loadgenArgs: [],
    result: { connected: 1000 } as LoadResult,
  };
  assert.equal(rssPerConnection(idle), 2000);
  const fanin = (broker: ScenarioRun["broker"], rate: number): ScenarioRun => ({
    scenario: "fanin",
    broker,
    status: "ok",
    loadgenArgs: ["--scenario", "fanin"],
    result: { rate, lost: 0, errors: [], disconnects: 0 } as unknown as LoadResult,
  });
  const md = renderReport({
    date: "2026-01-01T00:00:00Z",
    command: "deno task bench:compare --quick",
    quick: true,
    machine: { cpuModel: "test cpu", cores: 2, memoryGiB: 1, kernel: "6.0" },
    versions: { Mosquitto: "2.0.11" },
    pinning: "none",
    loadBefore: 0.1,
    loadAfter: 0.2,
    stealPercent: 1.25,
    elapsedS: 1,
    brokers: ["mosquitto", "ours-memory"],
    settings: {},
  }, [fanin("mosquitto", 1000), fanin("ours-memory", 2500)]);
  assert.match(md, /\| `fanin` \| delivered msg\/s \(higher is better\) \| 1,000 \| 2,500 \| 2\.50x \|/);
  assert.match(md, /deno task bench:compare --quick/);
  assert.match(md, /CPU steal over the whole run: 1\.3% of all CPU time/);
});

Deno.test("loadgen: qos1_persistent keeps the subscriber's session, and our kv store stores every message before PUBACK", async () => {
  const dir = await Deno.makeTempDir({ prefix: "bench-persistent-" });
  const broker = await startOurBroker({ storage: { backend: "kv", path: `${dir}/mqtt.db` } });
  try {
    const r = await runScenario(
      resolveOptions("qos1_persistent", {
        host: "127.0.0.1",
        port: broker.port,
        duration: 0.7,
        drain: 5,
        publishers: 2,
        window: 20,
      }),
    );
    assertLossless(r, "qos1_persistent");
    assert.equal(r.acked, r.sent, "every QoS 1 PUBLISH must be acknowledged");
    // The subscriber disconnected at the end of the run; its session outlives the connection.
    const kept = [...broker.broker.sessions.values()].filter((s) => s.client === undefined && s.persistent);
    assert.equal(kept.length, 1, "one persistent subscriber session is left after the run");
    assert.ok(broker.broker.store.stats.commits > 0, "the kv store committed the messages");
  } finally {
    await broker.stop();
    await Deno.remove(dir, { recursive: true });
  }
});

/** Report header facts of a comparison of Mosquitto and ours (memory) on a made-up machine. */
const TWO_BROKERS: ReportMeta = {
  date: "2026-01-01T00:00:00Z",
  command: "deno task bench:compare",
  quick: false,
  machine: { cpuModel: "test cpu", cores: 2, memoryGiB: 1, kernel: "6.0" },
  versions: {},
  pinning: "none",
  loadBefore: null,
  loadAfter: null,
  stealPercent: null,
  elapsedS: 1,
  brokers: ["mosquitto", "ours-memory"],
  settings: {},
};

Deno.test("report: QoS 1 gets a second summary row of messages acknowledged and delivered", () => {
  const qos1 = (
    broker: ScenarioRun["broker"],
    acked: number,
    delivered: number,
    lost: number,
  ): ScenarioRun => ({
    scenario: "qos1",
    broker,
    status: "ok",
    loadgenArgs: [],
    result: { ack_rate: acked, rate: delivered, lost, errors: [], disconnects: 0 } as unknown as LoadResult,
  });
  const md = renderReport(TWO_BROKERS, [
    qos1("mosquitto", 100_000, 40_000, 300_000),
    qos1("ours-memory", 300_000, 300_000, 0),
  ]);
  assert.match(
    md,
    /\| `qos1` \| PUBACKs\/s \(higher is better\) \| 100,000 \(lost 300,000\) \| 300,000 \| 3\.00x \|/,
  );
  assert.match(
    md,
    /\| `qos1` \| delivered msg\/s \(higher is better\) \| 40,000 \(lost 300,000\) \| 300,000 \| 7\.50x \|/,
  );
});

Deno.test("report: latency gets a broker residence row when its runs were captured, none when not", () => {
  const latency = (broker: ScenarioRun["broker"], p99: number, residenceP99?: number): ScenarioRun => ({
    scenario: "latency",
    broker,
    status: "ok",
    loadgenArgs: [],
    result: { p99_us: p99, lost: 0, errors: [], disconnects: 0 } as unknown as LoadResult,
    residence: residenceP99 === undefined
      ? undefined
      : { p50Us: 100, p99Us: residenceP99, deliveries: 25_000 },
  });
  const captured = renderReport(TWO_BROKERS, [
    latency("mosquitto", 800, 600),
    latency("ours-memory", 1600, 450),
  ]);
  assert.match(
    captured,
    /\| `latency` \| p99 latency \(lower is better\) \| 0\.800 ms \| 1\.60 ms \| 2\.00x \|/,
  );
  assert.match(
    captured,
    /\| `latency` \| broker residence p99, from a packet capture \(lower is better\) \| 0\.600 ms \| 0\.450 ms \| 0\.75x \|/,
  );
  assert.match(
    captured,
    /broker residence p50 0\.100 ms, p99 0\.450 ms \(25,000 deliveries in a packet capture\)/,
  );
  const plain = renderReport(TWO_BROKERS, [latency("mosquitto", 800), latency("ours-memory", 1600)]);
  assert.doesNotMatch(plain, /broker residence p99/);
});

Deno.test("compare: the median of repeated latency runs is reported, with every run's value", () => {
  const run = (p99: number | null): ScenarioRun => ({
    scenario: "latency",
    broker: "ours-kv",
    status: p99 === null ? "failed" : "ok",
    note: p99 === null ? "load generator failed" : undefined,
    loadgenArgs: [],
    result: p99 === null ? undefined : { p99_us: p99 } as LoadResult,
  });
  const chosen = medianRun([run(10_600), run(1_100), run(2_400)]);
  assert.equal(chosen.result?.p99_us, 2_400);
  assert.equal(chosen.note, "median of 3 runs (1.10 ms, 2.40 ms, 10.6 ms)");
  const withFailure = medianRun([run(3_000), run(null), run(1_000)]);
  assert.equal(withFailure.result?.p99_us, 1_000, "the lower of two measured runs");
  assert.match(withFailure.note!, /1 failed/);
  assert.equal(medianRun([run(null)]).status, "failed");
  assert.equal(medianRun([run(5_000)]).note, undefined, "a single run gets no note");
});

Deno.test("heap_sample: allocation is summed per function and per call path, largest first", () => {
  const frame = (functionName: string, url = "file:///x/a.ts") => ({ functionName, url, lineNumber: 0 });
  const head = {
    callFrame: frame("(root)", ""),
    selfSize: 0,
    children: [
      {
        callFrame: frame("read"),
        selfSize: 100,
        children: [{ callFrame: frame("then", ""), selfSize: 300, children: [] }],
      },
      {
        callFrame: frame("write"),
        selfSize: 50,
        children: [{ callFrame: frame("then", ""), selfSize: 200, children: [] }],
      },
    ],
  };
  const { total, self, paths } = summarize(head);
  assert.equal(total, 650);
  assert.deepEqual(self, [["then (native)", 500], ["read a.ts", 100], ["write a.ts", 50]]);
  assert.deepEqual(paths[0], ["then (native) < read a.ts < (root) (native)", 300]);
  assert.equal(paths.length, 4);
});
