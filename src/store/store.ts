/**
 * The persistence interface. The broker speaks to storage only through {@link Store}; the
 * implementations are `memory.ts` (RAM only) and `kv.ts` (Deno KV, durable).
 *
 * Four buckets, as in the design: sessions, queued messages (outbound, not yet sent), in-flight
 * messages (outbound QoS 1/2 sent and awaiting acknowledgement, plus inbound QoS 2 packet ids awaiting
 * PUBREL) and retained messages.
 *
 * Writes are group-committed: the broker calls {@link Store.apply} synchronously for each mutation
 * (cheap, no await) and, when it must not acknowledge before the data is durable, waits once per batch
 * on {@link Store.flush}. The store packs everything applied during a tick into as few atomic commits as
 * its back end allows.
 *
 * @module
 */

import type { Properties, QoS, Will } from "../mqtt/types.ts";

/** A message as kept by the store (queued, in flight or retained). */
export interface StoredMessage {
  topic: string;
  payload: Uint8Array;
  qos: QoS;
  retain: boolean;
  /** MQTT 5 properties to forward (user properties, content type, response topic...). */
  properties?: Properties;
  /** Absolute expiry time in ms since the epoch (from Message Expiry Interval), if any. */
  expiresAt?: number;
  /** Milliseconds since the epoch when the broker received it. */
  receivedAt: number;
}

/** One subscription of a session, with its MQTT 5 options. */
export interface SubscriptionRecord {
  /** The filter as the client sent it, including a `$share/group/` prefix. */
  filter: string;
  qos: QoS;
  noLocal: boolean;
  retainAsPublished: boolean;
  retainHandling: 0 | 1 | 2;
  subscriptionId?: number;
}

/** A session that outlives its connection (Clean Session 0 / Session Expiry Interval > 0). */
export interface SessionRecord {
  clientId: string;
  protocolVersion: 3 | 4 | 5;
  /** Seconds the session survives after disconnect; 0xFFFFFFFF = never expires. */
  expiryInterval: number;
  /** ms since the epoch of the last disconnect; undefined while connected. */
  disconnectedAt?: number;
  subscriptions: SubscriptionRecord[];
  /** User name of the last connection (ACL checks on deliveries and the will while offline). */
  username?: string;
  /**
   * The Will Message of the current connection, or of the last one while its Will Delay Interval runs: it
   * is published after a restart if the broker stopped before it was due, or crashed with the client connected.
   */
  will?: Will;
  /** When the delayed will is due, ms since the epoch. */
  willDueAt?: number;
}

/**
 * An outbound message of a session. `seq` orders it within the session. While `state` is "queued"
 * it has not been sent; "publish" means sent with `packetId` and awaiting PUBACK/PUBREC; "pubrel" means
 * PUBREC received and PUBREL sent, awaiting PUBCOMP (the message body is no longer needed then).
 */
export interface OutboundRecord {
  clientId: string;
  seq: number;
  state: "queued" | "publish" | "pubrel";
  packetId?: number;
  /** Absent only in state "pubrel". */
  message?: StoredMessage;
  /**
   * The shared subscription group (§4.8.2) the message went to this session through, if it did: after a
   * restart it still goes to another member when this one leaves or its session ends.
   */
  share?: ShareRef;
}

/** A shared subscription group: `$share/{group}/{filter}`. */
export interface ShareRef {
  readonly group: string;
  readonly filter: string;
}

/**
 * An outbound message as the broker's session holds it, for {@link Store.putOutbound}. The store may read
 * it when it writes the batch, after the call returned: none of these fields may change after the put
 * (the message's payload may be replaced by a copy of the same bytes).
 */
export interface OutboundSource {
  readonly seq: number;
  /** QoS and retain flag of this delivery; they are stored instead of the message's own. */
  readonly qos: QoS;
  readonly retain: boolean;
  /** MQTT 5 Subscription Identifiers of this delivery, stored among the message's properties. */
  readonly subscriptionIds?: readonly number[];
  readonly msg: StoredMessage;
  /** The shared subscription group it came through, stored as {@link OutboundRecord.share}. */
  readonly share?: ShareRef;
}

