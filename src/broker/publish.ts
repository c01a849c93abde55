/**
 * Inbound PUBLISH (§3.3) and the QoS 1/2 acknowledgement flows in both directions (§4.3):
 * PUBACK / PUBREC / PUBREL / PUBCOMP.
 *
 * An inbound QoS 1/2 message is routed when its PUBLISH arrives; its PUBACK / PUBREC is sent only once the
 * store has committed everything the message caused (retained update, queued copies), see
 * `Broker.sendAfterCommit`.
 *
 * @module
 */

import { isValidUtf8 } from "../mqtt/utf8.ts";
import { quote } from "../mqtt/errors.ts";
import { ReasonCode } from "../mqtt/reason_codes.ts";
import { isSysTopic, isValidDecodedTopicName } from "../mqtt/topic.ts";
import type { AckPacket, PublishPacket, QoS } from "../mqtt/types.ts";
import type { Broker } from "./broker.ts";
import type { Client } from "./client.ts";
import { forwardableProperties, type Message, shapeSlot } from "./message.ts";
import { completeInflight, pump, pumpIfWaiting, route } from "./routing.ts";

/** Sends an ack, with an MQTT 5 reason code when it is not success; after commit when needed. */
function ack(
  broker: Broker,
  client: Client,
  type: 4 | 5 | 6 | 7,
  packetId: number,
  reasonCode: number,
): void {
  // The 4-byte short form: reason code 0, or a client before MQTT 5 (whose acks carry none).
  if (reasonCode === 0 || client.version !== 5) {
    broker.ackAfterCommit(client, type, packetId);
    return;
  }
  broker.sendAfterCommit(client, broker.encodeFor(client, { type, packetId, reasonCode } as AckPacket), type);
}

/**
 * The PUBLISH as received, as the first entry of the message's encoding cache ({@link encodeShared}) when
 * it is what we would send a subscriber of its protocol family at its QoS: no properties (so no topic
 * alias either), DUP and RETAIN clear (a live delivery carries RETAIN 0 unless Retain As Published). The
 * subscriber's packet id is patched into the copy in its output buffer. Undefined when it is not.
 */
function receivedAsForwarded(client: Client, qos: QoS): Uint8Array | undefined {
  const raw = client.decoder.publishBytes;
  return raw === undefined || raw[0] !== (0x30 | (qos << 1)) ? undefined : raw;
}

/** Handles a PUBLISH from a client. */
export function handlePublish(broker: Broker, client: Client, p: PublishPacket): void {
  const config = broker.config;
  const session = client.session!;
  broker.metrics.publishReceived++;
  let topic = p.topic;
  const props = p.properties;
  if (props?.responseTopic !== undefined && !isValidDecodedTopicName(props.responseTopic)) {
    // MQTT-3.3.2-14: a Response Topic is a Topic Name, without wildcards.
    client.disconnect(
      ReasonCode.ProtocolError,
      `Response Topic ${quote(props.responseTopic)} is not a valid topic name`,
    );
    return;
  }
  if (props?.subscriptionIdentifiers !== undefined) {
    // MQTT-3.3.4-6: Subscription Identifiers are put on a PUBLISH by the server only.
    client.disconnect(ReasonCode.ProtocolError, "PUBLISH from a client carries a Subscription Identifier");
    return;
  }
  if (client.version === 5 && props !== undefined && props.topicAlias !== undefined) {
    const alias = props.topicAlias;
    if (alias === 0 || alias > config.server.topic_alias_maximum) {
      client.disconnect(
        ReasonCode.TopicAliasInvalid,
        `topic alias ${alias} is outside 1..${config.server.topic_alias_maximum}`,
      );
      return;
    }
    if (topic.length === 0) {
      const known = client.aliasesIn?.get(alias);
      if (known === undefined) {
        client.disconnect(ReasonCode.ProtocolError, `topic alias ${alias} was never set`);
        return;
      }
      topic = known;
    } else {
      (client.aliasesIn ??= new Map()).set(alias, topic);
    }
  }
  if (topic.length === 0) {
    client.disconnect(
      ReasonCode.ProtocolError,
      "PUBLISH has an empty topic name and no topic alias (§3.3.4)",
    );
    return;
  }
  if (!isValidDecodedTopicName(topic)) {
    client.disconnect(ReasonCode.TopicNameInvalid, `invalid topic name ${quote(topic)}`);
    return;
  }
  const qos = p.qos;
  if (qos > config.qos.max_qos && client.version === 5) {
    // We advertised Maximum QoS in CONNACK (§3.2.2.3.4).
    client.disconnect(ReasonCode.QoSNotSupported, `QoS ${qos} exceeds the maximum QoS ${config.qos.max_qos}`);
    return;
  }
  if (p.retain && !config.retained.enabled && client.version === 5) {
    client.disconnect(ReasonCode.RetainNotSupported, "retained messages are disabled");
    return;
  }
  if (qos === 2 && session.incoming.has(p.packetId!)) {
    // A retransmission of a QoS 2 message we already routed (§4.3.3): acknowledge, do not deliver again.
    ack(broker, client, 5, p.packetId!, 0);
    return;
  }
  // Receive Maximum exists in MQTT 5 only (§3.3.4); 3.1.1 clients are bounded by their packet ids.
  if (qos > 0 && ++client.inboundUnacked > broker.receiveMaximum && client.version === 5) {
    client.disconnect(
      ReasonCode.ReceiveMaximumExceeded,
      `more than ${broker.receiveMaximum} unacknowledged publishes`,
    );
    return;
  }

  let reasonCode: number = ReasonCode.Success;
  if (isSysTopic(topic)) {
    reasonCode = ReasonCode.NotAuthorized; // $SYS is written by the broker only
  } else if (broker.acl !== undefined && !broker.acl.canPublish(client.username, client.clientId, topic)) {
    reasonCode = ReasonCode.NotAuthorized;
  } else if (client.version === 5 && props?.payloadFormatIndicator === 1 && !isValidUtf8(p.payload)) {
    if (qos === 0) {
      client.disconnect(
        ReasonCode.PayloadFormatInvalid,
        "payload is not valid UTF-8 but Payload Format Indicator is 1",
      );
      return;
    }
    reasonCode = ReasonCode.PayloadFormatInvalid;
  }

  if (reasonCode === ReasonCode.Success) {
    const now = client.lastRead; // when the chunk holding this PUBLISH was read: a clock read costs ~90 ns
    const expiry = props?.messageExpiryInterval;
    const retain = p.retain && config.retained.enabled;
    const raw = receivedAsForwarded(client, qos);
    const msg: Message = {
      topic,
      payload: p.payload,
      qos,
      retain,
      properties: client.version === 5 ? forwardableProperties(props) : undefined,
      expiresAt: expiry === undefined ? undefined : now + expiry * 1000,
      receivedAt: now,
      origin: client.clientId,
      encodedSlot: raw === undefined ? -1 : shapeSlot(client.version, qos, false),
      encodedBytes: raw,
      encodedMore: undefined,
    };
    if (retain) broker.setRetained(msg);
    const matched = route(broker, msg);
    if (!matched) {
      // A retained message nobody subscribes to yet is kept, not dropped (Mosquitto does not count it either).
      if (!retain) broker.metrics.dropped.no_subscribers++;
      if (client.version === 5 && qos > 0) reasonCode = ReasonCode.NoMatchingSubscribers;
    }
  } else {
    broker.metrics.dropped.not_authorized++;
    if (broker.logger.isEnabled("debug")) {
      broker.logger.debug("publish refused", { client_id: client.clientId, topic, reason: reasonCode });
    }
  }

  if (qos === 1) {
    client.inboundUnacked--;
    ack(broker, client, 4, p.packetId!, reasonCode);
  } else if (qos === 2) {
    if (reasonCode < 0x80) {
      session.addIncoming(p.packetId!);
      if (session.persistent) {
        broker.persist({ op: "incoming.put", clientId: session.clientId, packetId: p.packetId! });
      }
    } else {
      client.inboundUnacked--; // an error PUBREC ends the exchange (§4.9)
    }
    ack(broker, client, 5, p.packetId!, reasonCode);
  }
}

