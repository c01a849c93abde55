import assert from "node:assert/strict";
import { fileURLToPath } from "node:url";
import { KvStore } from "../../src/store/kv.ts";
import { encodeChunkHeader, encodeRetained, TAG_CHUNKED } from "../../src/store/record_codec.ts";
import { StoreError } from "../../src/store/store.ts";
import { assertBytes, message, pattern, queued, session, source, storeSuite } from "./store_suite.ts";

const CHILD = fileURLToPath(new URL("./kv_child.ts", import.meta.url));

/** A temp dir with a database path two levels down (open() must create the directories). */
async function tempDb(): Promise<{ path: string; cleanup: () => Promise<void> }> {
  const dir = await Deno.makeTempDir({ prefix: "kv_store_test_" });
  return { path: `${dir}/data/db/mqtt.db`, cleanup: () => Deno.remove(dir, { recursive: true }) };
}

storeSuite({
  name: "KvStore",
  setup: async () => {
    const { path, cleanup } = await tempDb();
    return {
      store: new KvStore({ path }),
      reopen: async (s) => {
        await s.close();
        const next = new KvStore({ path });
        await next.open();
        return next;
      },
      cleanup,
    };
  },
});

/** Opens a fresh KvStore on a temp path, runs `body`, closes and removes everything. */
async function withKv(body: (store: KvStore, path: string) => Promise<KvStore | void>): Promise<void> {
  const { path, cleanup } = await tempDb();
  let store = new KvStore({ path });
  try {
    await store.open();
    store = (await body(store, path)) ?? store;
  } finally {
    await store.close().catch(() => {});
    await cleanup();
  }
}

/** Reads every key/value of the database file directly (the store must be closed). */
async function rawEntries(path: string): Promise<Deno.KvEntry<unknown>[]> {
  const kv = await Deno.openKv(path);
  try {
    return await Array.fromAsync(kv.list({ prefix: [] }));
  } finally {
    kv.close();
  }
}

async function reopen(store: KvStore, path: string): Promise<KvStore> {
  await store.close();
  const next = new KvStore({ path });
  await next.open();
  return next;
}

async function* lines(stream: ReadableStream<Uint8Array>): AsyncGenerator<string> {
  let buf = "";
  for await (const chunk of stream.pipeThrough(new TextDecoderStream())) {
    buf += chunk;
    for (let i = buf.indexOf("\n"); i >= 0; i = buf.indexOf("\n")) {
      yield buf.slice(0, i);
      buf = buf.slice(i + 1);
    }
  }
}

function spawnChild(mode: "hold" | "crash", path: string): Deno.ChildProcess {
  return new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", "--unstable-kv", CHILD, mode, path],
    stdout: "piped",
    stderr: "inherit",
  }).spawn();
}

Deno.test("KvStore: records are split into chunk sub-keys and long names are hashed", async () => {
  await withKv(async (store, path) => {
    const longTopic = "x/".repeat(2500);
    store.apply({ op: "retained.put", message: message("big", pattern(200 * 1024, 1)) });
    store.apply({ op: "retained.put", message: message(longTopic, "long") });
    store.apply({ op: "session.put", session: session("c".repeat(129)) });
    store.apply({ op: "session.put", session: session("c".repeat(128)) });
    await store.flush();
    await store.close();
    const entries = await rawEntries(path);
    const big = entries.filter((e) => e.key[0] === "r" && e.key[1] === "big");
    // 200 KiB in 60 KiB chunks: a header and four chunks, every value raw bytes within the 64 KiB limit.
    assert.deepEqual(big.map((e) => e.key.slice(2)), [[], [0], [1], [2], [3]]);
    assert.equal((big[0].value as Uint8Array)[0], TAG_CHUNKED);
    for (const e of entries) {
      assert.ok(e.value instanceof Uint8Array, `value at ${String(e.key)} is raw bytes`);
      assert.ok(e.value.length <= 65536);
    }
    const retainedParts = entries.filter((e) => e.key[0] === "r" && e.key.length === 2).map((e) => e.key[1]);
    assert.equal(retainedParts.length, 2);
    assert.ok(retainedParts.some((p) => p instanceof Uint8Array && p.length === 32), "long topic hashed");
    const sessionParts = entries.filter((e) => e.key[0] === "s").map((e) => e.key[1]);
    assert.ok(sessionParts.includes("c".repeat(128)), "128-byte client id kept as is");
    assert.ok(sessionParts.some((p) => p instanceof Uint8Array), "129-byte client id hashed");
    store = new KvStore({ path });
    await store.open();
    return store;
  });
});

