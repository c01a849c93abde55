/**
 * Hostile input: random bytes, truncated and bit-flipped valid packets, random chunk sizes. Decoding may only
 * fail with MqttError (never a TypeError / RangeError), and the streaming decoder never holds more than
 * maxPacketSize bytes.
 */

import assert from "node:assert/strict";
import { decodePacket, PacketDecoder } from "../../src/mqtt/decode.ts";
import { encode } from "../../src/mqtt/encode.ts";
import { MqttError } from "../../src/mqtt/errors.ts";
import type { ProtocolVersion } from "../../src/mqtt/types.ts";
import { PacketGen, Rng } from "./gen.ts";

const VERSIONS: readonly ProtocolVersion[] = [3, 4, 5];

/** Runs `fn`; returns the MqttError reason code, or -1 when it did not throw. Anything else fails the test. */
function onlyMqttError(fn: () => void, context: () => string): number {
  try {
    fn();
    return -1;
  } catch (e) {
    if (e instanceof MqttError) {
      assert.equal(typeof e.reasonCode, "number");
      // PacketDecoder wraps unexpected exceptions as a last defence; reaching that wrapper is still a bug.
      assert.ok(!e.message.startsWith("undecodable packet"), `${context()}: ${e.message}`);
      return e.reasonCode;
    }
    assert.fail(`${context()}: threw ${e instanceof Error ? e.stack : e}`);
  }
}

function hex(b: Uint8Array): string {
  return [...b].map((x) => x.toString(16).padStart(2, "0")).join(" ");
}

/** Feeds `bytes` in random chunks; checks the buffer bound after each step. Returns the packets decoded. */
function stream(bytes: Uint8Array, version: ProtocolVersion, rng: Rng, maxPacketSize: number): number {
  const d = new PacketDecoder({ protocolVersion: version, maxPacketSize });
  let packets = 0;
  onlyMqttError(() => {
    for (let pos = 0; pos < bytes.length;) {
      const n = Math.min(rng.int(1, 40), bytes.length - pos);
      d.push(bytes.slice(pos, pos + n));
      pos += n;
      while (d.next() !== null) packets++;
      assert.ok(d.buffered <= maxPacketSize, `buffered ${d.buffered} > maxPacketSize ${maxPacketSize}`);
    }
  }, () => `stream ${hex(bytes.subarray(0, 64))}`);
  return packets;
}

Deno.test("fuzz: random bytes only ever raise MqttError", () => {
  const rng = new Rng(1);
  const codes = new Set<number>();
  for (let i = 0; i < 20000; i++) {
    const bytes = rng.bytes(rng.int(0, 1) === 0 ? 8 : 60);
    // Bias the first byte toward real packet types so bodies get exercised, not just headers.
    if (bytes.length > 1 && rng.bool(0.7)) bytes[1] = bytes.length - 2;
    for (const v of VERSIONS) {
      codes.add(onlyMqttError(() => decodePacket(bytes, v), () => `v${v} ${hex(bytes)}`));
    }
  }
  // Both well-formed packets and several kinds of failure came out of random input.
  assert.ok(codes.has(-1) && codes.has(0x81) && codes.has(0x82), `codes seen: ${[...codes]}`);
});

Deno.test("fuzz: truncated valid packets fail with MqttError", () => {
  const gen = new PacketGen(2, { maxString: 6, maxPayload: 16 });
  for (let i = 0; i < 3000; i++) {
    const v = gen.rng.pick(VERSIONS);
    const bytes = encode(gen.any(v), v);
    for (let cut = 0; cut < bytes.length; cut++) {
      const part = bytes.subarray(0, cut);
      // The Remaining Length now announces more bytes than there are.
      const code = onlyMqttError(() => decodePacket(part, v), () => `v${v} cut ${cut} of ${hex(bytes)}`);
      assert.notEqual(code, -1, `v${v} truncated to ${cut} bytes decoded: ${hex(bytes)}`);
    }
  }
});

Deno.test("fuzz: truncated bodies with a corrected Remaining Length only raise MqttError", () => {
  const gen = new PacketGen(3, { maxString: 6, maxPayload: 16 });
  for (let i = 0; i < 3000; i++) {
    const v = gen.rng.pick(VERSIONS);
    const bytes = encode(gen.any(v), v);
    const headerLen = bytes[1] < 128 ? 2 : 3;
    for (let keep = 0; keep < bytes.length - headerLen; keep++) {
      if (keep >= 128) break;
      const part = new Uint8Array(2 + keep);
      part[0] = bytes[0];
      part[1] = keep;
      part.set(bytes.subarray(headerLen, headerLen + keep), 2);
      onlyMqttError(() => decodePacket(part, v), () => `v${v} body ${keep} of ${hex(bytes)}`);
    }
  }
});

Deno.test("fuzz: bit-flipped valid packets only raise MqttError", () => {
  const gen = new PacketGen(4, { maxString: 8, maxPayload: 32 });
  const rng = new Rng(44);
  let failures = 0, total = 0;
  for (let i = 0; i < 10000; i++) {
    const v = gen.rng.pick(VERSIONS);
    const bytes = encode(gen.any(v), v);
    const flips = rng.int(1, 3);
    for (let f = 0; f < flips; f++) {
      const at = rng.int(0, bytes.length - 1);
      bytes[at] ^= 1 << rng.int(0, 7);
    }
    total++;
    if (onlyMqttError(() => decodePacket(bytes, v), () => `v${v} ${hex(bytes)}`) !== -1) failures++;
  }
  // Most flips break something; some land in payloads and still decode.
  assert.ok(failures > total / 4 && failures < total, `${failures} of ${total} failed`);
});

Deno.test("fuzz: streams of valid, flipped and random bytes in random chunks", () => {
  const gen = new PacketGen(5, { maxString: 8, maxPayload: 300 });
  const rng = new Rng(55);
  let decoded = 0;
  for (let i = 0; i < 600; i++) {
    const v = gen.rng.pick(VERSIONS);
    const parts: Uint8Array[] = [];
    for (let k = rng.int(1, 8); k > 0; k--) parts.push(encode(gen.any(v), v));
    if (rng.bool(0.3)) parts.push(rng.bytes(50));
    const all = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
    let at = 0;
    for (const p of parts) {
      all.set(p, at);
      at += p.length;
    }
    if (rng.bool(0.5)) all[rng.int(0, all.length - 1)] ^= 1 << rng.int(0, 7);
    const maxPacketSize = rng.pick([16, 64, 200, 1000, 268435460]);
    decoded += stream(all, v, rng, maxPacketSize);
  }
  assert.ok(decoded > 500, `only ${decoded} packets decoded`);
});

Deno.test("fuzz: a huge announced Remaining Length is refused without buffering it", () => {
  const rng = new Rng(6);
  for (let i = 0; i < 2000; i++) {
    const max = rng.int(2, 5000);
    const d = new PacketDecoder({ maxPacketSize: max });
    // Type byte + 4-byte Remaining Length close to the maximum.
    d.push(new Uint8Array([0x30, 0xff, 0xff, 0xff, 0x7f, 0, 1, 0x61]));
    const code = onlyMqttError(() => d.next(), () => `max ${max}`);
    assert.equal(code, 0x95);
    assert.equal(d.buffered, 0);
  }
});
