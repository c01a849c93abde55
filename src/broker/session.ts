/**
 * Session state (§4.1): subscriptions, outbound QoS 1/2 messages (queued and in flight), inbound QoS 2
 * packet ids awaiting PUBREL, the Will Message and the expiry. A Session outlives its connection when
 * Clean Session is 0 (3.1.1) or the Session Expiry Interval is above 0 (5.0).
 *
 * Outbound flow (§4.3, §4.9): a QoS 1/2 message is sent at once when the client is connected and fewer
 * than its Receive Maximum messages are unacknowledged; otherwise it waits in the queue, in order.
 *
 * @module
 */

import type { QoS, Will } from "../mqtt/types.ts";
import { type OutboundRecord, outboundRecordOf, type SubscriptionRecord } from "../store/store.ts";
import type { Client } from "./client.ts";
import { InflightTable, NO_INFLIGHT, type ReadonlyInflight } from "./inflight.ts";
import type { Message } from "./message.ts";
import type { SharedGroup } from "./topic_tree.ts";

/** An outbound message of this session. */
export interface OutEntry {
  seq: number;
  msg: Message;
  qos: QoS;
  retain: boolean;
  subscriptionIds?: number[];
  state: "queued" | "publish" | "pubrel";
  packetId: number;
  /** Set when the message came through a shared subscription: redelivered to another member on loss. */
  share?: SharedGroup<Session>;
}

/**
 * The packet id of a queued entry that may have gone out before a crash without a record saying so
 * (restore.ts): it is sent with DUP once it gets a real id.
 */
export const MAYBE_SENT = -1;

const NO_SUBSCRIPTIONS: ReadonlyMap<string, SubscriptionRecord> = new Map();
const NO_INCOMING: ReadonlySet<number> = new Set();
/** The empty queue; never written to (enqueue replaces it first). */
const NO_ENTRIES: OutEntry[] = [];

/**
 * The packet id of the outbound message with sequence number `seq`, unless that id is still taken when the
 * message is sent. Sequence numbers of a session are consecutive, so these ids are too, as §2.2.1 needs them
 * unique only among the messages in flight. A QoS 1 message sent from the queue keeps its "queued" store
 * record, which holds no packet id: after a crash it is resent under this id, the one it first had
 * (MQTT-4.4.0-1). One sent under another id gets an in-flight record that says so (routing.ts).
 */
export function packetIdOfSeq(seq: number): number {
  return seq - Math.floor(seq / 65535) * 65535 + 1; // seq % 65535 + 1, without a float modulo call
}

/** Session Expiry Interval meaning "never expires" (§3.1.2.11.2). */
export const NEVER_EXPIRES = 0xffffffff;

/** One client's session. */
export class Session {
  /** The connected client, if any. */
  client?: Client;
  // The collections below are created on first use and shared empty ones are read until then: most
  // connections are idle most of the time, and three empty Maps/Sets cost ~0.5 KiB per connection.
  #subscriptions?: Map<string, SubscriptionRecord>;
  #inflight?: InflightTable;
  #incoming?: Set<number>;
  /** Outbound messages waiting for the in-flight window or for the client to come back, in order. */
  #queue: OutEntry[] = NO_ENTRIES;
  #queueHead = 0;
  queuedBytes = 0;
  /**
   * Next outbound sequence number (orders records in the store). It starts from the clock (microseconds)
   * so numbers never repeat across restarts, even after the records that held the highest ones are gone.
   */
  seq = Date.now() * 1000;
  #nextPacketId = 1;
  /** Seconds after disconnect the session survives; 0 = ends with the connection. */
  expiryInterval = 0;
  /** ms since the epoch of the last disconnect, while offline. */
  disconnectedAt?: number;
  protocolVersion: 3 | 4 | 5 = 4;
  /** The will of the current or last connection, until sent or cancelled. */
  will?: Will;
  /** When the delayed will is due (ms since the epoch), MQTT 5 Will Delay Interval. */
  willDueAt?: number;
  /** The timer that publishes the delayed will at willDueAt (will.ts), while there is one. */
  willTimer?: ReturnType<typeof setTimeout>;
  /** User name of the last connection, for ACL checks on deliveries and the will. */
  username?: string;
  /** Logged "queue full" for this session already (log once, count always). */
  dropLogged = false;

  constructor(readonly clientId: string) {}

  /** True when the session survives the connection and so is persisted. */
  get persistent(): boolean {
    return this.expiryInterval > 0;
  }

  /** Subscriptions by the filter string the client sent (including `$share/...`). */
  get subscriptions(): ReadonlyMap<string, SubscriptionRecord> {
    return this.#subscriptions ?? NO_SUBSCRIPTIONS;
  }

