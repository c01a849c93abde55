/**
 * Renders the comparison as Markdown (docs/benchmarks.md): a summary with one headline metric per
 * scenario and the ratio ours / Mosquitto, then every measurement per scenario, the settings and the
 * raw results.
 *
 * @module
 */

import { BROKER_LABELS, type BrokerName } from "./brokers.ts";
import { type LoadResult, SCENARIO_NAMES, type ScenarioName, SCENARIOS } from "./scenarios.ts";

/** What happened to one (scenario, broker) pair. */
export interface ScenarioRun {
  scenario: ScenarioName;
  broker: BrokerName;
  status: "ok" | "failed" | "skipped" | "unsupported";
  /** Why it failed, was skipped or is unsupported; or a remark on an ok run. */
  note?: string;
  result?: LoadResult;
  /** Broker CPU during the load generator's run, percent of one core. */
  cpuPercent?: number | null;
  /** Percent of the machine's CPU time the hypervisor stole during the run (VM noise). */
  stealPercent?: number | null;
  /** Broker peak VmRSS during the run, bytes. */
  peakRss?: number | null;
  /** Broker VmRSS before the load generator started, bytes. */
  rssBefore?: number | null;
  /** idle: broker VmRSS with every connection open, bytes. */
  rssReady?: number | null;
  /** The load generator's arguments (after the script path). */
  loadgenArgs: string[];
  /**
   * The broker's own residence per delivery, from a packet capture of the run (scripts/bench/residence.ts),
   * in the scenarios that capture when `tcpdump` can run; microseconds.
   */
  residence?: { p50Us: number; p99Us: number; deliveries: number };
}

/** Facts about the run for the report header. */
export interface ReportMeta {
  date: string;
  command: string;
  quick: boolean;
  machine: { cpuModel: string; cores: number; memoryGiB: number; kernel: string };
  versions: Record<string, string>;
  /** How the processes were placed on cores. */
  pinning: string;
  loadBefore: number | null;
  loadAfter: number | null;
  /** Percent of the machine's CPU time stolen by the hypervisor over the whole comparison. */
  stealPercent: number | null;
  elapsedS: number;
  brokers: BrokerName[];
  /** Settings blocks (title -> text) printed verbatim. */
  settings: Record<string, string>;
}

/** The headline number of a scenario and which direction is better. */
export interface Headline {
  label: string;
  better: "higher" | "lower";
  /** Formats a value of this metric. */
  format: (v: number) => string;
  value: (run: ScenarioRun) => number | null;
}

const int = (v: number) => Math.round(v).toLocaleString("en-US");
const ms = (us: number) => us >= 100_000 ? `${int(us / 1000)} ms` : `${(us / 1000).toPrecision(3)} ms`;
const kib = (bytes: number) => `${(bytes / 1024).toFixed(1)} KiB`;
const mib = (bytes: number) => `${(bytes / 1024 / 1024).toFixed(1)} MiB`;
const r = (run: ScenarioRun) => run.result;
const pct = (v: number | null | undefined) => v == null ? "-" : `${v.toFixed(1)}%`;

/** Per connection growth of the broker's resident memory while the idle connections were open. */
export function rssPerConnection(run: ScenarioRun): number | null {
  const connected = run.result?.connected;
  if (!connected || run.rssReady == null || run.rssBefore == null) return null;
  return (run.rssReady - run.rssBefore) / connected;
}

/** The headline metric of each scenario. */
export const HEADLINES: Record<ScenarioName, Headline> = {
  fanin: { label: "delivered msg/s", better: "higher", format: int, value: (x) => r(x)?.rate ?? null },
  fanout: { label: "deliveries/s", better: "higher", format: int, value: (x) => r(x)?.rate ?? null },
  qos1: { label: "PUBACKs/s", better: "higher", format: int, value: (x) => r(x)?.ack_rate ?? null },
  qos1_window10: { label: "PUBACKs/s", better: "higher", format: int, value: (x) => r(x)?.ack_rate ?? null },
  qos1_persistent: {
    label: "PUBACKs/s",
    better: "higher",
    format: int,
    value: (x) => r(x)?.ack_rate ?? null,
  },
  latency: { label: "p99 latency", better: "lower", format: ms, value: (x) => r(x)?.p99_us ?? null },
  idle: { label: "RSS per connection", better: "lower", format: kib, value: rssPerConnection },
  retained: {
    label: "time to receive all",
    better: "lower",
    format: (v) => ms(v * 1000),
    value: (x) => r(x)?.retained_ms ?? null,
  },
  p2p: { label: "p99 latency", better: "lower", format: ms, value: (x) => r(x)?.p99_us ?? null },
  fanout_1k: { label: "p99 latency", better: "lower", format: ms, value: (x) => r(x)?.p99_us ?? null },
  shared: { label: "p99 latency", better: "lower", format: ms, value: (x) => r(x)?.p99_us ?? null },
  conn: {
    label: "p99 CONNECT->CONNACK",
    better: "lower",
    format: ms,
    value: (x) => r(x)?.connect_p99_us ?? null,
  },
};

