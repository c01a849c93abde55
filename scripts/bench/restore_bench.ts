/**
 * Start-up time with a full store: fills a Deno KV database through a running broker (queued QoS 1
 * messages of offline persistent 3.1.1 sessions, and retained messages), then restarts the broker on it
 * several times and reports the `store restored` line of each start: what was restored and in how many ms.
 *
 *   deno run -A scripts/bench/restore_bench.ts [--queued 200000] [--sessions 4] [--retained 0] [--restarts 3]
 *
 * `--queued` is per session. Loopback only; the database lives in a temporary directory removed at the end.
 *
 * @module
 */

import { BenchClient } from "./client.ts";
import { encode } from "../../src/mqtt/encode.ts";
import { PacketType } from "../../src/mqtt/types.ts";

const ROOT = new URL("../../", import.meta.url).pathname;
/** Unacknowledged PUBLISHes the filling publisher keeps outstanding. */
const WINDOW = 500;

interface Options {
  queued: number;
  sessions: number;
  retained: number;
  restarts: number;
}

function parseArgs(args: string[]): Options {
  const opts: Options = { queued: 200_000, sessions: 4, retained: 0, restarts: 3 };
  for (let i = 0; i < args.length; i += 2) {
    const key = args[i].replace(/^--/, "") as keyof Options;
    const value = Number(args[i + 1]);
    if (!(key in opts) || !Number.isInteger(value) || value < 0) {
      throw new Error(`usage: restore_bench.ts [--queued N] [--sessions N] [--retained N] [--restarts N]`);
    }
    opts[key] = value;
  }
  return opts;
}

interface Restored {
  sessions: number;
  retained: number;
  messages: number;
  ms: number;
}

interface Running {
  child: Deno.ChildProcess;
  port: number;
  restored: Restored;
}

/** Starts the broker on `dbPath` and resolves once it listens, with its `store restored` fields. */
async function startBroker(dbPath: string): Promise<Running> {
  const child = new Deno.Command(Deno.execPath(), {
    args: [
      "run",
      "--v8-flags=--max-semi-space-size=4",
      "--allow-net",
      "--allow-read",
      "--allow-write",
      "--allow-env",
      "--allow-sys",
      `${ROOT}main.ts`,
      "--port",
      "0",
      "--metrics.enabled",
      "false",
      "--storage.path",
      dbPath,
      "--server.max_queued_messages",
      "0",
      "--server.max_queued_bytes",
      "0",
      "--log.format",
      "json",
    ],
    stdin: "null",
    stdout: "null",
    stderr: "piped",
  }).spawn();
  live.add(child);
  let restored: Restored | undefined;
  let rest = "";
  const reader = child.stderr.pipeThrough(new TextDecoderStream()).getReader();
  while (true) {
    const { value, done } = await reader.read();
    if (done) throw new Error(`the broker exited before listening${restored ? "" : " and before restoring"}`);
    rest += value;
    let nl: number;
    while ((nl = rest.indexOf("\n")) >= 0) {
      const line = JSON.parse(rest.slice(0, nl));
      rest = rest.slice(nl + 1);
      if (line.msg === "store restored") restored = line;
      if (line.msg === "listening" && line.type === "mqtt") {
        // Keep draining the log so the broker never blocks on a full pipe.
        (async () => {
          while (!(await reader.read()).done) { /* discard */ }
        })().catch(() => {});
        if (restored === undefined) throw new Error("the broker listened without a `store restored` line");
        return { child, port: Number(String(line.address).split(":").pop()), restored };
      }
    }
  }
}

/** Brokers started and not yet stopped, killed if the run fails half way. */
const live = new Set<Deno.ChildProcess>();

async function stopBroker(b: Running): Promise<void> {
  live.delete(b.child);
  b.child.kill("SIGTERM");
  const status = await b.child.status;
  if (!status.success) throw new Error(`the broker exited with ${status.code} on SIGTERM`);
}

/** Publishes `count` QoS 1 messages, topic by index, keeping {@link WINDOW} unacknowledged. */
async function publishAll(port: number, count: number, topic: (i: number) => string, retain: boolean) {
  if (count === 0) return;
  const pub = await BenchClient.connect({
    host: "127.0.0.1",
    port,
    clientId: "restore-bench-pub",
    version: 4,
  });
  let acked = 0;
  let wake: (() => void) | undefined;
  pub.handlers = {
    onPacket: (p) => {
      if (p.type !== PacketType.PUBACK) return;
      acked++;
      wake?.();
    },
  };
  const payload = new Uint8Array(16);
  let packetId = 1;
  for (let sent = 0; sent < count;) {
    while (sent < count && sent - acked < WINDOW) {
      await pub.write(encode({
        type: PacketType.PUBLISH,
        topic: topic(sent),
        qos: 1,
        retain,
        dup: false,
        packetId,
        payload,
      }, 4));
      packetId = packetId === 0xffff ? 1 : packetId + 1;
      sent++;
    }
    await new Promise<void>((resolve) => wake = resolve);
  }
  while (acked < count) await new Promise<void>((resolve) => wake = resolve);
  await pub.close();
}

async function main(): Promise<void> {
  const opts = parseArgs(Deno.args);
  const dir = await Deno.makeTempDir({ prefix: "restore-bench-" });
  const dbPath = `${dir}/mqtt.db`;
  try {
    let b = await startBroker(dbPath);
    const filled = performance.now();
    for (let s = 0; s < opts.sessions; s++) {
      const sub = await BenchClient.connect({
        host: "127.0.0.1",
        port: b.port,
        clientId: `restore-bench-sub-${s}`,
        version: 4,
        persistent: true,
      });
      await sub.subscribe(`q/${s}/#`, 1);
      await sub.close();
    }
    const sessions = opts.sessions;
    await publishAll(b.port, opts.queued * sessions, (i) => `q/${i % sessions}/t`, false);
    await publishAll(b.port, opts.retained, (i) => `r/${i % 1000}/${Math.floor(i / 1000)}/value`, true);
    console.log(
      `filled ${opts.queued * sessions} queued (${sessions} sessions) and ${opts.retained} retained in ${
        Math.round(performance.now() - filled)
      } ms`,
    );
    await stopBroker(b);
    for (let r = 1; r <= opts.restarts; r++) {
      b = await startBroker(dbPath);
      const { sessions: n, retained, messages, ms } = b.restored;
      const expected = messages === opts.queued * sessions && retained === opts.retained && n === sessions;
      console.log(
        `restart ${r}: ${ms} ms for ${n} sessions, ${messages} queued, ${retained} retained${
          expected ? "" : " (NOT what was stored)"
        }`,
      );
      await stopBroker(b);
      if (!expected) Deno.exitCode = 1;
    }
  } finally {
    for (const child of live) {
      child.kill("SIGKILL");
      await child.status;
    }
    await Deno.remove(dir, { recursive: true });
  }
}

if (import.meta.main) await main();
