/**
 * The configuration schema: every key with its type, default, allowed values and command-line alias.
 * This table is the one place for those facts; `load.ts` validates against it, `cli.ts` derives the
 * flags and `--help` from it, and tests check that `config/config.yaml` and README.md agree with it.
 *
 * @module
 */

import type { Config, ListenerConfig } from "./types.ts";

/** What every key description has. */
interface BaseSpec {
  /** One-line description, shown by `--help`. */
  doc: string;
  /** A short command-line alias besides `--section.key`, e.g. `--port`. */
  alias?: string;
}

/** An integer key with an inclusive range. */
export interface IntegerSpec<T extends number = number> extends BaseSpec {
  kind: "integer";
  default: T;
  min: number;
  max: number;
}

/** A boolean key (YAML `true` / `false`, flags `true` / `false`). */
export interface BooleanSpec extends BaseSpec {
  kind: "boolean";
  default: boolean;
}

/** A free string key. */
export interface StringSpec extends BaseSpec {
  kind: "string";
  default: string;
  /** When true, "" is rejected. */
  nonEmpty?: boolean;
}

/** A string key restricted to a list of values. */
export interface EnumSpec<T extends string = string> extends BaseSpec {
  kind: "enum";
  default: T;
  values: readonly T[];
}

/** Any key description. */
export type AnySpec = IntegerSpec | BooleanSpec | StringSpec | EnumSpec;

/**
 * The spec type that fits a value type: boolean -> BooleanSpec, number (or a union of number literals)
 * -> IntegerSpec, string -> StringSpec, a union of string literals -> EnumSpec. The tuple wrapping stops
 * TypeScript from distributing over unions such as `"kv" | "memory"`.
 */
export type SpecFor<T> = [T] extends [boolean] ? BooleanSpec
  : [T] extends [number] ? IntegerSpec<T>
  : [T] extends [string] ? (string extends T ? StringSpec : EnumSpec<T>)
  : never;

/** Sections of the config that are plain key/value mappings (everything but `listeners`). */
export type SectionName = Exclude<keyof Config, "listeners">;

/** The shape of {@link SCHEMA}: exactly one spec per key of {@link Config}, checked by the compiler. */
export type ConfigSchema = { [S in SectionName]: { [K in keyof Config[S]]-?: SpecFor<Config[S][K]> } };

/** A listener field spec; `required` fields have no default. */
export type ListenerFieldSpec<T> = SpecFor<T> & { required?: boolean };

/** The shape of {@link LISTENER_SCHEMA}: one spec per key of {@link ListenerConfig}. */
export type ListenerSchema = {
  [K in keyof ListenerConfig]-?: ListenerFieldSpec<NonNullable<ListenerConfig[K]>>;
};

const UINT32_MAX = 4294967295;
const INT32_MAX = 2147483647;

