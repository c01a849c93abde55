/**
 * UTF-8 Encoded Strings with the MQTT rules of §1.5.4: well-formed UTF-8 (no surrogate code points,
 * no overlong forms) and no U+0000. A violation is a Malformed Packet (0x81) [MQTT-1.5.4-1, MQTT-1.5.4-2].
 *
 * Short ASCII strings (topics, client ids) are by far the common case, so both directions handle them
 * byte by byte and only fall back to the shared TextEncoder / TextDecoder for longer or non-ASCII text.
 *
 * @module
 */

import { malformed, quote } from "./errors.ts";

/** Shared encoder: `encodeInto` writes straight into the packet buffer. */
const textEncoder = new TextEncoder();
/** `fatal` makes ill-formed input (including encoded surrogates, §1.5.4) throw instead of becoming U+FFFD. */
const textDecoder = new TextDecoder("utf-8", { fatal: true, ignoreBOM: true });

/** Below this length an ASCII string is built with String.fromCharCode; above it TextDecoder is cheaper. */
const SHORT_ASCII = 32;
/** Reused by {@link decodeUtf8}: for each length up to SHORT_ASCII, an array that holds the char codes. */
const shortCodes: number[][] = Array.from(
  { length: SHORT_ASCII + 1 },
  (_, n) => Array.from({ length: n }, () => 0),
);

/** Largest byte length of an MQTT string or binary field: its length prefix is a two-byte integer (§1.5.4). */
export const MAX_STRING_BYTES = 65535;

/**
 * Number of bytes `str` takes in UTF-8. Throws MqttError 0x81 for a U+0000 or a lone surrogate, which
 * no peer may accept (§1.5.4), so the encoder never produces a packet the other side must reject.
 */
export function utf8Length(str: string): number {
  const n = str.length;
  let bytes = n;
  for (let i = 0; i < n; i++) {
    const c = str.charCodeAt(i);
    if (c < 0x80) {
      if (c === 0) throw malformed(`string ${quote(str)} contains U+0000 at index ${i}`);
    } else if (c < 0x800) {
      bytes += 1;
    } else if (c >= 0xd800 && c <= 0xdfff) {
      const d = c <= 0xdbff && i + 1 < n ? str.charCodeAt(i + 1) : 0;
      if (d < 0xdc00 || d > 0xdfff) {
        throw malformed(
          `string ${quote(str)} has a lone surrogate 0x${c.toString(16)} at index ${i}`,
        );
      }
      // A surrogate pair is one code point of 4 bytes: 2 UTF-16 units already counted, add 2.
      bytes += 2;
      i++;
    } else {
      bytes += 2;
    }
  }
  return bytes;
}

/**
 * Writes the UTF-8 bytes of `str` at `pos` (no length prefix) and returns the position after them.
 * The caller sized `buf` with {@link utf8Length}.
 */
export function writeUtf8Raw(buf: Uint8Array, pos: number, str: string): number {
  const n = str.length;
  if (n <= SHORT_ASCII) {
    let i = 0;
    for (; i < n; i++) {
      const c = str.charCodeAt(i);
      if (c >= 0x80) break;
      buf[pos + i] = c;
    }
    if (i === n) return pos + n;
  }
  return pos + textEncoder.encodeInto(str, buf.subarray(pos)).written;
}

/**
 * Writes an MQTT UTF-8 Encoded String (two-byte length, then the bytes) at `pos`; returns the new position.
 * `byteLength` is the value {@link utf8Length} returned for `str`.
 */
export function writeUtf8(buf: Uint8Array, pos: number, str: string, byteLength: number): number {
  buf[pos] = byteLength >>> 8;
  buf[pos + 1] = byteLength & 0xff;
  return writeUtf8Raw(buf, pos + 2, str);
}

/**
 * Encodes `str` as UTF-8 bytes (without the MQTT length prefix). Throws MqttError 0x81 for U+0000, lone
 * surrogates, or more than 65535 bytes (§1.5.4).
 */
export function encodeUtf8(str: string): Uint8Array {
  const len = utf8Length(str);
  if (len > MAX_STRING_BYTES) throw malformed(`string of ${len} bytes exceeds the MQTT limit of 65535`);
  const out = new Uint8Array(len);
  writeUtf8Raw(out, 0, str);
  return out;
}

/**
 * Decodes `bytes[start, end)` as an MQTT UTF-8 string. Throws MqttError 0x81 when the bytes are not
 * well-formed UTF-8, encode a surrogate, or contain U+0000 (§1.5.4, MQTT-1.5.4-1, MQTT-1.5.4-2).
 */
export function decodeUtf8(bytes: Uint8Array, start = 0, end: number = bytes.length): string {
  const n = end - start;
  if (n <= SHORT_ASCII && n >= 0) {
    // The codes are gathered and made into one string at the end: `s += c` per byte made a new string per
    // byte (and from 13 bytes on a chain of cons strings that a client id kept alive until flattened).
    const codes = shortCodes[n];
    let i = start;
    for (; i < end; i++) {
      const c = bytes[i];
      if (c >= 0x80) break;
      if (c === 0) throw malformed(`string contains U+0000 at byte ${i - start}`);
      codes[i - start] = c;
    }
    if (i === end) return String.fromCharCode.apply(null, codes);
  }
  let s: string;
  try {
    s = textDecoder.decode(bytes.subarray(start, end));
  } catch {
    throw malformed(`string of ${n} bytes is not well-formed UTF-8`);
  }
  if (s.indexOf("\u0000") !== -1) throw malformed(`string contains U+0000 at index ${s.indexOf("\u0000")}`);
  return s;
}

const strictUtf8 = new TextDecoder("utf-8", { fatal: true });

/**
 * True when `bytes` are well-formed UTF-8: a payload under Payload Format Indicator 1 (§3.3.2.3.2, checked
 * only when the client sets it), a WebSocket close reason (RFC 6455 §5.5.1).
 */
export function isValidUtf8(bytes: Uint8Array): boolean {
  try {
    strictUtf8.decode(bytes);
    return true;
  } catch {
    return false;
  }
}
