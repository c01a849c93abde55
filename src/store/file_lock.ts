/**
 * An exclusive lock on the database file, held for as long as the broker has it open.
 *
 * Deno KV (SQLite in WAL mode) lets a second process open the same file and write to it silently; two
 * brokers on one database would corrupt each other's sessions. So the store takes an advisory lock
 * (`flock`, through `Deno.FsFile.tryLock`) on `<path>.lock` and writes its pid there for the error
 * message. The kernel drops the lock when the holder dies, even by SIGKILL, so a lock file left behind
 * by a crash is never "stale": the next broker simply takes it.
 *
 * @module
 */

import { StoreError } from "./store.ts";

/** A held lock. */
export interface FileLock {
  /** The lock file. */
  readonly path: string;
  /** Removes the lock file and releases the lock. Safe to call twice. */
  release(): Promise<void>;
}

const encoder = new TextEncoder();
const decoder = new TextDecoder();

/**
 * Takes the lock at `lockPath` without waiting.
 *
 * @param lockPath the lock file, created if missing.
 * @param label what is locked, for the error message (for example `storage.path ./data/mqtt.db`).
 * @throws StoreError `<label> is locked by another running broker (pid N)` when another holder has it.
 */
export async function acquireFileLock(lockPath: string, label: string): Promise<FileLock> {
  // A holder that releases removes the file while still holding the lock; whoever opened the old file
  // meanwhile locks an unlinked inode. Detect that (the path no longer names our inode) and retry.
  for (let attempt = 0; attempt < 5; attempt++) {
    let file: Deno.FsFile;
    try {
      file = await Deno.open(lockPath, { read: true, write: true, create: true });
    } catch (e) {
      throw new StoreError(`cannot create the lock file ${lockPath} for ${label}: ${(e as Error).message}`, {
        cause: e,
      });
    }
    let locked: boolean;
    try {
      locked = await file.tryLock(true);
    } catch (e) {
      file.close();
      throw new StoreError(`cannot lock ${lockPath} for ${label}: ${(e as Error).message}`, { cause: e });
    }
    if (!locked) {
      file.close();
      const pid = await readHolderPid(lockPath);
      throw new StoreError(`${label} is locked by another running broker (pid ${pid ?? "unknown"})`);
    }
    const mine = await file.stat();
    const current = await Deno.stat(lockPath).catch(() => null);
    if (current === null || current.ino !== mine.ino || current.dev !== mine.dev) {
      file.close();
      continue;
    }
    await file.truncate(0);
    await writeAll(file, encoder.encode(`${Deno.pid}\n`));
    return new HeldLock(lockPath, file);
  }
  throw new StoreError(`cannot lock ${lockPath} for ${label}: the lock file keeps being replaced`);
}

class HeldLock implements FileLock {
  #file: Deno.FsFile | undefined;

  constructor(readonly path: string, file: Deno.FsFile) {
    this.#file = file;
  }

  async release(): Promise<void> {
    const file = this.#file;
    if (file === undefined) return;
    this.#file = undefined;
    // Remove first, while still locked (see acquireFileLock); closing the descriptor releases the flock.
    await Deno.remove(this.path).catch(() => {});
    file.close();
  }
}

async function writeAll(file: Deno.FsFile, data: Uint8Array): Promise<void> {
  let off = 0;
  while (off < data.length) off += await file.write(data.subarray(off));
}

/** The pid in the lock file; the holder may not have written it yet, so look a few times. */
async function readHolderPid(lockPath: string): Promise<number | undefined> {
  for (let i = 0; i < 5; i++) {
    try {
      const text = decoder.decode(await Deno.readFile(lockPath)).trim();
      const pid = Number(text);
      if (text !== "" && Number.isInteger(pid) && pid > 0) return pid;
    } catch {
      return undefined;
    }
    await new Promise((r) => setTimeout(r, 20));
  }
  return undefined;
}
