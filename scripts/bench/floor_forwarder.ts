/**
 * The runtime's floor, not a broker: the least a Deno program can do to pass QoS 0 messages on, for the
 * benchmark to show what part of a number is Deno and the machine, and what part is our broker.
 *
 * ```sh
 * deno run -A scripts/bench/floor_forwarder.ts --port 1884
 * ```
 *
 * It answers CONNECT, SUBSCRIBE (granting the QoS asked for, at most 1), PINGREQ and a QoS 1 PUBLISH (with
 * its PUBACK), and copies every PUBLISH, bytes unchanged, to each connection whose filter is that exact
 * topic, to every connection whose filter has a wildcard, whatever the topic, and to the next member, in
 * turn, of the one `$share/` group. That is enough for the fan-in, fan-out, latency, p2p, fanout_1k,
 * shared and conn scenarios, whose filters are either one exact topic or match every topic published.
 * No real topic matching, no sessions, no retries, no validation; the PUBACKs of subscribers are read
 * and dropped. Like the broker, it calls Deno's read op directly where it can (falling back to `conn.read()`),
 * into a 256-byte buffer per connection that doubles while reads fill it (up to 64 KiB), and writes each
 * connection once per microtask from an output buffer made on its first packet. MQTT 3.1.1 and 5.0 framing (both sides of a copy must use the same one).
 * Loopback only.
 *
 * @module
 */

import { parseArgs } from "node:util";

const CONNACK = new Uint8Array([0x20, 0x02, 0x00, 0x00]);
/** MQTT 5 CONNACK: no flags, success, no properties. */
const CONNACK5 = new Uint8Array([0x20, 0x03, 0x00, 0x00, 0x00]);
const PINGRESP = new Uint8Array([0xd0, 0x00]);
const EMPTY = new Uint8Array(0);
const SMALL_READ = 256;
const MAX_READ = 64 * 1024;

/** Deno's internal read op (what `conn.read()` wraps), when this Deno exposes it. */
const core = (() => {
  try {
    const deno = Deno as unknown as Record<symbol, { core?: DenoCore }> & { internal?: symbol };
    const found = deno.internal === undefined ? undefined : deno[deno.internal]?.core;
    return typeof found?.read === "function" && typeof found.internalRidSymbol === "symbol"
      ? found
      : undefined;
  } catch {
    return undefined;
  }
})();

interface DenoCore {
  read(rid: number, buffer: Uint8Array): Promise<number>;
  internalRidSymbol: symbol;
}

/** One connection's queued output, written once per microtask. */
class Output {
  #buf = EMPTY;
  #len = 0;
  #writing = false;
  #scheduled = false;

  constructor(readonly conn: Deno.Conn) {}

