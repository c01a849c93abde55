/**
 * Broker resource usage and machine facts, read from Linux /proc.
 *
 * CPU is utime + stime of the whole process (all threads) from /proc/PID/stat, in clock ticks;
 * memory is VmRSS (resident now) and VmHWM (peak resident) from /proc/PID/status.
 *
 * @module
 */

/** Clock ticks per second of /proc/PID/stat times (USER_HZ, 100 on every mainstream Linux build). */
export const CLOCK_TICKS = 100;

/** utime + stime of `stat` text (the content of /proc/PID/stat), in clock ticks. */
export function parseCpuTicks(stat: string): number {
  // Field 2 (comm) is in parentheses and may contain spaces: split after the last ")".
  const close = stat.lastIndexOf(")");
  if (close < 0) throw new Error(`unexpected /proc stat format: "${stat.slice(0, 60)}"`);
  const fields = stat.slice(close + 2).split(" ");
  // fields[0] is field 3 (state), so utime (field 14) is fields[11] and stime (field 15) fields[12].
  const utime = Number(fields[11]);
  const stime = Number(fields[12]);
  if (!Number.isFinite(utime) || !Number.isFinite(stime)) {
    throw new Error(`no utime/stime in /proc stat: "${stat.slice(0, 80)}"`);
  }
  return utime + stime;
}

/** CPU ticks used so far by process `pid`; null once it has exited. */
export function readCpuTicks(pid: number): number | null {
  try {
    return parseCpuTicks(Deno.readTextFileSync(`/proc/${pid}/stat`));
  } catch {
    return null;
  }
}

/** Resident memory of a process, in bytes. */
export interface MemorySample {
  /** VmRSS: resident set now. */
  rss: number;
  /** VmHWM: peak resident set since the process started. */
  hwm: number;
}

/** VmRSS and VmHWM of `status` text (the content of /proc/PID/status), in bytes. */
export function parseMemory(status: string): MemorySample {
  const kb = (key: string) => {
    const m = status.match(new RegExp(`^${key}:\\s+(\\d+)\\s+kB`, "m"));
    if (m === null) throw new Error(`no ${key} in /proc status`);
    return Number(m[1]) * 1024;
  };
  return { rss: kb("VmRSS"), hwm: kb("VmHWM") };
}

/** Memory of process `pid`; null once it has exited. */
export function readMemory(pid: number): MemorySample | null {
  try {
    return parseMemory(Deno.readTextFileSync(`/proc/${pid}/status`));
  } catch {
    return null;
  }
}

/** Cumulative CPU time of the whole machine, from the first line of /proc/stat, in clock ticks. */
export interface MachineCpu {
  /** Every field: user, nice, system, idle, iowait, irq, softirq, steal. */
  total: number;
  /** Time the hypervisor ran something else while this VM wanted the CPU. */
  steal: number;
}

/** The aggregate `cpu` line of /proc/stat text. */
export function parseMachineCpu(stat: string): MachineCpu {
  const line = stat.split("\n").find((l) => l.startsWith("cpu "));
  if (line === undefined) throw new Error(`no aggregate cpu line in /proc/stat: "${stat.slice(0, 60)}"`);
  // guest and guest_nice (fields 9, 10) are already counted in user and nice.
  const f = line.trim().split(/\s+/).slice(1, 9).map(Number);
  if (f.length < 8 || f.some((x) => !Number.isFinite(x))) {
    throw new Error(`unexpected /proc/stat cpu line: "${line}"`);
  }
  return { total: f.reduce((a, b) => a + b, 0), steal: f[7] };
}

/** The machine's CPU counters now; null where /proc/stat cannot be read. */
export function readMachineCpu(): MachineCpu | null {
  try {
    return parseMachineCpu(Deno.readTextFileSync("/proc/stat"));
  } catch {
    return null;
  }
}

/** Percent of all CPU time stolen by the hypervisor between two readings; null if unknown. */
export function stealPercent(from: MachineCpu | null, to: MachineCpu | null): number | null {
  if (from === null || to === null || to.total <= from.total) return null;
  return (100 * (to.steal - from.steal)) / (to.total - from.total);
}

/** The 1-minute load average, a hint of how busy the (shared) machine was. */
export function loadAverage(): number | null {
  try {
    return Number(Deno.readTextFileSync("/proc/loadavg").split(" ")[0]);
  } catch {
    return null;
  }
}

/** What the report says about the machine. */
export interface MachineInfo {
  cpuModel: string;
  cores: number;
  memoryGiB: number;
  kernel: string;
}

/** Reads CPU model, core count, memory and kernel release. */
export function machineInfo(): MachineInfo {
  let cpuModel = "unknown";
  let cores = navigator.hardwareConcurrency;
  let memoryGiB = 0;
  try {
    const cpuinfo = Deno.readTextFileSync("/proc/cpuinfo");
    cpuModel = cpuinfo.match(/^model name\s*:\s*(.+)$/m)?.[1]?.trim() ?? cpuModel;
    cores = (cpuinfo.match(/^processor\s*:/gm) ?? []).length || cores;
    const meminfo = Deno.readTextFileSync("/proc/meminfo");
    memoryGiB = Number(meminfo.match(/^MemTotal:\s+(\d+)/m)?.[1] ?? 0) / 1024 / 1024;
  } catch {
    // Not Linux: keep what navigator says.
  }
  return { cpuModel, cores, memoryGiB: Math.round(memoryGiB * 10) / 10, kernel: Deno.osRelease() };
}

/**
 * Follows one process while a scenario runs: CPU between {@link ProcessMonitor.start} and
 * {@link ProcessMonitor.stop}, peak VmRSS sampled every `intervalMs`.
 */
export class ProcessMonitor {
  readonly pid: number;
  #ticks0 = 0;
  #t0 = 0;
  #peakRss = 0;
  #timer: ReturnType<typeof setInterval> | undefined;

  constructor(pid: number) {
    this.pid = pid;
  }

  /** Takes the starting CPU sample and begins sampling memory. */
  start(intervalMs = 200): void {
    this.#ticks0 = readCpuTicks(this.pid) ?? 0;
    this.#t0 = performance.now();
    this.#peakRss = readMemory(this.pid)?.rss ?? 0;
    this.#timer = setInterval(() => this.sample(), intervalMs);
  }

  /** Samples memory now and returns it (null once the process is gone). */
  sample(): MemorySample | null {
    const m = readMemory(this.pid);
    if (m !== null && m.rss > this.#peakRss) this.#peakRss = m.rss;
    return m;
  }

  /** Stops sampling; returns CPU use in percent of one core over the period, and the peak RSS. */
  stop(): { cpuPercent: number | null; peakRss: number } {
    clearInterval(this.#timer);
    this.sample();
    const ticks = readCpuTicks(this.pid);
    const seconds = (performance.now() - this.#t0) / 1000;
    const cpuPercent = ticks === null || seconds <= 0
      ? null
      : Math.round(((ticks - this.#ticks0) / CLOCK_TICKS / seconds) * 1000) / 10;
    return { cpuPercent, peakRss: this.#peakRss };
  }
}
