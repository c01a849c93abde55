/**
 * The shape of the broker configuration after loading and validation. Defaults and validation live in
 * `schema.ts` (one place for each fact); `config/config.yaml` documents every key.
 *
 * @module
 */

/** Log verbosity. */
export type LogLevel = "debug" | "info" | "warn" | "error";

/** One extra listener (issue: security and transports). The main TCP listener is `server.host/port`. */
export interface ListenerConfig {
  /** mqtt = TCP, mqtts = TLS, ws = WebSocket, wss = WebSocket over TLS. */
  type: "mqtt" | "mqtts" | "ws" | "wss";
  host: string;
  port: number;
  /** PEM files for mqtts / wss. */
  cert_file?: string;
  key_file?: string;
  /** CA bundle; when set with require_client_cert, client certificates are verified against it. */
  ca_file?: string;
  require_client_cert?: boolean;
  /** Use the client certificate's CN as the username (mutual TLS). */
  use_cn_as_username?: boolean;
  /** WebSocket path, default "/mqtt". */
  path?: string;
}

/** The whole configuration. Key names are the YAML keys. */
export interface Config {
  server: {
    host: string;
    port: number;
    /**
     * When true, sessions (and their queued / in-flight messages) found in the store at start-up are
     * discarded, as an administrator action allowed by MQTT 5 §4.1; retained messages are kept.
     */
    clean_session_default: boolean;
    max_clients: number;
    /** Seconds a new connection has to send CONNECT. */
    connect_timeout: number;
    /** Largest MQTT packet accepted or sent, bytes. */
    max_message_size: number;
    /** Outbound QoS 1/2 messages in flight per client (and our Receive Maximum inbound). */
    max_inflight: number;
    /** Messages queued per session beyond the in-flight window. */
    max_queued_messages: number;
    /** Bytes of payload queued per session. */
    max_queued_bytes: number;
    /** Bytes of unsent output a connection may hold before QoS 0 is dropped and then it is closed. */
    max_output_buffer: number;
    /** Largest keep-alive accepted, seconds: MQTT 5 clients asking more get Server Keep Alive, 3.x ones are refused. */
    max_keepalive: number;
    /** Topic Alias Maximum we accept from clients (MQTT 5). 0 disables. */
    topic_alias_maximum: number;
    /** Upper bound on Session Expiry Interval, seconds. */
    max_session_expiry: number;
  };
  listeners: ListenerConfig[];
  qos: {
    max_qos: 0 | 1 | 2;
  };
  retained: {
    enabled: boolean;
    /** Retained messages kept at most. */
    max_messages: number;
  };
  storage: {
    backend: "kv" | "memory";
    path: string;
  };
  metrics: {
    enabled: boolean;
    /** Defaults to server.host. */
    host: string;
    port: number;
  };
  log: {
    level: LogLevel;
    format: "text" | "json";
  };
  sys: {
    /** Seconds between $SYS publications; 0 disables. */
    interval: number;
  };
  auth: {
    allow_anonymous: boolean;
    /** Path to a password file (see `main.ts passwd`); empty = none. */
    password_file: string;
    /** Path to an ACL file; empty = every client may do everything. */
    acl_file: string;
  };
}
