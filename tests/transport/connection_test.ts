// StreamTransport over real loopback sockets, on both I/O paths: Deno's read and write ops called directly
// (a Deno.Conn, src/transport/deno_io.ts) and conn.read() / conn.write() (any other ByteConn, here a plain
// wrapper). Either way the bytes arrive whole and in order across the growing read buffer and through
// partial writes, the peer's close ends the iteration, and a local close ends a pending read.

import assert from "node:assert/strict";
import { type ByteConn, StreamTransport } from "../../src/transport/connection.ts";
import { directReadRid } from "../../src/transport/deno_io.ts";
import { delay } from "../helpers.ts";

/** A connected pair over 127.0.0.1: `server` as accepted by the listener, `client` as dialled. */
async function socketPair(): Promise<{ server: Deno.Conn; client: Deno.Conn }> {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  try {
    const dialled = Deno.connect({ hostname: "127.0.0.1", port: (listener.addr as Deno.NetAddr).port });
    const server = await listener.accept();
    return { server, client: await dialled };
  } finally {
    listener.close();
  }
}

/** A ByteConn that is not a Deno.Conn: the transport has to go through its read(). */
function wrapped(conn: Deno.Conn): ByteConn & { reads: number; writes: number } {
  const w = {
    reads: 0,
    writes: 0,
    remoteAddr: conn.remoteAddr,
    read(p: Uint8Array) {
      w.reads++;
      return conn.read(p);
    },
    write(p: Uint8Array) {
      w.writes++;
      return conn.write(p);
    },
    close: () => conn.close(),
  };
  return w;
}

/** Everything the transport yields until the end of the stream, failing after `ms`. */
async function readAll(transport: StreamTransport, ms = 5000): Promise<Uint8Array> {
  const parts: Uint8Array[] = [];
  let timer: ReturnType<typeof setTimeout> | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`stream did not end within ${ms} ms`)), ms);
  });
  const drain = (async () => {
    for await (const chunk of transport) parts.push(chunk.slice()); // a chunk is valid until the next read
  })();
  try {
    await Promise.race([drain, timeout]);
  } finally {
    clearTimeout(timer);
  }
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let at = 0;
  for (const p of parts) {
    out.set(p, at);
    at += p.length;
  }
  return out;
}

function pattern(n: number): Uint8Array {
  const bytes = new Uint8Array(n);
  for (let i = 0; i < n; i++) bytes[i] = (i * 31 + (i >> 8)) & 0xff;
  return bytes;
}

async function writeAll(conn: Deno.Conn, bytes: Uint8Array): Promise<void> {
  let off = 0;
  while (off < bytes.length) off += await conn.write(bytes.subarray(off));
}

Deno.test("transport: a Deno socket is read through its op directly, anything else through read()", async () => {
  const { server, client } = await socketPair();
  try {
    assert.ok(directReadRid(server) >= 0, "an accepted Deno.TcpConn has a resource id");
    assert.equal(directReadRid(wrapped(server)), -1);
    assert.equal(directReadRid({}), -1);
  } finally {
    server.close();
    client.close();
  }
});

for (const path of ["direct ops", "conn methods"] as const) {
  Deno.test(`transport (${path}): 300 KiB arrive whole and in order, and the peer's close ends the stream`, async () => {
    const { server, client } = await socketPair();
    const conn = path === "direct ops" ? server : wrapped(server);
    const transport = new StreamTransport(conn);
    const sent = pattern(300 * 1024);
    try {
      const received = readAll(transport);
      // Small pieces first (the 128-byte first buffer), then big ones (it grows to 64 KiB).
      await writeAll(client, sent.subarray(0, 10));
      await writeAll(client, sent.subarray(10, 200));
      await writeAll(client, sent.subarray(200));
      client.close();
      const got = await received;
      assert.equal(got.length, sent.length);
      assert.deepEqual(got, sent);
      if (path === "conn methods") assert.ok((conn as { reads: number }).reads > 1);
    } finally {
      transport.close(0);
    }
  });

  Deno.test(`transport (${path}): 4 MiB written to a slow reader arrive whole and in order`, async () => {
    const { server, client } = await socketPair();
    const conn = path === "direct ops" ? server : wrapped(server);
    const transport = new StreamTransport(conn);
    // More than the socket buffers hold: writes complete in part and wait for the peer to read.
    const sent = pattern(4 * 1024 * 1024);
    try {
      for (let at = 0; at < sent.length; at += 1000) transport.write(sent.subarray(at, at + 1000));
      const got = new Uint8Array(sent.length);
      let have = 0;
      const buf = new Uint8Array(16 * 1024);
      while (have < sent.length) {
        const n = await client.read(buf);
        if (n === null) break;
        got.set(buf.subarray(0, n), have);
        have += n;
        if (have < 256 * 1024) await delay(1); // slow at first, so the transport's writes back up
      }
      assert.equal(have, sent.length);
      assert.deepEqual(got, sent);
      assert.equal(transport.pendingBytes, 0);
      if (path === "conn methods") assert.ok((conn as { writes: number }).writes > 0);
    } finally {
      transport.close(0);
      client.close();
    }
  });

  Deno.test(`transport (${path}): closing it locally ends a pending read`, async () => {
    const { server, client } = await socketPair();
    const transport = new StreamTransport(path === "direct ops" ? server : wrapped(server));
    try {
      const received = readAll(transport);
      await writeAll(client, new Uint8Array([1, 2, 3]));
      await delay(50); // the next read is pending now
      transport.close(0);
      assert.deepEqual(await received, new Uint8Array([1, 2, 3]));
      assert.equal(transport.closed, true);
    } finally {
      client.close();
    }
  });
}

