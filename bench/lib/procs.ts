/**
 * Child processes for the bench: spawned pinned to a CPU (taskset), ready when they say so over IPC (or when
 * their port accepts connections, for nginx), always killed at the end — even when the bench fails.
 * CPU time is read from /proc so it covers every thread (and every worker process, for nginx).
 */
import { spawn, execFileSync, type ChildProcess } from "node:child_process";
import { existsSync, readFileSync, readdirSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { connect, createServer } from "node:net";
import { once } from "node:events";

export const HAS_TASKSET = onPath("taskset");
const CLK_TCK = clockTicks();

export function onPath(command: string): boolean {
  try {
    execFileSync("sh", ["-c", `command -v ${command}`], { stdio: "ignore" });
    return true;
  } catch {
    return false;
  }
}

function clockTicks(): number {
  try {
    return Number(execFileSync("getconf", ["CLK_TCK"], { encoding: "utf8" }).trim()) || 100;
  } catch {
    return 100;
  }
}

/** Pins this process (every thread) to one CPU; the load generator runs here. */
export function pinSelf(cpu: number): boolean {
  if (!HAS_TASKSET) return false;
  try {
    execFileSync("taskset", ["-a", "-cp", String(cpu), String(process.pid)], { stdio: "ignore" });
    return true;
  } catch {
    return false;
  }
}

export interface Child {
  readonly name: string;
  readonly pid: number;
  readonly process: ChildProcess;
  /** The last lines the child wrote to stderr, for error messages. */
  stderr(): string;
}

const running = new Set<Child>();

export interface SpawnOptions {
  cpu: number | undefined;
  /** File descriptor for the child's stdout ("ignore" when omitted). */
  stdout?: number | "ignore";
  env?: NodeJS.ProcessEnv;
  /** Node children speak IPC; others (nginx) do not. */
  ipc?: boolean;
}

export function spawnPinned(name: string, command: string, args: string[], options: SpawnOptions): Child {
  const pinned = options.cpu !== undefined && HAS_TASKSET;
  const file = pinned ? "taskset" : command;
  const argv = pinned ? ["-c", String(options.cpu), command, ...args] : args;
  const stdio: ("ignore" | "pipe" | "ipc" | number)[] = ["ignore", options.stdout ?? "ignore", "pipe"];
  if (options.ipc) stdio.push("ipc");
  // taskset execs the command, so the pid we get is the pid of the process we measure.
  const proc = spawn(file, argv, { stdio, env: options.env ?? process.env });
  let tail = "";
  proc.stderr?.setEncoding("utf8").on("data", (s: string) => {
    tail = (tail + s).slice(-4000);
  });
  if (proc.pid === undefined) throw new Error(`could not start ${name} (${file})`);
  const child: Child = { name, pid: proc.pid, process: proc, stderr: () => tail };
  running.add(child);
  proc.once("exit", () => running.delete(child));
  return child;
}

/** Waits for a Node child's `{ ready: true, ... }` IPC message, bounded in time. */
export async function readyMessage<T extends object>(child: Child, timeoutMs = 15_000): Promise<T> {
  const proc = child.process;
  return new Promise<T>((resolve, reject) => {
    const timer = setTimeout(() => fail(new Error(`${child.name} did not become ready in ${timeoutMs} ms`)), timeoutMs);
    const onMessage = (message: unknown) => {
      if (message && typeof message === "object" && (message as { ready?: unknown }).ready === true) {
        cleanup();
        resolve(message as T);
      }
    };
    const onExit = (code: number | null, signal: string | null) => fail(new Error(`${child.name} exited (code ${code}, signal ${signal}) before it was ready`));
    const fail = (err: Error) => {
      cleanup();
      reject(new Error(`${err.message}\n${child.stderr()}`.trim()));
    };
    const cleanup = () => {
      clearTimeout(timer);
      proc.off("message", onMessage);
      proc.off("exit", onExit);
    };
    proc.on("message", onMessage);
    proc.once("exit", onExit);
  });
}

/** Polls until something accepts TCP connections on the port, bounded in time. */
export async function waitForPort(child: Child, port: number, timeoutMs = 10_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    if (child.process.exitCode !== null) throw new Error(`${child.name} exited (code ${child.process.exitCode})\n${child.stderr()}`);
    const ok = await new Promise<boolean>((resolve) => {
      const socket = connect(port, "127.0.0.1");
      socket.once("connect", () => (socket.destroy(), resolve(true)));
      socket.once("error", () => resolve(false));
    });
    if (ok) return;
    await new Promise((r) => setTimeout(r, 50));
  }
  throw new Error(`${child.name} did not listen on ${port} in ${timeoutMs} ms\n${child.stderr()}`);
}

