/**
 * CONNECT (§3.1) and DISCONNECT (§3.14): authentication, client identifier rules, session takeover,
 * Clean Start / Session Expiry, the CONNACK with what this server supports, and redelivery of what the
 * session still owes the client.
 *
 * @module
 */

import { quote } from "../mqtt/errors.ts";
import { ownCopy } from "../mqtt/slab.ts";
import { connackCodeForVersion, ReasonCode, reasonName } from "../mqtt/reason_codes.ts";
import { isSysTopic, isValidDecodedTopicName } from "../mqtt/topic.ts";
import type { ConnectPacket, DisconnectPacket, Properties, QoS, Will } from "../mqtt/types.ts";
import type { Broker } from "./broker.ts";
import type { Client } from "./client.ts";
import { pump, resendInflight } from "./routing.ts";
import { NEVER_EXPIRES, Session } from "./session.ts";
import { cancelWill } from "./will.ts";

/** Delay before answering bad credentials, so guessing is slow and timing says nothing. */
const AUTH_FAILURE_DELAY_MS = 250;

function refuse(client: Client, code5: number, why: string): void {
  const broker = client.broker;
  client.send({
    type: 2,
    sessionPresent: false,
    reasonCode: connackCodeForVersion(code5, client.version),
    properties: client.reasonString(why),
  });
  broker.logger.info("connection refused", {
    client_id: client.clientId || undefined,
    addr: client.transport.remoteAddr,
    proto: client.version,
    reason: reasonName(code5),
    detail: why,
  });
  client.closeReason = `refused: ${why}`;
  client.close(client.closeReason);
}

/**
 * Decides whether the client may connect: mutual TLS CN, anonymous rule, password file. Returns the reason
 * code, or a promise of it when a password has to be checked (no promise per CONNECT otherwise).
 */
function authenticate(broker: Broker, client: Client, p: ConnectPacket): number | Promise<number> {
  const auth = broker.config.auth;
  const cn = client.transport.peerCommonName;
  if (cn !== undefined) {
    client.username = cn; // the listener verified the certificate and maps CN to the username
    return ReasonCode.Success;
  }
  if (p.username === undefined) {
    return auth.allow_anonymous ? ReasonCode.Success : ReasonCode.NotAuthorized;
  }
  const passwords = broker.passwords;
  if (passwords === undefined) {
    return auth.allow_anonymous ? ReasonCode.Success : ReasonCode.NotAuthorized;
  }
  return passwords.verify(p.username, p.password ?? new Uint8Array()).then((ok) =>
    ok ? ReasonCode.Success : ReasonCode.BadUserNameOrPassword
  );
}

/**
 * Checks a Will against the rules for a PUBLISH (§3.1.3.3, MQTT-3.3.2-14) and what this server supports
 * (MQTT-3.2.2-12, MQTT-3.2.2-13); false once the connection is refused or closed. A malformed Will Topic
 * closes a 3.1 / 3.1.1 connection without a CONNACK (MQTT-3.1.4-1).
 */
function willAcceptable(broker: Broker, client: Client, will: Will): boolean {
  const config = broker.config;
  const topic = will.topic;
  if (!isValidDecodedTopicName(topic)) {
    const why = `Will Topic ${quote(topic)} is not a valid topic name`;
    if (client.version === 5) refuse(client, ReasonCode.TopicNameInvalid, why);
    else client.disconnect(ReasonCode.TopicNameInvalid, why);
    return false;
  }
  if (isSysTopic(topic)) {
    refuse(
      client,
      ReasonCode.NotAuthorized,
      `Will Topic ${quote(topic)}: $SYS is written by the broker only`,
    );
    return false;
  }
  if (client.version !== 5) return true; // 3.1 / 3.1.1 cannot be told; the will's QoS is capped instead
  const responseTopic = will.properties?.responseTopic;
  if (responseTopic !== undefined && !isValidDecodedTopicName(responseTopic)) {
    refuse(
      client,
      ReasonCode.ProtocolError,
      `Will Response Topic ${quote(responseTopic)} is not a valid topic name`,
    );
    return false;
  }
  if (will.qos > config.qos.max_qos) {
    refuse(
      client,
      ReasonCode.QoSNotSupported,
      `Will QoS ${will.qos} exceeds the maximum QoS ${config.qos.max_qos}`,
    );
    return false;
  }
  if (will.retain && !config.retained.enabled) {
    refuse(client, ReasonCode.RetainNotSupported, "Will Retain is set but retained messages are disabled");
    return false;
  }
  return true;
}

