/**
 * Codec micro-benchmark: decode and encode of a PUBLISH with a 16-byte payload (3.1.1 and 5.0), and a
 * stream of 1000 concatenated PUBLISH packets through PacketDecoder.
 *
 * Run: deno bench -A scripts/bench/codec_bench.ts
 *
 * @module
 */

import { decodePacket, PacketDecoder } from "../../src/mqtt/decode.ts";
import { encode, encodePublish } from "../../src/mqtt/encode.ts";
import type { Packet, PublishPacket } from "../../src/mqtt/types.ts";

const publish: PublishPacket = {
  type: 3,
  topic: "sensors/room-1/temp",
  payload: new Uint8Array(16).fill(0x42),
  qos: 1,
  retain: false,
  dup: false,
  packetId: 42,
};
const publishWithProps: PublishPacket = {
  ...publish,
  properties: { messageExpiryInterval: 60, userProperties: [["unit", "celsius"]] },
};

const bytes4 = encode(publish, 4);
const bytes5 = encode(publish, 5);
const bytes5Props = encode(publishWithProps, 5);

const STREAM_PACKETS = 1000;
function concat(one: Uint8Array, n: number): Uint8Array {
  const out = new Uint8Array(one.length * n);
  for (let i = 0; i < n; i++) out.set(one, i * one.length);
  return out;
}
const stream4 = concat(bytes4, STREAM_PACKETS);
const stream5 = concat(bytes5, STREAM_PACKETS);

// Keeps results alive so the JIT cannot drop the work.
let _sink: Packet | Uint8Array | number | null = null;

Deno.bench("decode PUBLISH 16 B payload, 3.1.1", { group: "decode", baseline: true }, () => {
  _sink = decodePacket(bytes4, 4);
});
Deno.bench("decode PUBLISH 16 B payload, 5.0 (no properties)", { group: "decode" }, () => {
  _sink = decodePacket(bytes5, 5);
});
Deno.bench("decode PUBLISH 16 B payload, 5.0 (2 properties)", { group: "decode" }, () => {
  _sink = decodePacket(bytes5Props, 5);
});

Deno.bench("encode PUBLISH 16 B payload, 3.1.1", { group: "encode", baseline: true }, () => {
  _sink = encodePublish(publish, 4);
});
Deno.bench("encode PUBLISH 16 B payload, 5.0 (no properties)", { group: "encode" }, () => {
  _sink = encodePublish(publish, 5);
});
Deno.bench("encode PUBLISH 16 B payload, 5.0 (2 properties)", { group: "encode" }, () => {
  _sink = encodePublish(publishWithProps, 5);
});

function drain(stream: Uint8Array, version: 4 | 5, chunk: number): number {
  const d = new PacketDecoder({ protocolVersion: version });
  let n = 0;
  for (let pos = 0; pos < stream.length; pos += chunk) {
    d.push(stream.subarray(pos, pos + chunk));
    while (d.next() !== null) n++;
  }
  if (n !== STREAM_PACKETS) throw new Error(`decoded ${n} packets, expected ${STREAM_PACKETS}`);
  return n;
}

Deno.bench("stream 1000 PUBLISH, 3.1.1, one 41 KB chunk", { group: "stream", baseline: true }, () => {
  _sink = drain(stream4, 4, stream4.length);
});
Deno.bench("stream 1000 PUBLISH, 5.0, one 42 KB chunk", { group: "stream" }, () => {
  _sink = drain(stream5, 5, stream5.length);
});
Deno.bench("stream 1000 PUBLISH, 3.1.1, 1460-byte chunks (TCP segments)", { group: "stream" }, () => {
  _sink = drain(stream4, 4, 1460);
});
Deno.bench("stream 1000 PUBLISH, 3.1.1, 100-byte chunks", { group: "stream" }, () => {
  _sink = drain(stream4, 4, 100);
});