Deno.test("KvStore: replacing or deleting a chunked record removes its chunk keys", async () => {
  await withKv(async (store, path) => {
    store.apply({ op: "retained.put", message: message("t", pattern(250 * 1024, 1)) });
    store.apply({ op: "retained.put", message: message("u", pattern(200 * 1024, 2)) });
    store.apply({ op: "outbound.put", record: queued("c", 1, pattern(100 * 1024, 3)) });
    await store.flush();
    store.apply({ op: "retained.put", message: message("t", pattern(70 * 1024, 4)) }); // 5 chunks -> 2
    store.apply({ op: "retained.put", message: message("u", "small") }); // 4 chunks -> inline
    store.apply({ op: "outbound.delete", clientId: "c", seq: 1 });
    await store.close(); // no load(): the raw keys are what this store wrote
    const keys = (await rawEntries(path)).map((e) => JSON.stringify(e.key));
    assert.deepEqual(keys, ['["r","t"]', '["r","t",0]', '["r","t",1]', '["r","u"]']);

    // After a reopen, load() tells the store which records are chunked.
    store = new KvStore({ path });
    await store.open();
    await store.load();
    store.apply({ op: "retained.delete", topic: "t" });
    await store.close();
    assert.deepEqual((await rawEntries(path)).map((e) => JSON.stringify(e.key)), ['["r","u"]']);
    store = new KvStore({ path });
    await store.open();
    return store;
  });
});

/** Wraps a Deno.Kv so every atomic commit's mutations (key, set or delete) are recorded. */
function recordingKv(kv: Deno.Kv, commits: { key: Deno.KvKey; set: boolean }[][]): Deno.Kv {
  return new Proxy(kv, {
    get(target, prop) {
      if (prop === "atomic") {
        return () => {
          const atomic = target.atomic();
          const muts: { key: Deno.KvKey; set: boolean }[] = [];
          return {
            set(key: Deno.KvKey, value: unknown) {
              muts.push({ key, set: true });
              atomic.set(key, value);
              return this;
            },
            delete(key: Deno.KvKey) {
              muts.push({ key, set: false });
              atomic.delete(key);
              return this;
            },
            async commit() {
              const r = await atomic.commit();
              commits.push(muts);
              return r;
            },
          };
        };
      }
      const v = Reflect.get(target, prop, target);
      return typeof v === "function" ? v.bind(target) : v;
    },
  });
}

Deno.test("KvStore: a record's chunks and header share one atomic commit, and commits stay within limits", async () => {
  const { path, cleanup } = await tempDb();
  const commits: { key: Deno.KvKey; set: boolean }[][] = [];
  const store = new KvStore({ path, openKv: async (p) => recordingKv(await Deno.openKv(p), commits) });
  try {
    await store.open();
    // Small records interleaved with chunked ones, so a naive packer would cut through a chunked record.
    for (let i = 0; i < 40; i++) {
      store.apply({
        op: "retained.put",
        message: message(`t${i}`, i % 2 === 0 ? pattern(100 * 1024, i) : "small"),
      });
      for (let j = 0; j < 30; j++) store.apply({ op: "incoming.put", clientId: `c${i}`, packetId: j + 1 });
    }
    await store.flush();
    assert.ok(commits.length >= 3, `commits ${commits.length}`);
    assert.equal(commits.flat().length, 40 + 20 * 2 + 1200);
    for (const muts of commits) assert.ok(muts.length <= 1000);
    for (let i = 0; i < 40; i += 2) {
      const mine = (x: { key: Deno.KvKey }) => x.key[0] === "r" && x.key[1] === `t${i}`;
      const holders = commits.filter((m) => m.some(mine));
      assert.equal(holders.length, 1, `record ${i}: header and 2 chunks in one commit`);
      assert.equal(holders[0].filter(mine).length, 3);
    }
  } finally {
    await store.close();
    await cleanup();
  }
});

