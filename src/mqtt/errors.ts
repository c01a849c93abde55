/**
 * The one error type of the codec: every malformed or forbidden input becomes an MqttError carrying
 * the MQTT 5 reason code a server would send (0x81 malformed, 0x82 protocol error, 0x95 too large...).
 *
 * @module
 */

import { ReasonCode } from "./reason_codes.ts";

/** A protocol violation, with the reason code to put in CONNACK / DISCONNECT. */
export class MqttError extends Error {
  /** MQTT 5 reason code (see {@link ReasonCode}). */
  readonly reasonCode: number;

  constructor(reasonCode: number, message: string) {
    super(message);
    this.name = "MqttError";
    this.reasonCode = reasonCode;
  }
}

/** Characters of a peer's string kept when it is quoted in an error message or a log line. */
const QUOTE_MAX = 64;

/**
 * `s` in double quotes (JSON escapes) for an error message, cut to its first {@link QUOTE_MAX} characters
 * when longer: a peer's 64 KiB topic must not become a 64 KiB Reason String or log line.
 */
export function quote(s: string): string {
  if (s.length <= QUOTE_MAX) return JSON.stringify(s);
  let end = QUOTE_MAX;
  const c = s.charCodeAt(end - 1);
  if (c >= 0xd800 && c <= 0xdbff) end--; // not half of a surrogate pair
  return `${JSON.stringify(s.slice(0, end))}... (${s.length} characters)`;
}

/** Shorthand for a malformed-packet error (0x81). */
export function malformed(message: string): MqttError {
  return new MqttError(ReasonCode.MalformedPacket, message);
}

/** Shorthand for a protocol-error (0x82). */
export function protocolError(message: string): MqttError {
  return new MqttError(ReasonCode.ProtocolError, message);
}
