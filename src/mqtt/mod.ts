/**
 * The MQTT codec: packet types, decoding (whole packets and streams), encoding, MQTT 5 properties,
 * reason codes, topic rules and MQTT UTF-8 strings. Zero dependencies; knows nothing of sessions or sockets.
 *
 * @module
 */

export * from "./types.ts";
export * from "./reason_codes.ts";
export * from "./errors.ts";
export { decodePacket, type DecoderOptions, MAX_PACKET_SIZE, PacketDecoder } from "./decode.ts";
export {
  encode,
  encodedLength,
  encodePublish,
  MAX_REMAINING_LENGTH,
  publishPacketIdOffset,
} from "./encode.ts";
export { isValidTopicFilter, isValidTopicName, parseSharedFilter, SHARE_PREFIX } from "./topic.ts";
export { decodeUtf8, encodeUtf8, MAX_STRING_BYTES, utf8Length } from "./utf8.ts";
export {
  isPropertyAllowed,
  PROPERTIES,
  propertiesLength,
  PROPERTY_BY_ID,
  PROPERTY_BY_NAME,
  type PropertyDefinition,
  PropertyType,
  type PropertyTypeValue,
  readProperties,
  variableByteIntegerLength,
  WILL_PROPERTIES,
  writeProperties,
  writeVbi,
} from "./properties.ts";
export { Reader } from "./reader.ts";