Deno.test("KvStore: put and delete of one new key in a batch cost no commit; repeated puts cost one", async () => {
  await withKv(async (store) => {
    store.apply({ op: "outbound.put", record: queued("c", 1) });
    store.apply({ op: "outbound.delete", clientId: "c", seq: 1 });
    store.apply({ op: "incoming.put", clientId: "c", packetId: 1 });
    store.apply({ op: "incoming.delete", clientId: "c", packetId: 1 });
    await store.flush();
    assert.deepEqual([store.stats.commits, store.stats.mutations], [0, 0]);

    for (let i = 0; i < 5; i++) store.apply({ op: "session.put", session: session("c", [`f${i}`]) });
    await store.flush();
    assert.deepEqual([store.stats.commits, store.stats.mutations], [1, 1]);

    // A committed key: its delete must be written.
    store.apply({ op: "outbound.put", record: queued("c", 2) });
    await store.flush();
    store.apply({ op: "outbound.delete", clientId: "c", seq: 2 });
    await store.flush();
    assert.equal(store.stats.mutations, 3);

    // After a committed session.delete, the client's old keys are known to be gone.
    store.apply({ op: "outbound.put", record: queued("c", 5) });
    await store.flush();
    store.apply({ op: "session.delete", clientId: "c" });
    await store.flush();
    const before = store.stats.mutations;
    store.apply({ op: "outbound.put", record: queued("c", 5) });
    store.apply({ op: "outbound.delete", clientId: "c", seq: 5 });
    await store.flush();
    assert.equal(store.stats.mutations, before);
  });
});

Deno.test("KvStore: a small batch right behind a commit gathers what arrives meanwhile into one commit", async () => {
  await withKv(async (store) => {
    store.apply({ op: "session.put", session: session("a", ["f"]) });
    const first = store.flush();
    await Promise.resolve(); // the first batch is committing now
    store.apply({ op: "session.put", session: session("b", ["f"]) }); // waits behind that commit
    await first;
    // Right behind a commit and small, the second batch is still open: this op joins it.
    store.apply({ op: "session.put", session: session("c", ["f"]) });
    await store.flush();
    assert.deepEqual([store.stats.commits, store.stats.mutations], [2, 3]);
  });
});

Deno.test("KvStore: before load() on an existing database, a delete is never dropped", async () => {
  await withKv(async (store, path) => {
    store.apply({ op: "outbound.put", record: queued("c", 1) });
    await store.flush();
    store = await reopen(store, path);
    // Without load() the store cannot know seq 1 exists (in its own key or in a pack): put + delete must
    // still write the delete, plus a tombstone for the pack it may sit in.
    store.apply({ op: "outbound.put", record: queued("c", 1) });
    store.apply({ op: "outbound.delete", clientId: "c", seq: 1 });
    await store.flush();
    assert.equal(store.stats.mutations, 2);
    store = await reopen(store, path);
    assert.deepEqual((await store.load()).outbound, []);
    // After load() it knows: a new key written and deleted in one batch costs nothing again.
    store.apply({ op: "outbound.put", record: queued("c", 7) });
    store.apply({ op: "outbound.delete", clientId: "c", seq: 7 });
    await store.flush();
    assert.equal(store.stats.mutations, 0);
    return store;
  });
});

Deno.test("KvStore: a big batch is split into atomics within every Deno KV limit", async () => {
  await withKv(async (store, path) => {
    // 1000 puts whose keys are ~150 bytes: over the 80 KiB key budget of one atomic.
    const id = "k".repeat(128);
    for (let id2 = 1; id2 <= 1000; id2++) store.apply({ op: "incoming.put", clientId: id, packetId: id2 });
    await store.flush();
    assert.equal(store.stats.mutations, 1000);
    assert.ok(store.stats.commits >= 2, `commits ${store.stats.commits}`);

    const before = store.stats.commits;
    for (let seq = 1; seq <= 2500; seq++) store.apply({ op: "incoming.put", clientId: "c", packetId: seq });
    await store.flush();
    assert.ok(
      store.stats.commits - before >= 3,
      `2500 mutations need 3 atomics, got ${store.stats.commits - before}`,
    );

    const mid = store.stats.commits;
    for (let i = 0; i < 30; i++) {
      store.apply({ op: "retained.put", message: message(`b/${i}`, pattern(40 * 1024, i)) });
    }
    await store.flush();
    assert.ok(store.stats.commits - mid >= 2, "1.2 MB needs two atomics");
    assert.equal(store.stats.latencies.length, store.stats.commits);
    assert.equal(store.stats.failures, 0);

    store = await reopen(store, path);
    const state = await store.load();
    assert.equal(state.incoming.length, 3500);
    assert.equal(state.retained.length, 30);
    return store;
  });
});