/** The record {@link Store.putOutbound} stores for `source`. */
export function outboundRecordOf(
  clientId: string,
  state: "queued" | "publish",
  packetId: number,
  source: OutboundSource,
): OutboundRecord {
  const msg = source.msg;
  const ids = source.subscriptionIds;
  const share = source.share;
  return {
    clientId,
    seq: source.seq,
    state,
    packetId: state === "queued" ? undefined : packetId,
    message: {
      topic: msg.topic,
      payload: msg.payload,
      qos: source.qos,
      retain: source.retain,
      properties: ids !== undefined && ids.length > 0
        ? { ...msg.properties, subscriptionIdentifiers: [...ids] }
        : msg.properties,
      expiresAt: msg.expiresAt,
      receivedAt: msg.receivedAt,
    },
    share: share === undefined ? undefined : { group: share.group, filter: share.filter },
  };
}

/** One mutation. The store applies them in order. */
export type StoreOp =
  | { op: "session.put"; session: SessionRecord }
  /** Deletes the session and everything it owns (outbound messages, inbound QoS 2 ids). */
  | { op: "session.delete"; clientId: string }
  | { op: "retained.put"; message: StoredMessage }
  | { op: "retained.delete"; topic: string }
  | { op: "outbound.put"; record: OutboundRecord }
  | { op: "outbound.delete"; clientId: string; seq: number }
  /** Inbound QoS 2: packet id received (PUBREC sent), awaiting PUBREL. */
  | { op: "incoming.put"; clientId: string; packetId: number }
  | { op: "incoming.delete"; clientId: string; packetId: number };

/** Everything the store holds, read once at start-up. */
export interface RestoredState {
  sessions: SessionRecord[];
  retained: StoredMessage[];
  /** All outbound records, ordered by clientId then seq. */
  outbound: OutboundRecord[];
  /** Inbound QoS 2 packet ids awaiting PUBREL, per client. */
  incoming: { clientId: string; packetId: number }[];
}

/** The persistence back end. */
export interface Store {
  /** True when {@link flush} means "on disk"; false for the memory store. */
  readonly durable: boolean;
  /** True when every mutation applied so far is committed (nothing to wait for). */
  readonly idle: boolean;
  /** Set by {@link open} when the database file existed but was empty (0 bytes): worth a warning. */
  readonly emptyFileAtOpen?: boolean;
  /** Opens the back end. Rejects with a clear message when the file is locked or unreadable. */
  open(): Promise<void>;
  /** Reads everything back (called once after open). */
  load(): Promise<RestoredState>;
  /** Queues one mutation into the current batch. Never awaits, never throws for valid input. */
  apply(op: StoreOp): void;
  /**
   * The same as `outbound.put` of the record `source` describes in `state` ("queued", or "publish" with
   * `packetId`), without building that record: the hot path of QoS 1/2 to persistent sessions. Unlike
   * {@link apply}, the store may read `source` later (see {@link OutboundSource}).
   */
  putOutbound(clientId: string, state: "queued" | "publish", packetId: number, source: OutboundSource): void;
  /** The same as `apply({ op: "outbound.delete", clientId, seq })`. */
  deleteOutbound(clientId: string, seq: number): void;
  /**
   * Resolves when every mutation applied so far is committed. Calls made during the same tick share one
   * promise, so waiting per batch (not per message) costs one promise per batch.
   */
  flush(): Promise<void>;
  /** Flushes and closes. */
  close(): Promise<void>;
  /** Number of commits and their latency, for metrics. */
  readonly stats: StoreStats;
}

/** Counters a store keeps about itself, read by the metrics module. */
export interface StoreStats {
  commits: number;
  mutations: number;
  /** Commit latencies in seconds since the last read; the metrics module drains it. */
  latencies: number[];
  failures: number;
}

/**
 * A storage failure with a message meant for the operator: the database is locked by another broker,
 * cannot be opened, a commit failed, or the store was used while closed.
 */
export class StoreError extends Error {
  constructor(message: string, options?: ErrorOptions) {
    super(message, options);
    this.name = "StoreError";
  }
}
