/**
 * Deno's socket read op, called directly instead of through `conn.read()`.
 *
 * `Deno.Conn.read()` is an async function around the same op: per read it adds a suspended async frame,
 * a second promise and an add and delete on a Set of pending reads. A connection that sends one message
 * a second holds that state for the whole second, so every young-generation collection copies it, and
 * at 2,000 such connections it was the largest part of what survives each collection. The op itself is
 * reached through `Deno[Deno.internal].core`, which Deno does not document; when it is not there (another
 * Deno version, a non-Deno connection such as the `node:tls` adapter or a WebSocket), `conn.read()` is
 * used as before.
 *
 * @module
 */

/** The two members of Deno's internal `core` object used here. */
interface DenoCore {
  read(rid: number, buffer: Uint8Array): Promise<number>;
  internalRidSymbol: symbol;
}

function findCore(): DenoCore | null {
  try {
    const deno = Deno as unknown as Record<symbol, { core?: Partial<DenoCore> } | undefined> & {
      internal?: symbol;
    };
    const core = deno.internal === undefined ? undefined : deno[deno.internal]?.core;
    if (typeof core?.read === "function" && typeof core.internalRidSymbol === "symbol") {
      return core as DenoCore;
    }
  } catch {
    // not reachable: conn.read() it is
  }
  return null;
}

const core = findCore();

/**
 * The resource id of `conn` when it is a Deno socket whose read op can be called directly, or -1.
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
