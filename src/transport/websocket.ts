/**
 * WebSocket listeners (`ws`, `wss`): MQTT over WebSocket (MQTT 3.1.1 §6, MQTT 5 §6), with a server side of
 * RFC 6455 of our own on top of the same byte streams as TCP and TLS. Nothing about MQTT semantics here:
 * binary messages in, binary messages out.
 *
 * Why not `Deno.serve`: it has no timeout before the HTTP upgrade (a TCP connection that never sends its
 * request stays open), cannot verify client certificates, and cannot swap certificates in place. Here a
 * WebSocket connection is a {@link ByteConn} wrapped in the usual `StreamTransport`, so the broker's CONNECT
 * timeout covers the HTTP handshake too, `wss` gets mutual TLS and certificate reload from `tls.ts`, and the
 * output path (one buffer, one write per tick) is the same as for TCP.
 *
 * - Only `spec.path` (default "/mqtt") upgrades; other paths get 404, a request without `Upgrade: websocket`
 *   gets 426.
 * - Subprotocol: "mqtt" (MQTT-6.0.0-3/4), or "mqttv3.1" for MQTT 3.1 clients. A client that offers neither
 *   gets 400; one that offers none at all is accepted (lenient: some clients leave the header out).
 * - Binary frames only: a text frame closes the connection with 1003 (MQTT-6.0.0-1). Client frames must be
 *   masked (RFC 6455 §5.1). Pings are answered; a close frame is echoed.
 * - Frames are streamed, never buffered whole: an MQTT packet may span frames and one frame may hold several
 *   packets (MQTT-6.0.0-2); the packet decoder's size limit applies as for TCP.
 *
 * @module
 */

import { quote } from "../mqtt/errors.ts";
import { isValidUtf8 } from "../mqtt/utf8.ts";
import type { Logger } from "../log.ts";
import { acceptLoop, bindError, type ListenerSpec, type OpenListener } from "./listeners.ts";
import type { ByteConn, Transport } from "./connection.ts";
import { listenTls } from "./tls.ts";

/** The WebSocket subprotocols accepted, in order of preference. */
export const MQTT_SUBPROTOCOLS: readonly string[] = ["mqtt", "mqttv3.1"];

/** Default HTTP path of the WebSocket endpoint. */
export const DEFAULT_WEBSOCKET_PATH = "/mqtt";

/** RFC 6455 §1.3. */
const ACCEPT_GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";
/** Largest HTTP upgrade request accepted. */
const MAX_REQUEST_BYTES = 8192;
const RAW_BUFFER = 16 * 1024;
const CLOSE_TIMEOUT_MS = 1000;

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

const encoder = new TextEncoder();

/** One server frame (unmasked, FIN set). */
function frame(opcode: number, payload: Uint8Array): Uint8Array {
  const n = payload.length;
  const header = n < 126 ? 2 : n < 65536 ? 4 : 10;
  const out = new Uint8Array(header + n);
  out[0] = 0x80 | opcode;
  if (n < 126) {
    out[1] = n;
  } else if (n < 65536) {
    out[1] = 126;
    out[2] = n >> 8;
    out[3] = n & 0xff;
  } else {
    out[1] = 127;
    new DataView(out.buffer).setUint32(6, n); // high 32 bits stay 0: output frames are far below 4 GiB
  }
  out.set(payload, header);
  return out;
}

function closeFrame(code: number, reason = ""): Uint8Array {
  const text = encoder.encode(reason).subarray(0, 123);
  const payload = new Uint8Array(2 + text.length);
  payload[0] = code >> 8;
  payload[1] = code & 0xff;
  payload.set(text, 2);
  return frame(0x8, payload);
}

async function writeAll(conn: ByteConn, bytes: Uint8Array): Promise<void> {
  let off = 0;
  while (off < bytes.length) off += await conn.write(bytes.subarray(off));
}

/** Sec-WebSocket-Accept for a Sec-WebSocket-Key (RFC 6455 §4.2.2). */
async function acceptValue(key: string): Promise<string> {
  const digest = new Uint8Array(await crypto.subtle.digest("SHA-1", encoder.encode(key + ACCEPT_GUID)));
  return btoa(String.fromCharCode(...digest));
}

/** A close code a peer may send (RFC 6455 §7.4): the defined ones, and 3000-4999 for applications. */
function validCloseCode(code: number): boolean {
  return (code >= 1000 && code <= 1003) || (code >= 1007 && code <= 1014) || (code >= 3000 && code <= 4999);
}