/**
 * A broker may acknowledge QoS 1 messages that it then drops (Mosquitto 2.0.11 does, see the `lost`
 * column), so the rate of messages both acknowledged and delivered is shown too.
 */
const DELIVERED: Headline = {
  label: "delivered msg/s",
  better: "higher",
  format: int,
  value: (x) => r(x)?.rate ?? null,
};
/**
 * A second summary row where the headline alone misleads: delivered messages beside PUBACKs (above), and the
 * broker's residence from a packet capture beside the latency scenario's end-to-end p99, which includes
 * the load generator's own tail (a Deno program). Left out of a report in which no run has a value.
 */
export const SECOND_ROWS: Partial<Record<ScenarioName, Headline>> = {
  qos1: DELIVERED,
  qos1_persistent: DELIVERED,
  latency: {
    label: "broker residence p99, from a packet capture",
    better: "lower",
    format: ms,
    value: (x) => x.residence?.p99Us ?? null,
  },
};

/** `ours / mosquitto` with two decimals, or "n/a". */
export function ratio(ours: number | null, mosquitto: number | null): string {
  if (ours === null || mosquitto === null || mosquitto === 0) return "n/a";
  return `${(ours / mosquitto).toFixed(2)}x`;
}

function cell(run: ScenarioRun | undefined, h: Headline): string {
  if (run === undefined) return "-";
  if (run.status !== "ok") return run.status;
  const v = h.value(run);
  const lossNote = run.result && run.result.lost > 0 ? ` (lost ${int(run.result.lost)})` : "";
  return v === null ? "n/a" : `${h.format(v)}${lossNote}`;
}

