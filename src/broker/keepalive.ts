/**
 * Time-driven protocol rules, checked once a second for every connection and session: the CONNECT
 * timeout, keep-alive (1.5 x the interval, §3.1.2.10), slow consumers, Session Expiry Interval, expired
 * retained messages, and delayed wills (which also have a timer each, will.ts, so they go on time). One sweep
 * instead of a timer per client keeps per-packet work free of timer resets.
 *
 * @module
 */

import { ReasonCode } from "../mqtt/reason_codes.ts";
import type { Broker } from "./broker.ts";
import { NEVER_EXPIRES, type Session } from "./session.ts";
import { publishWill } from "./will.ts";

/** How long output may stay above `server.max_output_buffer` before the client is disconnected. */
const STUCK_LIMIT_MS = 30_000;

/** Runs every time-based check once. */
export function sweep(broker: Broker, now: number): void {
  const server = broker.config.server;
  const connectTimeoutMs = server.connect_timeout * 1000;
  // forEach, not for-of: this runs once a second, unoptimized, and for-of there allocates an iterator
  // result per connection (82 bytes each: 3-4% of all the garbage in the p2p benchmark).
  broker.connections.forEach((client) => {
    if (client.state === "connecting") {
      if (now - client.connectedAt > connectTimeoutMs) {
        client.closeReason = `no CONNECT within ${server.connect_timeout} s`;
        broker.logger.info("closing connection", {
          addr: client.transport.remoteAddr,
          reason: client.closeReason,
          bytes_waiting: client.decoder.buffered,
        });
        client.close(client.closeReason);
      }
      return;
    }
    if (client.state !== "connected") return;
    if (client.keepAlive > 0 && now - client.lastRead > client.keepAlive * 1500) {
      client.disconnect(ReasonCode.KeepAliveTimeout, `no packet for 1.5 x keep-alive ${client.keepAlive} s`);
      return;
    }
    if (client.transport.pendingBytes > server.max_output_buffer) {
      if (client.stuckSince === 0) client.stuckSince = now;
      else if (now - client.stuckSince > STUCK_LIMIT_MS) {
        broker.metrics.dropped.slow_consumer++;
        client.disconnect(ReasonCode.QuotaExceeded, "client does not read its socket");
      }
    } else {
      client.stuckSince = 0;
    }
  });
  // Expired retained messages go from memory and the store (§3.3.2.3.3), subscribed to again or not.
  const expired = broker.retained.expiredAt(now);
  if (expired !== undefined) { for (const msg of expired) broker.deleteRetained(msg.topic); }
  broker.sessions.forEach((session) => {
    if (session.client !== undefined || session.disconnectedAt === undefined) return;
    if (session.willDueAt !== undefined && session.willDueAt <= now) publishWill(broker, session);
    expireIfDue(broker, session, now);
  });
}

/** Ends a disconnected session whose Session Expiry Interval has passed. */
export function expireIfDue(broker: Broker, session: Session, now: number): void {
  if (
    session.client === undefined && session.disconnectedAt !== undefined &&
    session.expiryInterval !== NEVER_EXPIRES && now - session.disconnectedAt >= session.expiryInterval * 1000
  ) {
    broker.logger.info("session expired", { client_id: session.clientId });
    broker.endSession(session, false);
  }
}