/** A loopback port that was free a moment ago (for programs that need a fixed port in their config). */
export async function freePort(): Promise<number> {
  const server = createServer();
  server.listen(0, "127.0.0.1");
  await once(server, "listening");
  const port = (server.address() as { port: number }).port;
  await new Promise<void>((resolve) => server.close(() => resolve()));
  return port;
}

export async function stop(child: Child, graceMs = 5000): Promise<void> {
  const proc = child.process;
  if (proc.exitCode !== null || proc.signalCode !== null) return;
  const exited = once(proc, "exit");
  proc.kill("SIGTERM");
  const timer = setTimeout(() => proc.kill("SIGKILL"), graceMs);
  await exited;
  clearTimeout(timer);
}

export async function stopAll(): Promise<void> {
  await Promise.all([...running].map((c) => stop(c)));
}

/** Last resort on process exit: synchronous, so it also runs from an 'exit' handler. */
export function killAllNow(): void {
  for (const child of running) {
    try {
      child.process.kill("SIGKILL");
    } catch {
      // already gone
    }
  }
}

/** User + system CPU seconds of a process and (unless told not to) its descendants (nginx workers), from /proc. */
export function cpuSeconds(pid: number, withDescendants = true): number | undefined {
  const split = cpuSplit(pid, withDescendants);
  return split && split.user + split.system;
}

/** CPU seconds of a process (and, by default, its descendants) split into user and kernel (system) time. */
export function cpuSplit(pid: number, withDescendants = true): { user: number; system: number } | undefined {
  const pids = withDescendants ? [pid, ...descendants(pid)] : [pid];
  let user = 0;
  let system = 0;
  let any = false;
  for (const p of pids) {
    const stat = readStat(p);
    if (!stat) continue;
    any = true;
    user += stat.utime;
    system += stat.stime;
  }
  return any ? { user: user / CLK_TCK, system: system / CLK_TCK } : undefined;
}

/** Resident set size of a process in KiB (VmRSS from /proc/<pid>/status), all threads. */
export function rssKiB(pid: number): number | undefined {
  try {
    const m = /^VmRSS:\s+(\d+) kB$/m.exec(readFileSync(`/proc/${pid}/status`, "utf8"));
    return m ? Number(m[1]) : undefined;
  } catch {
    return undefined;
  }
}

function readStat(pid: number): { ppid: number; utime: number; stime: number } | undefined {
  let text: string;
  try {
    text = readFileSync(`/proc/${pid}/stat`, "utf8");
  } catch {
    return undefined;
  }
  // The command name (field 2) may contain spaces; the fields after its closing parenthesis do not.
  const fields = text.slice(text.lastIndexOf(")") + 2).split(" ");
  // fields[0] is field 3 (state): ppid is field 4, utime 14, stime 15.
  return { ppid: Number(fields[1]), utime: Number(fields[11]), stime: Number(fields[12]) };
}

function descendants(pid: number): number[] {
  if (!existsSync("/proc")) return [];
  const parentOf = new Map<number, number>();
  for (const entry of readdirSync("/proc")) {
    if (!/^\d+$/.test(entry)) continue;
    const stat = readStat(Number(entry));
    if (stat) parentOf.set(Number(entry), stat.ppid);
  }
  const out: number[] = [];
  let frontier = [pid];
  while (frontier.length > 0) {
    const next: number[] = [];
    for (const [child, parent] of parentOf) if (frontier.includes(parent)) next.push(child);
    out.push(...next);
    frontier = next;
  }
  return out;
}

export interface CpuTimes {
  busy: number[];
  total: number[];
}

