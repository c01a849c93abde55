/**
 * Routing and outbound delivery: from one Application Message to the sessions whose subscriptions match,
 * one copy per session at the highest matching QoS (§3.3.4), one member per shared group (§4.8.2), and
 * the outbound QoS 1/2 window per session (Receive Maximum, §4.9).
 *
 * This is the hot path: no await, no closure per message, one encoding per distinct packet shape.
 *
 * @module
 */

import { publishPacketIdOffset } from "../mqtt/encode.ts";
import { ownsBuffer } from "../mqtt/slab.ts";
import type { QoS } from "../mqtt/types.ts";
import type { SubscriptionRecord } from "../store/store.ts";
import type { Broker } from "./broker.ts";
import type { Client } from "./client.ts";
import { encodeShared, encodeWithExtras, type Message } from "./message.ts";
import { MAYBE_SENT, type OutEntry, type Session } from "./session.ts";
import type { SharedGroup } from "./topic_tree.ts";

/** Per-route scratch: sessions seen in this route call, to merge overlapping subscriptions. */
let routeGeneration = 0;
const marks = new WeakMap<Session, number>();
const merged: { session: Session; qos: QoS; retain: boolean; ids?: number[] }[] = [];

function grantedQoS(msg: Message, sub: SubscriptionRecord): QoS {
  return (msg.qos < sub.qos ? msg.qos : sub.qos) as QoS;
}

/**
 * Delivers a message to every matching subscription. Returns true when at least one session matched
 * (MQTT 5 answers 0x10 No matching subscribers otherwise).
 */
export function route(broker: Broker, msg: Message): boolean {
  const match = broker.tree.match(msg.topic);
  const subscribers = match.subscribers;
  const n = subscribers.length;
  const acl = broker.acl;
  let delivered = false;
  if (n === 1) {
    // The common case: one subscription, nothing to merge.
    const session = subscribers[0];
    const sub = match.subs[0];
    if (
      !(sub.noLocal && msg.origin === session.clientId) &&
      (acl === undefined || acl.canRead(session.username, session.clientId, msg.topic))
    ) {
      deliver(
        broker,
        session,
        msg,
        grantedQoS(msg, sub),
        sub.retainAsPublished ? msg.retain : false,
        sub.subscriptionId === undefined ? undefined : [sub.subscriptionId],
      );
      delivered = true;
    }
  } else if (n > 1) {
    const gen = ++routeGeneration;
    for (let i = 0; i < n; i++) {
      const session = subscribers[i];
      const sub = match.subs[i];
      if (sub.noLocal && msg.origin === session.clientId) continue;
      const qos = grantedQoS(msg, sub);
      const retain = sub.retainAsPublished ? msg.retain : false;
      if (marks.get(session) === gen) {
        // Overlapping subscriptions of one session: one copy, highest QoS, every identifier (§3.3.4).
        const m = merged.find((e) => e.session === session)!;
        if (qos > m.qos) m.qos = qos;
        if (retain) m.retain = true;
        if (sub.subscriptionId !== undefined) (m.ids ??= []).push(sub.subscriptionId);
        continue;
      }
      if (acl !== undefined && !acl.canRead(session.username, session.clientId, msg.topic)) continue;
      marks.set(session, gen);
      merged.push({
        session,
        qos,
        retain,
        ids: sub.subscriptionId === undefined ? undefined : [sub.subscriptionId],
      });
    }
    for (const m of merged) deliver(broker, m.session, msg, m.qos, m.retain, m.ids);
    delivered = merged.length > 0;
    merged.length = 0;
  }
  for (const group of match.shared) {
    if (deliverShared(broker, group, msg)) delivered = true;
  }
  return delivered;
}

/**
 * One member of a shared group gets the message: round robin over the members, preferring connected
 * clients with room in their window, then connected ones, then offline persistent sessions. With `exclude`
 * the message waited with that member (it left, or may no longer read it): one whose Message Expiry Interval
 * passed meanwhile is not started anew to another member but dropped (MQTT-3.3.2-5), and counts as taken.
 */
