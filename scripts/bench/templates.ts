/**
 * Pre-encoded packets for the generator's hot path.
 *
 * A benchmark publisher sends the same topic with a different stamp millions of times, so the codec
 * encodes each packet shape once and the generator only patches the packet identifier and the stamp
 * into a copy. The offsets are derived from the encoded bytes and checked, so a codec change that
 * moves a field fails loudly instead of producing wrong packets.
 *
 * @module
 */

import { encode, encodePublish, publishPacketIdOffset } from "../../src/mqtt/encode.ts";
import { PacketType, type ProtocolVersion, type QoS } from "../../src/mqtt/types.ts";
import { STAMP_BYTES, writeStamp } from "./delivery.ts";

/** Bytes of the fixed header (type byte + Remaining Length, §2.1.4) at the start of `packet`. */
export function fixedHeaderLength(packet: Uint8Array): number {
  let i = 1;
  while (i < 5 && i < packet.length && (packet[i] & 0x80) !== 0) i++;
  if (i >= 5 || i >= packet.length) {
    throw new Error(`malformed Remaining Length in encoded packet starting 0x${packet[0].toString(16)}`);
  }
  return i + 1;
}

/** A PUBLISH encoded once, with the offsets of the fields the generator patches per message. */
export class PublishTemplate {
  /** The encoded packet (packet id 1 when QoS > 0, zero payload). */
  readonly bytes: Uint8Array;
  /** Offset of the two-byte packet identifier, or -1 for QoS 0. */
  readonly packetIdOffset: number;
  /** Offset of the payload, where the stamp goes. */
  readonly payloadOffset: number;
  readonly qos: QoS;

  constructor(topic: string, qos: QoS, payloadSize: number, version: ProtocolVersion, retain = false) {
    if (payloadSize < STAMP_BYTES) {
      throw new RangeError(
        `payload size must be at least ${STAMP_BYTES} bytes for the stamp, got ${payloadSize}`,
      );
    }
    this.qos = qos;
    this.bytes = encodePublish({
      type: PacketType.PUBLISH,
      topic,
      payload: new Uint8Array(payloadSize),
      qos,
      retain,
      dup: false,
      packetId: qos > 0 ? 1 : undefined,
    }, version);
    this.payloadOffset = this.bytes.length - payloadSize;
    const topicBytes = new TextEncoder().encode(topic).length;
    const afterTopic = fixedHeaderLength(this.bytes) + 2 + topicBytes;
    this.packetIdOffset = qos > 0 ? publishPacketIdOffset(this.bytes) : -1;
    // §3.3.2: topic, then packet id (QoS > 0), then properties (MQTT 5), then the payload.
    if (qos > 0 && (this.bytes[this.packetIdOffset] !== 0 || this.bytes[this.packetIdOffset + 1] !== 1)) {
      throw new Error(`encoded PUBLISH for "${topic}" has no packet id 1 at offset ${this.packetIdOffset}`);
    }
    if (this.payloadOffset < afterTopic + (qos > 0 ? 2 : 0)) {
      throw new Error(
        `encoded PUBLISH for "${topic}" is shorter than its header (${this.bytes.length} bytes)`,
      );
    }
  }

  /** Bytes per packet. */
  get length(): number {
    return this.bytes.length;
  }

  /** A buffer holding `count` copies of the packet, ready for {@link PublishTemplate.stamp}. */
  batch(count: number): Uint8Array {
    const out = new Uint8Array(count * this.bytes.length);
    for (let k = 0; k < count; k++) out.set(this.bytes, k * this.bytes.length);
    return out;
  }

  /** Writes packet id and stamp into copy number `slot` of a {@link PublishTemplate.batch} buffer. */
  stamp(
    view: DataView,
    slot: number,
    packetId: number,
    runTag: number,
    publisher: number,
    seq: number,
    sentAtMs: number,
  ): void {
    const base = slot * this.bytes.length;
    if (this.packetIdOffset >= 0) view.setUint16(base + this.packetIdOffset, packetId);
    writeStamp(view, base + this.payloadOffset, runTag, publisher, seq, sentAtMs);
  }
}

/** An acknowledgement (PUBACK, PUBREC, PUBREL, PUBCOMP) encoded once; only the packet id changes. */
export class AckTemplate {
  readonly bytes: Uint8Array;
  readonly #idOffset: number;

  constructor(type: 4 | 5 | 6 | 7, version: ProtocolVersion) {
    this.bytes = encode({ type, packetId: 0x0102 }, version);
    this.#idOffset = fixedHeaderLength(this.bytes);
    if (this.bytes[this.#idOffset] !== 1 || this.bytes[this.#idOffset + 1] !== 2) {
      throw new Error(`encoded acknowledgement of type ${type} has no packet id at offset ${this.#idOffset}`);
    }
  }

  /** Appends an acknowledgement of `packetId` to `out` at `offset`; returns the new offset. */
  put(out: Uint8Array, offset: number, packetId: number): number {
    out.set(this.bytes, offset);
    out[offset + this.#idOffset] = packetId >> 8;
    out[offset + this.#idOffset + 1] = packetId & 0xff;
    return offset + this.bytes.length;
  }
}

/**
 * Accumulates acknowledgements produced while one read chunk is processed, so that they leave as a
 * single write at the end of the chunk.
 */
export class AckBatch {
  #buf = new Uint8Array(1024);
  #len = 0;

  /** Appends one acknowledgement. */
  add(template: AckTemplate, packetId: number): void {
    if (this.#len + template.bytes.length > this.#buf.length) {
      const next = new Uint8Array(this.#buf.length * 2);
      next.set(this.#buf.subarray(0, this.#len));
      this.#buf = next;
    }
    this.#len = template.put(this.#buf, this.#len, packetId);
  }

  /** Returns the accumulated bytes (a copy, safe to queue) and empties the batch; null when empty. */
  take(): Uint8Array | null {
    if (this.#len === 0) return null;
    const out = this.#buf.slice(0, this.#len);
    this.#len = 0;
    return out;
  }
}

/** Packet identifiers in use by one sender (§2.2.1: non-zero, unique while in flight). */
export class PacketIdPool {
  readonly #inUse = new Uint8Array(65536);
  #next = 1;
  #count = 0;

  /** Identifiers currently in use. */
  get inUse(): number {
    return this.#count;
  }

  /** Takes a free identifier; throws when all 65,535 are in flight. */
  acquire(): number {
    if (this.#count >= 65535) throw new Error("all 65,535 packet identifiers are in flight");
    while (this.#inUse[this.#next] === 1) this.#next = this.#next === 65535 ? 1 : this.#next + 1;
    const id = this.#next;
    this.#inUse[id] = 1;
    this.#count++;
    this.#next = id === 65535 ? 1 : id + 1;
    return id;
  }

  /** Frees `id`; returns false when it was not in use (an acknowledgement we did not expect). */
  release(id: number): boolean {
    if (this.#inUse[id] !== 1) return false;
    this.#inUse[id] = 0;
    this.#count--;
    return true;
  }
}
