/**
 * The runtime's floor, not a broker: the least a Deno program can do to pass QoS 0 messages on, for the
 * benchmark to show what part of a number is Deno and the machine, and what part is our broker.
 *
 * ```sh
 * deno run -A scripts/bench/floor_forwarder.ts --port 1884
 * ```
 *
 * It answers CONNECT, SUBSCRIBE (granting QoS 0) and PINGREQ, and copies every PUBLISH to every connection
 * that subscribed to anything, whatever the topic: enough for the fan-in, fan-out and latency scenarios,
 * whose subscriptions match every topic published. No topic matching, no sessions, no QoS 1/2, no
 * validation. It reads with `conn.read()` into a reused buffer and writes each connection once per
 * microtask, like the broker. Loopback only.
 *
 * @module
 */

import { parseArgs } from "node:util";

const CONNACK = new Uint8Array([0x20, 0x02, 0x00, 0x00]);
const PINGRESP = new Uint8Array([0xd0, 0x00]);

/** One connection's queued output, written once per microtask. */
class Output {
  #buf = new Uint8Array(4096);
  #len = 0;
  #writing = false;
  #scheduled = false;

  constructor(readonly conn: Deno.Conn) {}

  push(bytes: Uint8Array): void {
    if (this.#len + bytes.length > this.#buf.length) {
      const grown = new Uint8Array(Math.max(this.#buf.length * 2, this.#len + bytes.length));
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

const subscribers = new Set<Output>();

async function serve(conn: Deno.TcpConn): Promise<void> {
  conn.setNoDelay(true);
  const out = new Output(conn);
  const readBuf = new Uint8Array(64 * 1024);
  let pending = new Uint8Array(0);
  try {
    while (true) {
      const n = await conn.read(readBuf);
      if (n === null) break;
      let data = readBuf.subarray(0, n);
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
        if (type === 3) {
          const copy = data.slice(pos, end);
          for (const s of subscribers) s.push(copy);
        } else if (type === 1) {
          out.push(CONNACK);
        } else if (type === 8) {
          const id = pos + 1 + i;
          out.push(new Uint8Array([0x90, 0x03, data[id], data[id + 1], 0x00]));
          subscribers.add(out);
        } else if (type === 12) {
          out.push(PINGRESP);
        } else if (type === 14) {
          pos = end;
          break;
        }
        pos = end;
      }
      pending = pos < data.length ? data.slice(pos) : new Uint8Array(0);
    }
  } catch {
    // Reset by the peer.
  } finally {
    subscribers.delete(out);
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
