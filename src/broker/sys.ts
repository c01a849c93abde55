/**
 * `$SYS/broker/...` topics like Mosquitto's: version, uptime, clients, messages and bytes, subscriptions,
 * retained count. Published retained every `sys.interval` seconds (kept in memory only, never stored).
 * Clients cannot publish to `$SYS` (refused in `publish.ts`).
 *
 * @module
 */

import denoJson from "../../deno.json" with { type: "json" };
import type { Broker } from "./broker.ts";

const encoder = new TextEncoder();

/** Publishes the $SYS tree of one broker. */
export class SysPublisher {
  #last = new Map<string, string>();
  constructor(readonly broker: Broker) {}

  /** Publishes every value that changed since the last call. */
  publish(): void {
    const b = this.broker;
    const m = b.metrics;
    const g = b.gauges();
    const values: [string, string | number][] = [
      ["version", `deno-mqtt ${denoJson.version}`],
      ["uptime", `${Math.floor((Date.now() - m.startedAt) / 1000)} seconds`],
      ["clients/connected", g.clientsConnected()],
      ["clients/total", g.sessions()],
      ["clients/maximum", b.config.server.max_clients],
      ["messages/received", m.publishReceived],
      ["messages/sent", m.publishSent],
      ["messages/inflight", g.inflightMessages()],
      ["messages/queued", g.queuedMessages()],
      ["messages/dropped", Object.values(m.dropped).reduce((a, n) => a + n, 0)],
      ["bytes/received", m.bytesReceived],
      ["bytes/sent", m.bytesSent],
      ["subscriptions/count", g.subscriptions()],
      ["retained messages/count", g.retainedMessages()],
      ["connections/total", m.connectionsTotal],
    ];
    for (const [name, value] of values) {
      const text = String(value);
      const topic = `$SYS/broker/${name}`;
      if (this.#last.get(topic) === text) continue;
      this.#last.set(topic, text);
      b.publishInternal(topic, encoder.encode(text), true);
    }
  }
}
