/**
 * One network connection speaking MQTT: reads packets, dispatches them to the protocol handlers, and
 * writes packets back. Holds what lives only as long as the connection (keep-alive, topic aliases, the
 * client's limits); what outlives it is in the {@link Session}.
 *
 * @module
 */

import { PacketDecoder } from "../mqtt/decode.ts";
import { encode } from "../mqtt/encode.ts";
import { MqttError } from "../mqtt/errors.ts";
import { isValidReasonCode, ReasonCode, reasonName } from "../mqtt/reason_codes.ts";
import { type Packet, PACKET_TYPE_NAMES, PacketType, type Properties } from "../mqtt/types.ts";
import type { Transport } from "../transport/connection.ts";
import type { Broker } from "./broker.ts";
import type { OutEntry, Session } from "./session.ts";

const UNACCEPTABLE_PROTOCOL_CONNACK = new Uint8Array([0x20, 0x02, 0x00, 0x01]);

/** Lifecycle of a connection. */
export type ClientState = "connecting" | "connected" | "closed";

/** Longest Reason String sent, in UTF-16 units (at most 3 bytes each, far below 65,535). */
const REASON_STRING_MAX = 1024;

/** One connected (or connecting) client. */
export class Client {
  state: ClientState = "connecting";
  readonly decoder: PacketDecoder;
  version: 3 | 4 | 5 = 4;
  clientId = "";
  username?: string;
  session?: Session;
  /** Seconds; 0 = no keep-alive. */
  keepAlive = 0;
  /**
   * ms since the epoch when the chunk holding the last complete packet was read: keep-alive counts Control
   * Packets (MQTT-3.1.2-24), so bytes trickling in without completing one do not keep a connection alive.
   */
  lastRead: number;
  /**
   * ms since the epoch of the last acknowledgement (PUBACK, PUBREC, PUBCOMP) of a message we sent, or of the
   * CONNECT: a subscriber that acknowledges is one its publishers may be paused for (routing.ts).
   */
  lastAck: number;
  readonly connectedAt: number;
  /** The client's Receive Maximum: our outbound in-flight window (§3.1.2.11.3). */
  sendQuota = 65535;
  /** The client's Maximum Packet Size (§3.1.2.11.4); we never send more. */
  maxPacketSize = 268435460;
  /** Inbound Topic Aliases the client set (§3.3.2.3.4). */
  aliasesIn?: Map<number, string>;
  /** Outbound Topic Aliases we assigned, by topic; limited by the client's Topic Alias Maximum. */
  aliasesOut?: Map<string, number>;
  aliasOutMax = 0;
  /**
   * While above 0, deliveries to this client wait (QoS 1/2 in the session queue, QoS 0 behind the pending
   * acks) so that messages held for a store commit keep their place: retained messages of a SUBSCRIBE whose
   * SUBACK waits (subscribe.ts), a PUBLISH waiting for its in-flight record (routing.ts,
   * sendAfterRecordCommit). Counts the open holds and the held deliveries not yet sent.
   */
  holdSends = 0;
  /**
   * PUBLISHes to this client waiting for their in-flight record's commit (QoS 2, and QoS 1 under a packet id
   * of their own: routing.ts, sendAfterRecordCommit): held deliveries behind them wait for them to go out.
   */
  recordWaiting = 0;
  /** In-flight messages of the session not resent yet after the reconnect, beyond the window (routing.ts). */
  resendBacklog?: OutEntry[];
  /** Inbound QoS 1/2 PUBLISHes not yet acknowledged, for our Receive Maximum (§4.9). */
  inboundUnacked = 0;
  /**
   * Acks waiting for the store to commit what their PUBLISH caused, in arrival order (§4.6); undefined
   * when none wait (idle connections hold no arrays).
   */
  pendingAcks?: (Uint8Array | number | (() => void))[];
  /** Absolute index of `pendingAcks[0]` (acks released so far). */
  ackBase = 0;
  /** Commit waits in registration order; each releases acks up to its absolute `target`. */
  ackWaiters?: { target: number; done: boolean }[];
  /** The store promise the newest waiter waits on. */
  ackPromise?: Promise<void>;
  /** MQTT 5 Request Problem Information: false means no Reason String on most packets. */
  problemInfo = true;
  /** Why the connection ended, for the log line. */
  closeReason = "";
  /** When the client sent DISCONNECT normally, its will is not published (§3.14.4). */
  disconnectedCleanly = false;
  /** Output above the high-water mark since this time (ms), for slow-consumer detection. */
  stuckSince = 0;
  /** A session this client's publishes overfilled: reading pauses until it drains (flow control). */
  waitForDrain?: Session;
  /** Shutdown or takeover: the will is decided by the caller. */
  suppressWill = false;

