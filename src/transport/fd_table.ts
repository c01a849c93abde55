/**
 * Keeps the process's file descriptor table ahead of the connections.
 *
 * Linux keeps a process's open files in a table that doubles when a new descriptor does not fit (64, 128,
 * 256, ... entries), and in a process with more than one thread (a Deno process always has several) each
 * doubling waits for an RCU grace period before the call that needed it returns. Measured on the benchmark
 * machine: the `accept()` that returned descriptor 256, 512, 1,024, 2,048 and 4,096 took 11-28 ms each, and
 * every connection arriving meanwhile waited with it. (Mosquitto, single-threaded, never waits there.) The
 * table never shrinks, so it can be grown ahead of need by opening `/dev/null` until it doubles and closing
 * those files again:
 *
 * - {@link reserveDescriptors} at startup, before the listeners open, for up to
 *   {@link STARTUP_DESCRIPTORS} (a broker restarted under a reconnecting crowd has no time to grow later);
 * - {@link DescriptorHeadroom} after that, in the background, whenever the connections fill half of the
 *   table. Its opens are asynchronous, so the grace period is waited for on a thread of Deno's blocking
 *   pool, and the event loop keeps serving.
 *
 * Each descriptor opened for this leaves ~0.9 KB of allocator memory that later connections reuse, which is
 * why the startup part is capped and the rest follows the connections instead of `server.max_clients`.
 *
 * @module
 */

/** The most descriptors reserved at startup (~3.6 MB of memory that the first connections reuse). */
export const STARTUP_DESCRIPTORS = 4096;

/** Descriptors counted for what is not a client: listeners, the store, log and lock files. */
export const SPARE_DESCRIPTORS = 64;

/** Files opened between two reads of the table's size while growing in the background. */
const GROW_CHECK = 64;

let reservedUpTo = 0;

/** What a reservation did. */
export interface Reservation {
  /** Descriptors opened and closed again (0 when nothing was needed or possible). */
  readonly opened: number;
  /** Why it stopped before the table was big enough, when so (the open-files limit, a permission). */
  readonly stoppedBy?: string;
}

/** True when `/dev/null` may be opened without a permission prompt. */
function canOpenDevNull(): boolean {
  return Deno.permissions.querySync({ name: "read", path: "/dev/null" }).state === "granted";
}

/**
 * Makes room in the descriptor table for `clients` connections (at most {@link STARTUP_DESCRIPTORS}) by
 * opening `/dev/null` that many times and closing it again. Only on Linux, once per process for a given size,
 * and only with read permission for `/dev/null` already granted (never a permission prompt). Stops early,
 * without error, at the open-files limit.
 */
export function reserveDescriptors(clients: number, cap = STARTUP_DESCRIPTORS): Reservation {
  const wanted = Math.min(clients + SPARE_DESCRIPTORS, cap);
  if (wanted <= reservedUpTo || Deno.build.os !== "linux") return { opened: 0 };
  if (!canOpenDevNull()) return { opened: 0, stoppedBy: "no read permission for /dev/null" };
  reservedUpTo = wanted; // at the limit, trying again would only stop there again
  const files: Deno.FsFile[] = [];
  try {
    while (files.length < wanted) files.push(Deno.openSync("/dev/null"));
    return { opened: files.length };
  } catch (err) {
    return { opened: files.length, stoppedBy: err instanceof Error ? err.message : String(err) };
  } finally {
    for (const file of files) file.close();
  }
}

/** The soft open-files limit (`ulimit -n`) from `/proc/self/limits`, or null when unlimited or unknown. */
export function openFilesLimit(): number | null {
  try {
    const line = Deno.readTextFileSync("/proc/self/limits").split("\n").find((l) =>
      l.startsWith("Max open files")
    );
    const soft = line?.split(/\s{2,}/)[1];
    return soft === undefined || soft === "unlimited" ? null : Number(soft);
  } catch {
    return null;
  }
}

/** The descriptor table's current size from `/proc/self/status` (`FDSize`), or undefined off Linux. */
export function descriptorTableSize(): number | undefined {
  try {
    const match = /^FDSize:\s*(\d+)/m.exec(Deno.readTextFileSync("/proc/self/status"));
    return match ? Number(match[1]) : undefined;
  } catch {
    return undefined;
  }
}

/**
 * Doubles the descriptor table in the background whenever the connections fill half of it, up to what
 * `maxClients` connections need. {@link check} is one comparison per accepted connection.
 */
export class DescriptorHeadroom {
  readonly #needed: number;
  /** The open-files limit: a table bigger than it is no use, and growing near it takes what accept() needs. */
  readonly #limit: number;
  readonly #onGrown: (result: Reservation & { size: number; ms: number }) => void;
  #size: number;
  #stopped: boolean;
  #growing: Promise<void> | undefined;

  /**
   * @param maxClients the most connections there will be (`server.max_clients`).
   * @param onGrown told after each growth (for a log line).
   * @param limit the open-files limit, when the caller has read it already.
   */
  constructor(
    maxClients: number,
    onGrown: (result: Reservation & { size: number; ms: number }) => void,
    limit: number | null = openFilesLimit(),
  ) {
    this.#needed = maxClients + SPARE_DESCRIPTORS;
    this.#onGrown = onGrown;
    const size = Deno.build.os === "linux" && canOpenDevNull() ? descriptorTableSize() : undefined;
    this.#size = size ?? 0;
    this.#stopped = size === undefined;
    this.#limit = limit ?? Infinity;
  }

  /** The table's size as last read (0 where it is not tracked). */
  get size(): number {
    return this.#size;
  }

  /** The growth running in the background, if any (for tests and shutdown). */
  get growing(): Promise<void> | undefined {
    return this.#growing;
  }

  /** Starts a growth when `connections` fill half of the table and it is smaller than needed. */
  check(connections: number): void {
    if (this.#growing !== undefined || this.#stopped) return;
    if (connections + SPARE_DESCRIPTORS < this.#size / 2 || this.#size >= this.#needed) return;
    if (this.#size * 2 > this.#limit) return; // the kernel grows it on demand, once, if ever needed
    this.#growing = this.#grow().finally(() => this.#growing = undefined);
  }

  async #grow(): Promise<void> {
    const started = performance.now();
    const from = this.#size;
    const files: Deno.FsFile[] = [];
    let stoppedBy: string | undefined;
    try {
      // One file at a time: each open runs on a thread of Deno's blocking pool, and many at once would be
      // as many runnable threads sharing the broker's core with the event loop. Until the table is bigger
      // (the connections opened meanwhile count towards it too), checked every GROW_CHECK files.
      while (
        files.length < from &&
        (files.length % GROW_CHECK !== 0 || (descriptorTableSize() ?? Infinity) <= from)
      ) {
        try {
          files.push(await Deno.open("/dev/null"));
        } catch (err) {
          stoppedBy = err instanceof Error ? err.message : String(err);
          break;
        }
      }
    } finally {
      for (const file of files) file.close();
    }
    this.#size = descriptorTableSize() ?? from;
    if (stoppedBy !== undefined) this.#stopped = true; // the open-files limit: growing further cannot work
    this.#onGrown({
      opened: files.length,
      stoppedBy,
      size: this.#size,
      ms: Math.round(performance.now() - started),
    });
  }
}