Deno.test("KvStore: flush() resolves only once the data is in the database file", async () => {
  await withKv(async (store, path) => {
    // Deno KV does not lock the file itself, so a second handle can look while the store holds it.
    const peek = await Deno.openKv(path);
    try {
      for (let round = 1; round <= 3; round++) {
        store.apply({ op: "retained.put", message: message(`t/${round}`, "x") });
        store.apply({ op: "incoming.put", clientId: "c", packetId: round });
        await store.flush();
        assert.ok(
          (await peek.get(["r", `t/${round}`])).versionstamp !== null,
          `retained t/${round} committed`,
        );
        assert.ok((await peek.get(["i", "c", round])).versionstamp !== null, `incoming ${round} committed`);
      }
    } finally {
      peek.close();
    }
  });
});

Deno.test("KvStore: ops applied during a commit go into the next batch", async () => {
  await withKv(async (store) => {
    store.apply({ op: "session.put", session: session("a") });
    const first = store.flush();
    await Promise.resolve(); // the scheduled commit starts
    store.apply({ op: "session.put", session: session("b") });
    store.apply({ op: "session.put", session: session("c") });
    const second = store.flush();
    assert.notEqual(first, second);
    await first;
    assert.equal(store.stats.commits, 1);
    await second;
    assert.deepEqual([store.stats.commits, store.stats.mutations], [2, 3]);
  });
});

Deno.test("KvStore: a failed commit rejects the batch's flush and counts a failure", async () => {
  const { path, cleanup } = await tempDb();
  let handle: Deno.Kv | undefined;
  const store = new KvStore({
    path,
    openKv: async (p) => handle = await Deno.openKv(p),
  });
  try {
    await store.open();
    handle!.close();
    store.apply({ op: "session.put", session: session("a") });
    await assert.rejects(store.flush(), (e: Error) => {
      assert.ok(e instanceof StoreError);
      assert.match(
        e.message,
        /storage\.path .*mqtt\.db: atomic commit 1 of 1 \(1 mutations, batch of 1 ops\) failed/,
      );
      return true;
    });
    assert.equal(store.stats.failures, 1);
    // A failed batch nobody waits for must not become an unhandled rejection (it would end the process).
    store.apply({ op: "session.put", session: session("b") });
    await new Promise((r) => setTimeout(r, 50));
    assert.equal(store.stats.failures, 2);
    await store.close();
    // The lock was released: the path opens again.
    const again = new KvStore({ path });
    await again.open();
    await again.close();
  } finally {
    await store.close().catch(() => {});
    await cleanup();
  }
});

Deno.test("KvStore: a path that cannot be opened is reported, and the lock is not kept", async () => {
  const { path, cleanup } = await tempDb();
  try {
    await Deno.mkdir(path, { recursive: true }); // a directory where the database file should be
    await assert.rejects(new KvStore({ path }).open(), (e: Error) => {
      assert.ok(e instanceof StoreError);
      assert.ok(e.message.startsWith(`cannot open storage.path ${path}: `), e.message);
      return true;
    });
    await assert.rejects(Deno.stat(`${path}.lock`), Deno.errors.NotFound);
  } finally {
    await cleanup();
  }
});

