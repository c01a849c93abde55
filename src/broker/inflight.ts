/**
 * A session's outbound QoS 1/2 messages awaiting acknowledgement, by packet id.
 *
 * A `Map` that goes back to empty after each acknowledgement allocates a new hash table every few
 * messages (V8 rebuilds it once deleted entries fill it): ~150 bytes of garbage per message at one message
 * in flight. Packet ids are handed out in sequence, so the ids in flight at one time are nearly
 * consecutive, and a direct-mapped array indexed by `id & mask` holds them without a hash. The packet id
 * allocator takes only ids whose slot is free (`isFree`), so the ids it hands out never collide; ids that
 * come from elsewhere (the store, after a restart) grow the array until they do not. Lookups, adds and
 * deletes allocate nothing. A table never shrinks: it stays at about twice the session's largest window
 * (4 bytes per slot), as a Map's storage did; ids restored from a store written by the Map-based allocator
 * may, rarely, need more slots to separate (at most 65,536).
 *
 * @module
 */

import type { OutEntry } from "./session.ts";

/** Slots of a new table; it doubles whenever it would become more than half full. */
const INITIAL_SLOTS = 8;
/** At this many slots every packet id (1-65535) has a slot of its own. */
const MAX_SLOTS = 0x10000;

/** In-flight entries keyed by their `packetId`. */
export class InflightTable {
  #slots: (OutEntry | undefined)[] = new Array(INITIAL_SLOTS).fill(undefined);
  #mask = INITIAL_SLOTS - 1;
  #size = 0;

  /** Number of entries. */
  get size(): number {
    return this.#size;
  }

  /** The entry with `packetId`, if it is in flight. */
  get(packetId: number): OutEntry | undefined {
    const entry = this.#slots[packetId & this.#mask];
    return entry !== undefined && entry.packetId === packetId ? entry : undefined;
  }

  /** True when an entry with `packetId` is in flight. */
  has(packetId: number): boolean {
    return this.get(packetId) !== undefined;
  }

  /** True when `packetId` can be added without growing the table (so it is not in flight either). */
  isFree(packetId: number): boolean {
    return this.#slots[packetId & this.#mask] === undefined;
  }

  /** Adds `entry` under its `packetId`, replacing an entry with the same id. */
  add(entry: OutEntry): void {
    const id = entry.packetId;
    if ((this.#size + 1) * 2 > this.#slots.length && this.#slots.length < MAX_SLOTS) this.#grow();
    for (;;) {
      const slot = id & this.#mask;
      const held = this.#slots[slot];
      if (held === undefined) {
        this.#slots[slot] = entry;
        this.#size++;
        return;
      }
      if (held.packetId === id) {
        this.#slots[slot] = entry;
        return;
      }
      // Another id shares the slot. Ids that differ in the low bits of a wider mask never share a slot
      // there, and at MAX_SLOTS no two ids do, so this ends.
      this.#grow();
    }
  }

  /** Removes the entry with `packetId`; true when there was one. */
  delete(packetId: number): boolean {
    const slot = packetId & this.#mask;
    const held = this.#slots[slot];
    if (held === undefined || held.packetId !== packetId) return false;
    this.#slots[slot] = undefined;
    this.#size--;
    return true;
  }

  /** The entries, oldest (lowest `seq`) first: a copy, so the table may change while it is walked. */
  values(): OutEntry[] {
    const out: OutEntry[] = [];
    if (this.#size === 0) return out;
    for (const entry of this.#slots) if (entry !== undefined) out.push(entry);
    return out.sort((a, b) => a.seq - b.seq);
  }

  #grow(): void {
    const old = this.#slots;
    const length = old.length * 2;
    const slots: (OutEntry | undefined)[] = new Array(length).fill(undefined);
    const mask = length - 1;
    for (const entry of old) if (entry !== undefined) slots[entry.packetId & mask] = entry;
    this.#slots = slots;
    this.#mask = mask;
  }
}

/** What a session shows of its table to the rest of the broker. */
export type ReadonlyInflight = Pick<InflightTable, "size" | "get" | "has" | "isFree" | "values">;

/**
 * The table of every session with nothing in flight yet; never written to (`Session` makes its own table
 * first). One class for both keeps the call sites monomorphic.
 */
export const NO_INFLIGHT: ReadonlyInflight = new InflightTable();
