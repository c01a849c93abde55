/**
 * Compact binary encoding of the store's records, used by the Deno KV back end.
 *
 * Why not JSON or structured clone: payloads stay raw bytes (no base64, no per-value V8 tags), the
 * encoded length is known exactly (Deno KV counts value bytes against its 64 KiB / 800 KB limits) and
 * an oversized record can be split into chunks as plain byte ranges.
 *
 * Every record starts with a one-byte format tag so a value can be told apart from a chunk header.
 * Integers are unsigned LEB128 varints computed with arithmetic (not bit operators) so they stay exact
 * up to 2^53; times are float64.
 *
 * @module
 */

import { slabAlloc } from "../mqtt/slab.ts";
import { decodeUtf8 } from "../mqtt/utf8.ts";
import type { Properties, QoS, UserProperty } from "../mqtt/types.ts";
import type {
  OutboundRecord,
  OutboundSource,
  SessionRecord,
  ShareRef,
  StoredMessage,
  SubscriptionRecord,
} from "./store.ts";

/** First byte of a value holding a whole record. */
export const TAG_RECORD = 1;
/** First byte of a value holding a chunk header (the record bytes live in sub-keys). */
export const TAG_CHUNKED = 2;

const OUTBOUND_STATES = ["queued", "publish", "pubrel"] as const;

const encoder = new TextEncoder();

/** Scratch for big-endian float64 writes without a DataView per record (a DataView is a heap object). */
const F64 = new Float64Array(1);
const F64_BYTES = new Uint8Array(F64.buffer);
const LITTLE_ENDIAN = new Uint8Array(new Uint16Array([1]).buffer)[0] === 1;

/** A growable byte buffer with the primitive writers the record encoders need. */
class Writer {
  buf: Uint8Array;
  pos = 0;

  /** `own`: a buffer of its own (for a value that is big anyway), not a slab slice. */
  constructor(capacity: number, own = false) {
    // A fresh typed array per small record costs more than encoding it.
    this.buf = own ? new Uint8Array(capacity) : slabAlloc(capacity);
  }

  ensure(extra: number): void {
    if (this.pos + extra <= this.buf.length) return;
    const next = new Uint8Array(Math.max(this.buf.length * 2, this.pos + extra));
    next.set(this.buf.subarray(0, this.pos));
    this.buf = next;
  }

  u8(n: number): void {
    this.ensure(1);
    this.buf[this.pos++] = n;
  }

  /** Big-endian, as DataView writes it by default. */
  u16(n: number): void {
    this.ensure(2);
    this.buf[this.pos] = (n >>> 8) & 0xff;
    this.buf[this.pos + 1] = n & 0xff;
    this.pos += 2;
  }

  /** Big-endian IEEE 754, as DataView writes it by default. */
  f64(n: number): void {
    this.ensure(8);
    F64[0] = n;
    const buf = this.buf;
    const at = this.pos;
    for (let i = 0; i < 8; i++) buf[at + i] = F64_BYTES[LITTLE_ENDIAN ? 7 - i : i];
    this.pos = at + 8;
  }

  varint(n: number): void {
    if (!Number.isSafeInteger(n) || n < 0) {
      throw new RangeError(`cannot encode ${n}: expected a non-negative safe integer`);
    }
    this.ensure(8);
    while (n >= 0x80) {
      this.buf[this.pos++] = (n % 0x80) | 0x80;
      n = Math.floor(n / 0x80);
    }
    this.buf[this.pos++] = n;
  }

  bytes(b: Uint8Array): void {
    this.varint(b.length);
    this.ensure(b.length);
    this.buf.set(b, this.pos);
    this.pos += b.length;
  }

  string(s: string): void {
    // Reserve the worst case (3 bytes per UTF-16 unit) plus the varint, then write the length after.
    const max = s.length * 3;
    let lenBytes = 1;
    for (let room = 0x80; room <= max; room *= 0x80) lenBytes++;
    this.ensure(lenBytes + max);
    const start = this.pos + lenBytes;
    let written = 0;
    const buf = this.buf;
    // ASCII fast path (client ids and topics nearly always are): no native call, no subarray.
    for (; written < s.length; written++) {
      const c = s.charCodeAt(written);
      if (c >= 0x80) break;
      buf[start + written] = c;
    }
    if (written < s.length) written = encoder.encodeInto(s, buf.subarray(start)).written;
    let n = written;
    for (let i = 0; i < lenBytes; i++) {
      // Fixed-width varint (padded continuation bytes) so the length fits the reserved room.
      this.buf[this.pos++] = (n % 0x80) | (i < lenBytes - 1 ? 0x80 : 0);
      n = Math.floor(n / 0x80);
    }
    this.pos = start + written;
  }

