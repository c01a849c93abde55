/**
 * Bytes in and out of one stream connection (TCP or TLS): nothing about MQTT here.
 *
 * Reads: the transport is itself the async iterator the connection handler loops over, each `next()` one
 * read (Deno's read op called directly for a Deno socket, see deno_io.ts; `conn.read()` otherwise) into a
 * small buffer of ours that grows for busy connections and shrinks back when they calm down (iterating
 * `conn.readable` holds ~78 KB per idle connection). It is written by hand rather than as an
 * async generator: a suspended generator per connection costs ~0.4 KiB more.
 *
 * Writes: every packet is copied into one growing output buffer, flushed once per microtask with a single
 * `conn.write` (a write per packet is 7-10x slower). One microtask flushes every transport written to in
 * the current tick. Partial writes are continued; while a write is in progress new packets go into a second
 * buffer, so nothing is copied twice.
 *
 * @module
 */

import { directReadRid, readDirect, writeDirect } from "./deno_io.ts";
import { OutputBuffer, worthKeeping } from "./output_buffer.ts";

/** What the broker needs from any transport (TCP, TLS, WebSocket). */
export interface Transport {
  /** "host:port" of the peer, for logs. */
  readonly remoteAddr: string;
  /** Bytes queued but not yet accepted by the socket. */
  readonly pendingBytes: number;
  /** True once closed (by either side). */
  readonly closed: boolean;
  /** The peer's TLS client certificate common name, when mutual TLS verified one. */
  readonly peerCommonName?: string;
  /**
   * Chunks as they arrive; each chunk is valid only until the next one is requested. The consumer must call
   * {@link close} when it stops iterating.
   */
  chunks(): AsyncIterableIterator<Uint8Array>;
  /** Queues bytes to send (copied). Flushed at the end of the current microtask. */
  write(bytes: Uint8Array): void;
  /**
   * Queues an encoded PUBLISH with its 2-byte packet id (at `idOffset`) replaced by `packetId`, so one
   * encoding serves every subscriber.
   */
  writeWithPacketId(bytes: Uint8Array, idOffset: number, packetId: number, dup: boolean): void;
  /** Queues the 4-byte form of a PUBACK, PUBREC, PUBREL or PUBCOMP: success, no properties. */
  writeAck(type: 4 | 5 | 6 | 7, packetId: number): void;
  /** Flushes what is queued (best effort, bounded by `timeoutMs`) and closes. */
  close(flushTimeoutMs?: number): void;
}

/** First read size: enough for a typical CONNECT; idle connections keep this little. */
const INITIAL_READ = 128;
const MAX_READ = 64 * 1024;
const EMPTY = new Uint8Array(0);
const END: IteratorReturnResult<undefined> = { done: true, value: undefined };
const END_PROMISE: Promise<IteratorReturnResult<undefined>> = Promise.resolve(END);

const readFailed = () => END;

/**
 * First-read buffers are cut from shared slabs of this many slots. A buffer of its own per connection is an
 * ArrayBuffer, a backing store and a malloc'd block: ~0.25 KiB more RSS per idle connection, measured. A
 * slab lives while any of its connections does, so after heavy churn it may be pinned by a single survivor
 * (at most 16 KiB per surviving connection).
 */
const SLAB_SLOTS = 128;
let slab = new ArrayBuffer(0);
let slabUsed = 0;

/** A connection's first-read buffer: `INITIAL_READ` bytes of the current slab, kept for the connection's life. */
function smallReadBuffer(): Uint8Array {
  if (slabUsed === slab.byteLength) {
    slab = new ArrayBuffer(INITIAL_READ * SLAB_SLOTS);
    slabUsed = 0;
  }
  const buf = new Uint8Array(slab, slabUsed, INITIAL_READ);
  slabUsed += INITIAL_READ;
  return buf;
}

/** Transports with output queued this tick, flushed together by one microtask. */
let flushQueue: StreamTransport[] = [];
let spareFlushQueue: StreamTransport[] = [];

/**
 * The part of a `Deno.Conn` that {@link StreamTransport} uses. A `Deno.Conn` is one; so is the adapter over a
 * `node:tls` socket that mutual TLS needs (`tls.ts`), since `Deno.listenTls` cannot verify client certificates.
 */
export interface ByteConn {
  readonly remoteAddr: Deno.Addr;
  /** Reads into `p`; resolves to the byte count, or null at the end of the stream. */
  read(p: Uint8Array): Promise<number | null>;
  /** Writes (part of) `p`; resolves to the byte count written, once `p` may be reused. */
  write(p: Uint8Array): Promise<number>;
  close(): void;
}

