/**
 * Deno's socket read and write ops, called directly instead of through `conn.read()` and `conn.write()`.
 *
 * `Deno.Conn.read()` is an async function around the same op: per read it adds a suspended async frame,
 * a second promise and an add and delete on a Set of pending reads. A connection that sends one message
 * a second holds that state for the whole second, so every young-generation collection copies it, and
 * at 2,000 such connections it was the largest part of what survives each collection. `conn.write()`
 * allocates ~0.5 KB more per call than the write op it wraps (measured in Deno 2.9.6: ~1,050 against ~540
 * bytes of heap per 4-byte write). Both ops are reached through `Deno[Deno.internal].core`, which Deno does
 * not document; when they are not there (another Deno version, a non-Deno connection such as the
 * `node:tls` adapter or a WebSocket), `conn.read()` and `conn.write()` are used as before.
 *
 * @module
 */

/** The members of Deno's internal `core` object used here. */
interface DenoCore {
  read(rid: number, buffer: Uint8Array): Promise<number>;
  write(rid: number, buffer: Uint8Array): Promise<number>;
  internalRidSymbol: symbol;
}

function findCore(): DenoCore | null {
  try {
    const deno = Deno as unknown as Record<symbol, { core?: Partial<DenoCore> } | undefined> & {
      internal?: symbol;
    };
    const core = deno.internal === undefined ? undefined : deno[deno.internal]?.core;
    if (
      typeof core?.read === "function" && typeof core.write === "function" &&
      typeof core.internalRidSymbol === "symbol"
    ) {
      return core as DenoCore;
    }
  } catch {
    // not reachable: conn.read() it is
  }
  return null;
}

const core = findCore();

/**
 * The resource id of `conn` when it is a Deno socket whose read and write ops can be called directly, or -1.
 * `conn` must be the `Deno.Conn` itself (TCP, Unix or TLS), not a wrapper.
 */
export function directReadRid(conn: object): number {
  if (core === null) return -1;
  const rid = (conn as Record<symbol, unknown>)[core.internalRidSymbol];
  return typeof rid === "number" ? rid : -1;
}

/**
 * Reads into `buffer` (never empty) from resource `rid`; resolves to the byte count, 0 at the end of the
 * stream, and rejects once the resource is closed or reset.
 */
export function readDirect(rid: number, buffer: Uint8Array): Promise<number> {
  return core!.read(rid, buffer);
}

/**
 * Writes (part of) `buffer` to resource `rid`; resolves to the byte count written, once `buffer` may be
 * reused, and rejects once the resource is closed or reset.
 */
export function writeDirect(rid: number, buffer: Uint8Array): Promise<number> {
  return core!.write(rid, buffer);
}
