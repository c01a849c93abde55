/**
 * A fixed-memory latency histogram for the load generator.
 *
 * Recording millions of samples per second into an array would cost memory and GC time on the very
 * core that generates the load, so values are counted in log-linear buckets instead: every power of two
 * is split into {@link SUB_BUCKETS} equal slots, which bounds the relative error of a percentile to
 * 1 / SUB_BUCKETS (about 1.6 %) at any magnitude, from 1 µs to hours.
 *
 * @module
 */

/** Slots per power of two; 64 keeps the relative error of a reported percentile under 1.6 %. */
export const SUB_BUCKETS = 64;
const SUB_BITS = 6;
/** Powers of two covered: values up to 2^40 µs (about 12 days) before clamping. */
const MAGNITUDES = 40;

/** Counts non-negative integer samples (microseconds) and answers percentile queries. */
export class LatencyHistogram {
  readonly #counts = new Float64Array((MAGNITUDES + 1) * SUB_BUCKETS);
  #total = 0;
  #max = 0;
  #min = Number.POSITIVE_INFINITY;
  #sum = 0;

  /** Number of samples recorded. */
  get count(): number {
    return this.#total;
  }

  /** Largest sample recorded, exact (0 when empty). */
  get max(): number {
    return this.#total === 0 ? 0 : this.#max;
  }

  /** Smallest sample recorded, exact (0 when empty). */
  get min(): number {
    return this.#total === 0 ? 0 : this.#min;
  }

  /** Arithmetic mean of the samples, exact (0 when empty). */
  get mean(): number {
    return this.#total === 0 ? 0 : this.#sum / this.#total;
  }

  /** Records one sample; negative values (clock noise) count as 0, fractions are truncated. */
  record(valueUs: number): void {
    const v = valueUs > 0 ? Math.floor(valueUs) : 0;
    this.#counts[bucketOf(v)]++;
    this.#total++;
    this.#sum += v;
    if (v > this.#max) this.#max = v;
    if (v < this.#min) this.#min = v;
  }

  /** Adds every sample of `other` to this histogram. */
  merge(other: LatencyHistogram): void {
    if (other.#total === 0) return;
    for (let i = 0; i < this.#counts.length; i++) this.#counts[i] += other.#counts[i];
    this.#total += other.#total;
    this.#sum += other.#sum;
    if (other.#max > this.#max) this.#max = other.#max;
    if (other.#min < this.#min) this.#min = other.#min;
  }

  /**
   * The value below which `p` percent of the samples fall (`p` in 0..100), as the upper edge of the
   * bucket that holds that rank, clamped to the exact maximum. Returns null when there are no samples.
   */
  percentile(p: number): number | null {
    if (!(p >= 0 && p <= 100)) throw new RangeError(`percentile must be within 0..100, got ${p}`);
    if (this.#total === 0) return null;
    const rank = Math.max(1, Math.ceil((p / 100) * this.#total));
    let seen = 0;
    for (let i = 0; i < this.#counts.length; i++) {
      seen += this.#counts[i];
      if (seen >= rank) return Math.min(upperEdgeOf(i), this.#max);
    }
    return this.#max;
  }
}

/** Bucket index of a non-negative integer: exact below SUB_BUCKETS, log-linear above. */
function bucketOf(v: number): number {
  if (v < SUB_BUCKETS) return v;
  // Magnitude m >= 1 covers [SUB_BUCKETS * 2^(m-1), SUB_BUCKETS * 2^m) in SUB_BUCKETS slots of width
  // 2^(m-1); index m * SUB_BUCKETS + slot continues the exact region 0..SUB_BUCKETS-1 without gaps.
  let top = Math.floor(Math.log2(v));
  if (2 ** top > v) top--; // guard against log2 rounding up just below a power of two
  const m = top - SUB_BITS + 1;
  if (m > MAGNITUDES) return (MAGNITUDES + 1) * SUB_BUCKETS - 1;
  const slot = Math.floor(v / 2 ** (m - 1)) - SUB_BUCKETS;
  return m * SUB_BUCKETS + slot;
}

/** Largest integer that maps to bucket `i` (the inverse of {@link bucketOf}). */
function upperEdgeOf(i: number): number {
  if (i < SUB_BUCKETS) return i;
  const m = Math.floor(i / SUB_BUCKETS);
  const slot = i % SUB_BUCKETS;
  return (SUB_BUCKETS + slot + 1) * 2 ** (m - 1) - 1;
}
