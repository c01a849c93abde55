// The logger: line formats, level filtering and run-time changes.

import assert from "node:assert/strict";
import { createLogger, jsonLine, type LoggerOptions, textLine } from "../src/log.ts";

const TS = "2026-11-25T10:00:00.000Z";

function capture(options: Omit<LoggerOptions, "write" | "now">) {
  const lines: string[] = [];
  const logger = createLogger({ ...options, write: (line) => lines.push(line), now: () => new Date(TS) });
  return { logger, lines };
}

Deno.test("log: text lines are timestamp, padded level, message, key=value fields", () => {
  const { logger, lines } = capture({ level: "debug", format: "text" });
  logger.info("client connected", { client_id: "abc", addr: "127.0.0.1:5000", proto: 5 });
  logger.error("boom");
  logger.warn("odd values", {
    empty: "",
    spaced: "a b",
    quote: 'say "hi"',
    eq: "a=b",
    nothing: undefined,
    nul: null,
    flag: true,
    err: new Error("bad thing"),
    list: [1, "x"],
    big: 10n,
  });
  assert.deepEqual(lines, [
    `${TS} INFO  client connected client_id=abc addr=127.0.0.1:5000 proto=5`,
    `${TS} ERROR boom`,
    `${TS} WARN  odd values empty="" spaced="a b" quote="say \\"hi\\"" eq="a=b" nul=null flag=true ` +
    `err="bad thing" list=[1,"x"] big=10`,
  ]);
});

Deno.test("log: json lines are one object with ts, level, msg first; fields cannot overwrite them", () => {
  const { logger, lines } = capture({ level: "info", format: "json" });
  logger.info("client connected", { client_id: "abc", proto: 5, msg: "spoof", err: new Error("x"), n: 2n });
  assert.equal(lines.length, 1);
  assert.equal(
    lines[0],
    `{"ts":"${TS}","level":"info","msg":"client connected","client_id":"abc","proto":5,"err":"x","n":"2"}`,
  );
  assert.ok(!lines[0].includes("\n"));
});

Deno.test("log: messages below the level are dropped; level and format change at run time", () => {
  const { logger, lines } = capture({ level: "warn", format: "text" });
  logger.debug("d");
  logger.info("i");
  logger.warn("w");
  logger.error("e");
  assert.deepEqual(lines, [`${TS} WARN  w`, `${TS} ERROR e`]);
  assert.equal(logger.isEnabled("info"), false);
  assert.equal(logger.isEnabled("error"), true);

  logger.level = "debug";
  logger.format = "json";
  assert.equal(logger.isEnabled("debug"), true);
  logger.debug("now visible");
  assert.equal(lines[2], `{"ts":"${TS}","level":"debug","msg":"now visible"}`);

  logger.level = "error";
  logger.warn("hidden again");
  assert.equal(lines.length, 3);
});

Deno.test("log: formatters are usable on their own", () => {
  assert.equal(textLine(TS, "debug", "m", { a: 1 }), `${TS} DEBUG m a=1`);
  assert.equal(jsonLine(TS, "warn", "m"), `{"ts":"${TS}","level":"warn","msg":"m"}`);
});
