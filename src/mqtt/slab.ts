/**
 * Small byte arrays carved out of shared 16 KiB slabs.
 *
 * Creating a typed array costs about 1-2 µs in Deno (an ArrayBuffer per call), while a view into an
 * existing buffer costs ~30 ns. The codec copies every PUBLISH payload and encodes every outgoing PUBLISH,
 * so small ones take their bytes from a slab instead. A slab is never reused: it is freed by the garbage
 * collector once no view into it is left. Whoever keeps a slab view for a long time (a retained message)
 * should copy it with {@link ownCopy} so one small message does not pin 16 KiB.
 *
 * @module
 */

const SLAB_SIZE = 16 * 1024;
/** Up to this many bytes a loop copies faster than making a source view for `set` (~60 ns per view). */
const SHORT_COPY = 64;
/** Larger requests get their own buffer. */
export const MAX_SLAB_ALLOCATION = 2048;

let slab = new Uint8Array(SLAB_SIZE);
let used = 0;

/** `n` bytes (contents unspecified, callers overwrite them all). */
export function slabAlloc(n: number): Uint8Array {
  if (n > MAX_SLAB_ALLOCATION) return new Uint8Array(n);
  if (used + n > SLAB_SIZE) {
    slab = new Uint8Array(SLAB_SIZE);
    used = 0;
  }
  const out = slab.subarray(used, used + n);
  used += n;
  return out;
}

/**
 * Claims `n` bytes (at most {@link MAX_SLAB_ALLOCATION}) of the current slab without making a view of them:
 * they are `currentSlab()[at, at + n)`, `at` being the return value. Ask for `currentSlab()` after the claim,
 * which may have started a new slab. For a buffer that is written and then viewed once (an output buffer).
 */
export function slabClaim(n: number): number {
  if (used + n > SLAB_SIZE) {
    slab = new Uint8Array(SLAB_SIZE);
    used = 0;
  }
  const at = used;
  used += n;
  return at;
}

/** The slab that {@link slabClaim} claims from. */
export function currentSlab(): Uint8Array {
  return slab;
}

/** A copy of `src[start, end)` that does not alias `src`. */
export function slabCopy(src: Uint8Array, start: number, end: number): Uint8Array {
  const n = end - start;
  const out = slabAlloc(n);
  if (n <= SHORT_COPY) {
    for (let i = 0; i < n; i++) out[i] = src[start + i];
  } else {
    out.set(src.subarray(start, end));
  }
  return out;
}

/** Bytes of a buffer that {@link ownsBuffer} lets a view leave unused (a PUBLISH header before a payload). */
const OWN_SLACK = 256;

/**
 * True when `src` is (nearly) all of its ArrayBuffer: keeping it pins no slab and no other message's bytes.
 * A payload that is a view into its own whole-PUBLISH copy qualifies (only the header is spare); a view
 * into a slab never does (a slab is 16 KiB, its allocations at most 2 KiB).
 */
export function ownsBuffer(src: Uint8Array): boolean {
  return src.buffer.byteLength - src.byteLength <= OWN_SLACK;
}

/** A copy in a buffer of its own (for bytes kept long, so they do not pin a slab). */
export function ownCopy(src: Uint8Array): Uint8Array {
  return ownsBuffer(src) ? src : src.slice();
}