/** Success CONNACKs of MQTT 3.1 / 3.1.1, without and with Session Present (3.1 has no such flag). */
const CONNACK_OK = new Uint8Array([0x20, 0x02, 0x00, 0x00]);
const CONNACK_OK_SESSION_PRESENT = new Uint8Array([0x20, 0x02, 0x01, 0x00]);

/**
 * Handles the CONNECT packet. Returns a promise only when the CONNECT has to wait (a password to check, a
 * refusal's delay, a store commit before CONNACK); the rest of the packets in the chunk wait for it. The
 * common CONNECT completes synchronously: no async frame, promise or continuation per connection.
 */
export function handleConnect(broker: Broker, client: Client, p: ConnectPacket): Promise<void> | undefined {
  const config = broker.config;
  const version = p.protocolVersion;
  client.version = version;
  client.clientId = p.clientId;
  const props = p.properties;
  if (version === 5 && props?.requestProblemInformation === 0) client.problemInfo = false;

  if (broker.clients.size >= config.server.max_clients && !broker.clients.has(p.clientId)) {
    refuse(client, ReasonCode.ServerUnavailable, `max_clients ${config.server.max_clients} reached`);
    return;
  }
  let assignedId: string | undefined;
  if (p.clientId.length === 0) {
    // §3.1.3.1: an empty id is allowed only for a clean session in 3.1.1; MQTT 5 assigns one.
    if (version === 3 || (version === 4 && !p.clean)) {
      refuse(client, ReasonCode.ClientIdentifierNotValid, "empty client id needs clean session");
      return;
    }
    assignedId = `auto-${crypto.randomUUID()}`;
    client.clientId = assignedId;
  }
  if (version === 5 && props?.authenticationMethod !== undefined) {
    // No enhanced authentication method is configured (§4.12).
    refuse(
      client,
      ReasonCode.BadAuthenticationMethod,
      `authentication method ${quote(props.authenticationMethod)} is not supported`,
    );
    return;
  }

  if (version === 3 && p.clientId.length > 23) {
    // MQTT 3.1 §3.1: a client id is 1 to 23 characters, longer ones get return code 2.
    refuse(
      client,
      ReasonCode.ClientIdentifierNotValid,
      `MQTT 3.1 client id of ${p.clientId.length} characters (1..23)`,
    );
    return;
  }
  const maxKeepAlive = config.server.max_keepalive;
  if (version !== 5 && (p.keepAlive > maxKeepAlive || (p.keepAlive === 0 && maxKeepAlive < 65535))) {
    // MQTT 3.x cannot tell a client to use a shorter keep-alive; shortening it in silence would time the
    // client out and publish its will. Refused with return code 2 instead, as Mosquitto does since 2.0.12.
    refuse(
      client,
      ReasonCode.ClientIdentifierNotValid,
      `keep-alive ${
        p.keepAlive === 0 ? "0 (none)" : `${p.keepAlive} s`
      } exceeds server.max_keepalive ${maxKeepAlive} s`,
    );
    return;
  }
  if (p.will !== undefined && !willAcceptable(broker, client, p.will)) return;

  const authResult = authenticate(broker, client, p);
  if (typeof authResult === "number") return afterAuthentication(broker, client, p, assignedId, authResult);
  // A SIGHUP while the password is checked: the check used the old file, so it is done again with the new one.
  const epoch = broker.authEpoch;
  return authResult.then((code) => {
    if (client.isClosed) return undefined;
    if (broker.authEpoch !== epoch) return handleConnect(broker, client, p);
    return afterAuthentication(broker, client, p, assignedId, code);
  });
}

