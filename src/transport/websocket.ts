/**
 * WebSocket listeners (`ws`, `wss`): MQTT over WebSocket (MQTT 3.1.1 §6, MQTT 5 §6) with `Deno.serve`.
 * Nothing about MQTT semantics here: binary messages in, binary messages out.
 *
 * - Only `spec.path` (default "/mqtt") upgrades; other paths get 404, plain HTTP on the path gets 426.
 * - Subprotocol: "mqtt" (MQTT-6.0.0-3/4), or "mqttv3.1" for MQTT 3.1 clients. A client that offers neither
 *   gets 400; one that offers none at all is accepted (lenient: some clients leave the header out).
 * - Binary frames only: a text frame closes the connection (MQTT-6.0.0-1).
 * - A WebSocket message is just bytes for the packet decoder, which streams: a packet may span several
 *   messages and one message may hold several packets (MQTT-6.0.0-2).
 *
 * Limits of `Deno.serve` in Deno 2.9.6, stated rather than worked around:
 * - It cannot request or verify client certificates, so `wss` with `require_client_cert` is refused at
 *   start-up (use an `mqtts` listener for mutual TLS).
 * - It cannot swap certificates in place, and `shutdown()` also closes upgraded WebSockets (code 1001),
 *   so a `wss` listener has no `reloadCertificates()`: a restart is needed to load new files.
 * - A WebSocket cannot be aborted: `close()` queues a close frame behind unsent data, so the socket of a
 *   peer that stopped reading stays open until that peer reads or its TCP connection dies. The transport
 *   reports itself closed after the flush timeout anyway, and the broker's `max_output_buffer` bounds what
 *   is queued before that.
 * - It has no header-read or idle timeout (denoland/deno#3515): a TCP connection that never sends its HTTP
 *   request is invisible to the broker, so the CONNECT timeout cannot close it (one was still open after
 *   70 s in a local test). `mqtt` and `mqtts` listeners do not have this hole.
 *
 * @module
 */

import { OutputBuffer, worthKeeping } from "./output_buffer.ts";

import type { Logger } from "../log.ts";
import type { Transport } from "./connection.ts";
import { bindError, ListenError, type ListenerSpec, type OpenListener } from "./listeners.ts";
import { readTlsFiles } from "./tls.ts";

/** The WebSocket subprotocols accepted, in order of preference. */
export const MQTT_SUBPROTOCOLS: readonly string[] = ["mqtt", "mqttv3.1"];

/** Default HTTP path of the WebSocket endpoint. */
export const DEFAULT_WEBSOCKET_PATH = "/mqtt";

/**
 * Above this many received bytes the broker has not consumed yet (more than one message), the peer is
 * flooding a connection that is still authenticating: it is closed (1009 Message Too Big). WebSocket has
 * no flow control of its own, unlike a TCP read that simply stops.
 */
const MAX_UNREAD_BYTES = 16 * 1024 * 1024;

/**
 * Picks the subprotocol for a `Sec-WebSocket-Protocol` request header: the first of
 * {@link MQTT_SUBPROTOCOLS} the client offers; null when the client offered none; undefined when it
 * offered only others.
 */
export function chooseSubprotocol(header: string | null): string | null | undefined {
  if (header === null || header.trim() === "") return null;
  const offered = header.split(",").map((p) => p.trim());
  return MQTT_SUBPROTOCOLS.find((p) => offered.includes(p));
}

/** A {@link Transport} over one server-side WebSocket. */
export class WebSocketTransport implements Transport {
  readonly remoteAddr: string;
  onDrain?: () => void;
  #ws: WebSocket;
  #inbox: Uint8Array[] = [];
  #inboxHead = 0;
  #inboxBytes = 0;
  #ended = false;
  #wake?: () => void;
  // Allocated on first write and given back when little is sent: an idle connection holds none.
  #out = new OutputBuffer();
  #scheduled = false;
  #closed = false;
  #closing = false;
  #closeTimer?: ReturnType<typeof setTimeout>;
  #flushCallback = () => this.#flush();