Deno.test("KvStore: close() refuses new ops and flushes what was applied before it", async () => {
  const { path, cleanup } = await tempDb();
  try {
    const store = new KvStore({ path });
    await store.open();
    store.apply({ op: "session.put", session: session("a") });
    const closing = store.close();
    assert.throws(() => store.apply({ op: "session.put", session: session("b") }), /is not open/);
    await closing;
    await assert.rejects(store.open(), /this store was closed/);
    const again = new KvStore({ path });
    await again.open();
    assert.deepEqual((await again.load()).sessions.map((s) => s.clientId), ["a"]);
    await again.close();
  } finally {
    await cleanup();
  }
});

Deno.test("KvStore: a second store on the same path in this process is refused", async () => {
  await withKv(async (_store, path) => {
    const second = new KvStore({ path });
    await assert.rejects(second.open(), {
      name: "StoreError",
      message: `storage.path ${path} is locked by another running broker (pid ${Deno.pid})`,
    });
  });
});

Deno.test("KvStore: a database held by another process is refused with its pid, then free once it dies", async () => {
  const { path, cleanup } = await tempDb();
  const child = spawnChild("hold", path);
  const guard = setTimeout(() => child.kill("SIGKILL"), 30_000);
  try {
    const out = lines(child.stdout);
    assert.equal((await out.next()).value, "ready");
    await assert.rejects(new KvStore({ path }).open(), {
      name: "StoreError",
      message: `storage.path ${path} is locked by another running broker (pid ${child.pid})`,
    });
    child.kill("SIGKILL");
    await child.status;
    await out.return(undefined);
    // The kernel dropped the lock with the process; the lock file left behind is not an obstacle.
    const store = new KvStore({ path });
    await store.open();
    await store.close();
  } finally {
    clearTimeout(guard);
    try {
      child.kill("SIGKILL");
    } catch { /* already exited */ }
    await child.status;
    await cleanup();
  }
});

Deno.test("KvStore: a leftover lock file from a dead broker is taken over and removed on close", async () => {
  const { path, cleanup } = await tempDb();
  try {
    await Deno.mkdir(path.slice(0, path.lastIndexOf("/")), { recursive: true });
    await Deno.writeTextFile(`${path}.lock`, "999999999\n");
    const store = new KvStore({ path });
    await store.open();
    assert.equal((await Deno.readTextFile(`${path}.lock`)).trim(), String(Deno.pid));
    await store.close();
    await assert.rejects(Deno.stat(`${path}.lock`), Deno.errors.NotFound);
  } finally {
    await cleanup();
  }
});

Deno.test("KvStore: every op whose flush resolved survives SIGKILL", async () => {
  const { path, cleanup } = await tempDb();
  const child = spawnChild("crash", path);
  const guard = setTimeout(() => child.kill("SIGKILL"), 60_000);
  let flushed = 0;
  try {
    for await (const line of lines(child.stdout)) {
      const m = /^flushed (\d+)$/.exec(line);
      assert.ok(m, `unexpected child output ${JSON.stringify(line)}`);
      flushed = Number(m[1]);
      if (flushed >= 150) {
        child.kill("SIGKILL"); // while it keeps applying and committing
        break;
      }
    }
    const status = await child.status;
    assert.equal(status.signal, "SIGKILL");
    assert.ok(flushed >= 150, `child flushed only ${flushed} ops`);

    const store = new KvStore({ path });
    await store.open();
    try {
      const state = await store.load();
      const seqs = new Set(state.outbound.map((r) => r.seq));
      const topics = new Set(state.retained.map((m) => m.topic));
      const ids = new Set(state.incoming.map((i) => i.packetId));
      for (let n = 1; n <= flushed; n++) {
        assert.ok(seqs.has(n), `outbound seq ${n} lost`);
        assert.ok(topics.has(`r/${n}`), `retained r/${n} lost`);
        assert.ok(ids.has(n + 1), `incoming id ${n + 1} lost`);
      }
      const rec = state.outbound.find((r) => r.seq === flushed)!;
      assert.equal(new TextDecoder().decode(rec.message!.payload), `payload ${flushed}`);
    } finally {
      await store.close();
    }
  } finally {
    clearTimeout(guard);
    try {
      child.kill("SIGKILL");
    } catch { /* already exited */ }
    await child.status;
    await cleanup();
  }
});

