/**
 * The broker: owns the listeners, the sessions, the subscription tree and the retained messages, and
 * wires the protocol handlers (one module per concern in this folder) to the store and the metrics.
 *
 * Where a packet comes in: `Client.run` → {@link Broker.handlePacket}. Where it is routed: `routing.ts`.
 * Where it is stored: {@link Broker.persist} (group-committed by the store). Where it is counted:
 * `broker.metrics`.
 *
 * @module
 */

import { quote } from "../mqtt/errors.ts";
import { Acl } from "../auth/acl.ts";
import { PasswordFile } from "../auth/password_file.ts";
import type { Config } from "../config/types.ts";
import { type Logger, onceEvery } from "../log.ts";
import { BrokerMetrics, renderPrometheus } from "../metrics/metrics.ts";
import { startMetricsServer } from "../metrics/server.ts";
import { encode } from "../mqtt/encode.ts";
import { ownCopy } from "../mqtt/slab.ts";
import { isSysTopic, parseSharedFilter } from "../mqtt/topic.ts";
import { ReasonCode } from "../mqtt/reason_codes.ts";
import type { Packet } from "../mqtt/types.ts";
import type { SessionRecord, Store, StoredMessage, StoreOp } from "../store/store.ts";
import type { Transport } from "../transport/connection.ts";
import {
  DescriptorHeadroom,
  openFilesLimit,
  reserveDescriptors,
  SPARE_DESCRIPTORS,
} from "../transport/fd_table.ts";
import { listen, type ListenerSpec } from "../transport/listeners.ts";
import { Client } from "./client.ts";
import { handleConnect, handleDisconnect } from "./connect.ts";
import { sweep } from "./keepalive.ts";
import { handlePuback, handlePubcomp, handlePublish, handlePubrec, handlePubrel } from "./publish.ts";
import { restore } from "./restore.ts";
import { RetainedStore } from "./retained.ts";
import { deliverShared, route } from "./routing.ts";
import type { OutEntry, Session } from "./session.ts";
import { handleSubscribe, handleUnsubscribe } from "./subscribe.ts";
import { SysPublisher } from "./sys.ts";
import { TopicTree } from "./topic_tree.ts";
import { connectionLost, publishWill } from "./will.ts";

/** Options for {@link Broker}. */
export interface BrokerOptions {
  config: Config;
  store: Store;
  logger: Logger;
}

/** A bound listener, as reported after start. */
export interface BoundListener {
  type: "mqtt" | "mqtts" | "ws" | "wss";
  host: string;
  port: number;
}

/** Something that accepts connections and can be closed (TCP, TLS, WebSocket servers). */
export interface ListenerHandle {
  readonly info: BoundListener;
  close(): Promise<void> | void;
  /** TLS listeners: re-reads and checks the certificate files; returns what applies them when they changed. */
  prepareCertificates?: () => Promise<(() => void) | undefined>;
}

/** What waits in `Client.pendingAcks`: encoded bytes, a short ack as a number (see ackAfterCommit), or a callback. */
type Deferred = Uint8Array | number | (() => void);

/** The MQTT broker. */
export class Broker {
  config: Config;
  readonly store: Store;
  readonly logger: Logger;
  readonly metrics = new BrokerMetrics();
  /** Every session, online or not, by client id. */
  readonly sessions = new Map<string, Session>();
  /** Connected clients by client id. */
  readonly clients = new Map<string, Client>();
  /** Every open connection, including those that have not sent CONNECT yet. */
  readonly connections = new Set<Client>();
  readonly tree = new TopicTree<Session>();
  readonly retained: RetainedStore = new RetainedStore();
  passwords?: PasswordFile;
  acl?: Acl;
  /** Our Receive Maximum (§3.2.2.3.3): inbound QoS 1/2 publishes a client may have unacknowledged. */
  receiveMaximum: number;
  readonly listeners: ListenerHandle[] = [];
  /** The client whose PUBLISH is being routed right now (for flow control). */
  currentPublisher?: Client;
  /** Counts reloads of the auth settings: a CONNECT whose password check spans one is checked again. */
  authEpoch = 0;
  /** Evictions of connections without CONNECT are logged at most once a second. */
  #logEviction = onceEvery(1000);
  /** `server.max_queued_messages` and `server.max_queued_bytes` per session, Infinity for 0 (no limit). */
  readonly maxQueuedMessages: number;
  readonly maxQueuedBytes: number;
  /** Queue length of a live session above which its publishers pause; and where they resume. */
  queueHighWater: number;
  queueLowWater: number;
  #metricsServer?: { port: number; close(): Promise<void> };
  #timers: ReturnType<typeof setInterval>[] = [];
  #headroom: DescriptorHeadroom | undefined;
  #opsSinceFlush = 0;
  #stopping = false;
  #ready = false;
  #sys?: SysPublisher;