export function deliverShared(
  broker: Broker,
  group: SharedGroup<Session>,
  msg: Message,
  exclude?: Session,
): boolean {
  // A message that waited with `exclude`: its group may have ended since (every member left) and been made
  // anew under the same name and filter. The members are the current group's.
  if (exclude !== undefined) group = broker.tree.sharedGroup(group.group, group.filter) ?? group;
  const members = group.members;
  const count = members.length;
  if (count === 0) return false;
  if (exclude !== undefined && msg.expiresAt !== undefined && msg.expiresAt <= Date.now()) {
    broker.metrics.dropped.expired++;
    return true;
  }
  let fallback = -1;
  let offline = -1;
  for (let k = 0; k < count; k++) {
    const i = (group.next + k) % count;
    const { subscriber: session } = members[i];
    if (session === exclude) continue;
    if (broker.acl !== undefined && !broker.acl.canRead(session.username, session.clientId, msg.topic)) {
      continue;
    }
    const client = session.client;
    if (client) {
      if (session.inflight.size < client.sendQuota && session.queuedCount === 0) {
        fallback = i;
        break;
      }
      if (fallback < 0) fallback = i;
    } else if (offline < 0 && session.persistent) {
      offline = i;
    }
  }
  const chosen = fallback >= 0 ? fallback : offline;
  if (chosen < 0) return false;
  group.next = (chosen + 1) % count;
  const { subscriber, sub } = members[chosen];
  deliver(
    broker,
    subscriber,
    msg,
    grantedQoS(msg, sub),
    sub.retainAsPublished ? msg.retain : false, // MQTT-3.3.1-13 holds for shared subscriptions too
    sub.subscriptionId === undefined ? undefined : [sub.subscriptionId],
    group,
  );
  return true;
}

/** Delivers one message to one session: sent now, queued, or dropped (counted). */
export function deliver(
  broker: Broker,
  session: Session,
  msg: Message,
  qos: QoS,
  retain: boolean,
  subscriptionIds?: number[],
  share?: SharedGroup<Session>,
): void {
  const client = session.client;
  if (qos === 0) {
    if (client === undefined) return;
    if (client.holdSends === 0) sendPublish(broker, client, msg, 0, retain, subscriptionIds, 0, false);
    else holdQoS0(broker, session, client, msg, retain, subscriptionIds);
    return;
  }
  const entry: OutEntry = {
    seq: session.seq++,
    msg,
    qos,
    retain,
    subscriptionIds,
    state: "queued",
    packetId: 0,
    share,
  };
  if (
    client !== undefined && session.queuedCount === 0 && session.inflight.size < client.sendQuota &&
    // While a hold is on, only QoS 2 to a durable session goes straight on, and only when all that is held
    // are other QoS 2 PUBLISHes: it waits for its own commit behind them anyway (sendAfterRecordCommit).
    (client.holdSends === 0 ||
      (qos === 2 && client.holdSends === client.recordWaiting && session.persistent && broker.store.durable))
  ) {
    startSending(broker, session, client, entry, false);
    return;
  }
  if (client === undefined && !session.persistent) return;
  // A live subscriber (connected, and acknowledged a message, or connected, within the last 2 s) gets
  // publishers paused for it (below) and may overshoot the message limit by what is already read from their
  // sockets: up to 10x. The byte limit always holds. One that only pings or publishes is not live: it loses
  // its own messages beyond the limit instead of slowing its publishers and their other subscribers. "Now" is
  // when the publisher's chunk was read, which is close enough for a 2 s test and saves a clock read per
  // queued message; wills and $SYS messages have no publisher and read the clock.
  const now = broker.currentPublisher?.lastRead ?? Date.now();
  const live = client !== undefined && now - client.lastAck < 2000;
  const maxMessages = live ? broker.maxQueuedMessages * 10 : broker.maxQueuedMessages;
  if (
    session.queuedCount >= maxMessages ||
    session.queuedBytes + msg.payload.length > broker.maxQueuedBytes
  ) {
    broker.metrics.dropped.queue_full++;
    if (!session.dropLogged) {
      session.dropLogged = true;
      broker.logger.warn("session queue full, dropping new messages for it", {
        client_id: session.clientId,
        queued: session.queuedCount,
        queued_bytes: session.queuedBytes,
      });
    }
    return;
  }
  if (client === undefined) keepLong(msg);
  session.enqueue(entry);
  if (session.persistent) broker.persistOutbound(session, entry);
  if (client !== undefined && client.holdSends > 0) holdQueued(broker, session, client, entry.seq);
  if (client !== undefined && session.queuedCount >= broker.queueHighWater) {
    // Flow control: a live subscriber that is acknowledging (within the last 2 s) but slower than its
    // publishers makes the publishing client pause reading, instead of its queue overflowing. A stuck
    // subscriber is not waited for: it only loses its own messages (queue_full).
    const publisher = broker.currentPublisher;
    if (publisher !== undefined && publisher !== client && live) {
      publisher.waitForDrain = session;
    }
  }
}