Deno.test("KvStore: load() drops torn chunked records and orphan chunks", async () => {
  const { path, cleanup } = await tempDb();
  try {
    let store = new KvStore({ path });
    await store.open();
    store.apply({ op: "retained.put", message: message("good", pattern(130 * 1024, 1)) });
    store.apply({ op: "retained.put", message: message("small", "s") });
    await store.close();
    // What a crash in the middle of a too-large write, or a failed commit, can leave behind.
    const kv = await Deno.openKv(path);
    const torn = encodeRetained(message("torn", pattern(100 * 1024, 2)));
    await kv.atomic()
      .set(["r", "torn"], encodeChunkHeader({ count: 2, length: torn.length, crc: 1234 }))
      .set(["r", "torn", 0], torn.subarray(0, 60 * 1024))
      .set(["r", "torn", 1], torn.subarray(60 * 1024))
      .set(["r", "small", 3], new Uint8Array(10))
      .set(["r", "good", 3], new Uint8Array(10)) // beyond the header's count of 3
      .set(["o", "ghost", 1, 0], new Uint8Array(10))
      .commit();
    kv.close();

    store = new KvStore({ path });
    await store.open();
    const state = await store.load();
    assert.deepEqual(state.retained.map((m) => m.topic).sort(), ["good", "small"]);
    assertBytes(state.retained.find((m) => m.topic === "good")?.payload, pattern(130 * 1024, 1), "good");
    await store.close();
    const keys = (await rawEntries(path)).map((e) => JSON.stringify(e.key));
    assert.deepEqual(keys, [
      '["r","good"]',
      '["r","good",0]',
      '["r","good",1]',
      '["r","good",2]',
      '["r","small"]',
    ]);
  } finally {
    await cleanup();
  }
});

Deno.test("KvStore: load() names the key of a record it cannot decode", async () => {
  const { path, cleanup } = await tempDb();
  try {
    let store = new KvStore({ path });
    await store.open();
    await store.close();
    const kv = await Deno.openKv(path);
    await kv.set(["s", "bad"], new Uint8Array([1, 200])); // a record tag, then a truncated string length
    kv.close();
    store = new KvStore({ path });
    await store.open();
    try {
      await assert.rejects(
        store.load(),
        /storage\.path .*: cannot decode the record at \["s", "bad"\]: record truncated/,
      );
    } finally {
      await store.close();
    }
  } finally {
    await cleanup();
  }
});

Deno.test("KvStore: ':memory:' opens without a lock or directory", async () => {
  const store = new KvStore({ path: ":memory:" });
  assert.equal(store.durable, false);
  await store.open();
  store.apply({ op: "retained.put", message: message("t", "x") });
  await store.flush();
  assert.deepEqual((await store.load()).retained.map((m) => m.topic), ["t"]);
  await store.close();
  await assert.rejects(Deno.stat(":memory:.lock"), Deno.errors.NotFound);
});

Deno.test("KvStore: new outbound records of one batch share a pack; deletes become tombstones", async () => {
  await withKv(async (store, path) => {
    await store.load();
    for (let seq = 1; seq <= 500; seq++) store.apply({ op: "outbound.put", record: queued("c", seq) });
    await store.flush();
    assert.ok(store.stats.mutations <= 3, `500 queued records cost ${store.stats.mutations} mutations`);
    // Acknowledge the first 400 over several batches: one tombstone write per batch, not one per message.
    const before = store.stats.mutations;
    for (let batch = 0; batch < 4; batch++) {
      for (let seq = batch * 100 + 1; seq <= batch * 100 + 100; seq++) {
        store.apply({ op: "outbound.delete", clientId: "c", seq });
      }
      await store.flush();
    }
    assert.ok(store.stats.mutations - before <= 4 * 2, `deletes cost ${store.stats.mutations - before}`);
    // A state change moves the record to its own key.
    store.apply({ op: "outbound.put", record: { clientId: "c", seq: 450, state: "pubrel", packetId: 7 } });
    await store.flush();
    store = await reopen(store, path);
    let state = await store.load();
    assert.equal(state.outbound.length, 100);
    assert.deepEqual(state.outbound.map((r) => r.seq), Array.from({ length: 100 }, (_, i) => 401 + i));
    assert.equal(state.outbound.find((r) => r.seq === 450)?.state, "pubrel");
    // Deleting the rest removes the pack and the tombstones.
    for (let seq = 401; seq <= 500; seq++) store.apply({ op: "outbound.delete", clientId: "c", seq });
    await store.flush();
    store = await reopen(store, path);
    state = await store.load();
    assert.equal(state.outbound.length, 0);
    const kv = await Deno.openKv(path);
    try {
      for (const prefix of ["p", "t", "o"]) {
        for await (const e of kv.list({ prefix: [prefix] })) {
          assert.fail(`left over key ${JSON.stringify(e.key)}`);
        }
      }
    } finally {
      kv.close();
    }
    return store;
  });
});