Deno.test("transport: connections that share a slab of first-read buffers keep their bytes apart", async () => {
  // 150 connections: more than one slab's 128 slots. Every peer sends its own bytes in small pieces,
  // interleaved with the others, and one of them also bursts (its buffer grows) and calms down again (it
  // reads into its slab slot once more) while the rest keep sending.
  const count = 150;
  const pairs = await Promise.all(Array.from({ length: count }, () => socketPair()));
  const transports = pairs.map((p) => new StreamTransport(p.server));
  const expected = pairs.map((_, i) => {
    const bytes = new Uint8Array(i === 0 ? 3 * 100 + 200_000 + 3 * 100 : 3 * 100);
    for (let j = 0; j < bytes.length; j++) bytes[j] = (i * 7 + j) & 0xff;
    return bytes;
  });
  try {
    const received = transports.map((t) => readAll(t, 10_000));
    const sentUpTo = new Array(count).fill(0);
    const send = async (i: number, n: number) => {
      await writeAll(pairs[i].client, expected[i].subarray(sentUpTo[i], sentUpTo[i] + n));
      sentUpTo[i] += n;
    };
    for (let round = 0; round < 3; round++) {
      for (let i = 0; i < count; i++) await send(i, 100);
      await delay(20); // each piece is read on its own, into the connection's first-read buffer
    }
    await send(0, 200_000);
    await delay(50);
    for (let round = 0; round < 3; round++) {
      await send(0, 100);
      await delay(20); // small reads again: back to its slot of the slab
    }
    for (const p of pairs) p.client.close();
    const got = await Promise.all(received);
    for (let i = 0; i < count; i++) assert.deepEqual(got[i], expected[i], `connection ${i}`);
  } finally {
    for (const t of transports) t.close(0);
  }
});

Deno.test("transport: output buffers that share a slab keep their bytes apart as they grow", async () => {
  // 40 connections written to in turn within one tick, in pieces of 1-300 bytes: each output buffer starts
  // as a claim on the shared slab, grows into bigger claims (copying what it holds) and then into an array of
  // its own, while the others claim the slab after it. A second burst, after the first was written, starts
  // from the spare array or a new claim. Every peer must get exactly its own bytes, in order.
  const count = 40;
  const pairs = await Promise.all(Array.from({ length: count }, () => socketPair()));
  const transports = pairs.map((p) => new StreamTransport(p.server));
  const perBurst = 6000;
  const expected = pairs.map((_, i) => {
    const bytes = new Uint8Array(2 * perBurst);
    for (let j = 0; j < bytes.length; j++) bytes[j] = (i * 13 + j * 7 + (j >> 9)) & 0xff;
    return bytes;
  });
  const burst = (from: number) => {
    const at = new Array(count).fill(from);
    for (let step = 0; at.some((a) => a < from + perBurst); step++) {
      for (let i = 0; i < count; i++) {
        const n = Math.min(1 + ((step * 37 + i * 11) % 300), from + perBurst - at[i]);
        if (n <= 0) continue;
        transports[i].write(expected[i].subarray(at[i], at[i] + n));
        at[i] += n;
      }
    }
  };
  const readExactly = async (conn: Deno.Conn, n: number) => {
    const got = new Uint8Array(n);
    let have = 0;
    while (have < n) {
      const read = await conn.read(got.subarray(have));
      if (read === null) break;
      have += read;
    }
    return got.subarray(0, have);
  };
  try {
    burst(0);
    const first = await Promise.all(pairs.map((p) => readExactly(p.client, perBurst)));
    burst(perBurst);
    const second = await Promise.all(pairs.map((p) => readExactly(p.client, perBurst)));
    for (let i = 0; i < count; i++) {
      assert.deepEqual(first[i], expected[i].subarray(0, perBurst), `connection ${i}, first burst`);
      assert.deepEqual(second[i], expected[i].subarray(perBurst), `connection ${i}, second burst`);
    }
  } finally {
    for (const t of transports) t.close(0);
    for (const p of pairs) p.client.close();
  }
});
