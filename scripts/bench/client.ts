/**
 * The load generator's MQTT client: one raw TCP socket, the project codec for building packets and for
 * decoding control packets, and a zero-allocation path for incoming PUBLISH.
 *
 * Why not a general client library: a benchmark client must not be the bottleneck. So writes are
 * coalesced (many packets, one `write`), reads land in one reusable buffer per connection, and a
 * PUBLISH is handed to the caller as offsets into that buffer instead of a decoded object. Every other
 * packet (CONNACK, SUBACK, PUBACK...) is decoded by the codec's `decodePacket`, so the framing and the
 * codec are cross-checked on every run; `decoder: "codec"` feeds the whole stream to the codec's
 * streaming {@link PacketDecoder} instead, PUBLISH included.
 *
 * @module
 */

import { encode } from "../../src/mqtt/encode.ts";
import { decodePacket, PacketDecoder } from "../../src/mqtt/decode.ts";
import {
  type ConnackPacket,
  type Packet,
  PacketType,
  type ProtocolVersion,
  type PublishPacket,
  type QoS,
  type SubackPacket,
} from "../../src/mqtt/types.ts";

/** How incoming PUBLISH packets are parsed: in place (fast) or through the codec (cross-check). */
export type DecodeMode = "fast" | "codec";

/**
 * Receives one PUBLISH. `view` and the offsets alias the connection's read buffer and are valid only
 * during the call: copy what must outlive it.
 */
export type PublishHandler = (
  view: DataView,
  payloadStart: number,
  payloadEnd: number,
  qos: QoS,
  packetId: number,
  retain: boolean,
) => void;

/** Callbacks of a running client; all optional, all synchronous (they run on the read loop). */
export interface ClientHandlers {
  /** An incoming PUBLISH. */
  onPublish?: PublishHandler;
  /** Any other packet that no pending {@link BenchClient.waitFor} claimed. */
  onPacket?: (packet: Packet) => void;
  /** After each read chunk has been processed: the place to flush acknowledgements as one write. */
  onChunkEnd?: () => void;
  /** The socket closed; `error` is set when it was not our own {@link BenchClient.close}. */
  onClose?: (error?: Error) => void;
}

/** Options of {@link BenchClient.connect}. */
export interface ConnectOptions {
  host: string;
  port: number;
  clientId: string;
  /** 4 = MQTT 3.1.1, 5 = MQTT 5.0. */
  version: ProtocolVersion;
  /** Seconds; the suite uses 300 so that no PINGREQ is needed during a run. */
  keepAlive?: number;
  /** Initial read buffer bytes; it grows when a single packet does not fit. */
  readBufferSize?: number;
  decoder?: DecodeMode;
  /** Milliseconds to wait for CONNACK. */
  timeoutMs?: number;
  /** Keep the session: Clean Session 0 (3.1.1), Clean Start 0 with Session Expiry "never" (5.0). */
  persistent?: boolean;
}

/** Hosts the generator may target: loopback only, as the machine rules require. */
export function isLoopback(host: string): boolean {
  return host === "localhost" || host === "::1" || host === "[::1]" || /^127(\.\d{1,3}){3}$/.test(host);
}

/** Waits for `p` or `ms` milliseconds, whichever comes first, leaving no timer behind. */
export async function settleWithin(p: Promise<unknown>, ms: number): Promise<void> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  try {
    await Promise.race([p.catch(() => {}), new Promise<void>((r) => timer = setTimeout(r, ms))]);
  } finally {
    clearTimeout(timer);
  }
}

/** Writes all of `bytes`, looping over short writes (Deno's `write` may accept fewer bytes). */
async function writeAll(conn: Deno.Conn, bytes: Uint8Array): Promise<void> {
  let off = 0;
  while (off < bytes.length) off += await conn.write(off === 0 ? bytes : bytes.subarray(off));
}

/**
 * Serialises and coalesces writes on one socket: whatever was queued while a write was in progress
 * leaves in the next single `write`, so N acknowledgements cost one syscall, not N.
 */
export class Writer {
  readonly #conn: Deno.Conn;
  #pending: Uint8Array[] = [];
  #pendingBytes = 0;
  #flushing: Promise<void> | null = null;
  #error: Error | null = null;

  constructor(conn: Deno.Conn) {
    this.#conn = conn;
  }

