/**
 * Where a running broker allocates: attaches to its inspector, samples allocations for a while (garbage
 * included, which is what makes young-generation collections frequent), and prints the functions and
 * call paths that allocated most, per unit of work.
 *
 *   deno run --inspect=127.0.0.1:9339 --v8-flags=--max-semi-space-size=4 -A main.ts --port 18830 ...
 *   deno run -A scripts/bench/loadgen.ts --scenario p2p --port 18830 --duration 10 &
 *   deno run -A scripts/bench/heap_sample.ts --inspect 9339 --delay 4 --duration 5 --per 5000
 *
 * `--per N` divides the byte counts by N (the messages or connections of the sampled seconds); `--out F`
 * also writes the raw profile (loadable in Chrome DevTools' Memory tab). Loopback only.
 *
 * @module
 */

import { parseArgs } from "node:util";

interface CallFrame {
  functionName: string;
  url: string;
  lineNumber: number;
}

interface ProfileNode {
  callFrame: CallFrame;
  selfSize: number;
  children: ProfileNode[];
}

/** Talks the Chrome DevTools protocol to the inspector of the process listening on 127.0.0.1:`port`. */
async function connect(port: number): Promise<(method: string, params?: unknown) => Promise<unknown>> {
  const targets = await (await fetch(`http://127.0.0.1:${port}/json/list`)).json();
  const ws = new WebSocket(targets[0].webSocketDebuggerUrl);
  await new Promise((resolve, reject) => {
    ws.onopen = resolve;
    ws.onerror = reject;
  });
  let nextId = 0;
  const waiting = new Map<number, (result: unknown) => void>();
  ws.onmessage = (event) => {
    const message = JSON.parse(event.data);
    waiting.get(message.id)?.(message.result);
    waiting.delete(message.id);
  };
  return (method, params = {}) =>
    new Promise((resolve) => {
      const id = ++nextId;
      waiting.set(id, resolve);
      ws.send(JSON.stringify({ id, method, params }));
    });
}

function frameName(frame: CallFrame): string {
  const file = frame.url.split("/").pop() || "(native)";
  return `${frame.functionName || "(anonymous)"} ${file}`;
}

/** Bytes allocated per function (self) and per call path of up to four frames, largest first. */
export function summarize(
  head: ProfileNode,
): { total: number; self: [string, number][]; paths: [string, number][] } {
  const self = new Map<string, number>();
  const paths = new Map<string, number>();
  let total = 0;
  const walk = (node: ProfileNode, stack: string[]) => {
    const name = frameName(node.callFrame);
    const here = [...stack, name];
    total += node.selfSize;
    self.set(name, (self.get(name) ?? 0) + node.selfSize);
    const path = here.slice(-4).reverse().join(" < ");
    paths.set(path, (paths.get(path) ?? 0) + node.selfSize);
    for (const child of node.children) walk(child, here);
  };
  walk(head, []);
  const sorted = (m: Map<string, number>) => [...m].filter(([, v]) => v > 0).sort((a, b) => b[1] - a[1]);
  return { total, self: sorted(self), paths: sorted(paths) };
}

if (import.meta.main) {
  const { values } = parseArgs({
    args: Deno.args,
    options: {
      inspect: { type: "string" },
      delay: { type: "string", default: "0" },
      duration: { type: "string", default: "5" },
      per: { type: "string", default: "1" },
      top: { type: "string", default: "25" },
      out: { type: "string" },
    },
  });
  if (values.inspect === undefined) {
    console.error(
      "usage: heap_sample.ts --inspect PORT [--delay S] [--duration S] [--per N] [--top N] [--out F]",
    );
    Deno.exit(2);
  }
  const call = await connect(Number(values.inspect));
  await new Promise((r) => setTimeout(r, Number(values.delay) * 1000));
  await call("HeapProfiler.enable");
  await call("HeapProfiler.startSampling", {
    samplingInterval: 256,
    includeObjectsCollectedByMinorGC: true,
    includeObjectsCollectedByMajorGC: true,
  });
  await new Promise((r) => setTimeout(r, Number(values.duration) * 1000));
  const { profile } = await call("HeapProfiler.stopSampling") as { profile: { head: ProfileNode } };
  if (values.out !== undefined) Deno.writeTextFileSync(values.out, JSON.stringify(profile));
  const per = Number(values.per);
  const top = Number(values.top);
  const { total, self, paths } = summarize(profile.head);
  const row = ([name, bytes]: [string, number]) =>
    `${(bytes / per).toFixed(0).padStart(8)} B ${(100 * bytes / total).toFixed(1).padStart(5)}%  ${name}`;
  console.log(
    `${(total / per).toFixed(0)} bytes allocated per unit (${total} sampled in ${values.duration} s)`,
  );
  console.log("\nby function (self):");
  for (const entry of self.slice(0, top)) console.log(row(entry));
  console.log("\nby call path:");
  for (const entry of paths.slice(0, top)) console.log(row(entry));
  Deno.exit(0);
}