/** CONNECT once the credentials are decided: a refusal, or the session set up and the CONNACK sent. */
function afterAuthentication(
  broker: Broker,
  client: Client,
  p: ConnectPacket,
  assignedId: string | undefined,
  authResult: number,
): Promise<void> | undefined {
  if (authResult !== ReasonCode.Success) return refuseAfterDelay(broker, client, authResult);
  const config = broker.config;
  const version = p.protocolVersion;
  const props = p.properties;
  if (client.username === undefined) client.username = p.username;
  const will = p.will;
  if (
    will !== undefined && broker.acl !== undefined &&
    !broker.acl.canPublish(client.username, client.clientId, will.topic)
  ) {
    refuse(client, ReasonCode.NotAuthorized, `not authorized to publish the will to ${quote(will.topic)}`);
    return;
  }

  // Keep-alive: enforce our maximum; MQTT 5 clients are told (Server Keep Alive, §3.2.2.3.14).
  let keepAlive = p.keepAlive;
  let serverKeepAlive: number | undefined;
  const maxKeepAlive = config.server.max_keepalive;
  if (keepAlive > maxKeepAlive || (keepAlive === 0 && maxKeepAlive < 65535)) {
    keepAlive = serverKeepAlive = maxKeepAlive; // MQTT 5 only: 3.x clients asking more were refused
  }
  client.keepAlive = keepAlive;

  let expiry: number;
  if (version === 5) {
    client.sendQuota = props?.receiveMaximum ?? 65535;
    client.maxPacketSize = props?.maximumPacketSize ?? 268435460;
    client.aliasOutMax = props?.topicAliasMaximum ?? 0;
    expiry = Math.min(props?.sessionExpiryInterval ?? 0, config.server.max_session_expiry);
  } else {
    // A 3.x persistent session never expires unless the maximum says otherwise (as Mosquitto's
    // persistent_client_expiration).
    expiry = p.clean ? 0 : Math.min(NEVER_EXPIRES, config.server.max_session_expiry);
  }
  if (client.sendQuota > config.server.max_inflight) client.sendQuota = config.server.max_inflight;

  // Takeover (§3.1.4-3): the existing connection with this client id is closed.
  const existing = broker.clients.get(client.clientId);
  if (existing !== undefined && existing !== client) {
    broker.logger.info("session taken over", {
      client_id: client.clientId,
      old_addr: existing.transport.remoteAddr,
    });
    existing.disconnect(ReasonCode.SessionTakenOver, "another connection took over the session");
  }

  let session = broker.sessions.get(client.clientId);
  if (session !== undefined && p.clean) {
    broker.endSession(session, false);
    session = undefined;
  }
  const sessionPresent = session !== undefined;
  if (session === undefined) {
    session = new Session(client.clientId);
    broker.sessions.set(client.clientId, session);
  }
  // A reconnect before the Will Delay Interval ends cancels the delayed will (§3.1.3.2.2).
  cancelWill(session);
  const wasPersisted = session.persistent;
  session.expiryInterval = expiry;
  session.protocolVersion = version;
  session.username = client.username;
  // The will lives as long as the connection: its payload must not pin a 16 KiB slab of the codec.
  // A 3.1 / 3.1.1 will above the maximum QoS is published at the maximum (MQTT 5 ones were refused).
  session.will = will &&
    { ...will, qos: Math.min(will.qos, config.qos.max_qos) as QoS, payload: ownCopy(will.payload) };
  session.disconnectedAt = undefined;
  session.dropLogged = false;
  if (session.persistent) broker.persist({ op: "session.put", session: broker.sessionRecord(session) });
  else if (wasPersisted) broker.persist({ op: "session.delete", clientId: session.clientId });
  broker.clients.set(client.clientId, client);
  client.session = session;

  if (broker.store.durable && broker.pendingWrites) {
    // CONNACK promises the session exists: commit first. A SIGHUP meanwhile holds this client to the new
    // credentials, as it does the connected ones. Refused or closed meanwhile, the connection leaves the
    // session offline from then on, without its will (Broker.clientClosed).
    const epoch = broker.authEpoch;
    const loginPasswords = broker.passwords;
    return broker.store.flush().then(
      () => {
        if (client.isClosed) return;
        const why = broker.authEpoch === epoch ? undefined : broker.credentialProblem(client, loginPasswords);
        if (why !== undefined) refuse(client, ReasonCode.NotAuthorized, why);
        else accept(broker, client, p, session, sessionPresent, assignedId, serverKeepAlive, expiry);
      },
      (err) => {
        broker.logger.error("store commit failed during CONNECT", {
          client_id: client.clientId,
          error: String(err),
        });
        client.disconnect(ReasonCode.UnspecifiedError, "store failure");
      },
    );
  }
  if (client.isClosed) return;
  accept(broker, client, p, session, sessionPresent, assignedId, serverKeepAlive, expiry);
}

