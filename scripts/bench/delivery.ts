/**
 * What every benchmark payload carries, and how the subscribers account for it.
 *
 * The first {@link STAMP_BYTES} bytes of each payload are a stamp written by the publisher just before
 * the packet is handed to the socket: a run tag (so that a backlog left in a broker by an earlier run is
 * not mistaken for this run's messages), publisher index, a per-publisher sequence number and the send
 * time. Publisher and subscribers live in the same process, so `performance.now()` is one clock and the
 * difference is the end-to-end latency through the broker (kernel and broker queues included).
 *
 * Layout (little-endian): u16 run tag, u16 publisher index, u32 sequence number, f64 send time in ms.
 *
 * @module
 */

import type { LatencyHistogram } from "./histogram.ts";

/** Bytes of the stamp at the start of each payload; the smallest payload the generator sends. */
export const STAMP_BYTES = 16;

/** Publishers per run at most (the index is a u16 in the stamp). */
export const MAX_PUBLISHERS = 65536;

/** A random run tag for {@link writeStamp}. */
export function newRunTag(): number {
  return Math.floor(Math.random() * 65536);
}

/** Writes a stamp at byte offset `at` of `view`. */
export function writeStamp(
  view: DataView,
  at: number,
  runTag: number,
  publisher: number,
  seq: number,
  sentAtMs: number,
): void {
  view.setUint16(at, runTag, true);
  view.setUint16(at + 2, publisher, true);
  view.setUint32(at + 4, seq, true);
  view.setFloat64(at + 8, sentAtMs, true);
}

/** Per-publisher state of one sink: which sequence numbers arrived, and the highest so far. */
class Stream {
  seen = new Uint8Array(1024);
  maxSeq = -1;
  unique = 0;

  /** Records `seq`; returns 0 for a new in-order message, 1 for a duplicate, 2 for a late one. */
  add(seq: number): 0 | 1 | 2 {
    if (seq >= this.seen.length) {
      let size = this.seen.length * 2;
      while (size <= seq) size *= 2;
      const next = new Uint8Array(size);
      next.set(this.seen);
      this.seen = next;
    }
    if (this.seen[seq] === 1) return 1;
    this.seen[seq] = 1;
    this.unique++;
    if (seq < this.maxSeq) return 2;
    this.maxSeq = seq;
    return 0;
  }
}

/**
 * A receiver of messages whose losses are counted together: one subscriber, or a whole shared
 * subscription group (§4.8.2), where each message must reach exactly one member.
 */
export class Sink {
  readonly #streams: (Stream | undefined)[] = [];
  /** Deliveries whose stamp was already seen (QoS 0/1 may duplicate; QoS 2 must not, §4.3.3). */
  duplicates = 0;
  /** Deliveries that arrived after a higher sequence number of the same publisher (§4.6 ordering). */
  reordered = 0;
  /** Deliveries without this run's stamp (an earlier run's backlog, $SYS...): ignored. */
  foreign = 0;
  /** Deliveries that carried the RETAIN flag. */
  retainedFlag = 0;
  /** Distinct messages received. */
  unique = 0;
  /** performance.now() of the first and the last distinct message. */
  firstAt = 0;
  lastAt = 0;
  /**
   * Messages sent before this performance.now() are counted (loss, duplicates, order) but their latency is
   * not recorded: the warm-up, while JIT compilers and caches settle, says nothing about a broker that runs
   * for days. Applied to every broker alike.
   */
  latencyFrom = 0;

  /**
   * Latency of every distinct message goes to `latency`; stamps must carry `runTag`. When given,
   * `delivered[p]` counts distinct deliveries from publisher p (shared by all sinks of a run), which
   * is what a closed-loop publisher waits on.
   */
  constructor(
    readonly latency: LatencyHistogram,
    readonly runTag: number,
    readonly delivered?: Float64Array,
  ) {}

  /** Accounts one delivery whose payload is view[start, end), received at `nowMs`. */
  record(view: DataView, start: number, end: number, nowMs: number, retain: boolean): void {
    if (end - start < STAMP_BYTES || view.getUint16(start, true) !== this.runTag) {
      this.foreign++;
      return;
    }
    if (retain) this.retainedFlag++;
    const publisher = view.getUint16(start + 2, true);
    const seq = view.getUint32(start + 4, true);
    let stream = this.#streams[publisher];
    if (stream === undefined) {
      stream = new Stream();
      this.#streams[publisher] = stream;
    }
    const verdict = stream.add(seq);
    if (verdict === 1) {
      this.duplicates++;
      return;
    }
    if (verdict === 2) this.reordered++;
    if (this.unique === 0) this.firstAt = nowMs;
    this.lastAt = nowMs;
    this.unique++;
    if (this.delivered !== undefined) this.delivered[publisher]++;
    const sentAt = view.getFloat64(start + 8, true);
    if (sentAt >= this.latencyFrom) this.latency.record((nowMs - sentAt) * 1000);
  }

  /** Distinct messages received from `publisher`. */
  uniqueFrom(publisher: number): number {
    return this.#streams[publisher]?.unique ?? 0;
  }
}

/** Wakes waiting publishers when subscribers made progress (or after a timeout, whichever is first). */
export class Progress {
  #waiters: (() => void)[] = [];

  /** Resolves at the next {@link Progress.notify}, or after `ms` milliseconds. */
  wait(ms: number): Promise<void> {
    return new Promise((resolve) => {
      const timer = setTimeout(resolve, ms);
      this.#waiters.push(() => {
        clearTimeout(timer);
        resolve();
      });
    });
  }

  /** Wakes every waiter. */
  notify(): void {
    if (this.#waiters.length === 0) return;
    const waiters = this.#waiters;
    this.#waiters = [];
    for (const w of waiters) w();
  }
}