  finish(): Uint8Array {
    return this.buf.subarray(0, this.pos);
  }
}

/** Strings up to this many bytes are remembered by a {@link LastString}. */
const LAST_STRING_MAX = 256;

/** The last string read into one field (see {@link Reader.stringLike}). */
class LastString {
  readonly bytes = new Uint8Array(LAST_STRING_MAX);
  length = -1;
  value = "";
}

const lastClientId = new LastString();
const lastTopic = new LastString();

/**
 * Reads what {@link Writer} wrote, from `buf[start, end)`; every read checks bounds so a damaged value
 * fails loudly. No DataView: one per record was most of what a Reader cost.
 */
class Reader {
  pos: number;

  constructor(readonly buf: Uint8Array, start = 0, readonly end = buf.length) {
    this.pos = start;
  }

  need(n: number): void {
    if (this.pos + n > this.end) {
      throw new RangeError(`record truncated: need ${n} bytes at offset ${this.pos} of ${this.end}`);
    }
  }

  u8(): number {
    this.need(1);
    return this.buf[this.pos++];
  }

  u16(): number {
    this.need(2);
    const at = this.pos;
    this.pos = at + 2;
    return (this.buf[at] << 8) | this.buf[at + 1];
  }

  f64(): number {
    this.need(8);
    const buf = this.buf;
    const at = this.pos;
    for (let i = 0; i < 8; i++) F64_BYTES[LITTLE_ENDIAN ? 7 - i : i] = buf[at + i];
    this.pos = at + 8;
    return F64[0];
  }

  varint(): number {
    let n = 0;
    let scale = 1;
    for (let i = 0; i < 8; i++) {
      const b = this.u8();
      n += (b & 0x7f) * scale;
      if (b < 0x80) return n;
      scale *= 0x80;
    }
    throw new RangeError(`varint longer than 8 bytes at offset ${this.pos}`);
  }

  /** A view into the source (no copy): the caller owns the source buffer. */
  bytes(): Uint8Array {
    const n = this.varint();
    this.need(n);
    const b = this.buf.subarray(this.pos, this.pos + n);
    this.pos += n;
    return b;
  }

  string(): string {
    const n = this.varint();
    this.need(n);
    const start = this.pos;
    this.pos += n;
    return decodeUtf8(this.buf, start, start + n);
  }

  /**
   * {@link string}, returning `last`'s string when the bytes are the same as last time: a restore reads a
   * pack's records one after another, all with the client id of the pack and often with one topic, and a
   * comparison costs less than a decode (and the records share one string instead of a copy each).
   */
  stringLike(last: LastString): string {
    const n = this.varint();
    this.need(n);
    const buf = this.buf;
    const start = this.pos;
    this.pos += n;
    if (n === last.length) {
      const seen = last.bytes;
      let i = 0;
      while (i < n && buf[start + i] === seen[i]) i++;
      if (i === n) return last.value;
    }
    const value = decodeUtf8(buf, start, start + n);
    if (n <= LAST_STRING_MAX) {
      last.bytes.set(buf.subarray(start, start + n));
      last.length = n;
      last.value = value;
    }
    return value;
  }

  done(what: string): void {
    if (this.pos !== this.end) {
      throw new RangeError(`${what}: ${this.end - this.pos} trailing bytes after offset ${this.pos}`);
    }
  }
}

// Property value kinds. Properties is an open record of numbers, strings, bytes, number lists and
// string pairs; the field name is written out so a property added to types.ts later needs no change here.
const P_NUMBER = 0;
const P_STRING = 1;
const P_BYTES = 2;
const P_NUMBERS = 3;
const P_PAIRS = 4;

