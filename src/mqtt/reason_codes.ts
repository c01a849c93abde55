/**
 * Every MQTT 5 reason code (§2.4), and the MQTT 3.1.1 CONNACK return codes (§3.2.2.3).
 * One list for the whole project: nothing else spells these numbers.
 *
 * @module
 */

/** MQTT 5.0 reason codes by name. */
export const ReasonCode = {
  Success: 0x00,
  NormalDisconnection: 0x00,
  GrantedQoS0: 0x00,
  GrantedQoS1: 0x01,
  GrantedQoS2: 0x02,
  DisconnectWithWillMessage: 0x04,
  NoMatchingSubscribers: 0x10,
  NoSubscriptionExisted: 0x11,
  ContinueAuthentication: 0x18,
  ReAuthenticate: 0x19,
  UnspecifiedError: 0x80,
  MalformedPacket: 0x81,
  ProtocolError: 0x82,
  ImplementationSpecificError: 0x83,
  UnsupportedProtocolVersion: 0x84,
  ClientIdentifierNotValid: 0x85,
  BadUserNameOrPassword: 0x86,
  NotAuthorized: 0x87,
  ServerUnavailable: 0x88,
  ServerBusy: 0x89,
  Banned: 0x8a,
  ServerShuttingDown: 0x8b,
  BadAuthenticationMethod: 0x8c,
  KeepAliveTimeout: 0x8d,
  SessionTakenOver: 0x8e,
  TopicFilterInvalid: 0x8f,
  TopicNameInvalid: 0x90,
  PacketIdentifierInUse: 0x91,
  PacketIdentifierNotFound: 0x92,
  ReceiveMaximumExceeded: 0x93,
  TopicAliasInvalid: 0x94,
  PacketTooLarge: 0x95,
  MessageRateTooHigh: 0x96,
  QuotaExceeded: 0x97,
  AdministrativeAction: 0x98,
  PayloadFormatInvalid: 0x99,
  RetainNotSupported: 0x9a,
  QoSNotSupported: 0x9b,
  UseAnotherServer: 0x9c,
  ServerMoved: 0x9d,
  SharedSubscriptionsNotSupported: 0x9e,
  ConnectionRateExceeded: 0x9f,
  MaximumConnectTime: 0xa0,
  SubscriptionIdentifiersNotSupported: 0xa1,
  WildcardSubscriptionsNotSupported: 0xa2,
} as const;

/** MQTT 3.1 / 3.1.1 CONNACK return codes. */
export const ConnackReturnCode = {
  Accepted: 0x00,
  UnacceptableProtocolVersion: 0x01,
  IdentifierRejected: 0x02,
  ServerUnavailable: 0x03,
  BadUsernameOrPassword: 0x04,
  NotAuthorized: 0x05,
} as const;

const names = new Map<number, string>();
for (const [name, code] of Object.entries(ReasonCode)) {
  if (!names.has(code)) names.set(code, name);
}

/** A readable name for an MQTT 5 reason code, for logs: `reasonName(0x8e)` is "SessionTakenOver". */
export function reasonName(code: number): string {
  return names.get(code) ?? `0x${code.toString(16).padStart(2, "0")}`;
}

/**
 * Maps an MQTT 5 CONNACK reason code to the closest MQTT 3.1.1 return code (for clients of level 3/4).
 */
export function connackCodeForVersion(code5: number, version: 3 | 4 | 5): number {
  if (version === 5) return code5;
  switch (code5) {
    case ReasonCode.Success:
      return ConnackReturnCode.Accepted;
    case ReasonCode.UnsupportedProtocolVersion:
      return ConnackReturnCode.UnacceptableProtocolVersion;
    case ReasonCode.ClientIdentifierNotValid:
      return ConnackReturnCode.IdentifierRejected;
    case ReasonCode.BadUserNameOrPassword:
      return ConnackReturnCode.BadUsernameOrPassword;
    case ReasonCode.NotAuthorized:
    case ReasonCode.Banned:
      return ConnackReturnCode.NotAuthorized;
    default:
      return ConnackReturnCode.ServerUnavailable;
  }
}

/**
 * The MQTT 5 reason codes each packet type may carry (§2.4 table, §3.2.2.2, §3.4.2.1 ... §3.15.2.1),
 * indexed by packet type. Packets without a reason code have an empty list.
 */
// deno-fmt-ignore
export const REASON_CODES_BY_PACKET: readonly (readonly number[])[] = [
  [], // 0: reserved
  [], // CONNECT
  // CONNACK (§3.2.2.2)
  [0x00, 0x80, 0x81, 0x82, 0x83, 0x84, 0x85, 0x86, 0x87, 0x88, 0x89, 0x8a, 0x8c, 0x90, 0x95, 0x97, 0x99, 0x9a,
    0x9b, 0x9c, 0x9d, 0x9f],
  [], // PUBLISH
  [0x00, 0x10, 0x80, 0x83, 0x87, 0x90, 0x91, 0x97, 0x99], // PUBACK (§3.4.2.1)
  [0x00, 0x10, 0x80, 0x83, 0x87, 0x90, 0x91, 0x97, 0x99], // PUBREC (§3.5.2.1)
  [0x00, 0x92], // PUBREL (§3.6.2.1)
  [0x00, 0x92], // PUBCOMP (§3.7.2.1)
  [], // SUBSCRIBE
  [0x00, 0x01, 0x02, 0x80, 0x83, 0x87, 0x8f, 0x91, 0x97, 0x9e, 0xa1, 0xa2], // SUBACK (§3.9.3)
  [], // UNSUBSCRIBE
  [0x00, 0x11, 0x80, 0x83, 0x87, 0x8f, 0x91], // UNSUBACK (§3.11.3)
  [], // PINGREQ
  [], // PINGRESP
  // DISCONNECT (§3.14.2.1)
  [0x00, 0x04, 0x80, 0x81, 0x82, 0x83, 0x87, 0x89, 0x8b, 0x8d, 0x8e, 0x8f, 0x90, 0x93, 0x94, 0x95, 0x96, 0x97,
    0x98, 0x99, 0x9a, 0x9b, 0x9c, 0x9d, 0x9e, 0x9f, 0xa0, 0xa1, 0xa2],
  [0x00, 0x18, 0x19], // AUTH (§3.15.2.1)
];

/** The MQTT 3.1 / 3.1.1 SUBACK return codes (§3.9.3 of 3.1.1): granted QoS 0..2 or 0x80 failure. */
export const SUBACK_RETURN_CODES_V4: readonly number[] = [0x00, 0x01, 0x02, 0x80];

// Lookup bitmaps (256 bits per packet type) so the decoder checks a code without searching a list.
const validBits: Uint32Array = (() => {
  const bits = new Uint32Array(16 * 8);
  REASON_CODES_BY_PACKET.forEach((codes, type) => {
    for (const c of codes) bits[type * 8 + (c >>> 5)] |= 1 << (c & 31);
  });
  return bits;
})();

/** True when `code` is an MQTT 5 reason code that packet type `packetType` may carry (§2.4). */
export function isValidReasonCode(packetType: number, code: number): boolean {
  if (packetType < 0 || packetType > 15 || code < 0 || code > 255) return false;
  return (validBits[packetType * 8 + (code >>> 5)] & (1 << (code & 31))) !== 0;
}