  constructor(options: BrokerOptions) {
    this.config = options.config;
    this.store = options.store;
    this.logger = options.logger;
    this.receiveMaximum = Math.min(65535, options.config.server.max_inflight);
    // 0 means no limit, as in Mosquitto's max_queued_messages / max_queued_bytes.
    const server = options.config.server;
    this.maxQueuedMessages = server.max_queued_messages === 0 ? Infinity : server.max_queued_messages;
    this.maxQueuedBytes = server.max_queued_bytes === 0 ? Infinity : server.max_queued_bytes;
    // Pausing early keeps queues (latency, memory) short; the subscriber is the bottleneck either way.
    this.queueHighWater = Math.max(1, Math.min(1000, Math.floor(this.maxQueuedMessages / 2)));
    this.queueLowWater = Math.floor(this.queueHighWater / 2);
  }

  /** The listeners that are bound (after {@link start}). */
  get addresses(): BoundListener[] {
    return this.listeners.map((l) => l.info);
  }

  /** Port of the metrics server, when enabled. */
  get metricsPort(): number | undefined {
    return this.#metricsServer?.port;
  }

  /** True when the store is open and the listeners are up. */
  get ready(): boolean {
    return this.#ready;
  }

  /** Restores state from the store and binds every listener. Rejects with a one-line message on failure. */
  async start(): Promise<void> {
    const config = this.config;
    await this.#loadAuth(config);
    await this.store.open();
    try {
      await restore(this);
      this.#reserveDescriptors();
      await this.#listen();
      if (config.metrics.enabled) {
        this.#metricsServer = startMetricsServer({
          host: config.metrics.host || config.server.host,
          port: config.metrics.port,
          render: () => renderPrometheus(this.metrics, this.gauges(), this.store.stats),
          ready: () => this.#ready,
          onError: (e) => this.logger.error("metrics server error", { error: e.message }),
        });
      }
    } catch (err) {
      await this.#closeListeners();
      await this.store.close();
      throw err;
    }
    this.#timers.push(setInterval(() => sweep(this, Date.now()), 1000));
    if (config.sys.interval > 0) {
      this.#sys = new SysPublisher(this);
      this.#sys.publish();
      this.#timers.push(setInterval(() => this.#sys!.publish(), config.sys.interval * 1000));
    }
    this.#ready = true;
  }

  async #loadAuth(config: Config): Promise<void> {
    this.passwords = config.auth.password_file
      ? await PasswordFile.load(config.auth.password_file)
      : undefined;
    this.acl = config.auth.acl_file ? await Acl.load(config.auth.acl_file) : undefined;
  }

  /**
   * Grows the descriptor table now for the first connections (up to 4,096 descriptors), and from
   * then on in the background as they fill it: a doubling on the accept path stalls every connection.
   */
  #reserveDescriptors(): void {
    const maxClients = this.config.server.max_clients;
    const limit = openFilesLimit();
    if (limit !== null && limit < maxClients + SPARE_DESCRIPTORS) {
      this.logger.warn("the open-files limit is below server.max_clients", {
        max_clients: maxClients,
        open_files_limit: limit,
      });
    }
    const started = performance.now();
    const { opened, stoppedBy } = reserveDescriptors(maxClients);
    if (opened > 0 || stoppedBy !== undefined) {
      this.logger.debug("file descriptor table reserved", {
        descriptors: opened,
        ms: Math.round(performance.now() - started),
        stopped_by: stoppedBy,
      });
    }
    this.#headroom = new DescriptorHeadroom(
      maxClients,
      (r) =>
        this.logger.debug("file descriptor table grown", {
          size: r.size,
          descriptors: r.opened,
          ms: r.ms,
          stopped_by: r.stoppedBy,
        }),
      limit,
    );
  }

  async #listen(): Promise<void> {
    const config = this.config;
    const specs = [
      { type: "mqtt" as const, host: config.server.host, port: config.server.port },
      ...config.listeners,
    ];
    for (const spec of specs) {
      this.listeners.push(await openListener(this, spec));
    }
  }

  #evictOldestWaiting(): void {
    for (const c of this.connections) {
      if (c.state !== "connecting") continue;
      this.metrics.connectionsEvicted++;
      if (this.#logEviction()) {
        this.logger.warn(
          "closing the oldest connection without CONNECT: server.max_clients wait for theirs",
          {
            addr: c.transport.remoteAddr,
            max_clients: this.config.server.max_clients,
            closed_so_far: this.metrics.connectionsEvicted,
          },
        );
      }
      c.close("too many connections waiting for their CONNECT");
      return;
    }
  }

  /** Accepts a new transport: one Client, one async handler. */
  accept(transport: Transport): void {
    if (this.#stopping) {
      transport.close();
      return;
    }
    // Connections that have not sent CONNECT yet are bounded too (max_clients counts sessions' connections):
    // each may buffer up to max_message_size for connect_timeout seconds, so a flood of them is memory. The
    // oldest one goes, not the newcomer: a real client sends its CONNECT at once, so a flood of silent
    // sockets cannot lock it out.
    if (this.connections.size - this.clients.size >= this.config.server.max_clients) {
      this.#evictOldestWaiting();
    }
    const client = new Client(this, transport);
    this.connections.add(client);
    this.#headroom?.check(this.connections.size);
    client.run(); // never rejects: Client.run catches everything
  }

  /** Dispatches one decoded packet of a client. */
  handlePacket(client: Client, packet: Packet): Promise<void> | void {
    if (client.state === "connecting") {
      if (packet.type !== 1) {
        client.disconnect(ReasonCode.ProtocolError, `first packet must be CONNECT, got type ${packet.type}`);
        return;
      }
      return handleConnect(this, client, packet);
    }
    switch (packet.type) {
      case 3:
        this.currentPublisher = client;
        handlePublish(this, client, packet);
        this.currentPublisher = undefined;
        return;
      case 4:
        return handlePuback(this, client, packet);
      case 5:
        return handlePubrec(this, client, packet);
      case 6:
        return handlePubrel(this, client, packet);
      case 7:
        return handlePubcomp(this, client, packet);
      case 8:
        return handleSubscribe(this, client, packet);
      case 10:
        return handleUnsubscribe(this, client, packet);
      case 12:
        client.sendBytes(PINGRESP, 13);
        return;
      case 14:
        return handleDisconnect(this, client, packet);
      case 1:
        client.disconnect(ReasonCode.ProtocolError, "second CONNECT on one connection"); // MQTT-3.1.0-2
        return;
      case 15:
        // No authentication method was negotiated, so AUTH is not expected (§4.12).
        client.disconnect(ReasonCode.ProtocolError, "AUTH without an authentication method");
        return;
      default:
        client.disconnect(ReasonCode.ProtocolError, `packet type ${packet.type} is not sent by clients`);
    }
  }

  /** Encodes a packet for a client's protocol version. */
  encodeFor(client: Client, packet: Packet): Uint8Array {
    return encode(packet, client.version);
  }

  /** Queues one store mutation (no-op for a non-durable store: the broker's memory is the state). */
  persist(op: StoreOp): void {
    if (!this.store.durable) return;
    this.store.apply(op);
    this.#opsSinceFlush++;
  }

  /**
   * Queues the store record of an outbound entry of a persistent session. Queued and sent entries go to
   * {@link Store.putOutbound}, which reads the entry when it writes rather than copying it now.
   */
  persistOutbound(session: Session, entry: OutEntry): void {
    if (!this.store.durable) return;
    if (entry.state === "pubrel") this.store.apply({ op: "outbound.put", record: session.record(entry) });
    else this.store.putOutbound(session.clientId, entry.state, entry.packetId, entry);
    this.#opsSinceFlush++;
  }

  /** Queues the deletion of an outbound record of a persistent session. */
  persistOutboundDelete(session: Session, seq: number): void {
    if (!this.store.durable) return;
    this.store.deleteOutbound(session.clientId, seq);
    this.#opsSinceFlush++;
  }

  /** True when mutations were applied that no flush has been requested for yet. */
  get pendingWrites(): boolean {
    return this.#opsSinceFlush > 0;
  }

  /**
   * Sends an acknowledgement once everything applied to the store so far is committed; acks of one client
   * keep their order (§4.6). Without pending writes it is sent at once. True when it waits.
   */
  sendAfterCommit(client: Client, bytes: Uint8Array, type: number): boolean {
    if (this.#deferred(client, bytes)) return true;
    client.sendBytes(bytes, type);
    return false;
  }

  /**
   * A success PUBACK / PUBREC / PUBREL / PUBCOMP in its 4-byte form, now or once the store committed. While
   * it waits it is one number in the client's list (type in the high bits), not an encoded packet: at
   * thousands of acks per commit, encoded ones lived long enough to be promoted and collected as old objects.
   */
  ackAfterCommit(client: Client, type: 4 | 5 | 6 | 7, packetId: number): void {
    if (!this.#deferred(client, type * 0x10000 + packetId)) client.sendAck(type, packetId);
  }

  /** Runs `fn` after the acks queued before it were sent. */
  runAfterCommit(client: Client, fn: () => void): void {
    if (!this.#deferred(client, fn)) fn();
  }

  /** Like {@link runAfterCommit}, but never at once: behind everything the client has waiting now. */
  runLater(client: Client, fn: () => void): void {
    (client.pendingAcks ??= []).push(fn);
    this.#waitForCommit(client);
  }

  /**
   * Queues `item` behind the client's waiting acks when a store write or an earlier ack is pending, and
   * returns true; returns false when nothing waits, and the caller acts at once.
   */
  #deferred(client: Client, item: Deferred): boolean {
    // No new mutation since the last flush request is not enough: that request (another client's, made in the
    // middle of routing this PUBLISH, say) may cover this client's writes and still be committing.
    if (this.#opsSinceFlush === 0 && client.pendingAcks === undefined && this.store.idle) return false;
    (client.pendingAcks ??= []).push(item);
    this.#waitForCommit(client);
    return true;
  }

  /**
   * Registers the acks queued so far to be released when the store's current batch commits. Batches commit
   * in order, but a promise for "nothing pending" resolves at once: waiters are therefore released strictly
   * in the order they were registered.
   */
  #waitForCommit(client: Client): void {
    this.#opsSinceFlush = 0;
    const promise = this.store.flush();
    const target = client.ackBase + client.pendingAcks!.length;
    const waiters = client.ackWaiters ??= [];
    const last = waiters[waiters.length - 1];
    if (last !== undefined && !last.done && client.ackPromise === promise) {
      last.target = target; // same batch: it covers these acks too
      return;
    }
    const waiter = { target, done: false };
    waiters.push(waiter);
    client.ackPromise = promise;
    promise.then(
      () => {
        waiter.done = true;
        this.#releaseAcks(client);
      },
      (err) => {
        client.ackWaiters = undefined;
        client.pendingAcks = undefined;
        this.logger.error("store commit failed, closing the connection so the client resends", {
          client_id: client.clientId,
          error: err instanceof Error ? err.message : String(err),
        });
        client.disconnect(ReasonCode.UnspecifiedError, "store commit failed");
      },
    );
  }

  #releaseAcks(client: Client): void {
    const waiters = client.ackWaiters;
    if (waiters === undefined) return; // the commit failed and the connection is closing
    while (waiters.length > 0 && waiters[0].done) {
      const { target } = waiters.shift()!;
      const n = target - client.ackBase;
      if (n <= 0) continue;
      const pending = client.pendingAcks!;
      const list = pending.splice(0, n);
      if (pending.length === 0) client.pendingAcks = undefined;
      client.ackBase += n;
      if (client.state === "closed") continue;
      for (const item of list) {
        if (typeof item === "number") client.sendAck((item >>> 16) as 4 | 5 | 6 | 7, item & 0xffff);
        else if (typeof item === "function") item();
        else client.sendBytes(item, item[0] >> 4);
      }
    }
    if (waiters.length === 0 && client.ackWaiters === waiters) client.ackWaiters = undefined;
  }

  /** Clears the retained message of a topic, in memory and in the store (an expired one, or an empty PUBLISH). */
  deleteRetained(topic: string): void {
    if (this.retained.delete(topic) && !isSysTopic(topic)) this.persist({ op: "retained.delete", topic });
  }

  /** Stores or clears the retained message of a topic (§3.3.1.3). */
  setRetained(msg: StoredMessage): void {
    if (msg.payload.length === 0) {
      this.deleteRetained(msg.topic);
      return;
    }
    const existed = this.retained.get(msg.topic) !== undefined;
    if (!existed && this.retained.size >= this.config.retained.max_messages) {
      this.metrics.dropped.queue_full++;
      this.logger.warn("retained.max_messages reached, not retaining", { topic: msg.topic });
      return;
    }
    const stored: StoredMessage = {
      topic: msg.topic,
      payload: ownCopy(msg.payload), // kept long: must not pin the codec's slab
      qos: msg.qos,
      retain: true,
      properties: msg.properties,
      expiresAt: msg.expiresAt,
      receivedAt: msg.receivedAt,
    };
    this.retained.set(stored);
    if (!isSysTopic(msg.topic)) this.persist({ op: "retained.put", message: stored });
  }

  /** The store record of a session. */
  sessionRecord(session: Session): SessionRecord {
    return {
      clientId: session.clientId,
      protocolVersion: session.protocolVersion,
      expiryInterval: session.expiryInterval,
      disconnectedAt: session.disconnectedAt,
      subscriptions: [...session.subscriptions.values()],
      username: session.username,
      will: session.will,
      willDueAt: session.willDueAt,
    };
  }

  /** A connection ended: park or end its session, publish its will, log it. */
  clientClosed(client: Client, wasConnected: boolean): void {
    this.connections.delete(client);
    if (this.clients.get(client.clientId) === client) this.clients.delete(client.clientId);
    const session = client.session;
    if (wasConnected && this.logger.isEnabled("info")) {
      this.logger.info("client disconnected", {
        client_id: client.clientId,
        addr: client.transport.remoteAddr,
        proto: client.version,
        reason: client.closeReason,
      });
    }
    if (session === undefined) return;
    if (session.client !== client) {
      // Closed while its CONNECT waited for the session's commit (connect.ts): refused after a SIGHUP, a
      // store failure, or the client left. The session was set up for it already (offline time reset, its
      // will in place): it goes offline from now as after any connection, without the will of a connection
      // that was never accepted (no CONNACK 0x00). A takeover found the session the same way and sets it
      // up anew after this.
      if (
        wasConnected || session.client !== undefined || session.disconnectedAt !== undefined ||
        this.sessions.get(client.clientId) !== session
      ) return;
      client.suppressWill = true;
    }
    const now = Date.now();
    session.client = undefined;
    session.disconnectedAt = now;
    session.wakeDrainWaiters();
    if (client.disconnectedCleanly || client.suppressWill) session.will = undefined;
    else connectionLost(this, session, now);
    if (session.persistent && this.store.durable && session.inflight.size > 0) {
      // QoS 1 messages sent from the queue kept their "queued" record (routing.ts). The in-flight record of
      // the newest one in flight is written now: after a crash while the client is away, restore.ts takes every
      // queued record older than it for sent, so all of them come back with DUP (MQTT-3.3.1-1). One write per
      // session, however large its window.
      let newest: OutEntry | undefined;
      for (const entry of session.inflight.values()) {
        if (entry.state === "publish" && entry.qos === 1) newest = entry; // values() is in seq order
      }
      if (newest !== undefined) this.persistOutbound(session, newest);
    }
    this.#redistributeShared(session);
    if (!session.persistent) {
      this.endSession(session, true);
    } else {
      this.persist({ op: "session.put", session: this.sessionRecord(session) });
    }
  }

  /**
   * Messages queued to a shared-subscription member that went away, and QoS 1 ones sent to it and not
   * acknowledged, go to another member of the group (§4.8.2). A QoS 2 one sent to it stays: its delivery is
   * completed with that member when it reconnects (MQTT-4.8.2-4), and goes to nobody else if its session ends
   * first (MQTT-4.8.2-5, {@link endSession}).
   */
  #redistributeShared(session: Session): void {
    const moved: OutEntry[] = [];
    for (const entry of session.inflight.values()) {
      if (entry.share && entry.state === "publish" && entry.qos === 1) {
        session.deleteInflight(entry.packetId);
        moved.push(entry);
      }
    }
    if (session.queuedCount > 0) {
      const keep = [];
      for (const entry of session.drainQueue()) {
        if (entry.share) moved.push(entry);
        else keep.push(entry);
      }
      for (const entry of keep) session.enqueue(entry);
    }
    for (const entry of moved) {
      if (session.persistent) {
        this.persistOutboundDelete(session, entry.seq);
      }
      if (!deliverShared(this, entry.share!, entry.msg, session) && session.persistent) {
        // Nobody else can take it: keep it for this member.
        entry.state = "queued";
        session.enqueue(entry);
        this.persistOutbound(session, entry);
      }
    }
  }

  /** Ends a session: drops its subscriptions and messages, publishes a pending delayed will. */
  endSession(session: Session, connectionEnded: boolean): void {
    if (session.willDueAt !== undefined) publishWill(this, session);
    for (const [filter] of session.subscriptions) {
      this.tree.remove(session, filter, parseSharedFilter(filter) ?? undefined);
    }
    // Shared-subscription messages still owed go to the rest of the group: the queued ones and QoS 1 ones in
    // flight. A QoS 2 one sent and not answered with PUBREC may not go to another member (MQTT-4.8.2-5).
    for (const entry of session.inflight.values()) {
      if (entry.share === undefined || entry.state !== "publish") continue;
      if (entry.qos === 1) deliverShared(this, entry.share, entry.msg, session);
      else this.metrics.dropped.session_ended++;
    }
    for (const entry of session.drainQueue()) {
      if (entry.share) deliverShared(this, entry.share, entry.msg, session);
    }
    session.clearSubscriptionsAndInflight();
    if (this.sessions.get(session.clientId) === session) this.sessions.delete(session.clientId);
    if (session.persistent || !connectionEnded) {
      this.persist({ op: "session.delete", clientId: session.clientId });
    }
  }

  /** Publishes a message originating in the broker ($SYS). */
  publishInternal(topic: string, payload: Uint8Array, retain: boolean): void {
    const msg = { topic, payload, qos: 0 as const, retain, receivedAt: Date.now() };
    if (retain) this.setRetained(msg);
    route(this, msg);
  }

  /** Current gauge values for metrics and $SYS. */
  gauges(): {
    clientsConnected(): number;
    subscriptions(): number;
    retainedMessages(): number;
    inflightMessages(): number;
    queuedMessages(): number;
    sessions(): number;
  } {
    return {
      clientsConnected: () => this.clients.size,
      subscriptions: () => this.tree.size,
      retainedMessages: () => this.retained.size,
      inflightMessages: () => {
        let n = 0;
        for (const s of this.sessions.values()) n += s.inflight.size;
        return n;
      },
      queuedMessages: () => {
        let n = 0;
        for (const s of this.sessions.values()) n += s.queuedCount;
        return n;
      },
      sessions: () => this.sessions.size,
    };
  }

  /**
   * Applies what can change without dropping clients (log level, auth and ACL files) and returns a
   * description of each change. A broken file rejects the reload and keeps the old state.
   */
  async reload(next: Config): Promise<string[]> {
    const changes: string[] = [];
    const old = this.config;
    // Everything is read and checked first, then applied: a broken file or certificate changes nothing.
    const passwords = next.auth.password_file ? await PasswordFile.load(next.auth.password_file) : undefined;
    const acl = next.auth.acl_file ? await Acl.load(next.auth.acl_file) : undefined;
    const certificates: { listener: ListenerHandle; apply: () => void }[] = [];
    for (const l of this.listeners) {
      const apply = await l.prepareCertificates?.();
      if (apply !== undefined) certificates.push({ listener: l, apply });
    }
    if (next.log.level !== old.log.level) {
      this.logger.level = next.log.level;
      changes.push(`log.level ${old.log.level} -> ${next.log.level}`);
    }
    if (next.auth.password_file || old.auth.password_file) changes.push(`auth.password_file reloaded`);
    if (next.auth.acl_file || old.auth.acl_file) changes.push(`auth.acl_file reloaded`);
    if (next.auth.allow_anonymous !== old.auth.allow_anonymous) {
      changes.push(`auth.allow_anonymous ${old.auth.allow_anonymous} -> ${next.auth.allow_anonymous}`);
    }
    const oldPasswords = this.passwords;
    this.passwords = passwords;
    this.acl = acl;
    this.authEpoch++;
    // Only keys that are safe to change live are taken; the rest need a restart.
    this.config = {
      ...old,
      log: { ...old.log, level: next.log.level },
      auth: next.auth,
    };
    for (const { listener: l, apply } of certificates) {
      apply();
      changes.push(`TLS certificates of ${l.info.type} ${l.info.host}:${l.info.port} reloaded`);
    }
    // What the file changed that only a restart applies is said, so an operator is not left guessing.
    for (const section of ["server", "qos", "retained", "storage", "metrics", "sys"] as const) {
      const was = old[section] as unknown as Record<string, unknown>;
      const now = next[section] as unknown as Record<string, unknown>;
      for (const key of Object.keys(now)) {
        if (JSON.stringify(was[key]) !== JSON.stringify(now[key])) {
          changes.push(
            `${section}.${key} ${JSON.stringify(was[key])} -> ${JSON.stringify(now[key])} needs a restart`,
          );
        }
      }
    }
    if (JSON.stringify(old.listeners) !== JSON.stringify(next.listeners)) {
      changes.push("listeners changed: needs a restart");
    }
    // Connected clients are held to the new credentials, as Mosquitto does: a client whose user is gone or
    // has a new password line, or an anonymous one when anonymous clients are no longer allowed, is
    // disconnected (MQTT 5: 0x87). Passwords are not kept, so a changed line cannot be checked again: the
    // client logs in anew. Clients authenticated by their certificate (use_cn_as_username) stay.
    for (const client of [...this.connections]) {
      if (client.state !== "connected") continue;
      const why = this.credentialProblem(client, oldPasswords);
      if (why !== undefined) client.disconnect(ReasonCode.NotAuthorized, why);
    }
    return changes;
  }

  /**
   * Why a client authenticated against `loginPasswords` no longer passes the current auth settings, or
   * undefined. Clients authenticated by their certificate (use_cn_as_username) always pass.
   */
  credentialProblem(client: Client, loginPasswords: PasswordFile | undefined): string | undefined {
    if (client.transport.peerCommonName !== undefined) return undefined;
    const user = client.username;
    const anonymousOk = this.config.auth.allow_anonymous;
    if (user === undefined) return anonymousOk ? undefined : "anonymous clients are no longer allowed";
    const passwords = this.passwords;
    if (passwords === undefined) {
      return anonymousOk ? undefined : "clients without a password file entry are no longer allowed";
    }
    return loginPasswords !== undefined && passwords.sameEntry(user, loginPasswords)
      ? undefined
      : `the password file has changed for user ${quote(user)}`;
  }

  /**
   * Graceful shutdown: stop accepting, send MQTT 5 clients DISCONNECT 0x8B, close every connection without
   * publishing wills, flush and close the store.
   */
  async stop(): Promise<void> {
    if (this.#stopping) return;
    this.#stopping = true;
    this.#ready = false;
    for (const t of this.#timers) clearInterval(t);
    this.#timers = [];
    for (const client of [...this.connections]) {
      client.suppressWill = true; // the client did nothing wrong; §3.1.2.5 wills are for lost connections
      client.disconnect(ReasonCode.ServerShuttingDown, "server shutting down");
      if (client.state !== "closed") client.close("server shutting down");
    }
    // After the clients, so each gets its DISCONNECT before any listener goes away; accept() refuses
    // newcomers meanwhile.
    await this.#closeListeners();
    await this.#headroom?.growing; // its files are closed when it ends
    try {
      await this.store.flush();
    } finally {
      await this.store.close();
      await this.#metricsServer?.close();
    }
  }

  async #closeListeners(): Promise<void> {
    for (const l of this.listeners.splice(0)) {
      try {
        await l.close();
      } catch {
        // already closed
      }
    }
  }
}

const PINGRESP = new Uint8Array([0xd0, 0x00]);

/** Opens one listener from its spec (TCP, TLS, WebSocket: `src/transport/listeners.ts`). */
function openListener(broker: Broker, spec: ListenerSpec): Promise<ListenerHandle> {
  return listen(spec, (t) => broker.accept(t), broker.logger, broker.config.server.max_clients);
}
