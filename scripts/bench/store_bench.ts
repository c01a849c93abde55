/**
 * Store benchmark: `deno run -A scripts/bench/store_bench.ts [--quick]`
 *
 * (a) outbound churn: outbound.put then outbound.delete per message, the QoS 1 in-flight pattern,
 *     with the delete in a later batch (PUBACK after the commit) or in the same batch (collapsed);
 * (b) restart: 100,000 retained messages and 10,000 sessions written, then the time of load() after a
 *     reopen.
 *
 * Works in a temp directory that is removed at the end. `--quick` divides the sizes by 10.
 *
 * @module
 */

import { KvStore } from "../../src/store/kv.ts";
import { MemoryStore } from "../../src/store/memory.ts";
import type { OutboundRecord, Store } from "../../src/store/store.ts";

const quick = Deno.args.includes("--quick");
const scale = quick ? 10 : 1;
const payload = new Uint8Array(100).fill(0x61);

function record(clientId: string, seq: number): OutboundRecord {
  return {
    clientId,
    seq,
    state: "publish",
    packetId: (seq % 65535) + 1,
    message: { topic: "bench/churn", payload, qos: 1, retain: false, receivedAt: Date.now() },
  };
}

interface ChurnResult {
  store: string;
  mode: string;
  batch: number;
  messages: number;
  seconds: number;
  commits: number;
  mutations: number;
  meanCommitMs: number;
}

/**
 * `messages` in-flight records, `batch` per flush. "later": puts flushed, then deletes flushed (two
 * commits per batch). "same": put and delete in one batch (the PUBACK arrived before the commit).
 */
async function churn(store: Store, name: string, mode: "later" | "same", batch: number, messages: number) {
  const commits0 = store.stats.commits;
  const mutations0 = store.stats.mutations;
  store.stats.latencies.length = 0;
  const started = performance.now();
  for (let base = 0; base < messages; base += batch) {
    for (let i = base; i < base + batch; i++) store.apply({ op: "outbound.put", record: record("bench", i) });
    if (mode === "later") await store.flush();
    for (let i = base; i < base + batch; i++) {
      store.apply({ op: "outbound.delete", clientId: "bench", seq: i });
    }
    await store.flush();
  }
  const seconds = (performance.now() - started) / 1000;
  const lat = store.stats.latencies;
  const result: ChurnResult = {
    store: name,
    mode,
    batch,
    messages,
    seconds,
    commits: store.stats.commits - commits0,
    mutations: store.stats.mutations - mutations0,
    meanCommitMs: lat.length ? (lat.reduce((a, b) => a + b, 0) / lat.length) * 1000 : 0,
  };
  return result;
}

function fmt(n: number, digits = 0): string {
  return n.toLocaleString("en-US", { maximumFractionDigits: digits, minimumFractionDigits: digits });
}

async function dirSize(dir: string): Promise<number> {
  let total = 0;
  for await (const e of Deno.readDir(dir)) {
    if (e.isFile) total += (await Deno.stat(`${dir}/${e.name}`)).size;
  }
  return total;
}

const dir = await Deno.makeTempDir({ prefix: "store_bench_" });
try {
  // (a) churn
  console.log("## (a) outbound.put + outbound.delete churn (100-byte payloads)\n");
  console.log("| store | delete arrives | batch | messages | msg/s | commits | mutations | mean commit ms |");
  console.log("| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |");
  const kv = new KvStore({ path: `${dir}/churn/mqtt.db` });
  await kv.open();
  const memory = new MemoryStore();
  await memory.open();
  const runs: [Store, string, "later" | "same", number, number][] = [
    [kv, "kv", "later", 1, 2_000 / scale],
    [kv, "kv", "later", 10, 20_000 / scale],
    [kv, "kv", "later", 100, 100_000 / scale],
    [kv, "kv", "later", 1000, 200_000 / scale],
    [kv, "kv", "same", 1, 20_000 / scale],
    [kv, "kv", "same", 100, 200_000 / scale],
    [memory, "memory", "later", 100, 200_000 / scale],
  ];
  for (const [store, name, mode, batch, messages] of runs) {
    const r = await churn(store, name, mode, batch, messages);
    console.log(
      `| ${r.store} | ${r.mode === "later" ? "next batch" : "same batch"} | ${r.batch} | ${
        fmt(r.messages)
      } | ` +
        `${fmt(r.messages / r.seconds)} | ${fmt(r.commits)} | ${fmt(r.mutations)} | ${
          fmt(r.meanCommitMs, 2)
        } |`,
    );
  }
  await kv.close();
  await memory.close();

  // (b) restart with many retained messages and sessions
  const retainedCount = 100_000 / scale;
  const sessionCount = 10_000 / scale;
  const path = `${dir}/load/mqtt.db`;
  const writer = new KvStore({ path });
  await writer.open();
  let started = performance.now();
  const retainedPayload = new Uint8Array(64).fill(0x62);
  for (let i = 0; i < retainedCount; i++) {
    writer.apply({
      op: "retained.put",
      message: {
        topic: `bench/retained/${i % 100}/${i}`,
        payload: retainedPayload,
        qos: 1,
        retain: true,
        receivedAt: Date.now(),
      },
    });
    if (i % 5000 === 4999) await writer.flush();
  }
  for (let i = 0; i < sessionCount; i++) {
    writer.apply({
      op: "session.put",
      session: {
        clientId: `bench-client-${i}`,
        protocolVersion: 5,
        expiryInterval: 3600,
        disconnectedAt: Date.now(),
        subscriptions: [
          { filter: `bench/${i}/#`, qos: 1, noLocal: false, retainAsPublished: false, retainHandling: 0 },
          { filter: "bench/all", qos: 0, noLocal: false, retainAsPublished: false, retainHandling: 0 },
        ],
      },
    });
  }
  await writer.flush();
  const writeSeconds = (performance.now() - started) / 1000;
  const writeCommits = writer.stats.commits;
  await writer.close();
  const size = await dirSize(`${dir}/load`);

  const reader = new KvStore({ path });
  started = performance.now();
  await reader.open();
  const openMs = performance.now() - started;
  started = performance.now();
  const state = await reader.load();
  const loadSeconds = (performance.now() - started) / 1000;
  await reader.close();
  if (state.retained.length !== retainedCount || state.sessions.length !== sessionCount) {
    throw new Error(`load returned ${state.retained.length} retained / ${state.sessions.length} sessions`);
  }

  console.log(`\n## (b) restart: ${fmt(retainedCount)} retained + ${fmt(sessionCount)} sessions\n`);
  console.log("| step | result |");
  console.log("| --- | ---: |");
  console.log(`| write (apply + flush) | ${fmt(writeSeconds, 2)} s in ${fmt(writeCommits)} commits |`);
  console.log(`| database size | ${fmt(size / 1024 / 1024, 1)} MiB |`);
  console.log(`| open() | ${fmt(openMs, 1)} ms |`);
  console.log(
    `| load() | ${fmt(loadSeconds, 2)} s (${fmt((retainedCount + sessionCount) / loadSeconds)} records/s) |`,
  );
} finally {
  await Deno.remove(dir, { recursive: true });
}
