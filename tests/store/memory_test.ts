import assert from "node:assert/strict";
import { MemoryStore } from "../../src/store/memory.ts";
import { createStore } from "../../src/store/mod.ts";
import { message, storeSuite } from "./store_suite.ts";

storeSuite({
  name: "MemoryStore",
  setup: () => {
    const store = new MemoryStore();
    return Promise.resolve({
      store,
      // The same instance: data outlives close() and open().
      reopen: async (s) => {
        await s.close();
        await s.open();
        return s;
      },
      cleanup: () => Promise.resolve(),
    });
  },
});

Deno.test("MemoryStore: is not durable and counts applied ops", async () => {
  const store = new MemoryStore();
  await store.open();
  assert.equal(store.durable, false);
  store.apply({ op: "retained.put", message: message("t", "x") });
  store.apply({ op: "retained.delete", topic: "t" });
  assert.equal(store.stats.mutations, 2);
  // load() sees applied ops without a flush.
  store.apply({ op: "retained.put", message: message("u", "y") });
  assert.deepEqual((await store.load()).retained.map((m) => m.topic), ["u"]);
  await store.close();
});

Deno.test("createStore: picks the back end from storage.backend", async () => {
  assert.ok(createStore({ backend: "memory", path: "unused" }) instanceof MemoryStore);
  assert.throws(
    () => createStore({ backend: "redis" as "kv", path: "x" }),
    /storage.backend must be "kv" or "memory", got "redis"/,
  );
  const dir = await Deno.makeTempDir({ prefix: "store_mod_" });
  try {
    const kv = createStore({ backend: "kv", path: `${dir}/sub/dir/mqtt.db` });
    assert.equal(kv.durable, true);
    await kv.open();
    await kv.close();
    assert.ok((await Deno.stat(`${dir}/sub/dir/mqtt.db`)).isFile);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
