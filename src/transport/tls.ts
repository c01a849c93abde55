/** Placeholder until the TLS listener is written. */
import type { Logger } from "../log.ts";
import type { Transport } from "./connection.ts";
import type { ListenerSpec, OpenListener } from "./listeners.ts";

/** Opens a TLS listener. */
export function listenTls(spec: ListenerSpec, _on: (t: Transport) => void, _logger: Logger): Promise<OpenListener> {
  return Promise.reject(new Error(`${spec.type} listeners are not implemented yet`));
}
