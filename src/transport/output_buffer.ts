/**
 * The per-connection output buffer: every packet of a tick is copied into one growing byte array, which the
 * transport then writes at once (a write per packet is 7-10x slower; an array of per-packet chunks joined at
 * flush was 3x slower than copying as they come).
 *
 * @module
 */

import { currentSlab, MAX_SLAB_ALLOCATION, slabClaim } from "../mqtt/slab.ts";

/** First size of a buffer: a few small packets. */
const INITIAL = 256;
const EMPTY = new Uint8Array(0);

/** Queued output bytes: `data[start, start + length)`. */
export class OutputBuffer {
  /** Starts empty: an idle connection holds no output buffer. */
  data: Uint8Array = EMPTY;
  /** Where the output starts in `data` (0 unless `data` is a shared slab). */
  start = 0;
  length = 0;
  /** True when `data` is a shared slab, part of which is this buffer's: never to be kept for reuse. */
  shared = false;
  /** End of this buffer's room in `data`. */
  #end = 0;

  #reserve(n: number): void {
    const need = this.length + n;
    if (this.start + need <= this.#end) return;
    let size = Math.max(INITIAL, (this.#end - this.start) * 2);
    while (size < need) size *= 2;
    // Small ones are claimed from a slab (a new typed array costs 1-2 us; a connection sending one message
    // at a time needs a fresh buffer per message), without a view of their own: the write makes the one
    // view a flush needs. Bigger ones are arrays of their own.
    let next: Uint8Array;
    let at = 0;
    const shared = size <= MAX_SLAB_ALLOCATION;
    if (shared) {
      at = slabClaim(size);
      next = currentSlab();
    } else {
      next = new Uint8Array(size);
    }
    if (this.length > 0) next.set(this.data.subarray(this.start, this.start + this.length), at);
    this.data = next;
    this.start = at;
    this.shared = shared;
    this.#end = at + size;
  }

  /** Appends a copy of `bytes`. */
  append(bytes: Uint8Array): void {
    this.#reserve(bytes.length);
    this.data.set(bytes, this.start + this.length);
    this.length += bytes.length;
  }

  /**
   * Appends an encoded PUBLISH with its 2-byte packet id (at `idOffset`) set to `packetId` and, if asked,
   * the DUP flag: one encoding serves every subscriber.
   */
  appendWithPacketId(bytes: Uint8Array, idOffset: number, packetId: number, dup: boolean): void {
    this.#reserve(bytes.length);
    const at = this.start + this.length;
    const out = this.data;
    out.set(bytes, at);
    out[at + idOffset] = packetId >> 8;
    out[at + idOffset + 1] = packetId & 0xff;
    if (dup) out[at] |= 0x08;
    this.length += bytes.length;
  }

  /** Appends a 4-byte PUBACK, PUBREC, PUBREL or PUBCOMP (success, no properties) for `packetId`. */
  appendAck(type: 4 | 5 | 6 | 7, packetId: number): void {
    this.#reserve(4);
    const at = this.start + this.length;
    const out = this.data;
    out[at] = type === 6 ? 0x62 : type << 4; // PUBREL has the fixed flags 0b0010 (§3.6.1)
    out[at + 1] = 2;
    out[at + 2] = packetId >> 8;
    out[at + 3] = packetId & 0xff;
    this.length += 4;
  }

  /**
   * Hands the queued bytes over and continues in `next` (empty, an array of its own). Returns the previous
   * array; the output is its `[start, start + length)`, both read before the call.
   */
  swap(next: Uint8Array = EMPTY): Uint8Array {
    const data = this.data;
    this.data = next;
    this.start = 0;
    this.length = 0;
    this.shared = false;
    this.#end = next.length;
    return data;
  }

  /** Drops what is queued and the array. */
  clear(): void {
    this.swap();
  }
}

/** True when a just-written array of its own (not a shared slab) is worth keeping for the next burst: not
 * after small writes (an idle connection gives its buffer back), and not a huge one once the burst that made
 * it is over. */
export function worthKeeping(array: Uint8Array, written: number): boolean {
  return written >= 512 && !(array.length > 1 << 20 && written < 1 << 16);
}
