// Configuration loading: defaults, file and flag overrides, and that every error names the source, the
// key and the value. Files are written to a temp dir; the working directory is never changed in this
// process (tests run in parallel), so the default-path cases run in a child process.

import assert from "node:assert/strict";
import { parse } from "yaml";
import { COMMAND_LINE, ConfigError } from "../src/config/errors.ts";
import { type CliFlags, configFromObject, loadConfig } from "../src/config/load.ts";
import { KEYS } from "../src/config/schema.ts";
import type { Config } from "../src/config/types.ts";

const REPO = new URL("../", import.meta.url);
const pathOf = (relative: string) => decodeURIComponent(new URL(relative, REPO).pathname);

/** The defaults as the brief states them, written out rather than derived from the schema. */
const EXPECTED_DEFAULTS: Config = {
  server: {
    host: "127.0.0.1",
    port: 1883,
    clean_session_default: false,
    max_clients: 1000,
    connect_timeout: 10,
    max_message_size: 262144,
    max_inflight: 100,
    max_queued_messages: 1000,
    max_queued_bytes: 16777216,
    max_output_buffer: 4194304,
    max_keepalive: 65535,
    topic_alias_maximum: 1024,
    max_session_expiry: 4294967295,
  },
  listeners: [],
  qos: { max_qos: 1 },
  retained: { enabled: true, max_messages: 1000000 },
  storage: { backend: "kv", path: "./data/mqtt.db" },
  // "" in the schema, resolved to server.host by the loader.
  metrics: { enabled: true, host: "127.0.0.1", port: 9090 },
  log: { level: "info", format: "text" },
  sys: { interval: 10 },
  auth: { allow_anonymous: true, password_file: "", acl_file: "" },
};

/** Writes `text` to a fresh temp file, runs `fn` with its path, removes the file. */
async function withFile<T>(text: string, fn: (path: string) => Promise<T>): Promise<T> {
  const path = await Deno.makeTempFile({ prefix: "config_test_", suffix: ".yaml" });
  try {
    await Deno.writeTextFile(path, text);
    return await fn(path);
  } finally {
    await Deno.remove(path);
  }
}

/** Loads `text` as a config file and returns the ConfigError it must raise. */
async function errorOf(text: string, flags: CliFlags = {}): Promise<{ path: string; error: ConfigError }> {
  return await withFile(text, async (path) => {
    try {
      await loadConfig(path, flags);
    } catch (error) {
      assert.ok(error instanceof ConfigError, `expected a ConfigError, got ${error}`);
      return { path, error };
    }
    assert.fail(`loading ${JSON.stringify(text)} should have failed`);
  });
}

