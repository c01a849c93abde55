// Placeholder: the lead engineer is writing the broker core here. Interface main.ts codes against:
import type { Config } from "../config/types.ts";
import type { Store } from "../store/store.ts";

/** Options for {@link Broker}. */
export interface BrokerOptions {
  config: Config;
  store: Store;
}

/** The MQTT broker: listeners, sessions, routing. */
export class Broker {
  constructor(readonly options: BrokerOptions) {}
  /** Restores state from the store and binds every listener. Rejects with a one-line message on failure. */
  start(): Promise<void> {
    return Promise.resolve();
  }
  /** Graceful shutdown: stop accepting, DISCONNECT 0x8B to MQTT 5 clients, close, flush the store. */
  stop(): Promise<void> {
    return Promise.resolve();
  }
}
