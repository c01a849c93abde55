/**
 * A TCP proxy in front of the broker that counts the bytes going each way, so that tests can compare
 * the broker's byte counters with what really crossed the wire (whatever the client library sends).
 *
 * @module
 */

/** A running counting proxy on 127.0.0.1. */
export interface ByteProxy {
  /** Port clients connect to instead of the broker's. */
  readonly port: number;
  /** Bytes the clients sent towards the broker (and that were forwarded to it). */
  readonly toBroker: number;
  /** Bytes the broker sent towards the clients (and that were forwarded to them). */
  readonly toClients: number;
  /** Stops listening, closes every proxied connection and waits for the pumps to end. */
  close(): Promise<void>;
}

/** Starts a proxy on a free port of 127.0.0.1 that forwards every connection to `127.0.0.1:brokerPort`. */
export function startByteProxy(brokerPort: number): ByteProxy {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const conns = new Set<Deno.Conn>();
  const pumps: Promise<void>[] = [];
  const counts = { toBroker: 0, toClients: 0 };

  const pump = async (from: Deno.Conn, to: Deno.Conn, direction: keyof typeof counts) => {
    const buf = new Uint8Array(65536);
    try {
      while (true) {
        const n = await from.read(buf);
        if (n === null) break;
        let off = 0;
        while (off < n) off += await to.write(buf.subarray(off, n));
        counts[direction] += n;
      }
    } catch {
      // one side went away: close both below
    }
    for (const c of [from, to]) {
      if (conns.delete(c)) c.close();
    }
  };

  const accepting = (async () => {
    try {
      for await (const client of listener) {
        const upstream = await Deno.connect({ hostname: "127.0.0.1", port: brokerPort });
        conns.add(client);
        conns.add(upstream);
        pumps.push(pump(client, upstream, "toBroker"), pump(upstream, client, "toClients"));
      }
    } catch {
      // listener closed
    }
  })();

  return {
    port: (listener.addr as Deno.NetAddr).port,
    get toBroker() {
      return counts.toBroker;
    },
    get toClients() {
      return counts.toClients;
    },
    async close() {
      listener.close();
      await accepting;
      for (const c of conns) c.close();
      conns.clear();
      await Promise.all(pumps);
    },
  };
}