Deno.test("KvStore: packs over several values, deletes across a reopen, and seqs put again come back exactly", async () => {
  await withKv(async (store, path) => {
    await store.load();
    const payload = pattern(40, 1);
    const src = (seq: number) => source(seq, { msg: message("p/t", payload) });
    // 3000 records in one batch: more than one pack value (48 KiB each).
    for (let seq = 1; seq <= 3000; seq++) store.putOutbound("c", "queued", 0, src(seq));
    await store.flush();
    assert.ok(store.stats.mutations >= 3 && store.stats.mutations <= 6, `${store.stats.mutations} mutations`);
    store = await reopen(store, path);
    await store.load(); // the packs are known again from the database
    const live = new Set(Array.from({ length: 3000 }, (_, i) => i + 1));
    const before = store.stats.mutations;
    for (const from of [1, 1501]) {
      for (let seq = from; seq < from + 1500; seq += 2) {
        store.deleteOutbound("c", seq);
        live.delete(seq);
      }
      await store.flush();
    }
    assert.ok(
      store.stats.mutations - before <= 2,
      `1500 deletes cost ${store.stats.mutations - before} mutations`,
    );
    // A tombstoned seq put again must not be hidden by the tombstone list; a live one rewritten moves out.
    store.putOutbound("c", "queued", 0, src(5));
    store.putOutbound("c", "publish", 7, src(10));
    store.putOutbound("c", "queued", 0, src(1)); // out of order within the batch
    live.add(5).add(1);
    // The first packs lose their last live records: their keys go, and the tombstone list shrinks.
    for (let seq = 11; seq < 2300; seq++) {
      if (!live.delete(seq)) continue;
      store.deleteOutbound("c", seq);
    }
    await store.flush();
    store = await reopen(store, path);
    let state = await store.load();
    assert.deepEqual(state.outbound.map((r) => r.seq), [...live].sort((a, b) => a - b));
    assert.equal(state.outbound.find((r) => r.seq === 10)?.packetId, 7);
    assert.equal(state.outbound.find((r) => r.seq === 10)?.state, "publish");
    assertBytes(state.outbound.find((r) => r.seq === 3000)?.message?.payload, payload, "payload");
    for (const seq of live) store.deleteOutbound("c", seq);
    await store.flush();
    store = await reopen(store, path);
    state = await store.load();
    assert.equal(state.outbound.length, 0);
    await store.close();
    const left = (await rawEntries(path)).filter((e) => ["p", "t", "o"].includes(e.key[0] as string));
    assert.deepEqual(left.map((e) => e.key), []);
    return store;
  });
});

Deno.test("KvStore: records put and acknowledged in one batch are never written, however many", async () => {
  await withKv(async (store, path) => {
    await store.load();
    for (let seq = 1; seq <= 3000; seq++) store.putOutbound("c", "publish", seq, source(seq));
    for (let seq = 1; seq <= 2500; seq++) store.deleteOutbound("c", seq);
    store.putOutbound("c", "publish", 3, source(2600)); // rewritten after the acknowledged ones were dropped
    store.deleteOutbound("c", 2700);
    store.putOutbound("c", "queued", 0, source(3001));
    await store.flush();
    assert.equal(store.stats.mutations, 1, "one pack");
    store = await reopen(store, path);
    const state = await store.load();
    const expected = Array.from({ length: 501 }, (_, i) => 2501 + i).filter((s) => s !== 2700);
    assert.deepEqual(state.outbound.map((r) => r.seq), expected);
    assert.deepEqual(
      state.outbound.map((r) => r.packetId),
      expected.map((s) => s === 2600 ? 3 : s === 3001 ? undefined : s),
    );
    return store;
  });
});

