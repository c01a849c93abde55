/**
 * Start-up: rebuilds sessions (with subscriptions, queued and in-flight messages, inbound QoS 2 ids) and
 * retained messages from the store, dropping what expired while the broker was down.
 *
 * @module
 */

import { parseSharedFilter } from "../mqtt/topic.ts";
import type { Broker } from "./broker.ts";
import type { Message } from "./message.ts";
import { MAYBE_SENT, NEVER_EXPIRES, type OutEntry, packetIdOfSeq, Session } from "./session.ts";
import { connectionLost, publishWill, scheduleWill } from "./will.ts";

/** Loads everything from the store into the broker and logs what it restored. */
export async function restore(broker: Broker): Promise<void> {
  const started = performance.now();
  const state = await broker.store.load();
  const now = Date.now();
  const discardSessions = broker.config.server.clean_session_default;
  let retained = 0;
  let expired = 0;
  for (const msg of state.retained) {
    if (msg.expiresAt !== undefined && msg.expiresAt <= now) {
      broker.persist({ op: "retained.delete", topic: msg.topic });
      expired++;
      continue;
    }
    broker.retained.set(msg);
    retained++;
  }
  let sessions = 0;
  const connectedAtCrash: Session[] = [];
  const endedWills: Session[] = [];
  let endedSessions = 0;
  for (const record of state.sessions) {
    const ended = record.expiryInterval !== NEVER_EXPIRES &&
      now - (record.disconnectedAt ?? now) >= record.expiryInterval * 1000;
    if (discardSessions || ended || record.expiryInterval === 0) {
      broker.persist({ op: "session.delete", clientId: record.clientId });
      endedSessions++;
      if (record.will !== undefined && !discardSessions) {
        // A session that ended while the broker was down takes its will along: published at its end at the
        // latest (§3.1.3.2.2), here once everything else is restored.
        const gone = new Session(record.clientId);
        gone.username = record.username;
        gone.will = record.will;
        endedWills.push(gone);
      }
      continue;
    }
    const session = new Session(record.clientId);
    session.expiryInterval = record.expiryInterval;
    session.protocolVersion = record.protocolVersion;
    // Time offline counts from the last disconnect, or from now if the broker stopped while connected.
    session.disconnectedAt = record.disconnectedAt ?? now;
    session.username = record.username;
    session.will = record.will;
    session.willDueAt = record.willDueAt;
    if (record.disconnectedAt === undefined) connectedAtCrash.push(session);
    for (const sub of record.subscriptions) {
      session.setSubscription(sub.filter, sub);
      broker.tree.add(session, sub, parseSharedFilter(sub.filter) ?? undefined);
    }
    broker.sessions.set(record.clientId, session);
    sessions++;
  }
  // A QoS 1 message sent from a session's queue keeps its "queued" record (routing.ts, startSending), and a
  // message is sent straight into flight only while the queue is empty: so a queued QoS 1 record older than
  // the session's newest stored in-flight QoS 1 record was sent before the crash. Those go back in flight, so
  // the reconnect resends everything in its first order (§4.6), with DUP and under the packet ids they went
  // out under: the ids of their sequence numbers (packetIdOfSeq), since one sent under another id has an
  // in-flight record of its own.
  const newestInflightQoS1 = new Map<string, number>();
  for (const record of state.outbound) {
    if (record.state !== "publish" || record.packetId === undefined || record.message?.qos !== 1) continue;
    const newest = newestInflightQoS1.get(record.clientId);
    if (newest === undefined || record.seq > newest) newestInflightQoS1.set(record.clientId, record.seq);
  }
  const sentFromQueue: { session: Session; entry: OutEntry }[] = [];
  let messages = 0;
  for (const record of state.outbound) {
    const session = broker.sessions.get(record.clientId);
    if (session === undefined) {
      broker.persist({ op: "outbound.delete", clientId: record.clientId, seq: record.seq });
      continue;
    }
    const stored = record.message;
    if (record.state !== "pubrel" && stored === undefined) continue;
    const sentBefore = record.state === "queued" && stored?.qos === 1 &&
      record.seq < (newestInflightQoS1.get(record.clientId) ?? -1);
    // A queued message whose Message Expiry Interval passed is deleted (MQTT-3.3.2-5); one sent before (in
    // flight, so onward delivery started) is resent all the same (MQTT-4.4.0-1), as without a restart.
    if (
      record.state === "queued" && !sentBefore && stored?.expiresAt !== undefined && stored.expiresAt <= now
    ) {
      broker.persist({ op: "outbound.delete", clientId: record.clientId, seq: record.seq });
      expired++;
      continue;
    }
    const props = stored?.properties;
    let subscriptionIds: number[] | undefined;
    let msgProps = props;
    if (props?.subscriptionIdentifiers) {
      subscriptionIds = props.subscriptionIdentifiers;
      msgProps = { ...props };
      delete msgProps.subscriptionIdentifiers;
    }
    // The loaded records are the restore's own: a stored message becomes the message itself, copied only
    // to take the subscription ids out of its properties (a copy of every message of a backlog was one more
    // object each for the young generation to copy and promote).
    const msg: Message = stored === undefined
      ? { topic: "", payload: new Uint8Array(0), qos: 2, retain: false, receivedAt: now }
      : msgProps === props
      ? stored
      : { ...stored, properties: msgProps };
    const entry: OutEntry = {
      seq: record.seq,
      msg,
      qos: stored ? stored.qos : 2,
      retain: stored ? stored.retain : false,
      subscriptionIds,
      state: record.state,
      packetId: record.packetId ?? 0,
      // Still shared (§4.8.2): it goes to another member when this one leaves or its session ends. A group
      // left by all its members meanwhile is gone: the message stays with this session, as without a restart.
      share: record.share && broker.tree.sharedGroup(record.share.group, record.share.filter),
    };
    if (record.seq >= session.seq) session.seq = record.seq + 1;
    if (record.state === "queued" || record.packetId === undefined || session.inflight.has(record.packetId)) {
      entry.state = record.state === "pubrel" ? "pubrel" : "queued";
      if (entry.state === "queued") {
        if (entry.qos === 1 && record.seq < (newestInflightQoS1.get(record.clientId) ?? -1)) {
          sentFromQueue.push({ session, entry });
        } else {
          session.enqueue(entry);
        }
      }
    } else {
      session.setInflight(entry);
    }
    messages++;
  }
  for (const { session, entry } of sentFromQueue) {
    // After every stored id is in the table; an id taken by one of them would have been stored with this one.
    const id = packetIdOfSeq(entry.seq);
    entry.packetId = session.inflight.has(id) ? session.allocatePacketId() : id;
    entry.state = "publish";
    session.setInflight(entry);
  }
  // A session that was connected when the broker stopped may have had the front of its queue in flight (up
  // to its window) without a stored record saying so: those QoS 1 messages are marked to go out with DUP
  // (MAYBE_SENT). Some of them may not have been sent: DUP only warns.
  const window = broker.config.server.max_inflight;
  for (const session of connectedAtCrash) {
    let room = window - session.inflight.size;
    if (room <= 0 || session.queuedCount === 0) continue;
    for (const entry of session.drainQueue()) {
      if (room > 0) {
        room--;
        if (entry.qos === 1) entry.packetId = MAYBE_SENT;
      }
      session.enqueue(entry);
    }
  }
  for (const { clientId, packetId } of state.incoming) {
    const session = broker.sessions.get(clientId);
    if (session) session.addIncoming(packetId);
    else broker.persist({ op: "incoming.delete", clientId, packetId });
  }
  for (const session of endedWills) publishWill(broker, session);
  // Delayed wills whose time passed while the broker was down go now too (a reconnect right after the start
  // would cancel them); the others at their time.
  for (const session of broker.sessions.values()) {
    if (session.willDueAt !== undefined && session.willDueAt <= now) publishWill(broker, session);
    else scheduleWill(broker, session, now);
  }
  // The broker went down with these clients connected: their connections ended without a DISCONNECT, so
  // their wills go now or after their Will Delay Interval from now (§3.1.2.5), as for any lost connection.
  for (const session of connectedAtCrash) connectionLost(broker, session, now);
  if (broker.pendingWrites) await broker.store.flush();
  broker.logger.info("store restored", {
    backend: broker.config.storage.backend,
    sessions,
    retained,
    messages,
    dropped_sessions: endedSessions,
    expired,
    ms: Math.round(performance.now() - started),
  });
}
