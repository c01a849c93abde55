/**
 * A child process for kv_test.ts. `hold <path>`: open a KvStore, print "ready", wait to be killed.
 * `crash <path>`: apply ops forever; after each awaited flush print "flushed N" (ops 1..N are durable).
 *
 * @module
 */

import { KvStore } from "../../src/store/kv.ts";

const [mode, path] = Deno.args;
const store = new KvStore({ path });
await store.open();

if (mode === "hold") {
  console.log("ready");
  setInterval(() => {}, 60_000); // stay alive, holding the lock, until killed
} else if (mode === "crash") {
  const enc = new TextEncoder();
  let n = 0;
  for (;;) {
    // A few ops per batch, of every kind, then wait for durability as a broker would before PUBACK.
    for (let k = 0; k < 5; k++) {
      n++;
      store.apply({
        op: "outbound.put",
        record: {
          clientId: "crash",
          seq: n,
          state: "queued",
          message: {
            topic: `t/${n}`,
            payload: enc.encode(`payload ${n}`),
            qos: 1,
            retain: false,
            receivedAt: n,
          },
        },
      });
      store.apply({
        op: "retained.put",
        message: { topic: `r/${n}`, payload: enc.encode(`r${n}`), qos: 0, retain: true, receivedAt: n },
      });
      store.apply({ op: "incoming.put", clientId: "crash", packetId: (n % 65535) + 1 });
    }
    await store.flush();
    console.log(`flushed ${n}`);
  }
} else {
  throw new Error(`unknown mode ${mode}`);
}