/** Every key of every mapping section. */
export const SCHEMA: ConfigSchema = {
  server: {
    host: {
      kind: "string",
      default: "127.0.0.1",
      nonEmpty: true,
      alias: "--host",
      doc: "address of the main MQTT (TCP) listener",
    },
    port: {
      kind: "integer",
      default: 1883,
      min: 0,
      max: 65535,
      alias: "--port",
      doc: "port of the main MQTT (TCP) listener; 0 picks a free port",
    },
    clean_session_default: {
      kind: "boolean",
      default: false,
      doc: "discard sessions found in the store at start-up (retained messages are kept)",
    },
    max_clients: {
      kind: "integer",
      default: 1000,
      min: 1,
      max: INT32_MAX,
      doc: "connections accepted at once; more are refused",
    },
    connect_timeout: {
      kind: "integer",
      default: 10,
      min: 1,
      max: 3600,
      doc: "seconds a new connection has to send CONNECT",
    },
    max_message_size: {
      kind: "integer",
      default: 262144,
      // 268,435,455 is the largest Remaining Length (§2.2.3) plus at most 5 bytes of fixed header.
      min: 16,
      max: 268435460,
      doc: "largest MQTT packet accepted or sent, bytes",
    },
    max_inflight: {
      kind: "integer",
      default: 100,
      // Receive Maximum is a two-byte integer and 0 is a protocol error (§3.2.2.3.3).
      min: 1,
      max: 65535,
      doc: "outbound QoS 1/2 messages in flight per client (and the Receive Maximum we announce)",
    },
    max_queued_messages: {
      kind: "integer",
      default: 1000,
      min: 0,
      max: INT32_MAX,
      doc: "messages queued per session beyond the in-flight window; 0 = no limit (as in Mosquitto)",
    },
    max_queued_bytes: {
      kind: "integer",
      default: 16777216,
      min: 0,
      max: Number.MAX_SAFE_INTEGER,
      doc: "payload bytes queued per session; 0 = no limit",
    },
    max_output_buffer: {
      kind: "integer",
      default: 4194304,
      min: 1024,
      max: Number.MAX_SAFE_INTEGER,
      doc: "unsent output bytes per connection before QoS 0 is dropped, then the connection closed",
    },
    max_keepalive: {
      kind: "integer",
      default: 65535,
      // Keep Alive is a two-byte integer (§3.1.2.10).
      min: 1,
      max: 65535,
      doc: "largest keep-alive accepted, seconds (MQTT 5 clients asking more are told it, 3.x ones refused)",
    },
    topic_alias_maximum: {
      kind: "integer",
      default: 1024,
      // Topic Alias Maximum is a two-byte integer (§3.2.2.3.8).
      min: 0,
      max: 65535,
      doc: "Topic Alias Maximum accepted from MQTT 5 clients; 0 disables topic aliases",
    },
    max_session_expiry: {
      kind: "integer",
      default: UINT32_MAX,
      // Session Expiry Interval is a four-byte integer (§3.1.2.11.2).
      min: 0,
      max: UINT32_MAX,
      doc:
        "upper bound on Session Expiry Interval, seconds; also the lifetime of offline 3.x persistent sessions",
    },
  },
  qos: {
    max_qos: {
      kind: "integer",
      default: 1,
      min: 0,
      max: 2,
      alias: "--max-qos",
      doc: "highest QoS granted to subscriptions and accepted on PUBLISH",
    },
  },
  retained: {
    enabled: { kind: "boolean", default: true, doc: "keep retained messages" },
    max_messages: {
      kind: "integer",
      default: 1000000,
      min: 0,
      max: INT32_MAX,
      doc: "retained messages kept at most",
    },
  },
  storage: {
    backend: {
      kind: "enum",
      default: "kv",
      values: ["kv", "memory"],
      alias: "--storage-backend",
      doc: "kv = Deno KV on disk (durable), memory = RAM only",
    },
    path: {
      kind: "string",
      default: "./data/mqtt.db",
      nonEmpty: true,
      alias: "--storage-path",
      doc: "Deno KV database file (kv back end), relative to the working directory",
    },
  },
  metrics: {
    enabled: { kind: "boolean", default: true, doc: "serve Prometheus metrics on /metrics" },
    host: { kind: "string", default: "", doc: 'address of the metrics HTTP server; "" = server.host' },
    port: {
      kind: "integer",
      default: 9090,
      min: 0,
      max: 65535,
      alias: "--metrics-port",
      doc: "port of the metrics HTTP server; 0 picks a free port",
    },
  },
  log: {
    level: {
      kind: "enum",
      default: "info",
      values: ["debug", "info", "warn", "error"],
      alias: "--log-level",
      doc: "least severe level written",
    },
    format: {
      kind: "enum",
      default: "text",
      values: ["text", "json"],
      alias: "--log-format",
      doc: "text = one readable line per event, json = one JSON object per line",
    },
  },
  sys: {
    interval: {
      kind: "integer",
      default: 10,
      min: 0,
      max: 86400,
      doc: "seconds between $SYS topic publications; 0 disables them",
    },
  },
  auth: {
    allow_anonymous: {
      kind: "boolean",
      default: true,
      doc: "accept clients that send no username",
    },
    password_file: {
      kind: "string",
      default: "",
      doc: 'password file (see the passwd subcommand); "" = no password check',
    },
    acl_file: {
      kind: "string",
      default: "",
      doc: 'ACL file; "" = every client may publish and subscribe everywhere',
    },
  },
};

