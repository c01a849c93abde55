/**
 * Grows the process's file descriptor table before the first client arrives.
 *
 * Linux keeps a process's open files in a table that doubles when a new descriptor does not fit (64, 128,
 * 256, ... entries), and in a process with more than one thread (a Deno process always has several) each
 * doubling waits for an RCU grace period before the call that needed it returns. Measured on the benchmark
 * machine: the `accept()` that returned descriptor 256, 512, 1,024, 2,048 and 4,096 took 11-28 ms each, and
 * every connection arriving meanwhile waited with it, which set the p99 of CONNECT -> CONNACK at 1,000
 * connections/s. The table never shrinks, so opening enough descriptors once at startup and closing them
 * again moves those waits before the listeners open. (Mosquitto, single-threaded, never waits there.)
 *
 * @module
 */

/** The most descriptors reserved: beyond it a rare doubling costs less than opening them all at startup. */
export const MAX_RESERVED_DESCRIPTORS = 65_536;

/** Descriptors a reservation adds for what is not a client: listeners, the store, log and lock files. */
const SPARE_DESCRIPTORS = 64;

let reservedUpTo = 0;

/** What {@link reserveDescriptors} did. */
export interface Reservation {
  /** Descriptors opened and closed again (0 when nothing was needed or possible). */
  readonly opened: number;
  /** Why fewer than asked were opened, when so. */
  readonly stoppedBy?: string;
}

/**
 * Makes room in the descriptor table for `clients` connections plus a few of the broker's own files, by
 * opening `/dev/null` that many times and closing it again. Only on Linux (other systems do not wait when
 * the table grows), only once per process for a given size, and only with read permission for `/dev/null`
 * already granted (never a permission prompt). Stops early, without error, at the open-files limit.
 */
export function reserveDescriptors(clients: number): Reservation {
  const wanted = Math.min(clients + SPARE_DESCRIPTORS, MAX_RESERVED_DESCRIPTORS);
  if (Deno.build.os !== "linux" || wanted <= reservedUpTo) return { opened: 0 };
  if (Deno.permissions.querySync({ name: "read", path: "/dev/null" }).state !== "granted") {
    return { opened: 0, stoppedBy: "no read permission for /dev/null" };
  }
  const files: Deno.FsFile[] = [];
  let stoppedBy: string | undefined;
  try {
    while (files.length < wanted) files.push(Deno.openSync("/dev/null"));
  } catch (err) {
    stoppedBy = err instanceof Error ? err.message : String(err); // the open-files limit (EMFILE)
  } finally {
    for (const file of files) file.close();
  }
  reservedUpTo = Math.max(reservedUpTo, wanted); // at the limit, trying again would only stop there again
  return stoppedBy === undefined ? { opened: files.length } : { opened: files.length, stoppedBy };
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