Deno.test("config: a missing default file gives the defaults; a present one is read", async () => {
  const dir = await Deno.makeTempDir({ prefix: "config_test_" });
  try {
    await Deno.mkdir(`${dir}/with/config`, { recursive: true });
    await Deno.mkdir(`${dir}/without`);
    await Deno.writeTextFile(`${dir}/with/config/config.yaml`, "server:\n  port: 1999\n");
    // The child changes its own working directory, which this (parallel) test process must not do.
    const script = `
      import { loadConfig } from ${JSON.stringify(new URL("src/config/load.ts", REPO).href)};
      Deno.chdir(${JSON.stringify(`${dir}/without`)});
      const without = await loadConfig(undefined, {});
      Deno.chdir(${JSON.stringify(`${dir}/with`)});
      const withFile = await loadConfig(undefined, {});
      console.log(JSON.stringify({ without, withFile }));
    `;
    const output = await new Deno.Command(Deno.execPath(), {
      args: ["eval", "--config", pathOf("deno.json"), "--ext=ts", script],
      stdout: "piped",
      stderr: "piped",
      env: { NO_COLOR: "1" },
    }).output();
    assert.equal(output.code, 0, new TextDecoder().decode(output.stderr));
    const { without, withFile } = JSON.parse(new TextDecoder().decode(output.stdout));
    assert.deepEqual(without, EXPECTED_DEFAULTS);
    assert.equal(withFile.server.port, 1999);
    assert.equal(withFile.server.host, "127.0.0.1");
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("config: the shipped config/config.yaml lists every key, at its default", async () => {
  const file = pathOf("config/config.yaml");
  assert.deepEqual(await loadConfig(file, {}), EXPECTED_DEFAULTS);
  // Equal to the defaults could also mean "keys missing": check each key is really written in the file.
  const document = parse(await Deno.readTextFile(file)) as Record<string, Record<string, unknown>>;
  for (const { section, name, key } of KEYS) {
    assert.ok(document[section] !== null && name in document[section], `${key} missing from config.yaml`);
  }
  assert.deepEqual(document.listeners, []);
});

Deno.test("config: README's configuration table has every key with its default", async () => {
  const readme = await Deno.readTextFile(pathOf("README.md"));
  for (const { key, spec } of KEYS) {
    const row = readme.split("\n").find((line) => line.startsWith(`| \`${key}\``));
    assert.ok(row !== undefined, `README has no table row for ${key}`);
    const shown = typeof spec.default === "string" ? JSON.stringify(spec.default) : String(spec.default);
    assert.ok(row.includes(`\`${shown}\``), `README row for ${key} does not show default ${shown}: ${row}`);
  }
});

Deno.test("config: values in the file override the defaults, the rest stay default", async () => {
  const config = await withFile(
    [
      "server:",
      "  host: 0.0.0.0",
      "  port: 2883",
      "  clean_session_default: true",
      "qos:",
      "  max_qos: 2",
      "storage:",
      "  backend: memory",
      "log:",
      "  format: json",
      "retained:", // a section with every key commented out parses to null
      "#  enabled: false",
    ].join("\n"),
    (path) => loadConfig(path, {}),
  );
  assert.equal(config.server.host, "0.0.0.0");
  assert.equal(config.server.port, 2883);
  assert.equal(config.server.clean_session_default, true);
  assert.equal(config.qos.max_qos, 2);
  assert.equal(config.storage.backend, "memory");
  assert.equal(config.log.format, "json");
  assert.deepEqual(config.retained, EXPECTED_DEFAULTS.retained);
  assert.equal(config.server.max_clients, 1000);
  // metrics.host "" follows server.host, whatever it is.
  assert.equal(config.metrics.host, "0.0.0.0");
});

Deno.test("config: an empty file is all defaults", async () => {
  assert.deepEqual(await withFile("# nothing here\n", (path) => loadConfig(path, {})), EXPECTED_DEFAULTS);
});

Deno.test("config: flags override the file and are typed by the schema", async () => {
  const config = await withFile(
    "server:\n  port: 2000\n  max_clients: 7\nretained:\n  enabled: true\nmetrics:\n  host: ::1\n",
    (path) =>
      loadConfig(path, {
        "server.port": "3000",
        "retained.enabled": "false",
        "log.level": "debug",
        "storage.path": "/tmp/x.db",
        "server.host": "127.0.0.2",
        "listeners": "[{type: ws, port: 8080}]",
      }),
  );
  assert.equal(config.server.port, 3000);
  assert.equal(config.server.max_clients, 7, "a key only in the file keeps the file's value");
  assert.equal(config.retained.enabled, false);
  assert.equal(config.log.level, "debug");
  assert.equal(config.storage.path, "/tmp/x.db");
  assert.equal(config.metrics.host, "::1", "an explicit metrics.host is kept");
  assert.deepEqual(config.listeners, [
    { type: "ws", port: 8080, host: "127.0.0.2", path: "/mqtt" },
  ]);
});

Deno.test("config: errors in the file name the file, the dotted key and the value", async () => {
  const cases: [yaml: string, message: string][] = [
    ["server:\n  port: abc\n", 'server.port must be an integer 0..65535, got "abc"'],
    ["server:\n  port: 70000\n", "server.port must be an integer 0..65535, got 70000"],
    ["server:\n  port: 1.5\n", "server.port must be an integer 0..65535, got 1.5"],
    ['server:\n  port: "1883"\n', 'server.port must be an integer 0..65535, got "1883"'],
    ["server:\n  max_inflight: 0\n", "server.max_inflight must be an integer 1..65535, got 0"],
    ["server:\n  host: ''\n", 'server.host must be a non-empty string, got ""'],
    ["server:\n  host:\n", "server.host must be a non-empty string, got null"],
    ["qos:\n  max_qos: 3\n", "qos.max_qos must be an integer 0..2, got 3"],
    ["retained:\n  enabled: yes\n", 'retained.enabled must be a boolean (true or false), got "yes"'],
    ["storage:\n  backend: redis\n", 'storage.backend must be one of kv|memory, got "redis"'],
    ["log:\n  level: verbose\n", 'log.level must be one of debug|info|warn|error, got "verbose"'],
    ["log:\n  format: xml\n", 'log.format must be one of text|json, got "xml"'],
    ["auth:\n  acl_file: 5\n", "auth.acl_file must be a string, got 5"],
    ["server: 5\n", "server must be a mapping, got 5"],
    ["- 1\n- 2\n", "the top level must be a mapping of sections, got [1,2]"],
  ];
  for (const [yaml, message] of cases) {
    const { path, error } = await errorOf(yaml);
    assert.equal(error.message, `${path}: ${message}`);
    assert.equal(error.source, path);
  }
});

Deno.test("config: unknown keys and sections are rejected, naming key and value", async () => {
  let { path, error } = await errorOf("server:\n  prot: 1883\n");
  assert.match(
    error.message,
    new RegExp(`^${path}: unknown key server\\.prot \\(value 1883\\); known in server: host`),
  );
  ({ path, error } = await errorOf("servre:\n  port: 1\n"));
  assert.ok(error.message.startsWith(`${path}: unknown section servre (value {"port":1})`), error.message);
});

Deno.test("config: broken YAML and unreadable files are ConfigErrors naming the file", async () => {
  const { path, error } = await errorOf("server:\n  port: [1\n");
  assert.ok(error.message.startsWith(`${path}: invalid YAML: `), error.message);
  assert.ok(!error.message.includes("\n"), "one line");
  const duplicate = await errorOf("server:\n  port: 1\n  port: 2\n");
  assert.ok(duplicate.error.message.startsWith(`${duplicate.path}: invalid YAML: `), duplicate.error.message);

  const missing = `${await Deno.makeTempDir({ prefix: "config_test_" })}/nope.yaml`;
  try {
    await assert.rejects(
      loadConfig(missing, {}),
      (err: unknown) => err instanceof ConfigError && err.message === `${missing}: config file not found`,
    );
    // Even the default path is an error when given explicitly (only an omitted --config may be missing).
    const dir = missing.slice(0, missing.lastIndexOf("/"));
    await assert.rejects(loadConfig(dir, {}), (err: unknown) => {
      assert.ok(err instanceof ConfigError);
      assert.ok(err.message.startsWith(`${dir}: cannot read config file: `), err.message);
      return true;
    });
  } finally {
    await Deno.remove(missing.slice(0, missing.lastIndexOf("/")), { recursive: true });
  }
});

Deno.test("config: bad flag values are ConfigErrors from the command line", async () => {
  const cases: [flags: CliFlags, message: string][] = [
    [{ "server.port": "abc" }, 'command line: --server.port must be an integer 0..65535, got "abc"'],
    [{ "server.port": "-1" }, "command line: --server.port must be an integer 0..65535, got -1"],
    [
      { "retained.enabled": "no" },
      'command line: --retained.enabled must be a boolean (true or false), got "no"',
    ],
    [{ "storage.backend": "disk" }, 'command line: --storage.backend must be one of kv|memory, got "disk"'],
    [{ "server.nope": "1" }, 'command line: unknown flag --server.nope (value "1")'],
    [{ listeners: "{type: ws}" }, 'command line: --listeners must be a list, got {"type":"ws"}'],
    [
      { listeners: "[{type: ws}]" },
      "command line: --listeners[0].port is required (an integer 0..65535), got nothing",
    ],
  ];
  for (const [flags, message] of cases) {
    await assert.rejects(loadConfig(undefined, flags), (err: unknown) => {
      assert.ok(err instanceof ConfigError, String(err));
      assert.equal(err.message, message);
      assert.equal(err.source, COMMAND_LINE);
      return true;
    });
  }
});

Deno.test("config: listeners are validated and completed", () => {
  const config = configFromObject({
    server: { host: "::1" },
    listeners: [
      { type: "mqtt", port: 0 },
      { type: "ws", host: "127.0.0.1", port: 8080, path: "/ws" },
      { type: "mqtts", port: 8883, cert_file: "c.pem", key_file: "k.pem" },
      {
        type: "wss",
        port: 8443,
        cert_file: "c.pem",
        key_file: "k.pem",
        ca_file: "ca.pem",
        require_client_cert: true,
        use_cn_as_username: true,
      },
    ],
  }, "test.yaml");
  assert.deepEqual(config.listeners, [
    { type: "mqtt", host: "::1", port: 0 },
    { type: "ws", host: "127.0.0.1", port: 8080, path: "/ws" },
    {
      type: "mqtts",
      host: "::1",
      port: 8883,
      cert_file: "c.pem",
      key_file: "k.pem",
      require_client_cert: false,
      use_cn_as_username: false,
    },
    {
      type: "wss",
      host: "::1",
      port: 8443,
      cert_file: "c.pem",
      key_file: "k.pem",
      ca_file: "ca.pem",
      require_client_cert: true,
      use_cn_as_username: true,
      path: "/mqtt",
    },
  ]);
});

Deno.test("config: listener errors name the entry, the field and the value", () => {
  const cases: [listeners: unknown, message: string][] = [
    [{ type: "ws" }, 'listeners must be a list, got {"type":"ws"}'],
    [["ws"], 'listeners[0] must be a mapping, got "ws"'],
    [[{ port: 1 }], "listeners[0].type is required (one of mqtt|mqtts|ws|wss), got nothing"],
    [[{ type: "http", port: 1 }], 'listeners[0].type must be one of mqtt|mqtts|ws|wss, got "http"'],
    [[{ type: "mqtt" }], "listeners[0].port is required (an integer 0..65535), got nothing"],
    [
      [{ type: "mqtt", port: 1 }, { type: "ws", port: -1 }],
      "listeners[1].port must be an integer 0..65535, got -1",
    ],
    [
      [{ type: "mqtt", port: 1, prot: 2 }],
      "unknown key listeners[0].prot (value 2); known: type, host, port,",
    ],
    [
      [{ type: "mqtts", port: 1, key_file: "k" }],
      "listeners[0].cert_file is required for a mqtts listener, got nothing",
    ],
    [
      [{ type: "wss", port: 1, cert_file: "c" }],
      "listeners[0].key_file is required for a wss listener, got nothing",
    ],
    [
      [{ type: "mqtts", port: 1, cert_file: "", key_file: "k" }],
      'listeners[0].cert_file must be a non-empty string, got ""',
    ],
    [
      [{ type: "mqtt", port: 1, cert_file: "c" }],
      'listeners[0].cert_file is only valid on mqtts/wss listeners, this one is mqtt (value "c")',
    ],
    [
      [{ type: "mqtt", port: 1, path: "/x" }],
      'listeners[0].path is only valid on ws/wss listeners, this one is mqtt (value "/x")',
    ],
    [[{ type: "ws", port: 1, path: "mqtt" }], 'listeners[0].path must start with "/", got "mqtt"'],
    [
      [{ type: "mqtts", port: 1, cert_file: "c", key_file: "k", require_client_cert: true }],
      "listeners[0].ca_file is required when require_client_cert is true, got nothing",
    ],
    [
      [{ type: "mqtts", port: 1, cert_file: "c", key_file: "k", use_cn_as_username: true }],
      "listeners[0].use_cn_as_username needs require_client_cert: true, got false",
    ],
  ];
  for (const [listeners, message] of cases) {
    assert.throws(() => configFromObject({ listeners }, "f.yaml"), (err: unknown) => {
      assert.ok(err instanceof ConfigError, String(err));
      assert.ok(
        err.message.startsWith(`f.yaml: ${message}`),
        `${err.message}\n  expected: f.yaml: ${message}`,
      );
      return true;
    });
  }
});

Deno.test("config: each load returns a fresh object", async () => {
  const a = await loadConfig(undefined, { "server.port": "1" });
  a.server.port = 2;
  a.listeners.push({ type: "mqtt", host: "x", port: 3 });
  const b = await loadConfig(undefined, { "server.port": "1" });
  assert.equal(b.server.port, 1);
  assert.deepEqual(b.listeners, []);
});
