/**
 * TLS listeners (`mqtts`), with optional mutual TLS. Nothing about MQTT here: each accepted connection
 * becomes a {@link StreamTransport} handed to the broker once its handshake is done.
 *
 * Why `node:tls` and not `Deno.listenTls` (Deno 2.9.6), for both kinds of listener:
 * - `Deno.listenTls` cannot ask for or verify client certificates (its options are hostname, port,
 *   transport, alpnProtocols, reusePort, tcpBacklog, cert, key) and `Deno.TlsConn` exposes no peer
 *   certificate, so it cannot do mutual TLS at all.
 * - Closing a `Deno.TlsConn` first waits for its handshake to finish (Deno PR #14547): a client that opens
 *   the TCP connection and never sends a ClientHello keeps its socket open for as long as it likes, even
 *   after the broker's CONNECT timeout closed it. That is a free descriptor-exhaustion attack on exactly the
 *   listener that faces the internet. `node:tls` has a handshake timeout and `destroy()` closes at once.
 * - `node:tls` swaps certificates in place (`setSecureContext`): no window where the port is unbound.
 * The cost: reading is slower (in a local test about 150-280 MB/s of TLS input against 520-560 for
 * `Deno.listenTls`; writing and memory per connection were the same), far above what one MQTT connection
 * needs. `Deno.listenTls` is still used, on a throw-away loopback port, to validate a key pair.
 *
 * Mutual TLS (`require_client_cert`): `requestCert` plus `rejectUnauthorized` makes rustls refuse, during
 * the handshake, a client without a certificate or with one that does not chain to `ca_file`;
 * `getPeerCertificate()` gives the verified certificate's subject CN (the MQTT username when
 * `use_cn_as_username` is set). rustls (webpki) accepts only X.509 v3 client certificates.
 *
 * Protocol versions: Deno's TLS stack is rustls, which implements TLS 1.2 and TLS 1.3 only; SSLv3, TLS 1.0
 * and TLS 1.1 are refused during the handshake. `minVersion: "TLSv1.2"` is set to say so.
 *
 * @module
 */

import type net from "node:net";
import tls from "node:tls";
import { type Logger, onceEvery } from "../log.ts";
import { type ByteConn, StreamTransport, type Transport } from "./connection.ts";
import { bindError, ListenError, type ListenerSpec, type OpenListener } from "./listeners.ts";

/** The PEM text of a TLS listener's files. */
export interface TlsFiles {
  cert: string;
  key: string;
  /** Only for mutual TLS. */
  ca?: string;
}

/**
 * Default for {@link TlsListenOptions.handshakeTimeoutMs}: a TLS handshake not finished after this long is
 * abandoned. The broker only sees a connection once its handshake is done, so its CONNECT timeout cannot
 * cover this part.
 */
export const HANDSHAKE_TIMEOUT_MS = 10_000;

/** Tuning for {@link listenTls}. */
export interface TlsListenOptions {
  /** Milliseconds a client has to complete the TLS handshake; default {@link HANDSHAKE_TIMEOUT_MS}. */
  handshakeTimeoutMs?: number;
  /** Wraps each TLS byte stream before it becomes a transport (`wss`: the WebSocket layer). */
  wrap?: (conn: ByteConn) => ByteConn;
  /**
   * Handshakes in progress at most (the broker passes `server.max_clients`): one more closes the oldest, as
   * the broker does with connections that have not sent CONNECT. Without it a flood of silent sockets held
   * a descriptor each for the handshake timeout, until accept() failed for every listener.
   */
  maxHandshakes?: number;
}

/** Above this many received but unread bytes, a `node:tls` socket is paused (TCP back-pressure). */
const READ_HIGH_WATER = 64 * 1024;

function where(spec: ListenerSpec): string {
  return `${spec.type} listener ${spec.host}:${spec.port}`;
}

/**
 * Reads `cert_file`, `key_file` and (for mutual TLS) `ca_file` of a listener. Rejects with a
 * {@link ListenError} naming the key and the path that could not be read.
 */
export async function readTlsFiles(spec: ListenerSpec): Promise<TlsFiles> {
  const read = async (name: "cert_file" | "key_file" | "ca_file"): Promise<string> => {
    const path = spec[name];
    if (!path) throw new ListenError(`${where(spec)}: ${name} is required, got nothing`);
    try {
      return await Deno.readTextFile(path);
    } catch (err) {
      throw new ListenError(`${where(spec)}: cannot read ${name} ${path}: ${(err as Error).message}`);
    }
  };
  const [cert, key, ca] = await Promise.all([
    read("cert_file"),
    read("key_file"),
    spec.require_client_cert ? read("ca_file") : undefined,
  ]);
  if (ca !== undefined && !ca.includes("-----BEGIN CERTIFICATE-----")) {
    throw new ListenError(`${where(spec)}: ca_file ${spec.ca_file} holds no PEM certificate`);
  }
  return { cert, key, ca };
}

function sameFiles(a: TlsFiles, b: TlsFiles): boolean {
  return a.cert === b.cert && a.key === b.key && a.ca === b.ca;
}