/**
 * A QoS 0 delivery while the client's sends are held (subscribe.ts): in its place among the client's waiting
 * packets, and holding what comes next. Apart from {@link deliver} so that only held deliveries make a closure
 * (a closure inside it would give every call a context to allocate).
 */
function holdQoS0(
  broker: Broker,
  session: Session,
  client: Client,
  msg: Message,
  retain: boolean,
  subscriptionIds: number[] | undefined,
): void {
  client.holdSends++;
  const send = () => {
    // Behind a PUBLISH that went ahead of it and waits for its record's commit.
    if (client.recordWaiting > 0) return broker.runLater(client, send);
    sendPublish(broker, client, msg, 0, retain, subscriptionIds, 0, false);
    releaseHold(broker, session, client);
  };
  broker.runAfterCommit(client, send);
}

/**
 * A QoS 1/2 delivery queued while the client's sends are held: it goes out in its place among the client's
 * waiting packets (as far as the queue up to it), and holds what comes after it until then.
 */
function holdQueued(broker: Broker, session: Session, client: Client, seq: number): void {
  client.holdSends++;
  const send = () => {
    // Behind a PUBLISH that went ahead of it and waits for its record's commit.
    if (client.recordWaiting > 0 && session.client === client) return broker.runLater(client, send);
    if (session.client === client) pumpThrough(broker, session, client, seq);
    releaseHold(broker, session, client);
  };
  broker.runAfterCommit(client, send);
}

/**
 * A message queued for an offline session may wait for hours: give its payload a buffer of its own so it does
 * not pin a 16 KiB slab of the codec, and drop encodings (also slab views) made so far.
 */
function keepLong(msg: Message): void {
  const payload = msg.payload;
  if (ownsBuffer(payload)) return;
  msg.payload = payload.slice();
  msg.encodedSlot = -1;
  msg.encodedBytes = undefined;
  msg.encodedMore = undefined;
}

/** Moves an entry into the in-flight window and sends it. */
function startSending(
  broker: Broker,
  session: Session,
  client: Client,
  entry: OutEntry,
  fromQueue: boolean,
): void {
  const maybeSentBefore = entry.packetId === MAYBE_SENT;
  const idOfSeq = session.assignPacketId(entry, maybeSentBefore);
  entry.state = "publish";
  // QoS 2, and QoS 1 under a packet id its sequence number does not name (only its record knows it): out once
  // the in-flight record is committed, or a crash could bring the message back under another id.
  if ((entry.qos === 2 || !idOfSeq) && session.persistent && broker.store.durable) {
    sendAfterRecordCommit(broker, session, client, entry, maybeSentBefore);
    return;
  }
  if (!sendEntry(broker, client, entry, maybeSentBefore)) {
    // Too large for this client: treated as delivered (§3.1.2.11.4).
    if (fromQueue && session.persistent) {
      broker.persistOutboundDelete(session, entry.seq);
    }
    return;
  }
  session.setInflight(entry);
  // A QoS 1 message moving from the queue into flight keeps its stored "queued" record, which saves one write
  // per message: after a crash it is resent under the packet id of its sequence number, the one it went out
  // under (packetIdOfSeq). One under another id took sendAfterRecordCommit above (as QoS 2 does) whenever
  // there is a store to write to.
  if (session.persistent && (!fromQueue || !idOfSeq)) {
    broker.persistOutbound(session, entry);
  }
}

/**
 * Exactly once across a crash (§4.3.3): a QoS 2 PUBLISH to a persistent session goes out only once its
 * in-flight record, packet id included, is committed. Sent before, a crash could bring the message back as
 * queued (or, for a publisher's resend, as new) under another packet id, which the receiver would take for a
 * second message. The same for a QoS 1 one whose packet id only its record holds (MQTT-4.4.0-1). Kept in
 * order with the client's other deferred packets (acks, PUBRELs), and what comes after it waits (a hold).
 * `dup`: the message may have gone out before a crash (a QoS 1 one whose id of its sequence number is taken).
 */