/** PUBREL from the client: the inbound QoS 2 exchange completes (§4.3.3). */
export function handlePubrel(broker: Broker, client: Client, p: AckPacket): void {
  const session = client.session!;
  if (session.deleteIncoming(p.packetId)) {
    client.inboundUnacked = Math.max(0, client.inboundUnacked - 1);
    if (session.persistent) {
      broker.persist({ op: "incoming.delete", clientId: session.clientId, packetId: p.packetId });
    }
    ack(broker, client, 7, p.packetId, 0);
  } else {
    ack(broker, client, 7, p.packetId, ReasonCode.PacketIdentifierNotFound);
  }
}

/** PUBACK from the client: an outbound QoS 1 message is delivered. */
export function handlePuback(broker: Broker, client: Client, p: AckPacket): void {
  const session = client.session!;
  const entry = session.inflight.get(p.packetId);
  if (entry === undefined || entry.qos !== 1) return; // unknown id: nothing to release (§4.3.2)
  client.lastAck = client.lastRead;
  completeInflight(broker, session, client, entry);
  pumpIfWaiting(broker, session, client);
}

/** PUBREC from the client: answer PUBREL, keep the packet id until PUBCOMP. */
export function handlePubrec(broker: Broker, client: Client, p: AckPacket): void {
  const session = client.session!;
  const entry = session.inflight.get(p.packetId);
  if (entry === undefined || entry.qos !== 2) {
    ack(broker, client, 6, p.packetId, ReasonCode.PacketIdentifierNotFound);
    return;
  }
  client.lastAck = client.lastRead;
  if ((p.reasonCode ?? 0) >= 0x80) {
    // The receiver refused the message: the exchange ends here (§4.3.3).
    completeInflight(broker, session, client, entry);
    pump(broker, session);
    return;
  }
  if (entry.state === "publish") {
    entry.state = "pubrel";
    if (session.persistent) broker.persistOutbound(session, entry);
  }
  // After the "pubrel" state is committed: PUBREL releases the id at the receiver, so a crash before the
  // commit must not bring the PUBLISH back (§4.3.3).
  broker.ackAfterCommit(client, 6, p.packetId);
}

/** PUBCOMP from the client: the outbound QoS 2 exchange is complete. */
export function handlePubcomp(broker: Broker, client: Client, p: AckPacket): void {
  const session = client.session!;
  const entry = session.inflight.get(p.packetId);
  if (entry === undefined || entry.state !== "pubrel") return;
  client.lastAck = client.lastRead;
  completeInflight(broker, session, client, entry);
  pumpIfWaiting(broker, session, client);
}