/** A {@link Transport} over a byte stream: a `Deno.Conn` (plain TCP or TLS) or another {@link ByteConn}. */
export class StreamTransport implements Transport, AsyncIterableIterator<Uint8Array> {
  peerCommonName?: string;
  #conn: ByteConn;
  /** The socket's resource id when its read and write ops are called directly (deno_io.ts), else -1. */
  #rid: number;
  // Both output buffers start empty and are allocated on first use: an idle connection holds none.
  #out = new OutputBuffer();
  #spare: Uint8Array = EMPTY;
  #writing = false;
  #scheduled = false;
  #inFlightBytes = 0;
  #closed = false;
  #closing = false;
  #closeTimer?: ReturnType<typeof setTimeout>;
  #readBuf: Uint8Array = EMPTY;
  /** This connection's slot of a shared slab (smallReadBuffer), read into whenever the connection is calm. */
  #smallBuf: Uint8Array = EMPTY;
  /** The last chunk read into `#smallBuf`, a view reused while reads keep its size. */
  #smallChunk: Uint8Array = EMPTY;
  /** The array being written and the end of its output (while `#writing`). */
  #writeData: Uint8Array = EMPTY;
  #writeEnd = 0;
  /** True when `#writeData` is a shared slab (output_buffer.ts), which is never kept as the spare. */
  #writeShared = false;
  /** Where the write in progress started in `#writeData`. */
  #writeOff = 0;
  // The promise callbacks are made once per connection, not once per read or write: at one message per
  // second per connection, each read's and write's garbage survives young-generation collections.
  #onRead = (n: number | null): IteratorResult<Uint8Array> => this.#afterRead(n);
  /** The one result object every read resolves to (`for await` reads it before asking for the next). */
  #result: IteratorYieldResult<Uint8Array> = { done: false, value: EMPTY };
  #onWrote?: (n: number) => void;
  #onWriteFailed?: () => void;

  constructor(conn: ByteConn) {
    this.#conn = conn;
    this.#rid = directReadRid(conn);
  }

  /** Formatted when a log line asks for it, not kept per connection. */
  get remoteAddr(): string {
    const addr = this.#conn.remoteAddr as Deno.NetAddr;
    if (addr.hostname === undefined) return String(addr);
    return addr.hostname.includes(":") ? `[${addr.hostname}]:${addr.port}` : `${addr.hostname}:${addr.port}`;
  }

  get pendingBytes(): number {
    return this.#out.length + this.#inFlightBytes;
  }

  get closed(): boolean {
    return this.#closed;
  }

  chunks(): AsyncIterableIterator<Uint8Array> {
    return this;
  }

  [Symbol.asyncIterator](): AsyncIterableIterator<Uint8Array> {
    return this;
  }