  /** Adds or replaces a subscription. */
  setSubscription(filter: string, sub: SubscriptionRecord): void {
    (this.#subscriptions ??= new Map()).set(filter, sub);
  }

  /** Removes a subscription; true when there was one. */
  deleteSubscription(filter: string): boolean {
    return this.#subscriptions?.delete(filter) ?? false;
  }

  /** Outbound messages sent and awaiting acknowledgement, by packet id. */
  get inflight(): ReadonlyInflight {
    return this.#inflight ?? NO_INFLIGHT;
  }

  /** Records an outbound message as in flight under its `packetId`. */
  setInflight(entry: OutEntry): void {
    (this.#inflight ??= new InflightTable()).add(entry);
  }

  /** Forgets the in-flight message with `packetId` (acknowledged or moved elsewhere). */
  deleteInflight(packetId: number): void {
    this.#inflight?.delete(packetId);
  }

  /** Inbound QoS 2 packet ids whose PUBREC was sent, awaiting PUBREL (§4.3.3). */
  get incoming(): ReadonlySet<number> {
    return this.#incoming ?? NO_INCOMING;
  }

  /** Remembers an inbound QoS 2 packet id until its PUBREL. */
  addIncoming(packetId: number): void {
    (this.#incoming ??= new Set()).add(packetId);
  }

  /** Forgets an inbound QoS 2 packet id; true when it was known. */
  deleteIncoming(packetId: number): boolean {
    return this.#incoming?.delete(packetId) ?? false;
  }

  /** Drops subscriptions and in-flight messages (session end). */
  clearSubscriptionsAndInflight(): void {
    this.#subscriptions = undefined;
    this.#inflight = undefined;
  }

  /** Number of queued (not yet sent) messages. */
  get queuedCount(): number {
    return this.#queue.length - this.#queueHead;
  }

  /** Appends an entry to the queue. */
  enqueue(entry: OutEntry): void {
    if (this.#queue === NO_ENTRIES) this.#queue = [];
    this.#queue.push(entry);
    this.queuedBytes += entry.msg.payload.length;
  }

  /** The oldest queued entry, left in the queue. */
  peek(): OutEntry | undefined {
    return this.#queueHead < this.#queue.length ? this.#queue[this.#queueHead] : undefined;
  }

  /** Removes and returns the oldest queued entry. */
  dequeue(): OutEntry | undefined {
    const queue = this.#queue;
    if (this.#queueHead >= queue.length) return undefined;
    const entry = queue[this.#queueHead];
    queue[this.#queueHead++] = undefined as unknown as OutEntry;
    this.queuedBytes -= entry.msg.payload.length;
    // Compact now and then so the array does not grow forever.
    if (this.#queueHead > 1024 && this.#queueHead * 2 > queue.length) {
      this.#queue = queue.slice(this.#queueHead);
      this.#queueHead = 0;
    } else if (this.#queueHead === queue.length) {
      this.#queue = NO_ENTRIES;
      this.#queueHead = 0;
    }
    return entry;
  }

  /** Takes every queued entry out (for shared-subscription redelivery or session end). */
  drainQueue(): OutEntry[] {
    const all = this.#queue.slice(this.#queueHead);
    this.#queue = NO_ENTRIES;
    this.#queueHead = 0;
    this.queuedBytes = 0;
    return all;
  }

  #drainWaiters?: (() => void)[];

  /**
   * Resolves when the queue has drained to `lowWater` messages, the client went away, or `timeoutMs`
   * passed: publishers feeding a slow but live subscriber wait here instead of overflowing its queue.
   */
  whenDrained(timeoutMs: number): Promise<void> {
    return new Promise((resolve) => {
      const done = (): void => {
        clearTimeout(timer);
        resolve();
      };
      // A wait that times out leaves the list: a subscriber that stays behind for hours must not collect one
      // callback per paused publisher per second.
      const timer = setTimeout(() => {
        const list = this.#drainWaiters;
        const i = list === undefined ? -1 : list.indexOf(done);
        if (i >= 0) list!.splice(i, 1);
        if (list !== undefined && list.length === 0) this.#drainWaiters = undefined;
        resolve();
      }, timeoutMs);
      (this.#drainWaiters ??= []).push(done);
    });
  }

  /** Wakes publishers waiting in {@link whenDrained}. */
  wakeDrainWaiters(): void {
    const waiters = this.#drainWaiters;
    if (waiters === undefined) return;
    this.#drainWaiters = undefined;
    for (const w of waiters) w();
  }

  /** True when publishers are waiting for this queue to drain. */
  get hasDrainWaiters(): boolean {
    return this.#drainWaiters !== undefined;
  }

  /**
   * Gives an outbound QoS 1/2 entry its packet id (§2.2.1): the one its sequence number names
   * ({@link packetIdOfSeq}) when that is free, otherwise the next free one. True when the id is the one of its
   * sequence number, so a store record without a packet id still tells which id the message went out under.
   *
   * With `maybeSent` (a message that may have gone out under that id before a crash, restore.ts) the id is kept
   * whenever no other message is in flight under it, even when it shares a slot of the in-flight table (the
   * table grows): the restarted broker's table is smaller than the one the message went out from, and a resend
   * must use the id the message first had (MQTT-4.4.0-1).
   */
  assignPacketId(entry: OutEntry, maybeSent = false): boolean {
    const id = packetIdOfSeq(entry.seq);
    if (maybeSent ? !this.inflight.has(id) : this.inflight.isFree(id)) {
      entry.packetId = id;
      return true;
    }
    entry.packetId = this.allocatePacketId();
    return entry.packetId === id;
  }

  /**
   * A free packet id for an outbound QoS 1/2 PUBLISH (§2.2.1): never one still in flight, and one whose
   * slot in the in-flight table is free (inflight.ts), so adding it allocates nothing.
   */
  allocatePacketId(): number {
    const inflight = this.inflight;
    for (let tries = 0; tries < 65535; tries++) {
      const id = this.#nextPacketId;
      this.#nextPacketId = id === 65535 ? 1 : id + 1;
      if (inflight.isFree(id)) return id;
    }
    return 0; // cannot happen: the window is far below 65535
  }

  /** The store record for an outbound entry. */
  record(entry: OutEntry): OutboundRecord {
    if (entry.state === "pubrel") {
      return { clientId: this.clientId, seq: entry.seq, state: "pubrel", packetId: entry.packetId };
    }
    return outboundRecordOf(this.clientId, entry.state, entry.packetId, entry);
  }
}
