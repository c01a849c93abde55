/** Placeholder until the WebSocket listener is written. */
import type { Logger } from "../log.ts";
import type { Transport } from "./connection.ts";
import type { ListenerSpec, OpenListener } from "./listeners.ts";

/** Opens a WebSocket listener. */
export function listenWebSocket(spec: ListenerSpec, _on: (t: Transport) => void, _logger: Logger): Promise<OpenListener> {
  return Promise.reject(new Error(`${spec.type} listeners are not implemented yet`));
}