  /**
   * Reads the next chunk; it stays valid until the following call, and so does the result object, which
   * every read reuses. The end of the stream ends iteration.
   */
  next(): Promise<IteratorResult<Uint8Array>> {
    if (this.#closed) return END_PROMISE;
    // The consumer is done with the last chunk: an idle connection must not pin a big read buffer by it.
    this.#result.value = EMPTY;
    if (this.#readBuf === EMPTY) this.#readBuf = this.#smallBuf = smallReadBuffer();
    let read: Promise<number | null>;
    try {
      read = this.#rid >= 0 ? readDirect(this.#rid, this.#readBuf) : this.#conn.read(this.#readBuf);
    } catch {
      return END_PROMISE;
    }
    // Reset or closed under us: the end of the stream either way.
    return read.then(this.#onRead, readFailed);
  }

  #afterRead(n: number | null): IteratorResult<Uint8Array> {
    // null from conn.read(), 0 from the read op: the end of the stream (the buffer is never empty).
    if (n === null || n === 0) return END;
    const buf = this.#readBuf;
    let chunk: Uint8Array;
    if (buf === this.#smallBuf) {
      // A calm connection's reads are mostly of one size (the same PUBLISH, a PUBACK): one view serves them.
      chunk = this.#smallChunk;
      if (chunk.length !== n) chunk = this.#smallChunk = buf.subarray(0, n);
    } else {
      chunk = buf.subarray(0, n);
    }
    // A full read means a busy connection: read bigger next time. A mostly empty one after that means it
    // calmed down: give the big buffer back (the chunk keeps the old one alive until it is consumed).
    if (n === buf.length) {
      if (n < MAX_READ) this.#readBuf = new Uint8Array(n * 2);
    } else if (buf.length > INITIAL_READ && n * 16 <= buf.length) {
      this.#readBuf = this.#smallBuf;
    }
    const result = this.#result;
    result.value = chunk;
    return result;
  }

  /** The consumer stopped iterating: it closes the transport itself (gracefully, so a CONNACK or DISCONNECT
   * it queues on its way out still goes to the peer). */
  return(): Promise<IteratorResult<Uint8Array>> {
    return END_PROMISE;
  }

  #schedule(): void {
    if (!this.#scheduled && !this.#writing) {
      this.#scheduled = true;
      if (flushQueue.push(this) === 1) queueMicrotask(StreamTransport.#flushAll);
    }
  }

  static #flushAll(): void {
    // Two arrays take turns, so a flush allocates none (a flush may queue transports for the next one).
    const queue = flushQueue;
    flushQueue = spareFlushQueue;
    for (let i = 0; i < queue.length; i++) queue[i].#flush();
    queue.length = 0;
    spareFlushQueue = queue;
  }

  write(bytes: Uint8Array): void {
    if (this.#closed) return;
    this.#out.append(bytes);
    this.#schedule();
  }

  writeWithPacketId(bytes: Uint8Array, idOffset: number, packetId: number, dup: boolean): void {
    if (this.#closed) return;
    this.#out.appendWithPacketId(bytes, idOffset, packetId, dup);
    this.#schedule();
  }

  writeAck(type: 4 | 5 | 6 | 7, packetId: number): void {
    if (this.#closed) return;
    this.#out.appendAck(type, packetId);
    this.#schedule();
  }

  // The write loop is callbacks over fields, not an async function: a suspended async frame per write
  // was the largest allocation per message on connections that send one message at a time.
  #flush(): void {
    this.#scheduled = false;
    if (this.#writing || this.#closed) return;
    const len = this.#out.length;
    if (len === 0) {
      if (this.#closing) this.#destroy();
      return;
    }
    // Swap buffers: the socket writes from one while new packets fill the other.
    const out = this.#out;
    const start = out.start;
    this.#writing = true;
    this.#writeShared = out.shared;
    this.#writeData = out.swap(this.#spare);
    this.#writeEnd = start + len;
    this.#inFlightBytes = len;
    this.#writeSome(start);
  }

  #writeSome(off: number): void {
    const data = this.#writeData;
    const end = this.#writeEnd;
    let written: Promise<number>;
    try {
      const bytes = off === 0 && end === data.length ? data : data.subarray(off, end);
      written = this.#rid >= 0 ? writeDirect(this.#rid, bytes) : this.#conn.write(bytes);
    } catch {
      this.#writeFailed();
      return;
    }
    this.#writeOff = off;
    written.then(
      this.#onWrote ??= (n) => this.#wrote(this.#writeOff + n),
      this.#onWriteFailed ??= () => this.#writeFailed(),
    );
  }

  #wrote(off: number): void {
    const data = this.#writeData;
    const end = this.#writeEnd;
    this.#inFlightBytes = end - off;
    if (this.#closed) {
      this.#writing = false;
      return;
    }
    if (off < end) {
      this.#writeSome(off); // partial write: continue with the rest
      return;
    }
    this.#writeData = EMPTY;
    this.#spare = !this.#writeShared && worthKeeping(data, end) ? data : EMPTY;
    this.#writing = false;
    this.#flush(); // what was queued meanwhile, or the close that waited for it
  }

  #writeFailed(): void {
    this.#writing = false;
    this.#writeData = EMPTY;
    this.#inFlightBytes = 0;
    this.#destroy();
  }

  close(flushTimeoutMs = 1000): void {
    if (this.#closed || this.#closing) return;
    this.#closing = true;
    if (this.#out.length === 0 && !this.#writing) {
      this.#destroy();
      return;
    }
    this.#schedule();
    // A peer that stops reading must not keep the socket open forever.
    this.#closeTimer = setTimeout(() => this.#destroy(), flushTimeoutMs);
  }

  #destroy(): void {
    if (this.#closed) return;
    this.#closed = true;
    if (this.#closeTimer !== undefined) clearTimeout(this.#closeTimer);
    this.#out.clear();
    try {
      this.#conn.close();
    } catch {
      // already closed
    }
  }
}
