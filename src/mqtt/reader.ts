/**
 * A bounds-checked cursor over the bytes of one packet. Every read checks against `end` (the end of the
 * packet's Remaining Length) so that a field running past the packet is a Malformed Packet (0x81), never a
 * RangeError or a read into the next packet.
 *
 * One Reader is reused for every packet of a {@link PacketDecoder}; it holds no per-packet allocations.
 *
 * @module
 */

import { slabCopy } from "./slab.ts";
import { malformed } from "./errors.ts";
import { decodeTopic } from "./topic_cache.ts";
import { decodeUtf8 } from "./utf8.ts";

/** Cursor over `buf[pos, end)`. */
export class Reader {
  /** The bytes being read; may be a caller's chunk, valid only during one decode. */
  buf: Uint8Array;
  /** Next byte to read. */
  pos: number;
  /** One past the last byte of the packet. */
  end: number;
  /** `buf` is a copy owned by the packet being decoded: the payload may be a view into it. */
  owned = false;

  constructor(buf: Uint8Array = new Uint8Array(0), pos = 0, end: number = buf.length) {
    this.buf = buf;
    this.pos = pos;
    this.end = end;
  }

  /** Points the reader at `buf[pos, end)`. */
  reset(buf: Uint8Array, pos: number, end: number): void {
    this.buf = buf;
    this.pos = pos;
    this.end = end;
  }

  /** Bytes left before `end`. */
  get remaining(): number {
    return this.end - this.pos;
  }

  /** Throws 0x81 unless `n` more bytes exist; `what` names the field for the message. */
  need(n: number, what: string): void {
    if (this.pos + n > this.end) {
      throw malformed(`${what} needs ${n} bytes but only ${this.end - this.pos} remain in the packet`);
    }
  }

  /** One byte. */
  u8(what: string): number {
    if (this.pos >= this.end) throw malformed(`${what} is missing: the packet ended`);
    return this.buf[this.pos++];
  }

  /** Two Byte Integer, big-endian (§1.5.2). */
  u16(what: string): number {
    const p = this.pos;
    if (p + 2 > this.end) {
      throw malformed(`${what} needs 2 bytes but only ${this.end - p} remain in the packet`);
    }
    this.pos = p + 2;
    return (this.buf[p] << 8) | this.buf[p + 1];
  }

  /** Four Byte Integer, big-endian (§1.5.3). */
  u32(what: string): number {
    const p = this.pos;
    if (p + 4 > this.end) {
      throw malformed(`${what} needs 4 bytes but only ${this.end - p} remain in the packet`);
    }
    this.pos = p + 4;
    const b = this.buf;
    return ((b[p] << 24) >>> 0) + ((b[p + 1] << 16) | (b[p + 2] << 8) | b[p + 3]);
  }

  /**
   * Variable Byte Integer (§1.5.5): at most 4 bytes, so a continuation bit on the 4th byte is malformed.
   * Non-minimal encodings are accepted: MQTT-1.5.5-1 binds the sender only.
   */
  vbi(what: string): number {
    let value = 0;
    let mult = 1;
    for (let i = 0; i < 4; i++) {
      if (this.pos >= this.end) {
        throw malformed(`${what} (variable byte integer) is cut off by the packet end`);
      }
      const b = this.buf[this.pos++];
      value += (b & 0x7f) * mult;
      if ((b & 0x80) === 0) return value;
      mult *= 128;
    }
    throw malformed(`${what} (variable byte integer) is longer than 4 bytes`);
  }

  /**
   * A two-byte length and that many bytes (§1.5.4, §1.5.6): checks they fit the packet, moves past them
   * and returns where they start; their length is `pos` minus that.
   */
  #lengthPrefixed(what: string): number {
    const len = this.u16(what);
    const p = this.pos;
    if (p + len > this.end) {
      throw malformed(`${what} declares ${len} bytes but only ${this.end - p} remain in the packet`);
    }
    this.pos = p + len;
    return p;
  }

  /** A PUBLISH Topic Name: a UTF-8 Encoded String, decoded through the {@link decodeTopic} cache. */
  topic(): string {
    const p = this.#lengthPrefixed("Topic Name");
    return decodeTopic(this.buf, p, this.pos - p);
  }

  /** UTF-8 Encoded String (§1.5.4): two-byte length then well-formed UTF-8 without U+0000. */
  utf8(what: string): string {
    const p = this.#lengthPrefixed(what);
    return decodeUtf8(this.buf, p, this.pos);
  }

  /** Binary Data (§1.5.6): two-byte length then bytes, copied so it never aliases the read buffer. */
  binary(what: string): Uint8Array {
    const p = this.#lengthPrefixed(what);
    return slabCopy(this.buf, p, this.pos);
  }

  /** The rest of the packet (a PUBLISH payload or a 3.1 password): copied, unless the buffer is owned. */
  rest(): Uint8Array {
    const out = this.owned ? this.buf.subarray(this.pos, this.end) : slabCopy(this.buf, this.pos, this.end);
    this.pos = this.end;
    return out;
  }

  /** Throws 0x81 when bytes remain after the last field: the Remaining Length was too long. */
  done(what: string): void {
    if (this.pos !== this.end) {
      throw malformed(`${what} has ${this.end - this.pos} unexpected bytes after its last field`);
    }
  }
}