Deno.test("KvStore: a batch cut between its atomic commits never leaves an inbound QoS 2 id without its copies", async () => {
  // One QoS 2 PUBLISH fanned out to 1,500 offline sessions: its packet id and 1,500 copies (one pack per
  // session) need two atomic commits. The process "dies" after the first one: the id must not be on disk
  // then, or the publisher's resend would be taken for a duplicate and 500 sessions would never get it.
  const { path, cleanup } = await tempDb();
  let commitsLeft = 1;
  const cut = (kv: Deno.Kv): Deno.Kv =>
    new Proxy(kv, {
      get(target, prop) {
        if (prop === "atomic") {
          return () => {
            const atomic = target.atomic();
            const wrapper = {
              set: (key: Deno.KvKey, value: unknown) => (atomic.set(key, value), wrapper),
              delete: (key: Deno.KvKey) => (atomic.delete(key), wrapper),
              commit: () => commitsLeft-- > 0 ? atomic.commit() : Promise.reject(new Error("killed")),
            };
            return wrapper;
          };
        }
        const v = Reflect.get(target, prop, target);
        return typeof v === "function" ? v.bind(target) : v;
      },
    });
  const store = new KvStore({ path, openKv: async (p) => cut(await Deno.openKv(p)) });
  try {
    await store.open();
    store.apply({ op: "incoming.put", clientId: "publisher", packetId: 7 });
    for (let i = 0; i < 1500; i++) store.apply({ op: "outbound.put", record: queued(`s${i}`, 1) });
    await assert.rejects(store.flush(), /killed/);
    await store.close().catch(() => {});
    const after = new KvStore({ path });
    await after.open();
    const state = await after.load();
    await after.close();
    assert.ok(
      state.outbound.length > 0 && state.outbound.length < 1500,
      `${state.outbound.length} copies landed`,
    );
    assert.deepEqual(state.incoming, [], "the packet id landed without all the copies");
  } finally {
    await cleanup();
  }
});

Deno.test("KvStore: load() gives back every client id and topic exactly, however they repeat or differ", async () => {
  // Restoring compares each string with the one read before it and decodes short ASCII ones itself:
  // equal lengths with other bytes, non-ASCII, the ASCII limit and past it, and runs of one string.
  const topics = [
    "sensor/a1",
    "sensor/b1",
    "sensor/b1",
    "sensor/a1",
    "küche/temp",
    "kÃche/temp",
    "温度/1",
    "b".repeat(32),
    "b".repeat(33),
    "a".repeat(64),
    "a".repeat(63) + "b",
    "a".repeat(65),
    "t/" + "x".repeat(300),
    "t/" + "x".repeat(299) + "y",
    "",
    "sensor/a1",
  ];
  const clients = ["c1", "c2", "c\u00e9", "c1"];
  await withKv(async (store, path) => {
    await store.load();
    const expected: string[] = [];
    let seq = 0;
    for (const clientId of clients) {
      store.apply({ op: "session.put", session: session(clientId) });
      for (const topic of topics) {
        seq++;
        const record = queued(clientId, seq);
        record.message!.topic = topic;
        store.apply({ op: "outbound.put", record });
        expected.push(`${clientId} ${seq} ${topic}`);
      }
    }
    for (const [i, topic] of topics.entries()) {
      if (topic !== "") {
        store.apply({ op: "retained.put", message: message(topic, `r${i}`, { retain: true }) });
      }
    }
    await store.flush();
    store = await reopen(store, path);
    const state = await store.load();
    const got = state.outbound.map((r) => `${r.clientId} ${r.seq} ${r.message?.topic}`);
    assert.deepEqual(got.toSorted(), expected.toSorted());
    const retained = new Map(state.retained.map((m) => [m.topic, new TextDecoder().decode(m.payload)]));
    for (const topic of topics) {
      if (topic !== "") assert.equal(retained.get(topic), `r${topics.lastIndexOf(topic)}`, topic);
    }
    assert.equal(retained.size, new Set(topics.filter((t) => t !== "")).size);
    return store;
  });
});