/** Turns a failure to bind or to load the key pair into a one-line {@link ListenError}. */
function tlsError(spec: ListenerSpec, err: unknown): ListenError {
  if (err instanceof ListenError) return err;
  if (err instanceof Deno.errors.AddrInUse || err instanceof Deno.errors.PermissionDenied) {
    return bindError(spec, err);
  }
  const message = err instanceof Error ? err.message : String(err);
  return new ListenError(
    `${where(spec)}: cannot use cert_file ${spec.cert_file} with key_file ${spec.key_file}: ${message}`,
  );
}

/** A `node:net` listen error (EADDRINUSE, EACCES) as the same one-line message a TCP listener gives. */
function listenFailure(spec: ListenerSpec, err: Error): ListenError {
  const code = (err as Error & { code?: string }).code;
  if (code === "EADDRINUSE") return bindError(spec, new Deno.errors.AddrInUse(err.message));
  if (code === "EACCES") return bindError(spec, new Deno.errors.PermissionDenied(err.message));
  return bindError(spec, err);
}

/**
 * Checks that a certificate and key load and belong together, by binding a throw-away TLS listener on a free
 * loopback port: `Deno.listenTls` is where rustls parses both and checks that they match (`node:tls`
 * `createSecureContext` accepts anything and would only fail each handshake later).
 */
function checkKeyPair(spec: ListenerSpec, files: TlsFiles): void {
  try {
    Deno.listenTls({ hostname: "127.0.0.1", port: 0, cert: files.cert, key: files.key }).close();
  } catch (err) {
    throw tlsError(spec, err);
  }
}

/** The subject CN of a peer certificate (the first one when there are several, as Mosquitto takes it). */
function commonName(cert: tls.PeerCertificate | undefined): string | undefined {
  const cn: unknown = cert?.subject?.CN;
  const first = Array.isArray(cn) ? cn[0] : cn;
  return typeof first === "string" && first !== "" ? first : undefined;
}

/**
 * Opens an `mqtts` listener on `spec.host:spec.port` (port 0 picks a free port, reported in `info.port`);
 * with `spec.require_client_cert`, clients must present a certificate signed by `spec.ca_file`. The returned
 * handle's `prepareCertificates()` re-reads and checks the files and, when they changed, returns what makes new
 * handshakes use them (connections already open keep theirs). A bad new pair rejects and changes nothing.
 */
export async function listenTls(
  spec: ListenerSpec,
  onTransport: (t: Transport) => void,
  logger: Logger,
  options: TlsListenOptions = {},
): Promise<OpenListener> {
  const files = await readTlsFiles(spec);
  checkKeyPair(spec, files);
  const mutual = spec.require_client_cert === true;
  const context = (pem: TlsFiles): tls.SecureContextOptions => ({
    cert: pem.cert,
    key: pem.key,
    ca: mutual ? pem.ca : undefined,
    minVersion: "TLSv1.2",
  });
  const server = tls.createServer({
    ...context(files),
    requestCert: mutual,
    rejectUnauthorized: mutual,
    handshakeTimeout: options.handshakeTimeoutMs ?? HANDSHAKE_TIMEOUT_MS,
  });
  let bound: ListenerSpec = spec;
  // Raw sockets whose handshake is under way, oldest first, with their peer address (a socket refused in its
  // handshake no longer knows it when the refusal is reported). Deno's node:tls gives each TLS socket its raw
  // one as `_parent`; without that the bound cannot be kept, and is not.
  const handshaking = new Map<object, string>();
  let tracking = true;
  const logEviction = onceEvery(1000);
  const maxHandshakes = options.maxHandshakes ?? Infinity;
  const parentOf = (socket: tls.TLSSocket): object | undefined => (socket as { _parent?: object })._parent;
  server.on("connection", (raw: net.Socket) => {
    if (!tracking) return;
    if (handshaking.size >= maxHandshakes) {
      const [oldest, addr] = handshaking.entries().next().value!;
      handshaking.delete(oldest);
      (oldest as net.Socket).destroy();
      if (logEviction()) {
        logger.warn(
          "closing the oldest unfinished TLS handshake: as many as server.max_clients are under way",
          {
            listener: `${bound.host}:${bound.port}`,
            addr,
          },
        );
      }
    }
    handshaking.set(raw, `${raw.remoteAddress}:${raw.remotePort}`);
    raw.once("close", () => handshaking.delete(raw));
  });
  server.on("secureConnection", (socket: tls.TLSSocket) => {
    const parent = parentOf(socket);
    if (parent === undefined) {
      tracking = false;
      handshaking.clear();
    } else {
      handshaking.delete(parent);
    }
    try {
      // rejectUnauthorized already ended unverified handshakes; this keeps a future default from slipping by.
      if (mutual && !socket.authorized) {
        socket.destroy();
        return;
      }
      const conn = new NodeSocketConn(socket);
      const transport = new StreamTransport(options.wrap ? options.wrap(conn) : conn);
      if (mutual && spec.use_cn_as_username) {
        const cn = commonName(socket.getPeerCertificate());
        if (cn === undefined) {
          logger.warn("client certificate has no subject CN to use as username, closing", {
            listener: `${bound.host}:${bound.port}`,
            addr: transport.remoteAddr,
          });
          socket.destroy();
          return;
        }
        transport.peerCommonName = cn;
      }
      // Small QoS 1 windows must not wait for Nagle / delayed ACK.
      socket.setNoDelay(true);
      onTransport(transport);
    } catch (err) {
      logger.warn("could not set up connection", { error: String(err) });
      socket.destroy();
    }
  });
  server.on("tlsClientError", (err: Error, socket: tls.TLSSocket) => {
    // No certificate, one our CA did not sign (reported as a hang-up), an old TLS version, or plain MQTT
    // sent to the TLS port.
    const parent = parentOf(socket);
    const known = parent === undefined ? undefined : handshaking.get(parent);
    if (parent !== undefined) handshaking.delete(parent);
    logger.info("TLS handshake refused", {
      listener: `${bound.host}:${bound.port}`,
      addr: socket.remoteAddress === undefined ? known : `${socket.remoteAddress}:${socket.remotePort}`,
      error: err.message,
    });
    // Deno's node:tls reports a handshake timeout here but leaves the socket open: close it ourselves.
    socket.destroy();
  });
  await new Promise<void>((resolve, reject) => {
    const failed = (err: Error) => reject(listenFailure(spec, err));
    server.once("error", failed);
    server.listen({ host: spec.host, port: spec.port }, () => {
      server.off("error", failed);
      resolve();
    });
  }).catch((err) => {
    server.close();
    throw err;
  });
  server.on("error", (err: Error) => {
    logger.warn("TLS listener error", { listener: `${bound.host}:${bound.port}`, error: err.message });
  });
  const addr = server.address() as { address: string; port: number };
  bound = { ...spec, port: addr.port };
  let current = files;
  return {
    info: { type: spec.type, host: addr.address, port: addr.port },
    // server.close() stops accepting at once; its callback would wait for every open connection, which
    // the broker closes after its listeners, so it is not awaited.
    close: () => {
      server.close();
    },
    prepareCertificates: async () => {
      const next = await readTlsFiles(bound);
      if (!server.listening || sameFiles(next, current)) return undefined;
      checkKeyPair(bound, next);
      return () => {
        // The node:tls server swaps its context in place: same socket, no gap, open connections untouched.
        server.setSecureContext(context(next));
        current = next;
      };
    },
  };
}

