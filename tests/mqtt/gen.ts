/**
 * Seeded random generation of valid packets, shared by the roundtrip, fuzz and differential tests.
 * Every generated packet is in the canonical decoded shape: properties absent or non-empty, MQTT 5 acks with
 * a reasonCode, no MQTT 5 fields at levels 3 and 4, so `decode(encode(p))` must deep-equal `p`.
 *
 * @module
 */

import { REASON_CODES_BY_PACKET } from "../../src/mqtt/reason_codes.ts";
import type {
  Packet,
  Properties,
  ProtocolVersion,
  QoS,
  SubscriptionRequest,
  UserProperty,
  Will,
} from "../../src/mqtt/types.ts";

/** Small fast PRNG (mulberry32): the same seed always gives the same packets. */
export class Rng {
  #state: number;
  constructor(seed: number) {
    this.#state = seed >>> 0;
  }
  /** Uniform in [0, 1). */
  next(): number {
    let t = (this.#state = (this.#state + 0x6d2b79f5) >>> 0);
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  }
  /** Integer in [min, max]. */
  int(min: number, max: number): number {
    return min + Math.floor(this.next() * (max - min + 1));
  }
  bool(p = 0.5): boolean {
    return this.next() < p;
  }
  pick<T>(items: readonly T[]): T {
    return items[this.int(0, items.length - 1)];
  }
  bytes(maxLen: number): Uint8Array {
    const out = new Uint8Array(this.int(0, maxLen));
    for (let i = 0; i < out.length; i++) out[i] = this.int(0, 255);
    return out;
  }
}

/** Characters with 1- to 4-byte UTF-8 forms; '/', '+', '#' included since the codec does not judge topics. */
const CHARS = [
  "a",
  "b",
  "z",
  "0",
  "/",
  "+",
  "#",
  " ",
  "$",
  "é",
  "ß",
  "€",
  "日",
  "\ufeff",
  "😀",
  "𝄞",
  "\u007f",
];

/** Options for {@link randomPacket}. */
export interface GenOptions {
  /** Longest random string, in characters. */
  maxString?: number;
  /** Longest random payload, in bytes. */
  maxPayload?: number;
  /**
   * Avoid shapes mqtt-packet cannot express: password without username, empty User Property names or
   * values (its parser merges those), several Subscription Identifiers, empty PUBLISH and Will topics,
   * empty client ids at level 3 or without clean session.
   */
  mqttPacketCompatible?: boolean;
}

/** Random packet generator for one protocol level. */
export class PacketGen {
  readonly rng: Rng;
  readonly maxString: number;
  readonly maxPayload: number;
  readonly compat: boolean;

  constructor(seed: number, opts: GenOptions = {}) {
    this.rng = new Rng(seed);
    this.maxString = opts.maxString ?? 12;
    this.maxPayload = opts.maxPayload ?? 64;
    this.compat = opts.mqttPacketCompatible ?? false;
  }

  str(min = 0, max = this.maxString): string {
    const n = this.rng.int(min, max);
    let s = "";
    for (let i = 0; i < n; i++) s += this.rng.pick(CHARS);
    return s;
  }

  /** Lengths of the integer types, drawn to often hit the edges. */
  num(max: number, min = 0): number {
    const r = this.rng.next();
    if (r < 0.15) return min;
    if (r < 0.3) return max;
    return this.rng.int(min, max);
  }

  userProperties(): UserProperty[] {
    const n = this.rng.int(1, 3);
    const out: UserProperty[] = [];
    for (let i = 0; i < n; i++) out.push([this.str(this.compat ? 1 : 0), this.str(this.compat ? 1 : 0)]);
    return out;
  }

