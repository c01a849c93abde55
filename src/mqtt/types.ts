/**
 * Packet shapes of MQTT 3.1 (protocol level 3), 3.1.1 (level 4) and 5.0 (level 5).
 *
 * One decoded object per packet; fields that only exist in MQTT 5 (properties, reason codes on
 * acknowledgements) are optional and ignored when encoding for 3.1 / 3.1.1.
 *
 * @module
 */

/** MQTT control packet types (§2.1.2). */
export const PacketType = {
  CONNECT: 1,
  CONNACK: 2,
  PUBLISH: 3,
  PUBACK: 4,
  PUBREC: 5,
  PUBREL: 6,
  PUBCOMP: 7,
  SUBSCRIBE: 8,
  SUBACK: 9,
  UNSUBSCRIBE: 10,
  UNSUBACK: 11,
  PINGREQ: 12,
  PINGRESP: 13,
  DISCONNECT: 14,
  AUTH: 15,
} as const;

/** Names of the packet types as the spec writes them; index = packet type (§2.1.2), 0 is reserved. */
export const PACKET_TYPE_NAMES: readonly string[] = [
  "reserved type 0",
  "CONNECT",
  "CONNACK",
  "PUBLISH",
  "PUBACK",
  "PUBREC",
  "PUBREL",
  "PUBCOMP",
  "SUBSCRIBE",
  "SUBACK",
  "UNSUBSCRIBE",
  "UNSUBACK",
  "PINGREQ",
  "PINGRESP",
  "DISCONNECT",
  "AUTH",
];

/** Protocol level byte of CONNECT: 3 = MQTT 3.1 ("MQIsdp"), 4 = 3.1.1, 5 = 5.0. */
export type ProtocolVersion = 3 | 4 | 5;

/** Quality of service level. */
export type QoS = 0 | 1 | 2;

/** A User Property: a name/value pair that may repeat (§3.3.2.3.7). */
export type UserProperty = [name: string, value: string];

/**
 * MQTT 5 properties (§2.2.2.2). The property identifier is given next to each field.
 * Which properties may appear on which packet is enforced by the decoder (0x82 / 0x81 otherwise).
 */
export interface Properties {
  /** 0x01 byte, PUBLISH, Will */
  payloadFormatIndicator?: number;
  /** 0x02 four-byte integer, PUBLISH, Will */
  messageExpiryInterval?: number;
  /** 0x03 UTF-8 string, PUBLISH, Will */
  contentType?: string;
  /** 0x08 UTF-8 string (a topic name), PUBLISH, Will */
  responseTopic?: string;
  /** 0x09 binary data, PUBLISH, Will */
  correlationData?: Uint8Array;
  /** 0x0B variable byte integer 1..268,435,455; several on PUBLISH, one on SUBSCRIBE */
  subscriptionIdentifiers?: number[];
  /** 0x11 four-byte integer, CONNECT, CONNACK, DISCONNECT */
  sessionExpiryInterval?: number;
  /** 0x12 UTF-8 string, CONNACK */
  assignedClientIdentifier?: string;
  /** 0x13 two-byte integer, CONNACK */
  serverKeepAlive?: number;
  /** 0x15 UTF-8 string, CONNECT, CONNACK, AUTH */
  authenticationMethod?: string;
  /** 0x16 binary data, CONNECT, CONNACK, AUTH */
  authenticationData?: Uint8Array;
  /** 0x17 byte 0/1, CONNECT */
  requestProblemInformation?: number;
  /** 0x18 four-byte integer, Will */
  willDelayInterval?: number;
  /** 0x19 byte 0/1, CONNECT */
  requestResponseInformation?: number;
  /** 0x1A UTF-8 string, CONNACK */
  responseInformation?: string;
  /** 0x1C UTF-8 string, CONNACK, DISCONNECT */
  serverReference?: string;
  /** 0x1F UTF-8 string, CONNACK, PUBACK..PUBCOMP, SUBACK, UNSUBACK, DISCONNECT, AUTH */
  reasonString?: string;
  /** 0x21 two-byte integer > 0, CONNECT, CONNACK */
  receiveMaximum?: number;
  /** 0x22 two-byte integer, CONNECT, CONNACK */
  topicAliasMaximum?: number;
  /** 0x23 two-byte integer > 0, PUBLISH */
  topicAlias?: number;
  /** 0x24 byte 0/1, CONNACK */
  maximumQoS?: number;
  /** 0x25 byte 0/1, CONNACK */
  retainAvailable?: number;
  /** 0x26 string pair, repeatable, on every packet with properties */
  userProperties?: UserProperty[];
  /** 0x27 four-byte integer > 0, CONNECT, CONNACK */
  maximumPacketSize?: number;
  /** 0x28 byte 0/1, CONNACK */
  wildcardSubscriptionAvailable?: number;
  /** 0x29 byte 0/1, CONNACK */
  subscriptionIdentifierAvailable?: number;
  /** 0x2A byte 0/1, CONNACK */
  sharedSubscriptionAvailable?: number;
}

