/**
 * Reads the broker's monitoring endpoint the way Prometheus does: over HTTP, then parses the text
 * exposition format into samples keyed by name and labels.
 *
 * @module
 */

/** One scrape of `/metrics`. */
export interface Scrape {
  status: number;
  contentType: string | null;
  /** The raw body. */
  text: string;
  /** Sample values keyed as written, e.g. `mqtt_clients_connected` or `mqtt_messages_sent_total{type="publish"}`. */
  samples: Map<string, number>;
}

/** Parses the sample lines of a Prometheus text body; throws on a line that is neither comment nor sample. */
export function parseSamples(text: string): Map<string, number> {
  const samples = new Map<string, number>();
  for (const line of text.split("\n")) {
    if (line === "" || line.startsWith("#")) continue;
    const m = line.match(/^([a-zA-Z_:][a-zA-Z0-9_:]*(?:\{[^}]*\})?) (\S+)$/);
    if (m === null) throw new Error(`not a sample line: ${JSON.stringify(line)}`);
    const value = m[2] === "+Inf" ? Infinity : m[2] === "-Inf" ? -Infinity : Number(m[2]);
    if (Number.isNaN(value) && m[2] !== "NaN") throw new Error(`bad sample value in ${JSON.stringify(line)}`);
    if (samples.has(m[1])) throw new Error(`sample ${m[1]} written twice`);
    samples.set(m[1], value);
  }
  return samples;
}

/** GETs `http://127.0.0.1:port/metrics` and parses it. */
export async function scrape(port: number): Promise<Scrape> {
  const res = await fetch(`http://127.0.0.1:${port}/metrics`);
  const text = await res.text();
  return {
    status: res.status,
    contentType: res.headers.get("content-type"),
    text,
    samples: parseSamples(text),
  };
}

/** GETs a path of the monitoring server and returns status and body. */
export async function get(port: number, path: string): Promise<{ status: number; body: string }> {
  const res = await fetch(`http://127.0.0.1:${port}${path}`);
  return { status: res.status, body: await res.text() };
}

/** The value of one sample; throws (naming it) when the scrape does not have it. */
export function sample(s: Scrape, key: string): number {
  const v = s.samples.get(key);
  if (v === undefined) throw new Error(`no sample ${key} in /metrics`);
  return v;
}
