// The descriptor table is grown for server.max_clients (up to 4,096) before the listeners open, and in the
// background as connections fill it (src/transport/fd_table.ts), so a burst of connections does not wait for
// the kernel to double it; the descriptors opened for that are closed again, and a low open-files limit is
// reported, not fatal. Linux only: elsewhere nothing is reserved.

import assert from "node:assert/strict";
import {
  DescriptorHeadroom,
  descriptorTableSize,
  openFilesLimit,
  SPARE_DESCRIPTORS,
} from "../../src/transport/fd_table.ts";
import { RawClient, spawnBroker, waitFor } from "../helpers.ts";

const linuxOnly = Deno.build.os !== "linux";

function procStatus(pid: number, field: string): number {
  const match = new RegExp(`^${field}:\\s*(\\d+)`, "m").exec(Deno.readTextFileSync(`/proc/${pid}/status`));
  assert.ok(match, `${field} in /proc/${pid}/status`);
  return Number(match[1]);
}

function openDescriptors(pid: number): number {
  return [...Deno.readDirSync(`/proc/${pid}/fd`)].length;
}

/**
 * `pid`'s open descriptors once they are below `bound`, or the count after 2 s if they never are. A broker
 * that just logged "listening" under the parallel suite may still hold a few for a moment; a leak of the
 * thousands the reservation opens stays.
 */
async function settledDescriptors(pid: number, bound: number): Promise<number> {
  await waitFor(() => openDescriptors(pid) < bound, "descriptors to settle", 2000).catch(() => {});
  return openDescriptors(pid);
}

/** What `pid`'s descriptors point at, counted by target ("socket", "/dev/null", ...), for failure messages. */
function descriptorTargets(pid: number): string {
  const counts = new Map<string, number>();
  for (const entry of Deno.readDirSync(`/proc/${pid}/fd`)) {
    let target = "?";
    try {
      target = Deno.readLinkSync(`/proc/${pid}/fd/${entry.name}`).replace(/:\[\d+\]$/, "");
    } catch {
      // closed meanwhile
    }
    counts.set(target, (counts.get(target) ?? 0) + 1);
  }
  return [...counts].map(([target, n]) => `${n} x ${target}`).join(", ");
}

Deno.test({
  name: "fd table: sized for server.max_clients at startup, with the descriptors used for it closed again",
  ignore: linuxOnly,
  async fn() {
    const big = await spawnBroker(["--storage.backend", "memory", "--server.max_clients", "3000"]);
    const small = await spawnBroker([
      "--storage.backend",
      "memory",
      "--server.max_clients",
      "10",
      "--log-level",
      "debug",
    ]);
    try {
      assert.ok(
        procStatus(big.proc.pid, "FDSize") >= 3000,
        `FDSize ${procStatus(big.proc.pid, "FDSize")}; broker log:\n${big.stderr()}`,
      );
      // The small broker reserved for its 10 clients only: the reservation follows the setting. (Its FDSize
      // says nothing here: a child inherits a table as big as this process's highest open descriptor at the
      // spawn, and the parallel suite opens thousands at times.)
      const reserved = /file descriptor table reserved descriptors=(\d+)/.exec(small.stderr());
      assert.ok(reserved, `no reservation logged:\n${small.stderr()}`);
      assert.equal(Number(reserved[1]), 10 + SPARE_DESCRIPTORS);
      const open = await settledDescriptors(big.proc.pid, 100);
      assert.ok(
        open < 100,
        `${open} descriptors open: ${descriptorTargets(big.proc.pid)}; broker log:\n${big.stderr()}`,
      );

      const clients: RawClient[] = [];
      for (let i = 0; i < 50; i++) {
        try {
          clients.push(await RawClient.connect(big.port));
        } catch (e) {
          throw new Error(`connection ${i + 1} of 50 failed: ${e}; broker log:\n${big.stderr()}`);
        }
      }
      assert.equal(clients.length, 50);
      await Promise.all(clients.map((c) => c.close()));
    } finally {
      await big.kill();
      await small.kill();
    }
  },
});

Deno.test({
  name: "fd table: an open-files limit below server.max_clients is logged, and the broker still serves",
  ignore: linuxOnly,
  async fn() {
    const broker = await spawnBroker(
      ["--storage.backend", "memory", "--server.max_clients", "1000"],
      20000,
      { openFiles: 256 },
    );
    try {
      const log = broker.stderr();
      assert.match(
        log,
        /WARN {2}the open-files limit is below server\.max_clients max_clients=1000 open_files_limit=256/,
      );
      const open = await settledDescriptors(broker.proc.pid, 100);
      assert.ok(open < 100, `${open} descriptors open: ${descriptorTargets(broker.proc.pid)}`);
      const client = await RawClient.connect(broker.port);
      await client.close();
    } finally {
      await broker.kill();
    }
  },
});

Deno.test({
  name: "fd table: connections filling half of the table double it in the background, up to what is needed",
  ignore: linuxOnly,
  async fn() {
    const before = descriptorTableSize()!;
    const limit = openFilesLimit();
    if (limit !== null && limit < before * 2 + 64) return; // cannot grow here: nothing to check
    const grown: number[] = [];
    // A table already big enough for the configured clients is left alone, however full.
    const enough = new DescriptorHeadroom(before - 65, (r) => grown.push(r.size));
    enough.check(before);
    assert.equal(enough.growing, undefined);
    const headroom = new DescriptorHeadroom(before * 2 - 64, (r) => grown.push(r.size)); // needs 2 x before
    assert.equal(headroom.size, before);
    headroom.check(before / 2);
    assert.ok(headroom.growing, "a growth started");
    const first = headroom.growing;
    headroom.check(before / 2); // one at a time
    assert.equal(headroom.growing, first);
    await headroom.growing;
    assert.ok(descriptorTableSize()! >= before * 2, `FDSize ${descriptorTableSize()} after ${before}`);
    assert.deepEqual(grown, [descriptorTableSize()]);
    // Big enough for its clients now: no further growth.
    headroom.check(descriptorTableSize()!);
    assert.equal(headroom.growing, undefined);
  },
});
