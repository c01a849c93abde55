/**
 * The RAM-only store: nothing survives the process, but the data survives close() and open() of the same
 * instance, so a test can restart a broker on one MemoryStore and exercise its restore logic.
 *
 * @module
 */

import type {
  OutboundRecord,
  OutboundSource,
  RestoredState,
  SessionRecord,
  Store,
  StoredMessage,
  StoreOp,
  StoreStats,
} from "./store.ts";
import { outboundRecordOf, StoreError } from "./store.ts";
import { compareIncoming, compareOutbound } from "./order.ts";
import { validateOp } from "./validate.ts";

const RESOLVED = Promise.resolve();

/** A {@link Store} kept in Maps. `durable` is false and {@link MemoryStore.flush} resolves at once. */
export class MemoryStore implements Store {
  /** Nothing is ever on disk. */
  readonly durable = false;
  readonly idle = true;
  /** `mutations` counts applied ops; there are no commits. */
  readonly stats: StoreStats = { commits: 0, mutations: 0, latencies: [], failures: 0 };

  #open = false;
  readonly #sessions = new Map<string, SessionRecord>();
  readonly #outbound = new Map<string, Map<number, OutboundRecord>>();
  readonly #incoming = new Map<string, Set<number>>();
  readonly #retained = new Map<string, StoredMessage>();

  /** Marks the store open; the data of an earlier open is kept. */
  open(): Promise<void> {
    if (this.#open) return Promise.reject(new StoreError("memory store is already open"));
    this.#open = true;
    return Promise.resolve();
  }

  /** A copy of everything held, outbound ordered by clientId then seq. */
  load(): Promise<RestoredState> {
    if (!this.#open) return Promise.reject(new StoreError("memory store is not open"));
    const outbound: OutboundRecord[] = [];
    for (const records of this.#outbound.values()) for (const r of records.values()) outbound.push(r);
    outbound.sort(compareOutbound);
    const incoming: { clientId: string; packetId: number }[] = [];
    for (const [clientId, ids] of this.#incoming) {
      for (const packetId of ids) incoming.push({ clientId, packetId });
    }
    incoming.sort(compareIncoming);
    return Promise.resolve(structuredClone({
      sessions: [...this.#sessions.values()],
      retained: [...this.#retained.values()],
      outbound,
      incoming,
    }));
  }

  /**
   * Applies `op` at once. Records are copied, so later changes by the caller to the objects passed in
   * do not leak into the store (the KV store behaves the same: it encodes at apply time).
   */
  apply(op: StoreOp): void {
    if (!this.#open) throw new StoreError(`cannot apply ${op.op}: memory store is not open`);
    validateOp(op);
    this.stats.mutations++;
    switch (op.op) {
      case "session.put":
        this.#sessions.set(op.session.clientId, structuredClone(op.session));
        break;
      case "session.delete":
        this.#sessions.delete(op.clientId);
        this.#outbound.delete(op.clientId);
        this.#incoming.delete(op.clientId);
        break;
      case "retained.put":
        this.#retained.set(op.message.topic, structuredClone(op.message));
        break;
      case "retained.delete":
        this.#retained.delete(op.topic);
        break;
      case "outbound.put": {
        let records = this.#outbound.get(op.record.clientId);
        if (records === undefined) this.#outbound.set(op.record.clientId, records = new Map());
        records.set(op.record.seq, structuredClone(op.record));
        break;
      }
      case "outbound.delete": {
        const records = this.#outbound.get(op.clientId);
        records?.delete(op.seq);
        if (records?.size === 0) this.#outbound.delete(op.clientId);
        break;
      }
      case "incoming.put": {
        let ids = this.#incoming.get(op.clientId);
        if (ids === undefined) this.#incoming.set(op.clientId, ids = new Set());
        ids.add(op.packetId);
        break;
      }
      case "incoming.delete": {
        const ids = this.#incoming.get(op.clientId);
        ids?.delete(op.packetId);
        if (ids?.size === 0) this.#incoming.delete(op.clientId);
        break;
      }
    }
  }

  /** Builds the record and applies it. */
  putOutbound(clientId: string, state: "queued" | "publish", packetId: number, source: OutboundSource): void {
    this.apply({ op: "outbound.put", record: outboundRecordOf(clientId, state, packetId, source) });
  }

  deleteOutbound(clientId: string, seq: number): void {
    this.apply({ op: "outbound.delete", clientId, seq });
  }

  /** Resolves at once: every op is already applied. Always the same promise, as calls in one tick share one. */
  flush(): Promise<void> {
    return RESOLVED;
  }

  /** Marks the store closed; the data stays for the next {@link MemoryStore.open}. */
  close(): Promise<void> {
    this.#open = false;
    return Promise.resolve();
  }
}