/**
 * The server side of one WebSocket connection as a byte stream: `read()` yields the payload bytes of binary
 * frames (after the HTTP upgrade, done on the first read), `write()` sends bytes as one binary frame.
 */
export class WebSocketConn implements ByteConn {
  readonly remoteAddr: Deno.Addr;
  #inner: ByteConn;
  #path: string;
  #state: "handshake" | "open" | "closed" = "handshake";
  #raw = new Uint8Array(RAW_BUFFER);
  #start = 0;
  #end = 0;
  /** Payload bytes left in the current data frame, and its masking key position. */
  #left = 0;
  #mask = new Uint8Array(4);
  #maskPos = 0;
  #writes: Promise<void> = Promise.resolve();
  #innerClosed = false;
  /** The payload of the newest ping not answered yet: one pong waits at most, however many pings come. */
  #pong?: Uint8Array;
  /** Inside a fragmented data message (a frame without FIN was read): only continuation frames may follow. */
  #fragmented = false;

  constructor(inner: ByteConn, path: string) {
    this.#inner = inner;
    this.#path = path;
    this.remoteAddr = inner.remoteAddr;
  }

  async read(p: Uint8Array): Promise<number | null> {
    if (this.#state === "handshake" && !(await this.#handshake())) return null;
    while (this.#state === "open") {
      if (this.#left > 0) {
        if (this.#end === this.#start && !(await this.#fill())) return null;
        const n = Math.min(p.length, this.#left, this.#end - this.#start);
        const raw = this.#raw;
        const mask = this.#mask;
        let m = this.#maskPos;
        for (let i = 0; i < n; i++) {
          p[i] = raw[this.#start + i] ^ mask[m];
          m = (m + 1) & 3;
        }
        this.#maskPos = m;
        this.#start += n;
        this.#left -= n;
        return n;
      }
      if (!(await this.#nextFrame())) return null;
    }
    return null;
  }

  write(p: Uint8Array): Promise<number> {
    if (this.#state !== "open") {
      return Promise.reject(new Error(`WebSocket to ${this.#addr()} is not open`));
    }
    const bytes = frame(0x2, p);
    return this.#send(bytes).then(() => p.length);
  }

  close(): void {
    if (this.#state === "open") this.#fail(1000, "");
    else this.#closeInner();
  }

  #addr(): string {
    const a = this.remoteAddr as Deno.NetAddr;
    return `${a.hostname}:${a.port}`;
  }

  /**
   * Writes in order: frames from write(), pongs and close frames never interleave. `bytes` may be made only
   * when its turn comes (a pong answers the newest ping by then).
   */
  #send(bytes: Uint8Array | (() => Uint8Array)): Promise<void> {
    const next = this.#writes.then(() =>
      writeAll(this.#inner, typeof bytes === "function" ? bytes() : bytes)
    );
    this.#writes = next.catch(() => {});
    return next;
  }

  /**
   * Answers a ping. A peer that pings without reading the pongs gets one pong for the newest ping, not one
   * queued per ping (RFC 6455 §5.5.3 allows it): memory stays bounded.
   */
  #answerPing(payload: Uint8Array): void {
    const waiting = this.#pong !== undefined;
    this.#pong = payload;
    if (waiting) return;
    this.#send(() => {
      const pong = frame(0xa, this.#pong!);
      this.#pong = undefined;
      return pong;
    }).catch(() => {});
  }

  #closeInner(): void {
    if (this.#innerClosed) return;
    this.#innerClosed = true;
    this.#state = "closed";
    try {
      this.#inner.close();
    } catch {
      // already closed
    }
  }

  /** Sends a close frame (bounded wait for a peer that does not read), then closes the socket. */
  #fail(code: number, reason: string): false {
    if (this.#state === "closed") return false;
    this.#state = "closed";
    const timer = setTimeout(() => this.#closeInner(), CLOSE_TIMEOUT_MS);
    this.#send(closeFrame(code, reason)).catch(() => {}).finally(() => {
      clearTimeout(timer);
      this.#closeInner();
    });
    return false;
  }

  /** Reads more raw bytes; false at the end of the stream. */
  async #fill(): Promise<boolean> {
    if (this.#start > 0 && (this.#start === this.#end || this.#end === this.#raw.length)) {
      this.#raw.copyWithin(0, this.#start, this.#end);
      this.#end -= this.#start;
      this.#start = 0;
    }
    if (this.#end === this.#raw.length) return false; // cannot happen: headers are far smaller
    let n: number | null;
    try {
      n = await this.#inner.read(this.#raw.subarray(this.#end));
    } catch {
      n = null;
    }
    if (n === null) {
      this.#closeInner();
      return false;
    }
    this.#end += n;
    return true;
  }

  async #ensure(n: number): Promise<boolean> {
    while (this.#end - this.#start < n) {
      if (!(await this.#fill())) return false;
    }
    return true;
  }

  /** Parses the next frame header; handles control frames. False when the connection ended. */
  async #nextFrame(): Promise<boolean> {
    if (!(await this.#ensure(2))) return false;
    const raw = this.#raw;
    const b0 = raw[this.#start];
    const b1 = raw[this.#start + 1];
    const opcode = b0 & 0x0f;
    let len = b1 & 0x7f;
    const header = 2 + (len === 126 ? 2 : len === 127 ? 8 : 0) + 4;
    if ((b0 & 0x70) !== 0) return this.#fail(1002, "reserved bits set");
    if ((b1 & 0x80) === 0) return this.#fail(1002, "client frames must be masked");
    if (!(await this.#ensure(header))) return false;
    const view = new DataView(raw.buffer, this.#start, header);
    if (len === 126) len = view.getUint16(2);
    else if (len === 127) {
      if (view.getUint32(2) > 0x1fffff) return this.#fail(1009, "frame too large");
      len = view.getUint32(2) * 2 ** 32 + view.getUint32(6);
    }
    this.#mask.set(raw.subarray(this.#start + header - 4, this.#start + header));
    this.#start += header;
    this.#maskPos = 0;
    if (opcode >= 0x8) {
      if ((b0 & 0x80) === 0 || len > 125) return this.#fail(1002, "bad control frame");
      if (!(await this.#ensure(len))) return false;
      const payload = new Uint8Array(len);
      for (let i = 0; i < len; i++) payload[i] = raw[this.#start + i] ^ this.#mask[i & 3];
      this.#start += len;
      if (opcode === 0x8) {
        // Echo the close (RFC 6455 §5.5.1) and end; a 1-byte body or a code no endpoint may send is an error.
        if (len === 1) return this.#fail(1002, "close frame with a 1-byte body");
        const code = len >= 2 ? (payload[0] << 8) | payload[1] : 1000;
        // The reason after the code must be UTF-8 (RFC 6455 §5.5.1): 1007 when it is not.
        const reasonOk = len <= 2 || isValidUtf8(payload.subarray(2));
        this.#fail(!reasonOk ? 1007 : validCloseCode(code) ? code : len === 0 ? 1000 : 1002, "");
        return false;
      }
      if (opcode === 0x9) this.#answerPing(payload);
      else if (opcode !== 0xa) return this.#fail(1002, `unknown opcode ${opcode}`);
      return true;
    }
    if (opcode === 0x1) return this.#fail(1003, "MQTT over WebSocket needs binary frames");
    if (opcode !== 0x2 && opcode !== 0x0) return this.#fail(1002, `unknown opcode ${opcode}`);
    // RFC 6455 §5.4: a fragmented message is continuation frames up to the one with FIN, nothing else.
    if (opcode === 0x0 && !this.#fragmented) return this.#fail(1002, "continuation frame outside a message");
    if (opcode === 0x2 && this.#fragmented) return this.#fail(1002, "new message inside a fragmented one");
    this.#fragmented = (b0 & 0x80) === 0;
    this.#left = len;
    return true;
  }

  /** Reads and answers the HTTP upgrade request (RFC 6455 §4.2). False when it was refused. */
  async #handshake(): Promise<boolean> {
    let headerEnd = -1;
    while (headerEnd < 0) {
      const text = this.#raw.subarray(this.#start, this.#end);
      for (let i = 3; i < text.length; i++) {
        if (text[i] === 10 && text[i - 1] === 13 && text[i - 2] === 10 && text[i - 3] === 13) {
          headerEnd = this.#start + i + 1;
          break;
        }
      }
      if (headerEnd >= 0) break;
      if (this.#end - this.#start >= MAX_REQUEST_BYTES) return this.#refuse(431, "request header too large");
      if (!(await this.#fill())) return false;
    }
    // The same limit when the whole header came in one read.
    if (headerEnd - this.#start > MAX_REQUEST_BYTES) return this.#refuse(431, "request header too large");
    const request = new TextDecoder("latin1").decode(this.#raw.subarray(this.#start, headerEnd));
    this.#start = headerEnd; // what follows is already WebSocket frames
    const [requestLine, ...lines] = request.split("\r\n");
    const [method, target, httpVersion] = requestLine.split(" ");
    const headers = new Map<string, string>();
    for (const line of lines) {
      const colon = line.indexOf(":");
      if (colon <= 0) continue;
      const name = line.slice(0, colon).trim().toLowerCase();
      const value = line.slice(colon + 1).trim();
      // A repeated header is one comma-separated list (RFC 7230 §3.2.2, RFC 6455 §11.3.4).
      const before = headers.get(name);
      headers.set(name, before === undefined ? value : `${before}, ${value}`);
    }
    if ((target ?? "").split("?")[0] !== this.#path) return this.#refuse(404, "not found");
    if (method !== "GET" || headers.get("upgrade")?.toLowerCase() !== "websocket") {
      return this.#refuse(426, `MQTT over WebSocket: upgrade to websocket with subprotocol "mqtt"`, {
        upgrade: "websocket",
      });
    }
    // RFC 6455 §4.2.1: HTTP/1.1 or later, version 13, a key of 16 bytes in base64.
    if (!/^HTTP\/(1\.[1-9]|[2-9](\.\d)?)$/.test(httpVersion ?? "")) {
      return this.#refuse(400, "a WebSocket upgrade needs HTTP/1.1");
    }
    if (headers.get("sec-websocket-version") !== "13") {
      return this.#refuse(426, "unsupported WebSocket version; this server speaks 13", {
        "sec-websocket-version": "13",
      });
    }
    const key = headers.get("sec-websocket-key");
    if (key === undefined || key === "") return this.#refuse(400, "missing Sec-WebSocket-Key");
    if (!/^[A-Za-z0-9+/]{22}==$/.test(key)) {
      return this.#refuse(400, "Sec-WebSocket-Key is not 16 bytes in base64");
    }
    const offered = headers.get("sec-websocket-protocol") ?? null;
    const protocol = chooseSubprotocol(offered);
    if (protocol === undefined) {
      return this.#refuse(
        400,
        `unsupported WebSocket subprotocol ${quote(offered ?? "")}; expected "mqtt" or "mqttv3.1"`,
      );
    }
    let response = "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n" +
      `Sec-WebSocket-Accept: ${await acceptValue(key)}\r\n`;
    if (protocol !== null) response += `Sec-WebSocket-Protocol: ${protocol}\r\n`;
    this.#state = "open";
    this.#send(encoder.encode(response + "\r\n")).catch(() => this.#closeInner());
    return true;
  }

  #refuse(status: number, text: string, extra: Record<string, string> = {}): false {
    const reasons: Record<number, string> = {
      400: "Bad Request",
      404: "Not Found",
      426: "Upgrade Required",
      431: "Request Header Fields Too Large",
    };
    const body = encoder.encode(text + "\n");
    let head = `HTTP/1.1 ${status} ${reasons[status]}\r\nContent-Type: text/plain\r\n` +
      `Content-Length: ${body.length}\r\nConnection: close\r\n`;
    for (const [name, value] of Object.entries(extra)) head += `${name}: ${value}\r\n`;
    const bytes = new Uint8Array([...encoder.encode(head + "\r\n"), ...body]);
    this.#state = "closed";
    const timer = setTimeout(() => this.#closeInner(), CLOSE_TIMEOUT_MS);
    this.#send(bytes).catch(() => {}).finally(() => {
      clearTimeout(timer);
      this.#closeInner();
    });
    return false;
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
  maxHandshakes?: number,
): Promise<OpenListener> {
  const path = spec.path ?? DEFAULT_WEBSOCKET_PATH;
  const wrap = (conn: ByteConn): ByteConn => new WebSocketConn(conn, path);
  if (spec.type === "wss") return await listenTls(spec, onTransport, logger, { wrap, maxHandshakes });
  let listener: Deno.Listener;
  try {
    listener = Deno.listen({ hostname: spec.host, port: spec.port, transport: "tcp" });
  } catch (err) {
    throw bindError(spec, err);
  }
  const addr = listener.addr as Deno.NetAddr;
  acceptLoop(listener, onTransport, logger, spec, wrap);
  return {
    info: { type: spec.type, host: addr.hostname, port: addr.port },
    close: () => listener.close(),
  };
}
