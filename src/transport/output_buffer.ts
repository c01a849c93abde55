/**
 * The per-connection output buffer: every packet of a tick is copied into one growing byte array, which the
 * transport then writes at once (a write per packet is 7-10x slower; an array of per-packet chunks joined at
 * flush was 3x slower than copying as they come).
 *
 * @module
 */

import { slabAlloc } from "../mqtt/slab.ts";

/** First size of a buffer: a few small packets. */
const INITIAL = 256;
const EMPTY = new Uint8Array(0);

/** Queued output bytes: `data[0, length)`. */
export class OutputBuffer {
  /** Starts empty: an idle connection holds no output buffer. */
  data: Uint8Array = EMPTY;
  length = 0;

  #reserve(n: number): void {
    const need = this.length + n;
    if (need <= this.data.length) return;
    let size = Math.max(INITIAL, this.data.length * 2);
    while (size < need) size *= 2;
    // Small ones are slab views (a new typed array costs 1-2 us; a connection sending one message at a
    // time needs a fresh buffer per message); bigger ones are arrays of their own.
    const next = slabAlloc(size);
    if (this.length > 0) next.set(this.data.subarray(0, this.length));
    this.data = next;
  }

  /** Appends a copy of `bytes`. */
  append(bytes: Uint8Array): void {
    this.#reserve(bytes.length);
    this.data.set(bytes, this.length);
    this.length += bytes.length;
  }

  /**
   * Appends an encoded PUBLISH with its 2-byte packet id (at `idOffset`) set to `packetId` and, if asked,
   * the DUP flag: one encoding serves every subscriber.
   */
  appendWithPacketId(bytes: Uint8Array, idOffset: number, packetId: number, dup: boolean): void {
    const at = this.length;
    this.#reserve(bytes.length);
    const out = this.data;
    out.set(bytes, at);
    out[at + idOffset] = packetId >> 8;
    out[at + idOffset + 1] = packetId & 0xff;
    if (dup) out[at] |= 0x08;
    this.length = at + bytes.length;
  }

  /** Appends a 4-byte PUBACK, PUBREC, PUBREL or PUBCOMP (success, no properties) for `packetId`. */
  appendAck(type: 4 | 5 | 6 | 7, packetId: number): void {
    const at = this.length;
    this.#reserve(4);
    const out = this.data;
    out[at] = type === 6 ? 0x62 : type << 4; // PUBREL has the fixed flags 0b0010 (§3.6.1)
    out[at + 1] = 2;
    out[at + 2] = packetId >> 8;
    out[at + 3] = packetId & 0xff;
    this.length = at + 4;
  }

  /**
   * Hands the queued bytes over and continues in `next` (empty). Returns the previous array; its first
   * `length` bytes (read before the call) are the output.
   */
  swap(next: Uint8Array = EMPTY): Uint8Array {
    const data = this.data;
    this.data = next;
    this.length = 0;
    return data;
  }

  /** Drops what is queued and the array. */
  clear(): void {
    this.data = EMPTY;
    this.length = 0;
  }
}

/** True when a just-written array is worth keeping for the next burst: not after small writes (an idle
 * connection gives its buffer back), not a slab view (kept, it would pin its whole slab), and not a huge one
 * once the burst that made it is over. */
export function worthKeeping(array: Uint8Array, written: number): boolean {
  return written >= 512 && array.byteLength === array.buffer.byteLength &&
    !(array.length > 1 << 20 && written < 1 << 16);
}