function writeProperties(w: Writer, props: Properties): void {
  const entries = Object.entries(props).filter(([, v]) => v !== undefined);
  w.varint(entries.length);
  for (const [name, value] of entries) {
    w.string(name);
    if (typeof value === "number") {
      w.u8(P_NUMBER);
      w.f64(value);
    } else if (typeof value === "string") {
      w.u8(P_STRING);
      w.string(value);
    } else if (value instanceof Uint8Array) {
      w.u8(P_BYTES);
      w.bytes(value);
    } else if (Array.isArray(value) && value.every((x) => typeof x === "number")) {
      w.u8(P_NUMBERS);
      w.varint(value.length);
      for (const x of value as number[]) w.f64(x);
    } else if (Array.isArray(value) && value.every((x) => Array.isArray(x) && x.length === 2)) {
      w.u8(P_PAIRS);
      w.varint(value.length);
      for (const [k, v] of value as UserProperty[]) {
        w.string(String(k));
        w.string(String(v));
      }
    } else {
      throw new TypeError(`cannot store property ${name}: unsupported value ${JSON.stringify(value)}`);
    }
  }
}

function readProperties(r: Reader): Properties {
  const props: Record<string, unknown> = {};
  const count = r.varint();
  for (let i = 0; i < count; i++) {
    const name = r.string();
    const kind = r.u8();
    switch (kind) {
      case P_NUMBER:
        props[name] = r.f64();
        break;
      case P_STRING:
        props[name] = r.string();
        break;
      case P_BYTES:
        // Copy: properties outlive the value buffer they were read from.
        props[name] = r.bytes().slice();
        break;
      case P_NUMBERS: {
        const n = r.varint();
        const list: number[] = [];
        for (let j = 0; j < n; j++) list.push(r.f64());
        props[name] = list;
        break;
      }
      case P_PAIRS: {
        const n = r.varint();
        const pairs: UserProperty[] = [];
        for (let j = 0; j < n; j++) pairs.push([r.string(), r.string()]);
        props[name] = pairs;
        break;
      }
      default:
        throw new RangeError(`property ${name}: unknown value kind ${kind}`);
    }
  }
  return props as Properties;
}

// Message flag bits.
const M_RETAIN = 0x04;
const M_EXPIRES = 0x08;
const M_PROPS = 0x10;

function writeMessage(w: Writer, m: StoredMessage): void {
  writeMessageAs(w, m, m.qos, m.retain, m.properties);
}

/** {@link writeMessage} with the QoS, retain flag and properties of one delivery instead of the message's. */
function writeMessageAs(
  w: Writer,
  m: StoredMessage,
  qos: QoS,
  retain: boolean,
  properties: Properties | undefined,
): void {
  let flags = qos & 0x03;
  if (retain) flags |= M_RETAIN;
  if (m.expiresAt !== undefined) flags |= M_EXPIRES;
  if (properties !== undefined) flags |= M_PROPS;
  w.u8(flags);
  w.f64(m.receivedAt);
  if (m.expiresAt !== undefined) w.f64(m.expiresAt);
  w.string(m.topic);
  w.bytes(m.payload);
  if (properties !== undefined) writeProperties(w, properties);
}

function readMessage(r: Reader): StoredMessage {
  const flags = r.u8();
  const qos = flags & 0x03;
  if (qos > 2) throw new RangeError(`message: invalid qos ${qos}`);
  const receivedAt = r.f64();
  const expiresAt = flags & M_EXPIRES ? r.f64() : undefined;
  const topic = r.stringLike(lastTopic);
  const payload = r.bytes();
  const m: StoredMessage = { topic, payload, qos: qos as QoS, retain: (flags & M_RETAIN) !== 0, receivedAt };
  if (expiresAt !== undefined) m.expiresAt = expiresAt;
  if (flags & M_PROPS) m.properties = readProperties(r);
  return m;
}

function messageSizeHint(m: StoredMessage): number {
  return 64 + m.topic.length * 3 + m.payload.length + (m.properties ? 256 : 0);
}

/** Encodes a retained message as a value (tag + message). */
export function encodeRetained(m: StoredMessage): Uint8Array {
  const w = new Writer(messageSizeHint(m));
  w.u8(TAG_RECORD);
  writeMessage(w, m);
  return w.finish();
}