function sendAfterRecordCommit(
  broker: Broker,
  session: Session,
  client: Client,
  entry: OutEntry,
  dup: boolean,
): void {
  session.setInflight(entry);
  broker.persistOutbound(session, entry);
  const packetId = entry.packetId;
  // What comes for this client meanwhile waits behind it (a hold), so a later QoS 0 or 1 message cannot
  // overtake it on the way.
  client.holdSends++;
  client.recordWaiting++;
  broker.runAfterCommit(client, () => {
    client.recordWaiting--;
    // Gone meanwhile (the client left; a reconnect resends it from the in-flight table with DUP).
    if (session.client === client && session.inflight.get(packetId) === entry && entry.state === "publish") {
      // Too large for this client: treated as delivered (§3.1.2.11.4).
      if (!sendEntry(broker, client, entry, dup)) completeInflight(broker, session, client, entry);
    }
    releaseHold(broker, session, client);
  });
}

/**
 * Ends one hold (subscribe.ts, sendAfterRecordCommit, a held delivery). The last one sends what waits in the
 * queue with room in the window: acknowledgements that came during the hold did not (pump).
 */
export function releaseHold(broker: Broker, session: Session, client: Client): void {
  if (--client.holdSends === 0 && session.client === client) pumpIfWaiting(broker, session, client);
}

/**
 * The ACL once more for a message that waited (queue, or in flight across a reconnect): the ACL may have been
 * reloaded since it was routed, or the client id is now used by another user. A refused one is dropped, from
 * the store too, and counted.
 */
function mayRead(broker: Broker, session: Session, entry: OutEntry): boolean {
  const acl = broker.acl;
  if (acl === undefined || acl.canRead(session.username, session.clientId, entry.msg.topic)) return true;
  if (session.persistent) broker.persistOutboundDelete(session, entry.seq);
  // A shared subscription's message goes to another member that may read it (§4.8.2), else it is dropped.
  if (entry.share === undefined || !deliverShared(broker, entry.share, entry.msg, session)) {
    broker.metrics.dropped.not_authorized++;
  }
  return false;
}

/** Sends an outbound QoS 1/2 entry under its packet id; false when it is too large for the client. */
function sendEntry(broker: Broker, client: Client, entry: OutEntry, dup: boolean): boolean {
  return sendPublish(
    broker,
    client,
    entry.msg,
    entry.qos,
    entry.retain,
    entry.subscriptionIds,
    entry.packetId,
    dup,
  );
}

/**
 * An in-flight entry is done with: acknowledged, refused by the client, or dropped as too large for it. It
 * leaves the in-flight table, the store, and the resend backlog, whose length {@link pumpThrough} takes from
 * the window (the client may acknowledge a message it had before its resend after a reconnect).
 */
export function completeInflight(broker: Broker, session: Session, client: Client, entry: OutEntry): void {
  session.deleteInflight(entry.packetId);
  if (session.persistent) broker.persistOutboundDelete(session, entry.seq);
  const backlog = client.resendBacklog;
  if (backlog === undefined) return;
  const i = backlog.indexOf(entry);
  if (i >= 0) backlog.splice(i, 1);
  if (backlog.length === 0) client.resendBacklog = undefined;
}

/** {@link pump} when something waits for the window: queued messages, or in-flight ones still to resend. */
export function pumpIfWaiting(broker: Broker, session: Session, client: Client): void {
  if (session.queuedCount > 0 || client.resendBacklog !== undefined) pump(broker, session);
}

/** Sends queued messages while the client's window has room (after an ack or a reconnect). */
export function pump(broker: Broker, session: Session): void {
  const client = session.client;
  if (client === undefined || client.holdSends > 0) return; // the last hold to end pumps (releaseHold)
  pumpThrough(broker, session, client, Infinity);
}

/**
 * Like {@link pump}, for queued messages up to sequence number `lastSeq` only, and regardless of a hold: a
 * message delivered during a hold sends itself this way, in its place behind the held ones (deliver).
 */
