/**
 * Random valid packets (seeded): encode -> decode gives the same object, encodedLength is exact, and the
 * concatenated stream fed through PacketDecoder in random chunk sizes yields the same packets.
 */

import assert from "node:assert/strict";
import { decodePacket, PacketDecoder } from "../../src/mqtt/decode.ts";
import { encode, encodedLength } from "../../src/mqtt/encode.ts";
import type { Packet } from "../../src/mqtt/types.ts";
import { PacketGen, Rng } from "./gen.ts";

const COUNT = 3000;

for (const version of [3, 4, 5] as const) {
  Deno.test(`roundtrip level ${version}: ${COUNT} random packets encode -> decode -> deepEqual`, () => {
    const gen = new PacketGen(0x5eed + version);
    const seen = new Set<number>();
    for (let i = 0; i < COUNT; i++) {
      const p = gen.any(version);
      seen.add(p.type);
      const bytes = encode(p, version);
      assert.equal(encodedLength(p, version), bytes.length);
      assert.deepEqual(decodePacket(bytes, version), p, `packet #${i} type ${p.type}`);
    }
    assert.equal(seen.size, version === 5 ? 15 : 14);
  });

  Deno.test(`roundtrip level ${version}: the stream in random chunks yields the same packets`, () => {
    const gen = new PacketGen(0xc0ffee + version, { maxPayload: 400 });
    const rng = new Rng(version);
    const packets: Packet[] = [];
    const encoded: Uint8Array[] = [];
    let total = 0;
    for (let i = 0; i < COUNT; i++) {
      const p = gen.any(version);
      packets.push(p);
      const b = encode(p, version);
      encoded.push(b);
      total += b.length;
    }
    const stream = new Uint8Array(total);
    let at = 0;
    for (const b of encoded) {
      stream.set(b, at);
      at += b.length;
    }
    // Three passes: tiny chunks, medium chunks, large chunks (several packets per chunk).
    for (const maxChunk of [3, 64, 4096]) {
      const d = new PacketDecoder({ protocolVersion: version });
      const out: Packet[] = [];
      const reused = new Uint8Array(maxChunk);
      for (let pos = 0; pos < stream.length;) {
        const n = Math.min(rng.int(1, maxChunk), stream.length - pos);
        // Like a socket reader, the same buffer is refilled for every read.
        reused.set(stream.subarray(pos, pos + n));
        d.push(reused.subarray(0, n));
        for (let p = d.next(); p !== null; p = d.next()) out.push(p);
        reused.fill(0xa5);
        pos += n;
      }
      assert.equal(d.buffered, 0);
      assert.equal(out.length, packets.length, `chunks up to ${maxChunk}`);
      assert.deepEqual(out, packets, `chunks up to ${maxChunk}`);
    }
  });
}