/** Per-CPU busy and total jiffies from /proc/stat, to tell whether the load generator's CPU was saturated. */
export function cpuTimes(): CpuTimes | undefined {
  let text: string;
  try {
    text = readFileSync("/proc/stat", "utf8");
  } catch {
    return undefined;
  }
  const busy: number[] = [];
  const total: number[] = [];
  for (const line of text.split("\n")) {
    const m = /^cpu(\d+)\s+(.*)$/.exec(line);
    if (!m) continue;
    const v = m[2]!.trim().split(/\s+/).map(Number);
    // user nice system idle iowait irq softirq steal (guest times are already in user)
    const sum = v.slice(0, 8).reduce((a, b) => a + b, 0);
    const idle = (v[3] ?? 0) + (v[4] ?? 0);
    busy[Number(m[1])] = sum - idle;
    total[Number(m[1])] = sum;
  }
  return { busy, total };
}

/** CPU-seconds all CPUs were busy between two readings (every process on the machine, ours or not). */
export function busySeconds(before: CpuTimes | undefined, after: CpuTimes | undefined): number | undefined {
  if (!before || !after) return undefined;
  return after.busy.reduce((sum, b, i) => sum + (b - (before.busy[i] ?? 0)), 0) / CLK_TCK;
}

/**
 * Waits (at most `maxMs`) until the machine is nearly idle, so a neighbour's burst of work does not land
 * in a measurement. Returns the busy fraction of the last sample.
 */
export async function waitForQuiet(maxMs: number, threshold = 0.1, sampleMs = 250): Promise<number | undefined> {
  const deadline = Date.now() + maxMs;
  let busy: number | undefined;
  do {
    const before = cpuTimes();
    await new Promise((r) => setTimeout(r, sampleMs));
    const seconds = busySeconds(before, cpuTimes());
    if (seconds === undefined) return undefined;
    busy = seconds / ((sampleMs / 1000) * (before?.busy.length || 1));
    if (busy < threshold) return busy;
  } while (Date.now() < deadline);
  return busy;
}

/** Busy fraction (0..1) of each CPU between two readings. */
export function busyFractions(before: CpuTimes | undefined, after: CpuTimes | undefined): number[] | undefined {
  if (!before || !after) return undefined;
  return after.busy.map((b, i) => {
    const dt = after.total[i]! - (before.total[i] ?? 0);
    return dt > 0 ? (b - (before.busy[i] ?? 0)) / dt : 0;
  });
}

/**
 * Where a process's resident memory lies, from /proc/<pid>/smaps (KiB). glibc's malloc keeps its main arena in the
 * `[heap]` mapping and each other arena in a 64 MiB reservation of its own (a read-write part at a 64 MiB-aligned
 * address, the rest `---p`); everything else anonymous is V8's heap pages and code space, WebAssembly memory
 * (undici's HTTP parser), malloc's own large (mmapped) chunks and thread stacks; file-backed is the binary and
 * libraries.
 */
export interface MemoryMap {
  mallocMainKiB: number;
  mallocArenasKiB: number;
  otherAnonKiB: number;
  fileKiB: number;
}

const ARENA_BYTES = 64 * 1024 * 1024;

export function memoryMap(pid: number): MemoryMap | undefined {
  let text: string;
  try {
    text = readFileSync(`/proc/${pid}/smaps`, "utf8");
  } catch {
    return undefined;
  }
  return parseSmaps(text);
}

/** `memoryMap` from the text of a /proc/<pid>/smaps file. */
export function parseSmaps(text: string): MemoryMap {
  const maps: { start: bigint; end: bigint; perms: string; name: string; rss: number }[] = [];
  for (const line of text.split("\n")) {
    const head = /^([0-9a-f]+)-([0-9a-f]+) (\S+) \S+ \S+ \S+\s*(.*)$/.exec(line);
    if (head) {
      maps.push({ start: BigInt(`0x${head[1]}`), end: BigInt(`0x${head[2]}`), perms: head[3]!, name: head[4]!, rss: 0 });
      continue;
    }
    const rss = /^Rss:\s+(\d+) kB$/.exec(line);
    const last = maps.at(-1);
    if (rss && last) last.rss = Number(rss[1]);
  }
  const out: MemoryMap = { mallocMainKiB: 0, mallocArenasKiB: 0, otherAnonKiB: 0, fileKiB: 0 };
  for (const [i, m] of maps.entries()) {
    const next = maps[i + 1];
    if (m.name === "[heap]") out.mallocMainKiB += m.rss;
    else if (m.name.startsWith("/")) out.fileKiB += m.rss;
    else if (m.name !== "") out.otherAnonKiB += m.rss; // [stack], [vvar], [vdso] and the like
    else if (
      m.start % BigInt(ARENA_BYTES) === 0n &&
      (m.end - m.start === BigInt(ARENA_BYTES) ||
        (next !== undefined && next.start === m.end && next.perms.startsWith("---") && next.end - m.start === BigInt(ARENA_BYTES)))
    )
      out.mallocArenasKiB += m.rss;
    else out.otherAnonKiB += m.rss;
  }
  return out;
}

