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

/** Shorthand for a malformed-packet error (0x81). */
export function malformed(message: string): MqttError {
  return new MqttError(ReasonCode.MalformedPacket, message);
}

/** Shorthand for a protocol-error (0x82). */
export function protocolError(message: string): MqttError {
  return new MqttError(ReasonCode.ProtocolError, message);
}