/** Decodes {@link encodeRetained}. The payload is a view into `value`. */
export function decodeRetained(value: Uint8Array): StoredMessage {
  const r = new Reader(value);
  expectTag(r, "retained message");
  const m = readMessage(r);
  r.done("retained message");
  return m;
}

// Session flag bits.
const S_DISCONNECTED = 0x01;
const S_WILL = 0x02;
const S_WILL_DUE = 0x04;
const S_USERNAME = 0x08;
// Subscription flag bits (qos in bits 0-1, retain handling in bits 4-5).
const SUB_NO_LOCAL = 0x04;
const SUB_RAP = 0x08;
const SUB_ID = 0x40;

/** Encodes a session record. */
export function encodeSession(s: SessionRecord): Uint8Array {
  const will = s.will;
  const w = new Writer(
    32 + s.clientId.length * 3 + s.subscriptions.length * 24 + (s.username?.length ?? 0) * 3 +
      (will ? messageSizeHint(will as StoredMessage) : 0),
  );
  w.u8(TAG_RECORD);
  w.string(s.clientId);
  w.u8(s.protocolVersion);
  w.varint(s.expiryInterval);
  let flags = s.disconnectedAt !== undefined ? S_DISCONNECTED : 0;
  if (will !== undefined) flags |= S_WILL;
  if (s.willDueAt !== undefined) flags |= S_WILL_DUE;
  if (s.username !== undefined) flags |= S_USERNAME;
  w.u8(flags);
  if (s.disconnectedAt !== undefined) w.f64(s.disconnectedAt);
  w.varint(s.subscriptions.length);
  for (const sub of s.subscriptions) {
    let flags = (sub.qos & 0x03) | ((sub.retainHandling & 0x03) << 4);
    if (sub.noLocal) flags |= SUB_NO_LOCAL;
    if (sub.retainAsPublished) flags |= SUB_RAP;
    if (sub.subscriptionId !== undefined) flags |= SUB_ID;
    w.string(sub.filter);
    w.u8(flags);
    if (sub.subscriptionId !== undefined) w.varint(sub.subscriptionId);
  }
  // After the subscriptions, so records written before these fields existed read the same.
  if (s.username !== undefined) w.string(s.username);
  if (will !== undefined) writeMessage(w, { ...will, receivedAt: 0 });
  if (s.willDueAt !== undefined) w.f64(s.willDueAt);
  return w.finish();
}

/** Decodes {@link encodeSession}. */
export function decodeSession(value: Uint8Array): SessionRecord {
  const r = new Reader(value);
  expectTag(r, "session");
  const clientId = r.string();
  const protocolVersion = r.u8();
  if (protocolVersion < 3 || protocolVersion > 5) {
    throw new RangeError(`session ${clientId}: invalid protocol version ${protocolVersion}`);
  }
  const expiryInterval = r.varint();
  const flags = r.u8();
  const disconnectedAt = flags & S_DISCONNECTED ? r.f64() : undefined;
  const count = r.varint();
  const subscriptions: SubscriptionRecord[] = [];
  for (let i = 0; i < count; i++) {
    const filter = r.string();
    const f = r.u8();
    const sub: SubscriptionRecord = {
      filter,
      qos: (f & 0x03) as QoS,
      noLocal: (f & SUB_NO_LOCAL) !== 0,
      retainAsPublished: (f & SUB_RAP) !== 0,
      retainHandling: ((f >> 4) & 0x03) as 0 | 1 | 2,
    };
    if (f & SUB_ID) sub.subscriptionId = r.varint();
    subscriptions.push(sub);
  }
  const username = flags & S_USERNAME ? r.string() : undefined;
  const willMessage = flags & S_WILL ? readMessage(r) : undefined;
  const willDueAt = flags & S_WILL_DUE ? r.f64() : undefined;
  r.done(`session ${clientId}`);
  const s: SessionRecord = {
    clientId,
    protocolVersion: protocolVersion as 3 | 4 | 5,
    expiryInterval,
    subscriptions,
  };
  if (disconnectedAt !== undefined) s.disconnectedAt = disconnectedAt;
  if (username !== undefined) s.username = username;
  if (willMessage !== undefined) {
    const { topic, payload, qos, retain, properties } = willMessage;
    // A copy: the payload read is a view into the value, and a will may wait for days.
    s.will = { topic, payload: payload.slice(), qos, retain };
    if (properties !== undefined) s.will.properties = properties;
  }
  if (willDueAt !== undefined) s.willDueAt = willDueAt;
  return s;
}