  /** Wraps `ws` (from `Deno.upgradeWebSocket`; it may still be connecting). */
  constructor(ws: WebSocket, remoteAddr: string) {
    this.#ws = ws;
    this.remoteAddr = remoteAddr;
    ws.binaryType = "arraybuffer";
    ws.onopen = () => {
      // Output queued before the handshake finished, or a close requested then.
      if (this.#closing) this.#finishClose();
      else if (this.#out.length > 0) this.#schedule();
    };
    ws.onmessage = (e: MessageEvent) => this.#receive(e.data);
    ws.onclose = () => this.#destroyed();
    ws.onerror = () => this.#destroyed();
  }

  get pendingBytes(): number {
    return this.#out.length + (this.#closed ? 0 : this.#ws.bufferedAmount);
  }

  get closed(): boolean {
    return this.#closed;
  }

  #receive(data: unknown): void {
    if (this.#ended) return;
    if (!(data instanceof ArrayBuffer)) {
      // MQTT-6.0.0-1: a text frame closes the network connection.
      this.#abort(1003, "MQTT over WebSocket needs binary frames");
      return;
    }
    if (this.#inbox.length - this.#inboxHead > 0 && this.#inboxBytes + data.byteLength > MAX_UNREAD_BYTES) {
      this.#abort(1009, `more than ${MAX_UNREAD_BYTES} bytes received and not yet processed`);
      return;
    }
    this.#inbox.push(new Uint8Array(data));
    this.#inboxBytes += data.byteLength;
    this.#notify();
  }

  #notify(): void {
    const wake = this.#wake;
    this.#wake = undefined;
    wake?.();
  }

  async *chunks(): AsyncIterableIterator<Uint8Array> {
    while (true) {
      if (this.#inboxHead < this.#inbox.length) {
        const chunk = this.#inbox[this.#inboxHead++];
        this.#inboxBytes -= chunk.length;
        if (this.#inboxHead === this.#inbox.length) {
          this.#inbox = [];
          this.#inboxHead = 0;
        }
        yield chunk;
        continue;
      }
      if (this.#ended) return;
      await new Promise<void>((resolve) => (this.#wake = resolve));
    }
  }

  #schedule(): void {
    if (!this.#scheduled) {
      this.#scheduled = true;
      queueMicrotask(this.#flushCallback);
    }
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

  /** Sends everything queued in this microtask as one binary message. */
  #flush(): void {
    this.#scheduled = false;
    if (this.#closed || this.#out.length === 0 || this.#ws.readyState !== WebSocket.OPEN) return;
    // A copy: the socket may still hold the message after send() returns, and #out is reused.
    const frame = this.#out.data.slice(0, this.#out.length);
    if (worthKeeping(this.#out.data, frame.length)) this.#out.length = 0;
    else this.#out.clear();
    try {
      this.#ws.send(frame);
    } catch {
      this.#destroyed();
    }
  }

  close(flushTimeoutMs = 1000): void {
    if (this.#closed || this.#closing) return;
    this.#closing = true;
    if (this.#ws.readyState === WebSocket.CONNECTING) {
      // Finished by onopen; the timer covers a handshake that never completes.
      this.#closeTimer = setTimeout(() => this.#destroyed(), flushTimeoutMs);
      return;
    }
    this.#finishClose();
    // A peer that stops reading must not count as connected forever (see the module comment).
    if (!this.#closed) this.#closeTimer = setTimeout(() => this.#destroyed(), flushTimeoutMs);
  }

  #finishClose(): void {
    this.#flush();
    try {
      this.#ws.close(1000);
    } catch {
      this.#destroyed();
    }
  }

  /** Closes because the peer broke the rules. */
  #abort(code: number, reason: string): void {
    this.#ended = true;
    this.#inbox = [];
    this.#inboxHead = 0;
    this.#inboxBytes = 0;
    this.#notify();
    this.#closing = true;
    try {
      this.#ws.close(code, reason);
    } catch {
      // already closing
    }
  }

  /** The socket is gone (closed by either side, or failed). */
  #destroyed(): void {
    this.#ended = true;
    this.#notify();
    if (this.#closed) return;
    this.#closed = true;
    this.#out.clear();
    if (this.#closeTimer !== undefined) clearTimeout(this.#closeTimer);
  }
}

/**
 * Opens a `ws` or `wss` listener on `spec.host:spec.port` (port 0 picks a free port, reported in
 * `info.port`) serving MQTT over WebSocket on `spec.path`.
 */
export async function listenWebSocket(
  spec: ListenerSpec,
  onTransport: (t: Transport) => void,
  logger: Logger,
): Promise<OpenListener> {
  const path = spec.path ?? DEFAULT_WEBSOCKET_PATH;
  let pem: { cert: string; key: string } | undefined;
  if (spec.type === "wss") {
    if (spec.require_client_cert) {
      throw new ListenError(
        `wss listener ${spec.host}:${spec.port}: require_client_cert is not supported: Deno.serve cannot ` +
          `request or verify client certificates; use an mqtts listener for mutual TLS`,
      );
    }
    const files = await readTlsFiles(spec);
    pem = { cert: files.cert, key: files.key };
  }
  const handler = (req: Request, info: Deno.ServeHandlerInfo<Deno.NetAddr>): Response => {
    if (new URL(req.url).pathname !== path) return new Response("not found\n", { status: 404 });
    if (req.headers.get("upgrade")?.toLowerCase() !== "websocket") {
      return new Response(`MQTT over WebSocket: upgrade to websocket with subprotocol "mqtt"\n`, {
        status: 426,
        headers: { upgrade: "websocket" },
      });
    }
    const offered = req.headers.get("sec-websocket-protocol");
    const protocol = chooseSubprotocol(offered);
    if (protocol === undefined) {
      return new Response(`unsupported WebSocket subprotocol "${offered}"; expected "mqtt" or "mqttv3.1"\n`, {
        status: 400,
      });
    }
    // Read before the upgrade: afterwards the request is gone and remoteAddr throws "Request closed".
    const remote = info.remoteAddr;
    let upgraded: { socket: WebSocket; response: Response };
    try {
      upgraded = Deno.upgradeWebSocket(req, protocol === null ? {} : { protocol });
    } catch (err) {
      return new Response(`bad WebSocket upgrade: ${(err as Error).message}\n`, { status: 400 });
    }
    const transport = new WebSocketTransport(upgraded.socket, `${remote.hostname}:${remote.port}`);
    try {
      onTransport(transport);
    } catch (err) {
      // The upgrade response must still be returned; the socket closes once open.
      logger.warn("could not set up connection", { error: String(err) });
      transport.close();
    }
    return upgraded.response;
  };
  let server: Deno.HttpServer<Deno.NetAddr>;
  try {
    server = Deno.serve({
      hostname: spec.host,
      port: spec.port,
      ...pem,
      // Without onListen, Deno.serve prints its own "Listening on" line to stdout.
      onListen: () => {},
      onError: (err) => {
        logger.warn("WebSocket listener request failed", { error: String(err) });
        return new Response("internal error\n", { status: 500 });
      },
    }, handler);
  } catch (err) {
    if (err instanceof Deno.errors.AddrInUse || err instanceof Deno.errors.PermissionDenied || !pem) {
      throw bindError(spec, err);
    }
    throw new ListenError(
      `wss listener ${spec.host}:${spec.port}: cannot use cert_file ${spec.cert_file} with key_file ` +
        `${spec.key_file}: ${(err as Error).message}`,
    );
  }
  const addr = server.addr;
  return {
    info: { type: spec.type, host: addr.hostname, port: addr.port },
    close: () => server.shutdown(),
  };
}
