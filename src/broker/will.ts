/**
 * Will Messages (§3.1.2.5, §3.1.3.2): published when a connection ends without a normal DISCONNECT
 * (network error, keep-alive timeout, protocol error, takeover), after the MQTT 5 Will Delay Interval when
 * the session outlives the connection, and at the latest when the session ends.
 *
 * @module
 */

import { isSysTopic } from "../mqtt/topic.ts";
import type { Broker } from "./broker.ts";
import { forwardableProperties, type Message } from "./message.ts";
import { expireIfDue } from "./keepalive.ts";
import { route } from "./routing.ts";
import type { Session } from "./session.ts";

/** Publishes the session's will now (if any) and forgets it. */
export function publishWill(broker: Broker, session: Session): void {
  const will = session.will;
  session.will = undefined;
  cancelWill(session);
  if (will === undefined) return;
  // The stored session must not bring it back after a restart (a session that ends is deleted after this).
  if (
    session.persistent && session.client === undefined && broker.sessions.get(session.clientId) === session
  ) {
    broker.persist({ op: "session.put", session: broker.sessionRecord(session) });
  }
  // CONNECT refuses both; a will restored from an older store, or an ACL reloaded since, is held to them here.
  if (
    isSysTopic(will.topic) ||
    (broker.acl !== undefined && !broker.acl.canPublish(session.username, session.clientId, will.topic))
  ) {
    broker.metrics.dropped.not_authorized++;
    return;
  }
  const now = Date.now();
  const expiry = will.properties?.messageExpiryInterval;
  const retain = will.retain && broker.config.retained.enabled;
  const msg: Message = {
    topic: will.topic,
    payload: will.payload,
    qos: will.qos,
    retain,
    properties: forwardableProperties(will.properties),
    expiresAt: expiry === undefined ? undefined : now + expiry * 1000,
    receivedAt: now,
    origin: session.clientId,
  };
  broker.logger.debug("publishing will", { client_id: session.clientId, topic: will.topic });
  if (retain) broker.setRetained(msg);
  route(broker, msg);
}

/**
 * Called when the connection of a session ended abnormally: publish now, or schedule after the Will
 * Delay Interval (never later than the session's end, §3.1.3.2.2).
 */
export function connectionLost(broker: Broker, session: Session, now: number): void {
  const will = session.will;
  if (will === undefined) return;
  const delay = will.properties?.willDelayInterval ?? 0;
  if (delay > 0 && session.persistent) {
    session.willDueAt = now + Math.min(delay, session.expiryInterval) * 1000;
    scheduleWill(broker, session, now);
  } else {
    publishWill(broker, session);
  }
}

/** Longest delay a timer takes (2^31 - 1 ms, 24.8 days); a longer Will Delay is waited for in steps. */
const MAX_TIMER_MS = 2 ** 31 - 1;

/**
 * Publishes the session's delayed will at its due time, to the millisecond rather than at the next
 * once-a-second sweep (which stays as the fallback). One timer per session, cleared when the will is
 * cancelled or published ({@link cancelWill}); it does not keep a stopping broker's process alive.
 */
export function scheduleWill(broker: Broker, session: Session, now: number): void {
  if (session.willTimer !== undefined) clearTimeout(session.willTimer);
  session.willTimer = undefined;
  const dueAt = session.willDueAt;
  if (dueAt === undefined) return;
  const wait = dueAt - now;
  const timer = setTimeout(() => {
    session.willTimer = undefined;
    if (session.willDueAt !== dueAt || broker.sessions.get(session.clientId) !== session) return;
    if (wait > MAX_TIMER_MS) {
      scheduleWill(broker, session, Date.now());
      return;
    }
    publishWill(broker, session);
    // A will due when the session ends (the delay is longer) goes with the end of the session.
    expireIfDue(broker, session, Date.now());
  }, Math.min(Math.max(0, wait), MAX_TIMER_MS));
  Deno.unrefTimer(timer);
  session.willTimer = timer;
}

/** Forgets the delayed will's time and its timer (a reconnect within the delay, or the will went out). */
export function cancelWill(session: Session): void {
  session.willDueAt = undefined;
  if (session.willTimer !== undefined) {
    clearTimeout(session.willTimer);
    session.willTimer = undefined;
  }
}
