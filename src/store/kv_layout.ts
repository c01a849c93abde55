/**
 * Key layout of the Deno KV back end and the size arithmetic its limits need.
 *
 * Four buckets:
 * - `["s", client]`            a session
 * - `["o", client, seq]`       an outbound record (queued or in flight), ordered by seq
 * - `["i", client, packetId]`  an inbound QoS 2 packet id awaiting PUBREL
 * - `["r", topic]`             a retained message
 *
 * A record whose encoding exceeds {@link INLINE_MAX} bytes keeps a chunk header at its key and its bytes
 * in sub-keys `[...key, 0]`, `[...key, 1]`...: sub-keys sort right after their parent, so a prefix listing
 * meets the header first and its chunks next, and deleting a session's prefix takes the chunks along.
 *
 * `client` and `topic` are the string itself when short, or its SHA-256 as a Uint8Array key part when
 * longer than {@link MAX_NAME_BYTES}: a key may not exceed 2 KiB, and all keys written in one atomic
 * commit share an 80 KiB budget. A Uint8Array part can never equal a string part, so a hashed name cannot
 * collide with a short one. The full name is always inside the value.
 *
 * @module
 */

import { createHash } from "node:crypto";

/** Bucket prefixes, the first key part. */
export const Bucket = {
  session: "s",
  outbound: "o",
  incoming: "i",
  retained: "r",
  /** Outbound records of one client first written in one batch, stored together (see kv.ts). */
  pack: "p",
  /** Per client: sequence numbers deleted from packs that still hold live records. */
  tomb: "t",
  /** Tombstones written before load(), one key per seq, when the packs are not known yet. */
  looseTomb: "u",
} as const;

/** One of the four bucket prefixes. */
export type BucketPrefix = typeof Bucket[keyof typeof Bucket];

/** Longest client id or topic (UTF-8 bytes) kept as-is in a key; longer ones are hashed. */
export const MAX_NAME_BYTES = 128;

/** Largest encoded record stored in one value; Deno KV allows 65,536 bytes per value. */
export const INLINE_MAX = 60 * 1024;

/** Bytes per chunk of a record larger than {@link INLINE_MAX}. */
export const CHUNK_SIZE = 60 * 1024;

/**
 * Limits of one Deno KV atomic commit, measured on Deno 2.9: at most 1000 mutations; the "total
 * mutation size" (each set counts its key twice plus its value, a delete at least its key) at most
 * 819,200 bytes; the keys of all sets at most 81,920 bytes. A margin stays below each.
 */
export const AtomicLimits = {
  mutations: 1000,
  totalBytes: 819_200 - 8 * 1024,
  setKeyBytes: 81_920 - 2 * 1024,
} as const;

/** A client id or topic as a key part: the string, or its SHA-256 when too long. */
export type NamePart = string | Uint8Array;

/** Bytes of a UTF-8 encoding of `s` (a lone surrogate counts 3, as TextEncoder writes U+FFFD). */
export function utf8Length(s: string): number {
  let n = 0;
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i);
    if (c < 0x80) n += 1;
    else if (c < 0x800) n += 2;
    else if (c >= 0xd800 && c <= 0xdbff && i + 1 < s.length) {
      const d = s.charCodeAt(i + 1);
      if (d >= 0xdc00 && d <= 0xdfff) {
        n += 4;
        i++;
      } else n += 3;
    } else n += 3;
  }
  return n;
}

function countZeros(s: string | Uint8Array): number {
  let z = 0;
  if (typeof s === "string") {
    for (let i = s.indexOf("\0"); i >= 0; i = s.indexOf("\0", i + 1)) z++;
  } else {
    for (let i = 0; i < s.length; i++) if (s[i] === 0) z++;
  }
  return z;
}

/** The key part for a client id or topic (see the module comment). */
export function namePart(name: string): NamePart {
  // Cheap exits first: UTF-8 is at least one byte and at most three per UTF-16 unit.
  if (name.length * 3 <= MAX_NAME_BYTES) return name;
  if (name.length <= MAX_NAME_BYTES && utf8Length(name) <= MAX_NAME_BYTES) return name;
  const digest = createHash("sha256").update(name).digest();
  return new Uint8Array(digest.buffer, digest.byteOffset, digest.byteLength).slice();
}

/** A string identifying a name part, distinct for a short name and a hash ("=" vs "#" prefix). */
export function namePartId(part: NamePart): string {
  if (typeof part === "string") return "=" + part;
  let hex = "#";
  for (let i = 0; i < part.length; i++) hex += part[i].toString(16).padStart(2, "0");
  return hex;
}

/**
 * Encoded size of a key, as Deno KV counts it: a tag byte per part; strings and byte strings add their
 * bytes, one extra per 0x00 (escaped) and a terminator; numbers add 8 bytes.
 */
export function keySize(key: Deno.KvKey): number {
  let n = 0;
  for (const part of key) {
    if (typeof part === "string") n += 2 + utf8Length(part) + countZeros(part);
    else if (part instanceof Uint8Array) n += 2 + part.length + countZeros(part);
    else if (typeof part === "number") n += 9;
    else if (typeof part === "boolean") n += 1;
    else n += 2 + part.toString(16).length; // bigint: never written by this store; an upper bound
  }
  return n;
}
