/**
 * Aedes (the Node.js broker) on a TCP port, as a baseline for the comparison.
 *
 * ```sh
 * deno run -A scripts/bench/aedes_server.ts --port 18830 [--host 127.0.0.1]
 * ```
 *
 * Runs under Deno's Node compatibility (node:net), with Aedes' defaults: in-memory persistence,
 * concurrency 100. Prints one line `aedes listening on HOST:PORT` once bound and exits cleanly on
 * SIGTERM / SIGINT. Aedes speaks MQTT 3.1 / 3.1.1 only and has no shared subscriptions.
 *
 * @module
 */

import { parseArgs } from "node:util";
import { createServer, type Server } from "node:net";
import { Aedes } from "aedes";

/** A running Aedes broker and its TCP server. */
export interface AedesHandle {
  /** Port actually bound (useful with port 0). */
  port: number;
  /** Stops accepting, closes the broker. */
  close(): Promise<void>;
}

/** Starts Aedes on `host:port` (port 0 = any free port). */
export async function startAedes(host: string, port: number): Promise<AedesHandle> {
  const broker = await Aedes.createBroker();
  const server: Server = createServer(broker.handle);
  await new Promise<void>((resolve, reject) => {
    server.once("error", reject);
    server.listen(port, host, () => resolve());
  });
  const address = server.address();
  const bound = typeof address === "object" && address !== null ? address.port : port;
  return {
    port: bound,
    close: () =>
      new Promise<void>((resolve) => {
        server.close(() => broker.close(() => resolve()));
      }),
  };
}

async function main(): Promise<void> {
  const { values } = parseArgs({
    args: Deno.args,
    options: { port: { type: "string" }, host: { type: "string", default: "127.0.0.1" } },
  });
  const port = Number(values.port);
  if (values.port === undefined || !Number.isInteger(port) || port < 0 || port > 65535) {
    throw new Error(`--port must be an integer 0..65535, got "${values.port ?? ""}"`);
  }
  const handle = await startAedes(values.host!, port);
  console.log(`aedes listening on ${values.host}:${handle.port}`);
  const stop = () => {
    // Open client sockets would keep server.close() waiting; exit once the broker has been told.
    const timer = setTimeout(() => Deno.exit(0), 1000);
    handle.close().then(() => {
      clearTimeout(timer);
      Deno.exit(0);
    });
  };
  Deno.addSignalListener("SIGTERM", stop);
  Deno.addSignalListener("SIGINT", stop);
}

if (import.meta.main) await main();