export const HAS_GDB = onPath("gdb");

let gdbCalls: boolean | undefined;

/** Whether gdb's output for `call (int)getpid()` in process `pid` shows the call answering with that pid. */
export function gdbCalled(output: string, pid: number): boolean {
  return new RegExp(`= ${pid}\\b`).test(output);
}

/**
 * Whether gdb can call a function inside a process here, tried once (then remembered) on a throwaway Node process,
 * the kind the bench measures. It cannot on some machines: gdb 13 on a CPU with Intel AMX (this VM since
 * 2026-12-07 18:00) attaches, then fails to set up the call ("Couldn't write extended state status: Bad address"),
 * and the process it stopped may not survive. The measured processes are then never stopped for a reading that
 * cannot come. bench/run.ts asks before it measures anything.
 */
export function gdbCanCall(): boolean {
  if (gdbCalls !== undefined) return gdbCalls;
  if (!HAS_GDB) return (gdbCalls = false);
  const child = spawn(process.execPath, ["-e", "setTimeout(() => {}, 30_000)"], { stdio: "ignore" });
  child.on("error", () => {});
  try {
    if (child.pid === undefined) return (gdbCalls = false);
    const out = execFileSync("gdb", ["-p", String(child.pid), "-batch", "-ex", "call (int)getpid()"], { encoding: "utf8", stdio: ["ignore", "pipe", "pipe"], timeout: 20_000 });
    gdbCalls = gdbCalled(out, child.pid);
  } catch {
    gdbCalls = false;
  } finally {
    child.kill("SIGKILL");
  }
  return gdbCalls;
}

/**
 * What glibc's malloc holds in a running process, all arenas (bytes): in use by the program (including its mmapped
 * chunks) and free but kept (its bins and top chunks: memory it can hand out again without asking the kernel,
 * though the RSS still grows where the sizes do not fit or the pages were never touched). Read by asking the
 * process itself, through gdb, to write `malloc_info(3)`; the process stops for well under a second. Undefined
 * without gdb, where gdb cannot call into a process (`gdbCanCall`), or when the process cannot be traced.
 */
export function mallocInfo(pid: number): { inUseB: number; freeB: number } | undefined {
  if (!gdbCanCall()) return undefined;
  const file = join(tmpdir(), `tollgate-bench-malloc-${pid}-${process.pid}-${Date.now()}.xml`);
  try {
    execFileSync(
      "gdb",
      ["-p", String(pid), "-batch", "-ex", `call (void*)fopen("${file}","w")`, "-ex", "call (int)malloc_info(0, $1)", "-ex", "call (int)fclose($1)"],
      { stdio: "ignore", timeout: 20_000 },
    );
    return parseMallocInfo(readFileSync(file, "utf8"));
  } catch {
    return undefined;
  } finally {
    rmSync(file, { force: true });
  }
}

/**
 * `mallocInfo` from the XML `malloc_info(3)` writes: one <heap> per arena, then the totals over all of them. In use
 * is what the arenas hold (`system current`) less what is free in their bins (`fast` and `rest`), plus the chunks
 * malloc mmapped on their own (`mmap`, outside the arenas). Undefined when the totals are not there.
 */
export function parseMallocInfo(xml: string): { inUseB: number; freeB: number } | undefined {
  const end = xml.lastIndexOf("</heap>");
  if (end < 0) return undefined;
  const totals = xml.slice(end);
  const size = (tag: "total" | "system", type: string) => Number(new RegExp(`<${tag} type="${type}"(?: count="\\d+")? size="(\\d+)"`).exec(totals)?.[1] ?? NaN);
  const freeB = size("total", "fast") + size("total", "rest");
  const inUseB = size("system", "current") - freeB + size("total", "mmap");
  return Number.isFinite(inUseB) && Number.isFinite(freeB) ? { inUseB, freeB } : undefined;
}