  constructor(readonly broker: Broker, readonly transport: Transport) {
    this.decoder = new PacketDecoder({ maxPacketSize: broker.config.server.max_message_size });
    this.lastRead = Date.now();
    this.connectedAt = this.lastRead;
    this.lastAck = this.lastRead;
  }

  /** True once the connection is closed (re-read after every await). */
  get isClosed(): boolean {
    return this.state === "closed";
  }

  /**
   * Reads and handles packets until the connection ends. Never throws. While the connection is idle this
   * frame is what stays suspended, so it is kept small: the work per chunk is in {@link receive}.
   */
  async run(): Promise<void> {
    try {
      for await (const chunk of this.transport.chunks()) {
        const wait = this.receive(chunk);
        if (wait !== undefined) await wait;
        if (this.state === "closed") break;
      }
      if (this.state !== "closed") this.closeReason ||= "connection closed by peer";
    } catch (err) {
      this.#failed(err);
    } finally {
      this.close(this.closeReason || "connection closed");
    }
  }

  /** The handler threw: a protocol error closes with its reason code, anything else is our bug. */
  #failed(err: unknown): void {
    try {
      this.#failedInner(err);
    } catch (inner) {
      // Saying why must never be what takes the broker down: the socket closes without the answer.
      this.broker.logger.error("closing a connection failed", {
        addr: this.transport.remoteAddr,
        error: inner instanceof Error ? (inner.stack ?? inner.message) : String(inner),
      });
      this.close("connection closed after an error");
    }
  }

  #failedInner(err: unknown): void {
    if (err instanceof MqttError) {
      if (
        this.state === "connecting" && err.reasonCode === ReasonCode.UnsupportedProtocolVersion &&
        this.decoder.protocolVersion !== 5
      ) {
        // §3.1.2.2: answer an unknown protocol level with return code 1 in the 3.1.1 CONNACK format (a
        // CONNECT that said level 5 gets the MQTT 5 CONNACK 0x84 from disconnect() instead: one CONNACK).
        this.transport.write(UNACCEPTABLE_PROTOCOL_CONNACK);
      }
      this.disconnect(err.reasonCode, err.message);
    } else {
      this.broker.logger.error("connection handler failed", {
        client_id: this.clientId || undefined,
        addr: this.transport.remoteAddr,
        error: err instanceof Error ? (err.stack ?? err.message) : String(err),
      });
      this.disconnect(ReasonCode.ImplementationSpecificError, "internal error");
    }
  }

  /** Decodes and handles the packets in `chunk`; a promise when handling must finish before reading on. */
  receive(chunk: Uint8Array): Promise<void> | undefined {
    this.broker.metrics.bytesReceived += chunk.length;
    if (this.state === "connecting" && this.decoder.buffered === 0 && chunk.length > 0 && chunk[0] !== 0x10) {
      // MQTT-3.1.0-1: the first packet is CONNECT. Said at the first byte, not after waiting for as many
      // bytes as garbage (an HTTP request, say) happens to announce.
      this.disconnect(
        ReasonCode.ProtocolError,
        `first packet must be CONNECT, got first byte 0x${chunk[0].toString(16).padStart(2, "0")}`,
      );
      return undefined;
    }
    this.decoder.push(chunk);
    return this.#handlePackets(Date.now());
  }

  #handlePackets(readAt: number): Promise<void> | undefined {
    const broker = this.broker;
    const counts = broker.metrics.packetsReceived;
    let packet: Packet | null;
    while (this.state !== "closed" && (packet = this.decoder.next()) !== null) {
      this.lastRead = readAt;
      counts[packet.type]++;
      // Only CONNECT handling waits (authentication); the packets after it in the chunk wait for it.
      if (packet.type === 1) {
        const connecting = broker.handlePacket(this, packet);
        if (connecting !== undefined) return connecting.then(() => this.#handlePackets(readAt));
      } else {
        broker.handlePacket(this, packet);
      }
    }
    const slow = this.waitForDrain;
    if (slow !== undefined && this.state !== "closed") {
      // Stop reading this publisher until the subscriber it overfilled catches up (bounded wait).
      this.waitForDrain = undefined;
      broker.metrics.publisherPauses++;
      return slow.whenDrained(1000);
    }
    return undefined;
  }

  /** Encodes and queues a packet (not for the PUBLISH fast path). */
  send(packet: Packet): void {
    if (this.state === "closed") return;
    let bytes = encode(packet, this.version);
    if (bytes.length > this.maxPacketSize && "properties" in packet && packet.properties !== undefined) {
      // MQTT-3.1.2-25: a Reason String or User Property is left out rather than exceed the client's limit.
      const properties = { ...packet.properties };
      delete properties.reasonString;
      delete properties.userProperties;
      bytes = encode({ ...packet, properties } as Packet, this.version);
    }
    this.sendBytes(bytes, packet.type);
  }

  /** Queues a success PUBACK / PUBREC / PUBREL / PUBCOMP in its 4-byte form, without encoding one. */
  sendAck(type: 4 | 5 | 6 | 7, packetId: number): void {
    const metrics = this.broker.metrics;
    metrics.packetsSent[type]++;
    metrics.bytesSent += 4;
    this.transport.writeAck(type, packetId);
  }

  /** Queues already encoded bytes of one packet of `type`. */
  sendBytes(bytes: Uint8Array, type: number): void {
    if (bytes.length > this.maxPacketSize && type !== PacketType.CONNACK) {
      // MQTT-3.1.2-24: never above the client's limit. A SUBACK for many filters, say, cannot be made smaller
      // and cannot be left out without leaving the client waiting: the connection ends instead (DISCONNECT
      // 0x95, itself left out if even that does not fit). A CONNACK goes out regardless: without it the
      // client learns nothing.
      if (type !== PacketType.DISCONNECT) {
        this.disconnect(
          ReasonCode.PacketTooLarge,
          `a ${
            PACKET_TYPE_NAMES[type]
          } of ${bytes.length} bytes exceeds the client's Maximum Packet Size ${this.maxPacketSize}`,
        );
      }
      return;
    }
    const metrics = this.broker.metrics;
    metrics.packetsSent[type]++;
    metrics.bytesSent += bytes.length;
    this.transport.write(bytes);
  }

  /** A Reason String for MQTT 5 packets, unless the client asked for none (§3.1.2.11.7). */
  reasonString(text: string): Properties | undefined {
    if (this.version !== 5 || !this.problemInfo) return undefined;
    // For people reading it, and bounded (MQTT strings end at 65,535 bytes); peers' strings are cut already.
    return { reasonString: text.length > REASON_STRING_MAX ? text.slice(0, REASON_STRING_MAX) : text };
  }

  /**
   * Ends the connection because of a protocol problem: MQTT 5 clients get DISCONNECT with the reason code
   * (after CONNECT; before it, a CONNACK is the only allowed answer, §3.2.2.2), then the socket closes.
   */
  disconnect(reasonCode: number, reason: string): void {
    if (this.state === "closed") return;
    if (reasonCode >= 0x80) {
      if (this.state === "connected") {
        if (this.version === 5) {
          // A CONNACK-only code (a second CONNECT with a bad protocol name, say) is a protocol error here.
          const code = isValidReasonCode(PacketType.DISCONNECT, reasonCode)
            ? reasonCode
            : ReasonCode.ProtocolError;
          this.send({ type: PacketType.DISCONNECT, reasonCode: code, properties: this.reasonString(reason) });
        }
      } else if (this.decoder.protocolVersion === 5 && isValidReasonCode(PacketType.CONNACK, reasonCode)) {
        // A CONNECT that failed to decode or validate: the decoder saw its protocol level, `version` is not
        // set yet (§4.13.1: the CONNACK with the reason code, then the close).
        this.version = 5;
        this.send({ type: PacketType.CONNACK, sessionPresent: false, reasonCode });
      }
    }
    this.closeReason ||= `${reasonName(reasonCode)}: ${reason}`;
    const routine = reasonCode === ReasonCode.ServerShuttingDown ||
      reasonCode === ReasonCode.SessionTakenOver ||
      reasonCode === ReasonCode.KeepAliveTimeout;
    this.broker.logger[routine ? "info" : "warn"]("disconnecting client", {
      client_id: this.clientId || undefined,
      addr: this.transport.remoteAddr,
      reason: reasonName(reasonCode),
      detail: reason,
    });
    this.close(this.closeReason);
  }

  /** Closes the socket and lets the broker end or park the session. Idempotent. */
  close(reason: string): void {
    if (this.state === "closed") return;
    const wasConnected = this.state === "connected";
    this.state = "closed";
    this.closeReason ||= reason;
    this.transport.close();
    this.broker.clientClosed(this, wasConnected);
  }
}