/** The Will Message carried in CONNECT (§3.1.2.5, §3.1.3.2). */
export interface Will {
  topic: string;
  payload: Uint8Array;
  qos: QoS;
  retain: boolean;
  /** MQTT 5 Will Properties. */
  properties?: Properties;
}

/** CONNECT (§3.1). */
export interface ConnectPacket {
  type: 1;
  /** "MQTT" for levels 4 and 5, "MQIsdp" for level 3. */
  protocolName: string;
  protocolVersion: ProtocolVersion;
  /** Clean Session (3.1.1) / Clean Start (5.0). */
  clean: boolean;
  /** Seconds; 0 disables keep-alive. */
  keepAlive: number;
  clientId: string;
  username?: string;
  password?: Uint8Array;
  will?: Will;
  properties?: Properties;
}

/** CONNACK (§3.2). `reasonCode` is the 3.1.1 return code (0..5) or the MQTT 5 reason code. */
export interface ConnackPacket {
  type: 2;
  sessionPresent: boolean;
  reasonCode: number;
  properties?: Properties;
}

/** PUBLISH (§3.3). */
export interface PublishPacket {
  type: 3;
  /** May be "" in MQTT 5 when a Topic Alias is present. */
  topic: string;
  /** A copy owned by the packet: it never aliases the decoder's read buffer. */
  payload: Uint8Array;
  qos: QoS;
  retain: boolean;
  dup: boolean;
  /** Present exactly when qos > 0. */
  packetId?: number;
  properties?: Properties;
}

/** PUBACK, PUBREC, PUBREL, PUBCOMP (§3.4-§3.7). `reasonCode` defaults to 0 (success). */
export interface AckPacket {
  type: 4 | 5 | 6 | 7;
  packetId: number;
  reasonCode?: number;
  properties?: Properties;
}

/** One topic filter of a SUBSCRIBE with its Subscription Options (§3.8.3.1). */
export interface SubscriptionRequest {
  topicFilter: string;
  qos: QoS;
  /** MQTT 5 only; false for 3.1 / 3.1.1. */
  noLocal: boolean;
  /** MQTT 5 only; false for 3.1 / 3.1.1. */
  retainAsPublished: boolean;
  /** MQTT 5 only; 0 for 3.1 / 3.1.1. */
  retainHandling: 0 | 1 | 2;
}

/** SUBSCRIBE (§3.8). */
export interface SubscribePacket {
  type: 8;
  packetId: number;
  subscriptions: SubscriptionRequest[];
  properties?: Properties;
}

/** SUBACK (§3.9). One reason code (granted QoS or failure) per requested filter. */
export interface SubackPacket {
  type: 9;
  packetId: number;
  reasonCodes: number[];
  properties?: Properties;
}

/** UNSUBSCRIBE (§3.10). */
export interface UnsubscribePacket {
  type: 10;
  packetId: number;
  topicFilters: string[];
  properties?: Properties;
}

/** UNSUBACK (§3.11). `reasonCodes` exists on the wire only in MQTT 5. */
export interface UnsubackPacket {
  type: 11;
  packetId: number;
  reasonCodes?: number[];
  properties?: Properties;
}

/** PINGREQ (§3.12). */
export interface PingreqPacket {
  type: 12;
}

/** PINGRESP (§3.13). */
export interface PingrespPacket {
  type: 13;
}

/** DISCONNECT (§3.14). Reason code and properties are MQTT 5 only. */
export interface DisconnectPacket {
  type: 14;
  reasonCode?: number;
  properties?: Properties;
}

/** AUTH (§3.15), MQTT 5 only. */
export interface AuthPacket {
  type: 15;
  reasonCode?: number;
  properties?: Properties;
}

/** Any MQTT control packet. */
export type Packet =
  | ConnectPacket
  | ConnackPacket
  | PublishPacket
  | AckPacket
  | SubscribePacket
  | SubackPacket
  | UnsubscribePacket
  | UnsubackPacket
  | PingreqPacket
  | PingrespPacket
  | DisconnectPacket
  | AuthPacket;