  /** Random non-empty properties allowed on `type` (0 = Will Properties), or undefined. */
  properties(type: number): Properties | undefined {
    if (this.rng.bool(0.3)) return undefined;
    const r = this.rng;
    const p: Properties = {};
    const maybe = () => r.bool(0.4);
    switch (type) {
      case 0: // Will
      case 3: // PUBLISH
        if (maybe()) p.payloadFormatIndicator = r.int(0, 1);
        if (maybe()) p.messageExpiryInterval = this.num(0xffffffff);
        if (maybe()) p.contentType = this.str();
        if (maybe()) p.responseTopic = this.str(1);
        if (maybe()) p.correlationData = r.bytes(8);
        if (type === 0 && maybe()) p.willDelayInterval = this.num(0xffffffff);
        if (type === 3 && maybe()) {
          const n = this.compat ? 1 : r.int(1, 3);
          p.subscriptionIdentifiers = Array.from({ length: n }, () => this.num(268435455, 1));
        }
        if (type === 3 && maybe()) p.topicAlias = this.num(0xffff, 1);
        break;
      case 1: // CONNECT
        if (maybe()) p.sessionExpiryInterval = this.num(0xffffffff);
        if (maybe()) p.receiveMaximum = this.num(0xffff, 1);
        if (maybe()) p.maximumPacketSize = this.num(0xffffffff, 1);
        if (maybe()) p.topicAliasMaximum = this.num(0xffff);
        if (maybe()) p.requestResponseInformation = r.int(0, 1);
        if (maybe()) p.requestProblemInformation = r.int(0, 1);
        if (maybe()) p.authenticationMethod = this.str();
        // §3.1.2.11.10: Authentication Data only with an Authentication Method.
        if (p.authenticationMethod !== undefined && maybe()) p.authenticationData = r.bytes(8);
        break;
      case 2: // CONNACK
        if (maybe()) p.sessionExpiryInterval = this.num(0xffffffff);
        if (maybe()) p.receiveMaximum = this.num(0xffff, 1);
        if (maybe()) p.maximumQoS = r.int(0, 1);
        if (maybe()) p.retainAvailable = r.int(0, 1);
        if (maybe()) p.maximumPacketSize = this.num(0xffffffff, 1);
        if (maybe()) p.assignedClientIdentifier = this.str();
        if (maybe()) p.topicAliasMaximum = this.num(0xffff);
        if (maybe()) p.reasonString = this.str();
        if (maybe()) p.wildcardSubscriptionAvailable = r.int(0, 1);
        if (maybe()) p.subscriptionIdentifierAvailable = r.int(0, 1);
        if (maybe()) p.sharedSubscriptionAvailable = r.int(0, 1);
        if (maybe()) p.serverKeepAlive = this.num(0xffff);
        if (maybe()) p.responseInformation = this.str();
        if (maybe()) p.serverReference = this.str();
        if (maybe()) p.authenticationMethod = this.str();
        if (maybe()) p.authenticationData = r.bytes(8);
        break;
      case 8: // SUBSCRIBE
        if (maybe()) p.subscriptionIdentifiers = [this.num(268435455, 1)];
        break;
      case 14: // DISCONNECT
        if (maybe()) p.sessionExpiryInterval = this.num(0xffffffff);
        if (maybe()) p.serverReference = this.str();
        if (maybe()) p.reasonString = this.str();
        break;
      case 15: // AUTH
        if (maybe()) p.authenticationMethod = this.str();
        if (maybe()) p.authenticationData = r.bytes(8);
        if (maybe()) p.reasonString = this.str();
        break;
      case 10: // UNSUBSCRIBE: only User Properties
        break;
      default: // acks, SUBACK, UNSUBACK
        if (maybe()) p.reasonString = this.str();
    }
    if (maybe()) p.userProperties = this.userProperties();
    return Object.keys(p).length > 0 ? p : undefined;
  }

  qos(): QoS {
    return this.rng.int(0, 2) as QoS;
  }

  packetId(): number {
    return this.num(0xffff, 1);
  }

  code(type: number): number {
    return this.rng.pick(REASON_CODES_BY_PACKET[type]);
  }

