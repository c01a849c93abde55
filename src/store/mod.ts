/**
 * The persistence layer: pick a back end from the `storage` config section.
 *
 * ```ts
 * const store = createStore(config.storage);
 * await store.open();
 * const state = await store.load();
 * ```
 *
 * @module
 */

import type { Config } from "../config/types.ts";
import { KvStore } from "./kv.ts";
import { MemoryStore } from "./memory.ts";
import type { Store } from "./store.ts";

export type {
  OutboundRecord,
  OutboundSource,
  RestoredState,
  SessionRecord,
  ShareRef,
  Store,
  StoredMessage,
  StoreOp,
  StoreStats,
  SubscriptionRecord,
} from "./store.ts";
export { outboundRecordOf, StoreError } from "./store.ts";
export { KvStore, type KvStoreOptions } from "./kv.ts";
export { MemoryStore } from "./memory.ts";

/** The store for `storage.backend`: Deno KV at `storage.path`, or RAM only (`path` is then unused). */
export function createStore(cfg: Config["storage"]): Store {
  switch (cfg.backend) {
    case "kv":
      return new KvStore({ path: cfg.path });
    case "memory":
      return new MemoryStore();
    default:
      throw new TypeError(`storage.backend must be "kv" or "memory", got ${JSON.stringify(cfg.backend)}`);
  }
}
