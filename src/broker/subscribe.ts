/**
 * SUBSCRIBE (§3.8) and UNSUBSCRIBE (§3.10): per-filter validation and authorization, granted QoS capped by
 * `qos.max_qos`, Subscription Options (No Local, Retain As Published, Retain Handling), Subscription
 * Identifiers, shared subscriptions, and retained messages sent after the SUBACK, ahead of live ones.
 *
 * @module
 */

import { quote } from "../mqtt/errors.ts";
import { ReasonCode } from "../mqtt/reason_codes.ts";
import { isValidTopicFilter, parseSharedFilter } from "../mqtt/topic.ts";
import type { QoS, SubscribePacket, UnsubscribePacket } from "../mqtt/types.ts";
import type { StoredMessage, SubscriptionRecord } from "../store/store.ts";
import type { Broker } from "./broker.ts";
import type { Client } from "./client.ts";
import { deliver, releaseHold } from "./routing.ts";

/** Handles SUBSCRIBE. */
export function handleSubscribe(broker: Broker, client: Client, p: SubscribePacket): void {
  const session = client.session!;
  const v5 = client.version === 5;
  const subscriptionId = v5 ? p.properties?.subscriptionIdentifiers?.[0] : undefined;
  const codes: number[] = [];
  // By filter: a filter repeated in one SUBSCRIBE is one subscription, whose retained messages go out once, with
  // the options of its last copy (25,000 copies of "#" walked all retained messages 25,000 times).
  const retainedToSend = new Map<string, SubscriptionRecord>();
  const maxQos = broker.config.qos.max_qos;
  for (const req of p.subscriptions) {
    const filter = req.topicFilter;
    if (!isValidTopicFilter(filter)) {
      codes.push(v5 ? ReasonCode.TopicFilterInvalid : ReasonCode.UnspecifiedError);
      continue;
    }
    const share = parseSharedFilter(filter) ?? undefined;
    if (share && req.noLocal) {
      // MQTT-3.8.3-4: No Local on a shared subscription is a protocol error.
      client.disconnect(ReasonCode.ProtocolError, `no local set on shared subscription ${quote(filter)}`);
      return;
    }
    const plain = share ? share.filter : filter;
    if (broker.acl !== undefined && !broker.acl.canSubscribe(client.username, client.clientId, plain)) {
      codes.push(v5 ? ReasonCode.NotAuthorized : ReasonCode.UnspecifiedError);
      continue;
    }
    const qos = (req.qos < maxQos ? req.qos : maxQos) as QoS;
    const sub: SubscriptionRecord = {
      filter,
      qos,
      noLocal: req.noLocal,
      retainAsPublished: req.retainAsPublished,
      retainHandling: req.retainHandling,
      subscriptionId,
    };
    const existed = broker.tree.add(session, sub, share);
    session.setSubscription(filter, sub);
    codes.push(qos);
    // Retained messages: never to shared subscriptions (§4.8.2); Retain Handling 1 = only when new (§3.8.3.1).
    if (
      broker.config.retained.enabled && !share &&
      (req.retainHandling === 0 || (req.retainHandling === 1 && !existed))
    ) {
      retainedToSend.set(filter, sub);
    }
  }
  if (session.persistent) broker.persist({ op: "session.put", session: broker.sessionRecord(session) });
  const suback = broker.encodeFor(client, { type: 9, packetId: p.packetId, reasonCodes: codes });
  if (!broker.sendAfterCommit(client, suback, 9)) {
    if (retainedToSend.size > 0) sendRetained(broker, client, retainedToSend);
    return;
  }
  if (retainedToSend.size === 0) return;
  // The SUBACK waits for the store. The retained messages are taken now and held behind it, and so is
  // everything else for this client meanwhile (routing.ts, `holdSends`): a live message published in the
  // wait must not overtake them and leave the subscriber with a stale retained value as the last word.
  // Each held message sends itself in its place (routing.ts, deliver); the hold ends after the last retained one.
  client.holdSends++;
  sendRetained(broker, client, retainedToSend);
  broker.runAfterCommit(client, () => releaseHold(broker, session, client));
}

function sendRetained(
  broker: Broker,
  client: Client,
  list: Map<string, SubscriptionRecord>,
): void {
  const session = client.session;
  if (session === undefined || session.client !== client) return;
  const now = Date.now();
  const acl = broker.acl;
  let expired: StoredMessage[] | undefined;
  for (const [filter, sub] of list) {
    broker.retained.forEachMatch(filter, (msg: StoredMessage) => {
      if (msg.expiresAt !== undefined && msg.expiresAt <= now) {
        (expired ??= []).push(msg);
        return;
      }
      if (acl !== undefined && !acl.canRead(client.username, client.clientId, msg.topic)) return;
      const qos = (msg.qos < sub.qos ? msg.qos : sub.qos) as QoS;
      // Retained messages sent because of a new subscription carry RETAIN 1 (§3.3.1.3).
      deliver(
        broker,
        session,
        msg,
        qos,
        true,
        sub.subscriptionId === undefined ? undefined : [sub.subscriptionId],
      );
    });
  }
  // Expired retained messages met on the way are dropped for good (§3.3.2.3.3), from the store too (a topic
  // met twice is gone the second time, which deletes nothing).
  if (expired !== undefined) { for (const msg of expired) broker.deleteRetained(msg.topic); }
}

/** Handles UNSUBSCRIBE. */
export function handleUnsubscribe(broker: Broker, client: Client, p: UnsubscribePacket): void {
  const session = client.session!;
  const codes: number[] = [];
  for (const filter of p.topicFilters) {
    // No subscription can have an invalid filter; MQTT 5 has a reason code for saying so (§3.11.3).
    if (!isValidTopicFilter(filter)) {
      codes.push(client.version === 5 ? ReasonCode.TopicFilterInvalid : ReasonCode.NoSubscriptionExisted);
      continue;
    }
    const share = parseSharedFilter(filter) ?? undefined;
    const removed = session.deleteSubscription(filter);
    if (removed) broker.tree.remove(session, filter, share);
    codes.push(removed ? ReasonCode.Success : ReasonCode.NoSubscriptionExisted);
  }
  if (session.persistent) broker.persist({ op: "session.put", session: broker.sessionRecord(session) });
  const unsuback = broker.encodeFor(client, { type: 11, packetId: p.packetId, reasonCodes: codes });
  broker.sendAfterCommit(client, unsuback, 11);
}