// Outbound flag bits.
const O_PACKET_ID = 0x01;
const O_MESSAGE = 0x02;
/** Followed (after the message) by the shared subscription group's name and filter. */
const O_SHARE = 0x04;

/** Encodes an outbound (queued or in-flight) record. */
export function encodeOutbound(o: OutboundRecord): Uint8Array {
  const state = OUTBOUND_STATES.indexOf(o.state);
  if (state < 0) {
    throw new TypeError(`outbound ${o.clientId}/${o.seq}: unknown state ${JSON.stringify(o.state)}`);
  }
  const w = new Writer(outboundSizeHint(o.clientId, o.message));
  writeOutbound(w, o.clientId, o.seq, state, o.packetId, o.message, o.share);
  return w.finish();
}

function outboundSizeHint(clientId: string, message: StoredMessage | undefined): number {
  return 32 + clientId.length * 3 + (message ? messageSizeHint(message) : 0);
}

function writeOutbound(
  w: Writer,
  clientId: string,
  seq: number,
  state: number,
  packetId: number | undefined,
  message: StoredMessage | undefined,
  share: ShareRef | undefined,
  qos = message?.qos ?? 0,
  retain = message?.retain ?? false,
  properties = message?.properties,
): void {
  w.u8(TAG_RECORD);
  w.string(clientId);
  w.varint(seq);
  w.u8(state);
  w.u8(
    (packetId !== undefined ? O_PACKET_ID : 0) | (message !== undefined ? O_MESSAGE : 0) |
      (share !== undefined ? O_SHARE : 0),
  );
  if (packetId !== undefined) w.u16(packetId);
  if (message !== undefined) writeMessageAs(w, message, qos, retain, properties);
  if (share !== undefined) {
    w.string(share.group);
    w.string(share.filter);
  }
}

/**
 * Builds the value of a pack (see kv.ts): outbound records one after another, each behind a 4-byte
 * big-endian length, encoded straight into one buffer rather than into an array each and then copied.
 */
export class PackWriter {
  readonly #w: Writer;
  /** Records written. */
  count = 0;

  constructor(capacity: number) {
    this.#w = new Writer(capacity, true);
  }

  /** Bytes written so far. */
  get size(): number {
    return this.#w.pos;
  }

  /** Appends a record. */
  add(o: OutboundRecord): void {
    const state = OUTBOUND_STATES.indexOf(o.state);
    if (state < 0) {
      throw new TypeError(`outbound ${o.clientId}/${o.seq}: unknown state ${JSON.stringify(o.state)}`);
    }
    const at = this.#open();
    writeOutbound(this.#w, o.clientId, o.seq, state, o.packetId, o.message, o.share);
    this.#close(at);
  }

  /**
   * Appends the record {@link encodeOutbound} would write for `source` in `state` ("queued" without a
   * packet id, or "publish" with `packetId`), built from the source's fields.
   */
  addSource(clientId: string, state: "queued" | "publish", packetId: number, source: OutboundSource): void {
    const msg = source.msg;
    const ids = source.subscriptionIds;
    const properties = ids !== undefined && ids.length > 0
      ? { ...msg.properties, subscriptionIdentifiers: [...ids] }
      : msg.properties;
    const at = this.#open();
    if (state === "queued") {
      writeOutbound(
        this.#w,
        clientId,
        source.seq,
        0,
        undefined,
        msg,
        source.share,
        source.qos,
        source.retain,
        properties,
      );
    } else {
      writeOutbound(
        this.#w,
        clientId,
        source.seq,
        1,
        packetId,
        msg,
        source.share,
        source.qos,
        source.retain,
        properties,
      );
    }
    this.#close(at);
  }

  /** An upper bound of what {@link addSource} adds for `source` (to decide when a pack is full). */
  static sizeHint(clientId: string, source: OutboundSource): number {
    const share = source.share;
    return 4 + outboundSizeHint(clientId, source.msg) + (source.subscriptionIds ? 256 : 0) +
      (share ? 16 + (share.group.length + share.filter.length) * 3 : 0);
  }

  /** The value: a view of the bytes written. */
  finish(): Uint8Array {
    return this.#w.finish();
  }

  #open(): number {
    const w = this.#w;
    w.ensure(4);
    const at = w.pos;
    w.pos += 4;
    return at;
  }