  /** A random valid packet of `type` (1..15) for level `version`. */
  packet(type: number, version: ProtocolVersion): Packet {
    const r = this.rng;
    const v5 = version === 5;
    const withProps = (p: Packet, t: number): Packet => {
      if (v5) {
        const props = this.properties(t);
        if (props !== undefined) (p as { properties?: Properties }).properties = props;
      }
      return p;
    };
    switch (type) {
      case 1: {
        const clean = r.bool();
        const p: Packet = {
          type: 1,
          protocolName: version === 3 ? "MQIsdp" : "MQTT",
          protocolVersion: version,
          clean,
          keepAlive: this.num(0xffff),
          clientId: this.str(this.compat && (version === 3 || !clean) ? 1 : 0),
        };
        if (r.bool()) {
          const will: Will = {
            topic: this.str(this.compat ? 1 : 0),
            payload: r.bytes(this.maxPayload),
            qos: this.qos(),
            retain: r.bool(),
          };
          if (v5) {
            const props = this.properties(0);
            if (props !== undefined) will.properties = props;
          }
          p.will = will;
        }
        const user = r.bool();
        if (user) p.username = this.str();
        if ((user || (v5 && !this.compat)) && r.bool()) p.password = r.bytes(16);
        return withProps(p, 1);
      }
      case 2: {
        const p: Packet = {
          type: 2,
          sessionPresent: version !== 3 && r.bool(),
          reasonCode: v5 ? this.code(2) : r.int(0, 5),
        };
        return withProps(p, 2);
      }
      case 3: {
        const qos = this.qos();
        const p: Packet = {
          type: 3,
          topic: this.str(v5 && !this.compat ? 0 : 1),
          payload: r.bytes(this.maxPayload),
          qos,
          retain: r.bool(),
          dup: r.bool() && qos > 0, // MQTT-3.3.1-2: never on QoS 0
        };
        if (qos > 0) p.packetId = this.packetId();
        return withProps(p, 3);
      }
      case 4:
      case 5:
      case 6:
      case 7: {
        const p: Packet = { type, packetId: this.packetId() };
        if (v5) p.reasonCode = this.code(type);
        return withProps(p, type);
      }
      case 8: {
        const n = r.int(1, 4);
        const subscriptions: SubscriptionRequest[] = [];
        for (let i = 0; i < n; i++) {
          subscriptions.push({
            topicFilter: this.str(),
            qos: this.qos(),
            noLocal: v5 && r.bool(),
            retainAsPublished: v5 && r.bool(),
            retainHandling: v5 ? r.int(0, 2) as 0 | 1 | 2 : 0,
          });
        }
        return withProps({ type: 8, packetId: this.packetId(), subscriptions }, 8);
      }
      case 9: {
        const n = r.int(1, 5);
        const reasonCodes = Array.from({ length: n }, () => v5 ? this.code(9) : r.pick([0, 1, 2, 0x80]));
        return withProps({ type: 9, packetId: this.packetId(), reasonCodes }, 9);
      }
      case 10: {
        const topicFilters = Array.from({ length: r.int(1, 4) }, () => this.str());
        return withProps({ type: 10, packetId: this.packetId(), topicFilters }, 10);
      }
      case 11: {
        const p: Packet = { type: 11, packetId: this.packetId() };
        if (v5) p.reasonCodes = Array.from({ length: r.int(1, 5) }, () => this.code(11));
        return withProps(p, 11);
      }
      case 12:
        return { type: 12 };
      case 13:
        return { type: 13 };
      case 14: {
        const p: Packet = { type: 14 };
        if (v5) p.reasonCode = this.code(14);
        return withProps(p, 14);
      }
      default: {
        if (!v5) throw new Error(`AUTH does not exist at level ${version}`);
        return withProps({ type: 15, reasonCode: this.code(15) }, 15);
      }
    }
  }

  /** A random packet of any type that exists at `version`. */
  any(version: ProtocolVersion): Packet {
    return this.packet(this.rng.int(1, version === 5 ? 15 : 14), version);
  }
}