/** Renders the whole report. */
export function renderReport(meta: ReportMeta, runs: ScenarioRun[]): string {
  const find = (s: ScenarioName, b: BrokerName) => runs.find((x) => x.scenario === s && x.broker === b);
  const scenarios = SCENARIO_NAMES.filter((s) => runs.some((x) => x.scenario === s));
  const ours = meta.brokers.filter((b) => b.startsWith("ours"));
  const out: string[] = [];
  out.push("# Benchmarks: ours vs Mosquitto and Aedes", "");
  out.push(
    `Generated ${meta.date} by \`${meta.command}\`${
      meta.quick ? " (quick mode: short subset, scaled down)" : ""
    }` +
      ` in ${Math.round(meta.elapsedS)} s. Regenerate with the same command; the file is overwritten.`,
    "",
    "What each optimisation changed, with its before and after numbers and commands, is kept in " +
      "[performance_log.md](performance_log.md), which this command does not touch.",
    "",
  );
  out.push("## Machine and versions", "");
  out.push(`- CPU: ${meta.machine.cpuModel}, ${meta.machine.cores} cores; ${meta.machine.memoryGiB} GiB RAM`);
  out.push(`- Kernel: Linux ${meta.machine.kernel}`);
  out.push(`- Placement: ${meta.pinning}`);
  out.push(
    `- 1-minute load average before / after: ${meta.loadBefore ?? "?"} / ${meta.loadAfter ?? "?"}` +
      " (anything well above 2 means other work shared the cores and the numbers are noisy)",
  );
  out.push(
    `- CPU steal over the whole run: ${pct(meta.stealPercent)} of all CPU time (from /proc/stat: time the` +
      " hypervisor gave this VM's cores to someone else; it lands as millisecond stalls in the p99 and" +
      " p99.9 columns of every broker alike, per run in the `steal` column)",
  );
  for (const [k, v] of Object.entries(meta.versions)) out.push(`- ${k}: ${v}`);
  out.push("");

  out.push("## Summary", "");
  const header = ["scenario", "metric", ...meta.brokers.map((b) => BROKER_LABELS[b])];
  if (meta.brokers.includes("mosquitto")) header.push(...ours.map((b) => `${BROKER_LABELS[b]} / Mosquitto`));
  out.push(`| ${header.join(" | ")} |`, `|${header.map(() => " --- ").join("|")}|`);
  for (const s of scenarios) {
    const second = SECOND_ROWS[s];
    const hasSecond = second !== undefined &&
      runs.some((x) => x.scenario === s && x.status === "ok" && second.value(x) !== null);
    for (const h of hasSecond ? [HEADLINES[s], second] : [HEADLINES[s]]) {
      const row = [
        `\`${s}\``,
        `${h.label} (${h.better} is better)`,
        ...meta.brokers.map((b) => cell(find(s, b), h)),
      ];
      if (meta.brokers.includes("mosquitto")) {
        const m = find(s, "mosquitto");
        const mv = m?.status === "ok" ? h.value(m) : null;
        for (const b of ours) {
          const o = find(s, b);
          row.push(ratio(o?.status === "ok" ? h.value(o) : null, mv));
        }
      }
      out.push(`| ${row.join(" | ")} |`);
    }
  }
  out.push("", 'A ratio above 1 is better for "higher" metrics, below 1 for "lower" ones.', "");

  out.push("## Scenarios", "");
  for (const s of scenarios) {
    out.push(`### \`${s}\`: ${SCENARIOS[s].description}`, "");
    if (meta.quick) {
      out.push("Quick mode: counts and durations scaled down, see the load generator line below.", "");
    }
    const cols = [
      "broker",
      "sent",
      "received",
      "rate/s",
      "acks/s",
      "lost",
      "dup",
      "reordered",
      "p50",
      "p99",
      "p99.9",
      "broker CPU",
      "broker peak RSS",
      "steal",
      "notes",
    ];
    out.push(`| ${cols.join(" | ")} |`, `|${cols.map(() => " --- ").join("|")}|`);
    for (const b of meta.brokers) {
      const run = find(s, b);
      if (run === undefined) continue;
      const res = run.result;
      // Connection-only scenarios (idle, conn) move no messages: dashes, not zeros.
      const msgs = res !== undefined && res.publishers + res.subscribers > 0 ? res : undefined;
      const lat = (v: number | null | undefined) => v == null ? "-" : ms(v);
      const notes: string[] = [];
      if (run.note) notes.push(run.note);
      if (res?.connections != null) {
        notes.push(
          `${int(res.connected ?? 0)}/${int(res.connections)} connected at ${int(res.connect_rate ?? 0)}/s`,
        );
        if (res.connect_p50_us != null) {
          notes.push(`connect p50 ${ms(res.connect_p50_us)}, p99 ${ms(res.connect_p99_us ?? 0)}`);
        }
      }
      const perConn = rssPerConnection(run);
      if (perConn !== null) notes.push(`${kib(perConn)} RSS per connection`);
      if (run.residence !== undefined) {
        notes.push(
          `broker residence p50 ${ms(run.residence.p50Us)}, p99 ${ms(run.residence.p99Us)} ` +
            `(${int(run.residence.deliveries)} deliveries in a packet capture)`,
        );
      }
      if (res?.load_ms != null) notes.push(`stored in ${int(res.load_ms)} ms`);
      if (res?.retained_ms != null) notes.push(`all received ${int(res.retained_ms)} ms after SUBSCRIBE`);
      if (res && res.disconnects > 0) notes.push(`${res.disconnects} connections closed by the broker`);
      if (res && res.errors.length > 0) notes.push(res.errors.join("; "));
      out.push(`| ${
        [
          BROKER_LABELS[b] + (run.status === "ok" ? "" : ` (${run.status})`),
          msgs ? int(msgs.sent) : "-",
          msgs ? int(msgs.received) : "-",
          msgs ? int(msgs.rate) : "-",
          msgs?.ack_rate != null ? int(msgs.ack_rate) : "-",
          msgs ? int(msgs.lost) : "-",
          msgs ? int(msgs.duplicates) : "-",
          msgs?.reordered != null ? int(msgs.reordered) : "-",
          lat(res?.p50_us),
          lat(res?.p99_us),
          lat(res?.p999_us),
          run.cpuPercent != null ? `${run.cpuPercent}%` : "-",
          run.peakRss != null ? mib(run.peakRss) : "-",
          pct(run.stealPercent),
          notes.join("; ").replaceAll("|", "\\|") || "",
        ].join(" | ")
      } |`);
    }
    const args = runs.find((x) => x.scenario === s)?.loadgenArgs ?? [];
    out.push("", `Load generator: \`deno run -A scripts/bench/loadgen.ts ${args.join(" ")}\``, "");
  }

  out.push("## Method", "");
  out.push(
    "- Each (scenario, broker) pair gets a fresh broker process on a fresh port and temporary directory;" +
      " brokers are compared scenario by scenario, so they ran minutes apart at most.",
    "- The load generator (scripts/bench/loadgen.ts) is one Deno process with raw sockets (Nagle off)," +
      " the project codec, batched writes and a reused read buffer. Each payload starts with a stamp" +
      " (run tag, publisher, sequence number, send time), so loss, duplicates, order and latency are" +
      " measured at the subscribers. Latency is send-to-receive inside one process.",
    "- Saturating QoS 0 scenarios are closed-loop: at most 4,000 deliveries in flight for the run, so" +
      " `rate` is what the broker sustains and p50/p99 there mostly reflect that window (window / rate);" +
      " use `latency` for latency. QoS 1 scenarios keep a window of unacknowledged PUBLISH per publisher" +
      " and count messages never delivered.",
    "- Paced scenarios (latency, p2p, fanout_1k, shared) publish for one warm-up second before the measured" +
      " duration, for every broker alike: those messages count for loss, duplicates and order but not for" +
      " the latency percentiles (a JIT-compiled broker is still compiling its hot path then; a broker that" +
      " runs for days is not).",
    "- Broker residence (latency scenario, when `tcpdump` can run as root): the run is captured on" +
      " loopback from the load generator's core, and for every PUBLISH the broker sent, the kernel" +
      " timestamp of the packet that brought it in (matched by the payload's stamp) is subtracted from that" +
      " of the packet that took it out (scripts/bench/residence.ts). It is the broker's own share of the" +
      " latency: the load generator's tail, and the bursts its pacer sends (~12 messages every ~2.4 ms," +
      " stamped alike), are out of it.",
    "- Mosquitto writes every packet with a send() of its own, so it runs each scenario with whichever" +
      " `set_tcp_nodelay` is faster there: Nagle on (its default) in the saturating ones, off where round" +
      " trips or latency are measured (the run's note says which). Ours and Aedes always run with Nagle off.",
    "- Broker CPU is utime + stime from /proc/PID/stat over the load generator's run (100% = one core);" +
      " peak RSS is VmRSS sampled every 200 ms. Idle RSS per connection is (VmRSS with all connections" +
      " open - VmRSS before) / connections.",
    "- The Open MQTT Benchmark Suite scenarios (p2p, fanout_1k, shared, conn) keep their shapes" +
      " (client counts, QoS 1, 16-byte payloads, keep-alive 300, clean session) but are scaled in rate" +
      " and duration so that the whole comparison stays under 15 minutes.",
    "- `unsupported`: the broker lacks the feature (Aedes has no `$share` shared subscriptions and no" +
      " MQTT 5; the Deno floor has no sessions or retained messages, and its 64 KiB read buffer per" +
      " connection is not meant for the idle scenario)." +
      " `skipped`: the time budget ran out.",
    "- The Deno floor (scripts/bench/floor_forwarder.ts) is not a broker: under two hundred lines that copy" +
      " each PUBLISH to the connections subscribed to its exact topic, to any wildcard and to the next" +
      " member of a `$share` group, and acknowledge QoS 1 (MQTT 3.1.1 or 5.0 framing), with the V8 flags and socket handling of ours. It shows what Deno and this machine cost by" +
      " themselves, so the rest of a gap to Mosquitto is the broker's.",
    "",
  );
  out.push("## Settings", "");
  for (const [title, text] of Object.entries(meta.settings)) {
    out.push(`${title}:`, "", "```", text.trimEnd(), "```", "");
  }
  out.push("<details><summary>Raw results (JSON)</summary>", "", "```json");
  out.push(
    JSON.stringify(
      runs.map((x) => ({
        scenario: x.scenario,
        broker: x.broker,
        status: x.status,
        note: x.note,
        cpu_percent: x.cpuPercent,
        peak_rss: x.peakRss,
        steal_percent: x.stealPercent,
        rss_before: x.rssBefore,
        rss_ready: x.rssReady,
        result: x.result,
      })),
      null,
      1,
    ),
  );
  out.push("```", "", "</details>", "");
  return out.join("\n");
}