  #close(at: number): void {
    const w = this.#w;
    const len = w.pos - at - 4;
    const buf = w.buf;
    buf[at] = len >>> 24;
    buf[at + 1] = (len >>> 16) & 0xff;
    buf[at + 2] = (len >>> 8) & 0xff;
    buf[at + 3] = len & 0xff;
    this.count++;
  }
}

/** Decodes {@link encodeOutbound} from `value[start, end)`. The payload is a view into `value`. */
export function decodeOutbound(value: Uint8Array, start = 0, end = value.length): OutboundRecord {
  const r = new Reader(value, start, end);
  expectTag(r, "outbound record");
  const clientId = r.stringLike(lastClientId);
  const seq = r.varint();
  const stateIndex = r.u8();
  const state = OUTBOUND_STATES[stateIndex];
  if (state === undefined) throw new RangeError(`outbound ${clientId}/${seq}: invalid state ${stateIndex}`);
  const flags = r.u8();
  const o: OutboundRecord = { clientId, seq, state };
  if (flags & O_PACKET_ID) o.packetId = r.u16();
  if (flags & O_MESSAGE) o.message = readMessage(r);
  if (flags & O_SHARE) o.share = { group: r.string(), filter: r.string() };
  r.done(`outbound ${clientId}/${seq}`);
  return o;
}

/** Encodes an inbound QoS 2 id's value: the full client id (the key may hold only its hash). */
export function encodeIncoming(clientId: string): Uint8Array {
  const w = new Writer(8 + clientId.length * 3);
  w.u8(TAG_RECORD);
  w.string(clientId);
  return w.finish();
}

/** Decodes {@link encodeIncoming}, returning the client id. */
export function decodeIncoming(value: Uint8Array): string {
  const r = new Reader(value);
  expectTag(r, "incoming id");
  const clientId = r.string();
  r.done("incoming id");
  return clientId;
}

/** Where a record too big for one value lives: `count` sub-keys holding `length` bytes with `crc`. */
export interface ChunkHeader {
  count: number;
  length: number;
  /** CRC-32 of the whole record: detects a torn write of a record larger than one atomic commit. */
  crc: number;
}

/** Encodes a chunk header value. */
export function encodeChunkHeader(h: ChunkHeader): Uint8Array {
  const w = new Writer(24);
  w.u8(TAG_CHUNKED);
  w.varint(h.count);
  w.varint(h.length);
  w.varint(h.crc);
  return w.finish();
}

/** Decodes {@link encodeChunkHeader}. */
export function decodeChunkHeader(value: Uint8Array): ChunkHeader {
  const r = new Reader(value);
  const tag = r.u8();
  if (tag !== TAG_CHUNKED) throw new RangeError(`chunk header: expected tag ${TAG_CHUNKED}, got ${tag}`);
  const h = { count: r.varint(), length: r.varint(), crc: r.varint() };
  r.done("chunk header");
  return h;
}

function expectTag(r: Reader, what: string): void {
  const tag = r.u8();
  if (tag !== TAG_RECORD) throw new RangeError(`${what}: expected record tag ${TAG_RECORD}, got ${tag}`);
}

let crcTable: Uint32Array | undefined;

/** CRC-32 (IEEE 802.3 polynomial, reflected), as an unsigned number. */
export function crc32(data: Uint8Array): number {
  if (!crcTable) {
    crcTable = new Uint32Array(256);
    for (let n = 0; n < 256; n++) {
      let c = n;
      for (let k = 0; k < 8; k++) c = c & 1 ? 0xedb88320 ^ (c >>> 1) : c >>> 1;
      crcTable[n] = c >>> 0;
    }
  }
  const table = crcTable;
  let c = 0xffffffff;
  for (let i = 0; i < data.length; i++) c = table[(c ^ data[i]) & 0xff] ^ (c >>> 8);
  return (c ^ 0xffffffff) >>> 0;
}
