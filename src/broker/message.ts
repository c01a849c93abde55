/**
 * The Application Message as it travels through the broker, and its encoding for subscribers.
 *
 * A PUBLISH is encoded once per distinct shape (protocol family, QoS, RETAIN flag) and the same bytes are
 * copied to every subscriber that gets that shape; the packet id is patched in place by the transport.
 * Only deliveries that carry per-subscriber data (Subscription Identifiers, an outbound Topic Alias, a
 * decreasing Message Expiry Interval) are encoded on their own.
 *
 * @module
 */

import { encodePublish } from "../mqtt/encode.ts";
import type { Properties, PublishPacket, QoS } from "../mqtt/types.ts";
import type { StoredMessage } from "../store/store.ts";

/** An Application Message inside the broker. */
export interface Message extends StoredMessage {
  /** Client id of the publisher (for No Local, §3.8.3.1); undefined for $SYS and wills of ended sessions. */
  origin?: string;
  /**
   * The first encoded PUBLISH made for this message (or the one received, see `handlePublish`), and its
   * shape ({@link shapeSlot}); -1 or undefined when there is none yet. Most messages go out in one shape
   * only, so this pair saves the array of {@link encodedMore} (~180 bytes) per message.
   */
  encodedSlot?: number;
  encodedBytes?: Uint8Array;
  /** Encodings of further shapes, by slot, see {@link encodeShared}. */
  encodedMore?: (Uint8Array | undefined)[];
  /**
   * Set on retained messages: encoded afresh per send, never cached. They live long and are sent in bursts
   * of thousands to one subscriber; caching made each a long-lived array hanging off an old object, and
   * every young-generation collection during the burst walked and promoted all of them.
   */
  uncached?: boolean;
}

/** Per-delivery data that makes an encoding unique to one subscriber. */
export interface DeliveryExtras {
  subscriptionIds?: number[];
  /** Outbound topic alias; `aliasKnown` means the client already has it (send an empty topic). */
  topicAlias?: number;
  aliasKnown?: boolean;
}

const PLACEHOLDER_ID = 0xffff;

/**
 * Properties to forward: everything the publisher sent except hop-by-hop ones (§3.3.2.3). Will Delay
 * Interval belongs to the Will in CONNECT only (§3.1.3.2.2) and is not allowed on PUBLISH.
 */
export function forwardableProperties(props: Properties | undefined): Properties | undefined {
  if (!props) return undefined;
  let out: Properties | undefined;
  for (const key in props) {
    if (
      key === "topicAlias" || key === "subscriptionIdentifiers" || key === "messageExpiryInterval" ||
      key === "willDelayInterval"
    ) continue;
    const value = props[key as keyof Properties];
    if (value === undefined) continue;
    out ??= {};
    (out as Record<string, unknown>)[key] = value;
  }
  return out;
}

function buildPacket(
  msg: Message,
  version: 3 | 4 | 5,
  qos: QoS,
  retain: boolean,
  now: number,
): PublishPacket {
  const packet: PublishPacket = {
    type: 3,
    topic: msg.topic,
    payload: msg.payload,
    qos,
    retain,
    dup: false,
    packetId: qos > 0 ? PLACEHOLDER_ID : undefined,
  };
  if (version === 5) {
    let props = msg.properties;
    if (msg.expiresAt !== undefined) {
      // §3.3.2.3.3: forward the remaining lifetime, not the original one.
      props = { ...props, messageExpiryInterval: Math.max(0, Math.ceil((msg.expiresAt - now) / 1000)) };
    }
    packet.properties = props;
  }
  return packet;
}

/** Index of a packet shape in the encoding cache of a {@link Message}: protocol family, QoS, RETAIN flag. */
export function shapeSlot(version: 3 | 4 | 5, qos: QoS, retain: boolean): number {
  return (version === 5 ? 6 : 0) + qos * 2 + (retain ? 1 : 0);
}

/**
 * The encoded PUBLISH for a delivery without per-subscriber extras, cached on the message. The packet id
 * (if any) is a placeholder: write it with `Transport.writeWithPacketId` at `publishPacketIdOffset` (src/mqtt/encode.ts).
 */
export function encodeShared(
  msg: Message,
  version: 3 | 4 | 5,
  qos: QoS,
  retain: boolean,
  now: number,
): Uint8Array {
  if (msg.expiresAt !== undefined && version === 5) {
    return encodePublish(buildPacket(msg, 5, qos, retain, now), 5);
  }
  if (msg.uncached) return encodePublish(buildPacket(msg, version, qos, retain, now), version === 5 ? 5 : 4);
  const slot = shapeSlot(version, qos, retain);
  if (msg.encodedSlot === slot) return msg.encodedBytes!;
  let bytes = msg.encodedMore?.[slot];
  if (bytes === undefined) {
    bytes = encodePublish(buildPacket(msg, version, qos, retain, now), version === 5 ? 5 : 4);
    if (msg.encodedBytes === undefined) {
      msg.encodedSlot = slot;
      msg.encodedBytes = bytes;
    } else {
      (msg.encodedMore ??= [])[slot] = bytes;
    }
  }
  return bytes;
}

/** The encoded PUBLISH for an MQTT 5 delivery with Subscription Identifiers or a Topic Alias. */
export function encodeWithExtras(
  msg: Message,
  qos: QoS,
  retain: boolean,
  now: number,
  extras: DeliveryExtras,
): Uint8Array {
  const packet = buildPacket(msg, 5, qos, retain, now);
  const props: Properties = { ...packet.properties };
  if (extras.subscriptionIds?.length) props.subscriptionIdentifiers = extras.subscriptionIds;
  if (extras.topicAlias !== undefined) {
    props.topicAlias = extras.topicAlias;
    if (extras.aliasKnown) packet.topic = "";
  }
  packet.properties = props;
  return encodePublish(packet, 5);
}