/** Every field of one `listeners` entry. `host` "" (the default) means server.host. */
export const LISTENER_SCHEMA: ListenerSchema = {
  type: {
    kind: "enum",
    default: "mqtt",
    values: ["mqtt", "mqtts", "ws", "wss"],
    required: true,
    doc: "mqtt = TCP, mqtts = TLS, ws = WebSocket, wss = WebSocket over TLS",
  },
  host: { kind: "string", default: "", doc: 'address to bind; "" = server.host' },
  port: { kind: "integer", default: 0, min: 0, max: 65535, required: true, doc: "port; 0 picks a free port" },
  cert_file: { kind: "string", default: "", nonEmpty: true, doc: "PEM certificate chain (mqtts, wss)" },
  key_file: { kind: "string", default: "", nonEmpty: true, doc: "PEM private key (mqtts, wss)" },
  ca_file: {
    kind: "string",
    default: "",
    nonEmpty: true,
    doc: "PEM CA bundle that client certificates are verified against (mqtts, wss)",
  },
  require_client_cert: {
    kind: "boolean",
    default: false,
    doc: "refuse TLS clients without a certificate signed by ca_file (mqtts, wss)",
  },
  use_cn_as_username: {
    kind: "boolean",
    default: false,
    doc: "use the client certificate's CN as the MQTT username (needs require_client_cert)",
  },
  path: {
    kind: "string",
    default: "/mqtt",
    nonEmpty: true,
    doc: "HTTP path of the WebSocket endpoint (ws, wss)",
  },
};

/** The `listeners` key itself: documented here so that help and docs can list it with the others. */
export const LISTENERS_DOC = "extra listeners (mqtt, mqtts, ws, wss); on the command line a YAML/JSON list";

/** One flattened entry of {@link SCHEMA}. */
export interface KeyEntry {
  /** Dotted key, e.g. `server.port`. */
  key: string;
  section: SectionName;
  name: string;
  spec: AnySpec;
}

/** Every mapping key in schema order, flattened to its dotted name. */
export const KEYS: readonly KeyEntry[] = Object.entries(SCHEMA).flatMap(([section, keys]) =>
  Object.entries(keys as Record<string, AnySpec>).map(([name, spec]) => ({
    key: `${section}.${name}`,
    section: section as SectionName,
    name,
    spec,
  }))
);

/** The configuration with every key at its default (a fresh object each call). */
export function defaultConfig(): Config {
  const config: Record<string, unknown> = { listeners: [] };
  for (const { section, name, spec } of KEYS) {
    const values = (config[section] ??= {}) as Record<string, unknown>;
    values[name] = spec.default;
  }
  return config as unknown as Config;
}

/** Words describing what a spec accepts, used after "must be" in error messages. */
export function expectation(spec: AnySpec): string {
  switch (spec.kind) {
    case "integer":
      return `an integer ${spec.min}..${spec.max}`;
    case "boolean":
      return "a boolean (true or false)";
    case "string":
      return spec.nonEmpty ? "a non-empty string" : "a string";
    case "enum":
      return `one of ${spec.values.join("|")}`;
  }
}

/** True when `value` (already parsed, e.g. from YAML) is acceptable for `spec`. */
export function accepts(spec: AnySpec, value: unknown): boolean {
  switch (spec.kind) {
    case "integer":
      return typeof value === "number" && Number.isInteger(value) && value >= spec.min && value <= spec.max;
    case "boolean":
      return typeof value === "boolean";
    case "string":
      return typeof value === "string" && (!spec.nonEmpty || value !== "");
    case "enum":
      return typeof value === "string" && (spec.values as readonly string[]).includes(value);
  }
}

/**
 * Turns a command-line string into the value type of `spec`, without validating the range: `"50"` -> 50,
 * `"false"` -> false. A string that is not a number or boolean where one is expected is returned as is,
 * so that the error message shows exactly what was typed.
 */
export function fromFlagString(spec: AnySpec, text: string): unknown {
  switch (spec.kind) {
    case "integer":
      return /^[+-]?\d+$/.test(text) ? Number(text) : text;
    case "boolean":
      return text === "true" ? true : text === "false" ? false : text;
    case "string":
    case "enum":
      return text;
  }
}