  /** Bytes queued and not yet handed to the kernel. */
  get pendingBytes(): number {
    return this.#pendingBytes;
  }

  /**
   * Queues `bytes`; the promise settles once they are written. The caller must not modify `bytes`
   * before then (so a reused batch buffer is awaited before it is refilled).
   */
  write(bytes: Uint8Array): Promise<void> {
    if (this.#error) return Promise.reject(this.#error);
    this.#pending.push(bytes);
    this.#pendingBytes += bytes.length;
    if (this.#flushing === null) this.#flushing = this.#flush();
    return this.#flushing;
  }

  async #flush(): Promise<void> {
    try {
      while (this.#pending.length > 0) {
        const chunks = this.#pending;
        const size = this.#pendingBytes;
        this.#pending = [];
        this.#pendingBytes = 0;
        if (chunks.length === 1) {
          await writeAll(this.#conn, chunks[0]);
        } else {
          const joined = new Uint8Array(size);
          let off = 0;
          for (const c of chunks) {
            joined.set(c, off);
            off += c.length;
          }
          await writeAll(this.#conn, joined);
        }
      }
    } catch (e) {
      this.#error = e instanceof Error ? e : new Error(String(e));
      this.#pending = [];
      this.#pendingBytes = 0;
      throw this.#error;
    } finally {
      this.#flushing = null;
    }
  }
}

interface Waiter {
  match: (p: Packet) => boolean;
  resolve: (p: Packet) => void;
  reject: (e: Error) => void;
  timer: ReturnType<typeof setTimeout>;
}

/** One MQTT connection of the load generator. */
export class BenchClient {
  /** Protocol level in use. */
  readonly version: ProtocolVersion;
  /** Client identifier sent in CONNECT. */
  readonly clientId: string;
  /** Callbacks; may be replaced at any time (before SUBSCRIBE, for a subscriber). */
  handlers: ClientHandlers = {};
  /** performance.now() when the current read chunk arrived: the receive time of its messages. */
  readAt = 0;
  /** The CONNACK of this connection (set once {@link BenchClient.connect} resolves). */
  connack: ConnackPacket | null = null;

  readonly #conn: Deno.TcpConn;
  readonly #writer: Writer;
  readonly #decoder: PacketDecoder;
  readonly #mode: DecodeMode;
  #buf: Uint8Array;
  #view: DataView;
  #waiters: Waiter[] = [];
  #closing = false;
  #closed = false;
  #nextPacketId = 1;
  /** Size of the incomplete frame at the front of the buffer, once its header is known. */
  #need = 0;
  #loop: Promise<void>;

  private constructor(conn: Deno.TcpConn, opts: ConnectOptions) {
    this.#conn = conn;
    this.version = opts.version;
    this.clientId = opts.clientId;
    this.#writer = new Writer(conn);
    this.#decoder = new PacketDecoder({ protocolVersion: opts.version });
    this.#mode = opts.decoder ?? "fast";
    this.#buf = new Uint8Array(opts.readBufferSize ?? 16 * 1024);
    this.#view = new DataView(this.#buf.buffer);
    this.#loop = this.#readLoop();
  }

  /**
   * Opens a socket with Nagle disabled (small acknowledgements must not wait for the 40 ms delayed-ACK
   * timer), sends CONNECT (clean session unless `persistent`) and waits for a successful CONNACK.
   */
  static async connect(opts: ConnectOptions): Promise<BenchClient> {
    if (!isLoopback(opts.host)) {
      throw new Error(`the load generator only targets loopback addresses, got host "${opts.host}"`);
    }
    const conn = await Deno.connect({ hostname: opts.host.replace(/^\[|\]$/g, ""), port: opts.port });
    conn.setNoDelay(true);
    const client = new BenchClient(conn, opts);
    try {
      const connackP = client.waitFor((p) => p.type === PacketType.CONNACK, opts.timeoutMs ?? 10_000);
      // If the write below throws, this promise rejects later with nobody awaiting it: not a crash.
      connackP.catch(() => {});
      await client.write(encode({
        type: PacketType.CONNECT,
        protocolName: opts.version === 3 ? "MQIsdp" : "MQTT",
        protocolVersion: opts.version,
        clean: !opts.persistent,
        keepAlive: opts.keepAlive ?? 300,
        clientId: opts.clientId,
        properties: opts.persistent && opts.version === 5 ? { sessionExpiryInterval: 0xffffffff } : undefined,
      }, opts.version));
      const connack = await connackP as ConnackPacket;
      if (connack.reasonCode !== 0) {
        throw new Error(
          `broker refused CONNECT of "${opts.clientId}" with reason code ${connack.reasonCode}`,
        );
      }
      client.connack = connack;
      return client;
    } catch (e) {
      client.abort();
      throw e;
    }
  }

  /** True once the socket is closed, by us or by the broker. */
  get closed(): boolean {
    return this.#closed;
  }

  /** Bytes queued for writing and not yet accepted by the kernel. */
  get pendingBytes(): number {
    return this.#writer.pendingBytes;
  }

  /** Queues bytes (one or many encoded packets); see {@link Writer.write}. */
  write(bytes: Uint8Array): Promise<void> {
    return this.#writer.write(bytes);
  }

  /** Resolves with the next packet (other than PUBLISH) for which `match` is true. */
  waitFor(match: (p: Packet) => boolean, timeoutMs: number): Promise<Packet> {
    return new Promise((resolve, reject) => {
      if (this.#closed) {
        reject(new Error(`connection "${this.clientId}" is closed`));
        return;
      }
      const waiter: Waiter = {
        match,
        resolve,
        reject,
        timer: setTimeout(() => {
          this.#waiters = this.#waiters.filter((w) => w !== waiter);
          reject(new Error(`"${this.clientId}" waited ${timeoutMs} ms for a packet from the broker`));
        }, timeoutMs),
      };
      this.#waiters.push(waiter);
    });
  }

  /** Subscribes to one filter and returns the granted QoS (or failure code) from SUBACK. */
  async subscribe(topicFilter: string, qos: QoS, timeoutMs = 10_000): Promise<number> {
    const packetId = this.#nextPacketId++;
    const subackP = this.waitFor(
      (p) => p.type === PacketType.SUBACK && p.packetId === packetId,
      timeoutMs,
    );
    subackP.catch(() => {}); // awaited below unless the write throws first
    await this.write(encode({
      type: PacketType.SUBSCRIBE,
      packetId,
      subscriptions: [{ topicFilter, qos, noLocal: false, retainAsPublished: false, retainHandling: 0 }],
    }, this.version));
    const suback = await subackP as SubackPacket;
    return suback.reasonCodes[0];
  }

  /**
   * Sends DISCONNECT (best effort) and closes the socket; waits for the read loop to end. Never waits
   * more than `timeoutMs` for each step: a stalled broker must not stall the generator's shutdown.
   */
  async close(timeoutMs = 2000): Promise<void> {
    if (this.#closed) return;
    await settleWithin(this.disconnect(), timeoutMs);
    // The server closes the connection on DISCONNECT (§3.14.4). Letting it close first leaves the
    // TIME_WAIT state on the server's side, not on this machine's ephemeral ports: after a few runs of
    // 10,000 connections those would be exhausted and connect() would crawl.
    await settleWithin(this.finished, timeoutMs);
    this.abort();
    await settleWithin(this.finished, timeoutMs);
  }

  /**
   * Queues DISCONNECT (§3.14) and marks the connection as closing, so that the broker closing it
   * next is not counted as an error; resolves once written (or failed: best effort).
   */
  disconnect(): Promise<void> {
    if (this.#closed) return Promise.resolve();
    this.#closing = true;
    return this.write(encode({ type: PacketType.DISCONNECT }, this.version)).catch(() => {});
  }

  /** Settles when the read loop has ended (the socket is closed). */
  get finished(): Promise<void> {
    return this.#loop;
  }

  /** Closes the socket at once, without DISCONNECT. */
  abort(): void {
    this.#closing = true;
    if (!this.#closed) {
      this.#closed = true;
      try {
        this.#conn.close();
      } catch {
        // Already closed by the runtime after a read error.
      }
    }
  }

  async #readLoop(): Promise<void> {
    // buf[0, end) holds unparsed bytes; after each chunk the partial frame left over (if any) is moved
    // to the front, so the buffer is reused for the life of the connection.
    let end = 0;
    let error: Error | undefined;
    try {
      while (true) {
        const n = await this.#conn.read(this.#buf.subarray(end));
        if (n === null) break;
        this.readAt = performance.now();
        if (this.#mode === "codec") {
          // The decoder copies what it keeps once drained, so the read buffer can be pushed as is.
          this.#decoder.push(this.#buf.subarray(0, n));
          for (let p = this.#decoder.next(); p !== null; p = this.#decoder.next()) this.#dispatch(p);
          this.handlers.onChunkEnd?.();
          continue;
        }
        end += n;
        const used = this.#parseFrames(end);
        if (used === end) {
          end = 0;
        } else if (used > 0) {
          this.#buf.copyWithin(0, used, end);
          end -= used;
        }
        if (this.#need > this.#buf.length || end === this.#buf.length) {
          this.#grow(Math.max(this.#need, this.#buf.length * 2), end);
        }
        this.handlers.onChunkEnd?.();
      }
    } catch (e) {
      if (!this.#closing) error = e instanceof Error ? e : new Error(String(e));
    }
    const wasClosing = this.#closing;
    this.abort();
    const reason = error ?? new Error(`connection "${this.clientId}" closed by the broker`);
    for (const w of this.#waiters) {
      clearTimeout(w.timer);
      w.reject(reason);
    }
    this.#waiters = [];
    this.handlers.onClose?.(wasClosing ? undefined : reason);
  }

  /** Handles every complete frame in buf[0, end); returns where the first incomplete one begins. */
  #parseFrames(end: number): number {
    const buf = this.#buf;
    let start = 0;
    this.#need = 0;
    while (end - start >= 2) {
      // Remaining Length: variable byte integer of at most 4 bytes (§2.1.4).
      let rem = 0;
      let mul = 1;
      let i = start + 1;
      let done = false;
      for (; i < end && i < start + 5; i++) {
        const b = buf[i];
        rem += (b & 0x7f) * mul;
        mul *= 128;
        if ((b & 0x80) === 0) {
          done = true;
          i++;
          break;
        }
      }
      if (!done) {
        if (i === start + 5) {
          throw new Error(`malformed Remaining Length from the broker at "${this.clientId}"`);
        }
        return start;
      }
      const frameEnd = i + rem;
      if (frameEnd > end) {
        this.#need = frameEnd - start;
        return start;
      }
      const first = buf[start];
      if (first >> 4 === PacketType.PUBLISH) {
        this.#fastPublish(first, i, frameEnd);
      } else {
        this.#dispatch(decodePacket(buf.subarray(start, frameEnd), this.version));
      }
      start = frameEnd;
    }
    return start;
  }

  /** Parses a PUBLISH in place (§3.3.2): topic, packet id when QoS > 0, MQTT 5 properties, payload. */
  #fastPublish(first: number, varStart: number, frameEnd: number): void {
    const buf = this.#buf;
    const qos = ((first >> 1) & 0x03) as QoS;
    let p = varStart + 2 + ((buf[varStart] << 8) | buf[varStart + 1]);
    let packetId = 0;
    if (qos > 0) {
      packetId = (buf[p] << 8) | buf[p + 1];
      p += 2;
    }
    if (this.version === 5) {
      let len = 0;
      let mul = 1;
      for (let k = 0; k < 4; k++) {
        const b = buf[p++];
        len += (b & 0x7f) * mul;
        mul *= 128;
        if ((b & 0x80) === 0) break;
      }
      p += len;
    }
    if (p > frameEnd) throw new Error(`PUBLISH from the broker overruns its frame at "${this.clientId}"`);
    this.handlers.onPublish?.(this.#view, p, frameEnd, qos, packetId, (first & 0x01) === 1);
  }

  #dispatch(p: Packet): void {
    if (p.type === PacketType.PUBLISH) {
      const pub = p as PublishPacket;
      const view = new DataView(pub.payload.buffer, pub.payload.byteOffset, pub.payload.byteLength);
      this.handlers.onPublish?.(view, 0, pub.payload.byteLength, pub.qos, pub.packetId ?? 0, pub.retain);
      return;
    }
    for (let k = 0; k < this.#waiters.length; k++) {
      const w = this.#waiters[k];
      if (w.match(p)) {
        this.#waiters.splice(k, 1);
        clearTimeout(w.timer);
        w.resolve(p);
        return;
      }
    }
    this.handlers.onPacket?.(p);
  }

  /** Replaces the read buffer by a larger one, keeping its first `keep` bytes. */
  #grow(size: number, keep: number): void {
    const next = new Uint8Array(size);
    next.set(this.#buf.subarray(0, keep));
    this.#buf = next;
    this.#view = new DataView(next.buffer);
  }
}
