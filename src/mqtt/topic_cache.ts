/**
 * Decoded topic names, remembered by their bytes.
 *
 * Publishers send the same few topics again and again. Decoding one builds a new string, and every Map
 * lookup of a new string (the topic tree's match cache, topic aliases, ACL caches) hashes it again. Handing
 * out the string decoded the first time skips both: V8 keeps a string's hash in the string itself.
 *
 * A direct-mapped table: 1,024 slots of at most 64 bytes each, in one 64 KiB array, so a miss allocates
 * nothing beyond the decode it would have done anyway, and a stream of never-repeated topics costs one
 * hash and one failed compare per PUBLISH.
 *
 * @module
 */

import { decodeUtf8 } from "./utf8.ts";

const SLOTS = 1024;
/** Longer topics are decoded every time. */
const MAX_BYTES = 64;

const keys = new Uint8Array(SLOTS * MAX_BYTES);
/** Byte length of each slot's topic; 0 marks an empty slot (an empty topic is never cached). */
const lengths = new Uint8Array(SLOTS);
const strings: string[] = new Array<string>(SLOTS).fill("");

/**
 * The MQTT UTF-8 string at `buf[start, start + len)`, validated like {@link decodeUtf8} (which throws
 * MqttError 0x81 for ill-formed UTF-8 or U+0000) the first time its bytes are seen.
 */
export function decodeTopic(buf: Uint8Array, start: number, len: number): string {
  if (len === 0 || len > MAX_BYTES) return decodeUtf8(buf, start, start + len);
  let h = len;
  for (let i = 0; i < len; i++) h = (Math.imul(h, 31) + buf[start + i]) | 0;
  const slot = (h ^ (h >>> 10) ^ (h >>> 20)) & (SLOTS - 1);
  const base = slot * MAX_BYTES;
  if (lengths[slot] === len) {
    let i = 0;
    while (i < len && keys[base + i] === buf[start + i]) i++;
    if (i === len) return strings[slot];
  }
  const s = decodeUtf8(buf, start, start + len);
  for (let i = 0; i < len; i++) keys[base + i] = buf[start + i];
  lengths[slot] = len;
  strings[slot] = s;
  return s;
}