function pumpThrough(broker: Broker, session: Session, client: Client, lastSeq: number): void {
  const backlog = client.resendBacklog;
  if (backlog !== undefined) {
    // In-flight messages not yet resent after the reconnect go first, in their order (§4.6); they count in
    // `inflight.size` already, so the window holds what is in flight minus them.
    while (backlog.length > 0 && session.inflight.size - backlog.length < client.sendQuota) {
      const entry = backlog.shift()!;
      if (session.inflight.get(entry.packetId) === entry) resendEntry(broker, session, client, entry);
    }
    if (backlog.length > 0) return;
    client.resendBacklog = undefined;
  }
  let now = 0; // read once, and only if a queued message has an expiry
  // A PUBLISH sent from here that waits for its record's commit (sendAfterRecordCommit): what follows waits.
  while (session.inflight.size < client.sendQuota && client.recordWaiting === 0) {
    const head = session.peek();
    if (head === undefined || head.seq > lastSeq) break;
    const entry = session.dequeue()!;
    if (!mayRead(broker, session, entry)) continue;
    if (entry.msg.expiresAt !== undefined && entry.msg.expiresAt <= (now ||= Date.now())) {
      // §3.3.2.3.3: an expired message is not delivered.
      broker.metrics.dropped.expired++;
      if (session.persistent) {
        broker.persistOutboundDelete(session, entry.seq);
      }
      continue;
    }
    startSending(broker, session, client, entry, true);
  }
  if (session.hasDrainWaiters && session.queuedCount <= broker.queueLowWater) session.wakeDrainWaiters();
}

/**
 * Resends everything in flight after a reconnect (§4.4): PUBLISH with DUP, PUBREL as is, oldest first. At
 * most the client's Receive Maximum go at once (MQTT-3.3.4-9; the client may come back with a smaller one):
 * the rest wait in `client.resendBacklog` for {@link pump}.
 */
export function resendInflight(broker: Broker, session: Session, client: Client): void {
  const entries = session.inflight.values();
  if (entries.length > client.sendQuota) client.resendBacklog = entries.splice(client.sendQuota);
  for (const entry of entries) resendEntry(broker, session, client, entry);
}

function resendEntry(broker: Broker, session: Session, client: Client, entry: OutEntry): void {
  if (entry.state === "pubrel") {
    client.send({ type: 6, packetId: entry.packetId });
  } else if (!mayRead(broker, session, entry)) {
    session.deleteInflight(entry.packetId);
  } else if (!sendEntry(broker, client, entry, true)) {
    // Too large for the client's Maximum Packet Size of this connection: treated as delivered
    // (MQTT-3.1.2-25), or it would hold a slot of the window for good.
    completeInflight(broker, session, client, entry);
  }
}

/**
 * Encodes (or reuses the shared encoding) and queues one PUBLISH. Returns false when the packet exceeds
 * the client's Maximum Packet Size and was dropped, or when a QoS 0 message was dropped for a slow consumer.
 */
export function sendPublish(
  broker: Broker,
  client: Client,
  msg: Message,
  qos: QoS,
  retain: boolean,
  subscriptionIds: number[] | undefined,
  packetId: number,
  dup: boolean,
): boolean {
  const metrics = broker.metrics;
  const transport = client.transport;
  if (qos === 0 && transport.pendingBytes > broker.config.server.max_output_buffer) {
    metrics.dropped.slow_consumer++;
    return false;
  }
  // The clock matters only for a message with an expiry (its remaining lifetime goes on the wire).
  const now = msg.expiresAt === undefined ? 0 : Date.now();
  let bytes: Uint8Array;
  let newAlias: number | undefined;
  if (client.version === 5 && (subscriptionIds !== undefined || client.aliasOutMax > 0)) {
    let topicAlias: number | undefined;
    let aliasKnown = false;
    if (client.aliasOutMax > 0) {
      const aliases = client.aliasesOut ??= new Map();
      topicAlias = aliases.get(msg.topic);
      if (topicAlias !== undefined) aliasKnown = true;
      else if (aliases.size < client.aliasOutMax) {
        topicAlias = aliases.size + 1;
        newAlias = topicAlias;
      }
    }
    bytes = encodeWithExtras(msg, qos, retain, now, { subscriptionIds, topicAlias, aliasKnown });
  } else {
    bytes = encodeShared(msg, client.version, qos, retain, now);
  }
  if (bytes.length > client.maxPacketSize) {
    metrics.dropped.too_large++;
    return false;
  }
  // The alias exists for the client only once a PUBLISH setting it was sent (§3.3.2.3.4).
  if (newAlias !== undefined) client.aliasesOut!.set(msg.topic, newAlias);
  if (qos === 0) transport.write(bytes);
  else transport.writeWithPacketId(bytes, publishPacketIdOffset(bytes), packetId, dup);
  metrics.publishSent++;
  metrics.packetsSent[3]++;
  metrics.bytesSent += bytes.length;
  return true;
}
