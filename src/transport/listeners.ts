/**
 * Listeners: the TCP (`mqtt`) accept loop, and {@link listen}, which also opens TLS (`mqtts`, `tls.ts`) and
 * WebSocket (`ws` / `wss`, `websocket.ts`) listeners. Each accepted connection becomes a {@link Transport}
 * handed to the broker; the accept loop never dies because of one bad connection.
 *
 * @module
 */

import type { ListenerConfig } from "../config/types.ts";
import { type Logger, onceEvery } from "../log.ts";
import { type ByteConn, StreamTransport, type Transport } from "./connection.ts";

/** What to open: the main listener or one entry of `listeners:` in the config. */
export type ListenerSpec = Pick<ListenerConfig, "type" | "host" | "port"> & Partial<ListenerConfig>;

/** An open listener. */
export interface OpenListener {
  readonly info: { type: ListenerConfig["type"]; host: string; port: number };
  close(): Promise<void> | void;
  /** Re-reads certificate files (TLS); true when they changed. */
  prepareCertificates?: () => Promise<(() => void) | undefined>;
}

/** Error for a listener that cannot bind, with a one-line message naming the address. */
export class ListenError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "ListenError";
  }
}

function bindError(spec: ListenerSpec, err: unknown): ListenError {
  const where = `${spec.type} listener ${
    spec.host.includes(":") ? `[${spec.host}]` : spec.host
  }:${spec.port}`;
  if (err instanceof Deno.errors.AddrInUse) return new ListenError(`${where} is already in use`);
  if (err instanceof Deno.errors.PermissionDenied) return new ListenError(`${where}: permission denied`);
  return new ListenError(`${where}: ${err instanceof Error ? err.message : err}`);
}

/** Pause after a failed accept() before the next one. */
const ACCEPT_RETRY_MS = 100;

async function acceptLoop(
  listener: Deno.Listener,
  onTransport: (t: Transport) => void,
  logger: Logger,
  spec: ListenerSpec,
  wrap?: (conn: ByteConn) => ByteConn,
): Promise<void> {
  let failures = 0;
  const logFailure = onceEvery(1000);
  while (true) {
    let conn: Deno.Conn;
    try {
      conn = await listener.accept();
    } catch (err) {
      if (err instanceof Deno.errors.BadResource || err instanceof Deno.errors.Interrupted) return; // closed
      // Out of descriptors (EMFILE), say: trying again at once spun a core and logged 25,000 lines a second.
      // A pause, and one line per pause-worth of failures.
      failures++;
      if (logFailure()) {
        logger.warn("accept failed", { listener: `${spec.host}:${spec.port}`, error: String(err), failures });
        failures = 0;
      }
      await new Promise((resolve) => setTimeout(resolve, ACCEPT_RETRY_MS));
      continue;
    }
    try {
      // Small QoS 1 windows must not wait for Nagle / delayed ACK.
      (conn as Deno.TcpConn).setNoDelay?.(true);
      onTransport(new StreamTransport(wrap ? wrap(conn) : conn));
    } catch (err) {
      logger.warn("could not set up connection", { error: String(err) });
      try {
        conn.close();
      } catch {
        // already closed
      }
    }
  }
}

/** Opens a listener and starts its accept loop. */
export async function listen(
  spec: ListenerSpec,
  onTransport: (t: Transport) => void,
  logger: Logger,
  maxHandshakes?: number,
): Promise<OpenListener> {
  if (spec.type === "ws" || spec.type === "wss") {
    const { listenWebSocket } = await import("./websocket.ts");
    return listenWebSocket(spec, onTransport, logger, maxHandshakes);
  }
  let listener: Deno.Listener;
  try {
    if (spec.type === "mqtts") {
      const { listenTls } = await import("./tls.ts");
      return await listenTls(spec, onTransport, logger, { maxHandshakes });
    }
    listener = Deno.listen({ hostname: spec.host, port: spec.port, transport: "tcp" });
  } catch (err) {
    throw err instanceof ListenError ? err : bindError(spec, err);
  }
  const addr = listener.addr as Deno.NetAddr;
  acceptLoop(listener, onTransport, logger, spec);
  return {
    info: { type: spec.type, host: addr.hostname, port: addr.port },
    close: () => listener.close(),
  };
}

export { acceptLoop, bindError };