/**
 * A {@link ByteConn} over a `node:tls` socket, so TLS connections reuse {@link StreamTransport}'s
 * buffering. Reads pause the socket above {@link READ_HIGH_WATER} unread bytes.
 */
class NodeSocketConn implements ByteConn {
  readonly remoteAddr: Deno.NetAddr;
  #socket: tls.TLSSocket;
  #chunks: Uint8Array[] = [];
  /** Bytes of `#chunks[0]` already read. */
  #offset = 0;
  #buffered = 0;
  #ended = false;
  #wake?: () => void;

  constructor(socket: tls.TLSSocket) {
    this.#socket = socket;
    this.remoteAddr = {
      transport: "tcp",
      hostname: socket.remoteAddress ?? "unknown",
      port: socket.remotePort ?? 0,
    };
    socket.on("data", (data: Uint8Array) => {
      this.#chunks.push(data);
      this.#buffered += data.length;
      if (this.#buffered >= READ_HIGH_WATER) socket.pause();
      this.#notify();
    });
    const end = () => {
      this.#ended = true;
      this.#notify();
    };
    socket.on("end", end);
    socket.on("close", end);
    // A reset: the stream ends; `close` follows.
    socket.on("error", end);
  }

  #notify(): void {
    const wake = this.#wake;
    this.#wake = undefined;
    wake?.();
  }

  async read(p: Uint8Array): Promise<number | null> {
    while (this.#buffered === 0) {
      if (this.#ended) return null;
      await new Promise<void>((resolve) => (this.#wake = resolve));
    }
    let n = 0;
    while (n < p.length && this.#chunks.length > 0) {
      const chunk = this.#chunks[0];
      const take = Math.min(p.length - n, chunk.length - this.#offset);
      p.set(chunk.subarray(this.#offset, this.#offset + take), n);
      n += take;
      this.#offset += take;
      if (this.#offset === chunk.length) {
        this.#chunks.shift();
        this.#offset = 0;
      }
    }
    this.#buffered -= n;
    if (this.#buffered < READ_HIGH_WATER && this.#socket.isPaused()) this.#socket.resume();
    return n;
  }

  write(p: Uint8Array): Promise<number> {
    return new Promise((resolve, reject) => {
      if (this.#socket.destroyed) {
        reject(new Error(`TLS socket to ${this.remoteAddr.hostname}:${this.remoteAddr.port} is closed`));
        return;
      }
      // The callback runs once the socket no longer needs `p`, so StreamTransport may then reuse it.
      this.#socket.write(p, (err?: Error | null) => (err ? reject(err) : resolve(p.length)));
    });
  }

  close(): void {
    this.#socket.destroy();
  }
}