  push(bytes: Uint8Array): void {
    if (this.#len + bytes.length > this.#buf.length) {
      const grown = new Uint8Array(Math.max(this.#buf.length * 2, this.#len + bytes.length, 256));
      grown.set(this.#buf.subarray(0, this.#len));
      this.#buf = grown;
    }
    this.#buf.set(bytes, this.#len);
    this.#len += bytes.length;
    if (!this.#scheduled && !this.#writing) {
      this.#scheduled = true;
      queueMicrotask(() => this.#flush());
    }
  }

  async #flush(): Promise<void> {
    this.#scheduled = false;
    this.#writing = true;
    try {
      while (this.#len > 0) {
        const data = this.#buf.slice(0, this.#len);
        this.#len = 0;
        let off = 0;
        while (off < data.length) off += await this.conn.write(data.subarray(off));
      }
    } catch {
      // The peer went away; its reader ends the connection.
    } finally {
      this.#writing = false;
    }
  }
}

/** Connections with a wildcard filter: they get every PUBLISH. */
const everything = new Set<Output>();
/** Members of the one shared-subscription group, served in turn. */
const shared: Output[] = [];
let nextShared = 0;
/** Connections by the exact topic they subscribed to. */
const exact = new Map<string, Set<Output>>();
const utf8 = new TextDecoder();

function subscribe(out: Output, filter: string): void {
  if (filter.startsWith("$share/")) {
    shared.push(out);
    return;
  }
  if (filter.includes("#") || filter.includes("+")) {
    everything.add(out);
    return;
  }
  let set = exact.get(filter);
  if (set === undefined) exact.set(filter, set = new Set());
  set.add(out);
}

function unsubscribeAll(out: Output): void {
  everything.delete(out);
  const member = shared.indexOf(out);
  if (member >= 0) shared.splice(member, 1);
  for (const set of exact.values()) set.delete(out);
}

async function serve(conn: Deno.TcpConn): Promise<void> {
  conn.setNoDelay(true);
  const out = new Output(conn);
  const rid = core === undefined
    ? undefined
    : (conn as unknown as Record<symbol, number>)[core.internalRidSymbol];
  let readBuf = new Uint8Array(SMALL_READ);
  let pending = EMPTY;
  let v5 = false;
  try {
    while (true) {
      const n = rid === undefined ? await conn.read(readBuf) : await core!.read(rid, readBuf);
      if (n === null || n === 0) break;
      let data = readBuf.subarray(0, n);
      // A full read means a busy connection: read more at once from the next one on.
      if (n === readBuf.length && n < MAX_READ) readBuf = new Uint8Array(n * 2);
      if (pending.length > 0) {
        const joined = new Uint8Array(pending.length + n);
        joined.set(pending);
        joined.set(data, pending.length);
        data = joined;
      }
      let pos = 0;
      while (pos + 2 <= data.length) {
        // Fixed header: type byte, then the Remaining Length (1-4 bytes).
        let remaining = 0;
        let i = 1;
        let complete = false;
        for (let mult = 1; i <= 4 && pos + i < data.length; i++, mult *= 128) {
          remaining += (data[pos + i] & 0x7f) * mult;
          if ((data[pos + i] & 0x80) === 0) {
            complete = true;
            break;
          }
        }
        if (!complete) break;
        const end = pos + 1 + i + remaining;
        if (end > data.length) break;
        const type = data[pos] >> 4;
        const body = pos + 1 + i;
        if (type === 3) {
          const topicLength = (data[body] << 8) | data[body + 1];
          const packet = data.subarray(pos, end);
          for (const s of everything) s.push(packet);
          if (shared.length > 0) shared[nextShared++ % shared.length].push(packet);
          if (exact.size > 0) {
            const set = exact.get(utf8.decode(data.subarray(body + 2, body + 2 + topicLength)));
            if (set !== undefined) { for (const s of set) s.push(packet); }
          }
          if ((data[pos] & 0x06) === 0x02) {
            const id = body + 2 + topicLength;
            out.push(new Uint8Array([0x40, 0x02, data[id], data[id + 1]]));
          }
        } else if (type === 1) {
          // Protocol Name "MQTT" (2 + 4 bytes), then the Protocol Level.
          v5 = data[body + 6] === 5;
          out.push(v5 ? CONNACK5 : CONNACK);
        } else if (type === 8) {
          // One filter per SUBSCRIBE, as the load generator sends them; MQTT 5 puts properties (a
          // length and that many bytes) after the packet identifier.
          let at = body + 2;
          if (v5) {
            let propsLength = 0;
            for (let mult = 1;; mult *= 128) {
              const b = data[at++];
              propsLength += (b & 0x7f) * mult;
              if ((b & 0x80) === 0) break;
            }
            at += propsLength;
          }
          const filterLength = (data[at] << 8) | data[at + 1];
          const filter = utf8.decode(data.subarray(at + 2, at + 2 + filterLength));
          const qos = Math.min(1, data[at + 2 + filterLength] & 0x03);
          out.push(
            v5
              ? new Uint8Array([0x90, 0x04, data[body], data[body + 1], 0x00, qos])
              : new Uint8Array([0x90, 0x03, data[body], data[body + 1], qos]),
          );
          subscribe(out, filter);
        } else if (type === 12) {
          out.push(PINGRESP);
        } else if (type === 14) {
          pos = end;
          break;
        }
        pos = end;
      }
      pending = pos < data.length ? data.slice(pos) : EMPTY;
    }
  } catch {
    // Reset by the peer.
  } finally {
    unsubscribeAll(out);
    try {
      conn.close();
    } catch {
      // Already closed.
    }
  }
}

if (import.meta.main) {
  const { values } = parseArgs({ args: Deno.args, options: { port: { type: "string" } } });
  const port = Number(values.port);
  if (!Number.isInteger(port) || port <= 0) {
    console.error("usage: deno run -A scripts/bench/floor_forwarder.ts --port N");
    Deno.exit(2);
  }
  const listener = Deno.listen({ hostname: "127.0.0.1", port });
  for await (const conn of listener) serve(conn);
}