/** Bad credentials: answered after a delay, so guessing is slow and timing says nothing. */
async function refuseAfterDelay(broker: Broker, client: Client, authResult: number): Promise<void> {
  broker.metrics.authFailures++;
  await new Promise((resolve) => setTimeout(resolve, AUTH_FAILURE_DELAY_MS));
  if (client.isClosed) return;
  refuse(
    client,
    authResult,
    authResult === ReasonCode.NotAuthorized
      ? "anonymous clients are not allowed"
      : "bad user name or password",
  );
}

/** The connection is accepted: CONNACK, the log line, and what a present session still owes the client. */
function accept(
  broker: Broker,
  client: Client,
  p: ConnectPacket,
  session: Session,
  sessionPresent: boolean,
  assignedId: string | undefined,
  serverKeepAlive: number | undefined,
  expiry: number,
): void {
  const config = broker.config;
  const version = p.protocolVersion;
  client.state = "connected";
  session.client = client;
  if (version === 5) {
    const sessionExpiry = p.properties?.sessionExpiryInterval;
    const connackProps: Properties = {
      receiveMaximum: broker.receiveMaximum,
      maximumQoS: config.qos.max_qos < 2 ? config.qos.max_qos : undefined,
      retainAvailable: config.retained.enabled ? undefined : 0,
      maximumPacketSize: config.server.max_message_size,
      topicAliasMaximum: config.server.topic_alias_maximum,
      assignedClientIdentifier: assignedId,
      serverKeepAlive,
      sessionExpiryInterval: sessionExpiry !== expiry ? expiry : undefined,
      wildcardSubscriptionAvailable: 1,
      subscriptionIdentifierAvailable: 1,
      sharedSubscriptionAvailable: 1,
    };
    for (const key of Object.keys(connackProps) as (keyof Properties)[]) {
      if (connackProps[key] === undefined) delete connackProps[key];
    }
    client.send({ type: 2, sessionPresent, reasonCode: 0, properties: connackProps });
  } else {
    // The 4 bytes the encoder would write (no properties before MQTT 5): no packet object, no encoding.
    client.sendBytes(sessionPresent && version === 4 ? CONNACK_OK_SESSION_PRESENT : CONNACK_OK, 2);
  }
  broker.metrics.connectionsTotal++;
  // Guarded: formatting the peer address costs more than the rest of a CONNECT at 1,000 connections/s.
  if (broker.logger.isEnabled("info")) {
    broker.logger.info("client connected", {
      client_id: client.clientId,
      addr: client.transport.remoteAddr,
      proto: version,
      clean: p.clean,
      keepalive: client.keepAlive,
      session_present: sessionPresent,
      username: client.username,
    });
  }
  if (sessionPresent) {
    resendInflight(broker, session, client);
    pump(broker, session);
  }
}

/** Handles DISCONNECT from the client (§3.14). */
export function handleDisconnect(broker: Broker, client: Client, p: DisconnectPacket): void {
  const session = client.session!;
  const newExpiry = p.properties?.sessionExpiryInterval;
  if (client.version === 5 && newExpiry !== undefined) {
    const maxExpiry = broker.config.server.max_session_expiry;
    // With a maximum of 0 every session had its interval capped to 0, whatever the CONNECT asked.
    if (session.expiryInterval === 0 && newExpiry > 0 && maxExpiry > 0) {
      // §3.14.2.2.2: a session that was to end cannot be extended at disconnect.
      client.disconnect(
        ReasonCode.ProtocolError,
        "session expiry interval cannot be set at disconnect when it was 0",
      );
      return;
    }
    session.expiryInterval = Math.min(newExpiry, maxExpiry);
    if (!session.persistent) broker.persist({ op: "session.delete", clientId: session.clientId });
  }
  // Only 0x00 Normal disconnection discards the will (MQTT-3.14.4-3, MQTT-3.1.2-8): 0x04 "Disconnect with Will
  // Message" and the error codes a client may send (0x80 and up) keep it.
  client.disconnectedCleanly = (p.reasonCode ?? 0) === ReasonCode.Success;
  client.closeReason = `client sent DISCONNECT (${reasonName(p.reasonCode ?? 0)})`;
  client.close(client.closeReason);
}
