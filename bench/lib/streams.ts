/**
 * Long-lived streams, on raw sockets so the bench controls exactly when a client goes away:
 *
 * - `abortProbes`: open a stream to the holding stand-in through the proxy, wait for its first event, destroy
 *   the client socket, and time how long until the stand-in sees its own request close (both clocks are
 *   CLOCK_MONOTONIC). That is the time a disconnected client keeps an upstream generation (and its bill) going.
 * - `heldStreams`: the proxy's RSS idle, then with N streams held open (each has received its first event),
 *   then after they are all dropped — and how long the upstream took to see all N closed.
 */
import { connect, type Socket } from "node:net";
import type { ChildProcess } from "node:child_process";
import { mallocInfo, memoryMap, rssKiB, type MemoryMap } from "./procs.ts";
import type { GcFigures } from "./targets.ts";

const nowMs = () => Number(process.hrtime.bigint()) / 1e6;
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

export interface StreamRequest {
  port: number;
  path: string;
  headers: Record<string, string>;
  body: Buffer;
}

/** Messages from the stand-in peer: probe arrivals and closes, and stats answers. */
export class StandInChannel {
  readonly #waiters = new Map<string, (m: Record<string, unknown>) => void>();
  readonly #proc: ChildProcess;
  #seq = 0;

  constructor(proc: ChildProcess) {
    this.#proc = proc;
    proc.on("message", (m: unknown) => {
      if (!m || typeof m !== "object") return;
      const msg = m as Record<string, unknown>;
      const key = typeof msg.probe === "string" ? `${msg.probe}:${"closed" in msg ? "closed" : "received"}` : msg.stats !== undefined ? `stats:${String(msg.stats)}` : undefined;
      if (key === undefined) return;
      const waiter = this.#waiters.get(key);
      if (waiter) {
        this.#waiters.delete(key);
        waiter(msg);
      }
    });
  }

  /** Resolves with the message for `key`, or undefined after `timeoutMs`. Register before triggering it. */
  wait(key: string, timeoutMs: number): Promise<Record<string, unknown> | undefined> {
    return new Promise((resolve) => {
      const timer = setTimeout(() => {
        this.#waiters.delete(key);
        resolve(undefined);
      }, timeoutMs);
      this.#waiters.set(key, (m) => {
        clearTimeout(timer);
        resolve(m);
      });
    });
  }

  /** Streams the holding stand-in has open right now. */
  async openStreams(): Promise<number | undefined> {
    const id = ++this.#seq;
    const answer = this.wait(`stats:${id}`, 2000);
    this.#proc.send({ stats: id });
    const m = await answer;
    return typeof m?.open === "number" ? m.open : undefined;
  }
}

/** Opens a stream; resolves with the socket once the first SSE event arrived (or undefined on failure/timeout). */
function openStream(req: StreamRequest, extraHeaders: Record<string, string>, timeoutMs: number): Promise<Socket | undefined> {
  return new Promise((resolve) => {
    const socket = connect(req.port, "127.0.0.1");
    socket.setNoDelay(true);
    let seen = "";
    let done = false;
    const finish = (ok: boolean) => {
      if (done) return;
      done = true;
      clearTimeout(timer);
      socket.off("data", onData);
      if (ok) {
        socket.on("data", () => {}); // keep reading: a stalled reader would back-pressure the proxy
        resolve(socket);
      } else {
        socket.destroy();
        resolve(undefined);
      }
    };
    const timer = setTimeout(() => finish(false), timeoutMs);
    const onData = (chunk: Buffer) => {
      seen += chunk.toString("latin1");
      if (seen.length >= 12 && !seen.startsWith("HTTP/1.1 200")) return finish(false);
      const headerEnd = seen.indexOf("\r\n\r\n");
      if (headerEnd >= 0 && /data: [^\n]*\n\n/.test(seen.slice(headerEnd + 4))) finish(true);
    };
    socket.on("data", onData);
    socket.once("error", () => finish(false));
    socket.once("close", () => finish(false));
    const headers = { host: `127.0.0.1:${req.port}`, ...req.headers, ...extraHeaders, "content-length": String(req.body.length) };
    socket.write(`POST ${req.path} HTTP/1.1\r\n${Object.entries(headers).map(([k, v]) => `${k}: ${v}\r\n`).join("")}\r\n`);
    socket.write(req.body);
  });
}

export interface StreamFigures {
  config: string;
  /** RSS (KiB) of the fresh process right after it was ready, and of the round instance after the load rounds. */
  rssAtStartKiB?: number | undefined;
  rssAfterRoundsKiB?: number | undefined;
  held?: HeldFigures | undefined;
  abort?: AbortFigures | undefined;
}

export interface AbortFigures {
  tries: number;
  /** Milliseconds from the client's socket being destroyed to the stand-in seeing its request close. */
  p50Ms: number | undefined;
  maxMs: number | undefined;
  /** Tries whose upstream request was still open `waitMs` after the client left. */
  notAborted: number;
  /** Tries whose stream never opened. */
  failed: number;
}

export async function abortProbes(req: StreamRequest, channel: StandInChannel, tries: number, label: string, waitMs = 2000): Promise<AbortFigures> {
  const times: number[] = [];
  let notAborted = 0;
  let failed = 0;
  for (let i = 0; i < tries; i++) {
    const probe = `${label}-${process.pid}-${i}`;
    const closed = channel.wait(`${probe}:closed`, 5000 + waitMs);
    const socket = await openStream(req, { "x-bench-probe": probe }, 5000);
    if (!socket) {
      failed++;
      continue;
    }
    await sleep(5);
    const left = nowMs();
    socket.destroy();
    const m = await Promise.race([closed, sleep(waitMs).then(() => undefined)]);
    if (m && typeof m.closed === "number") times.push(m.closed - left);
    else notAborted++;
  }
  times.sort((a, b) => a - b);
  return { tries, p50Ms: times.length ? times[Math.floor((times.length - 1) / 2)] : undefined, maxMs: times.at(-1), notAborted, failed };
}

export interface HeldFigures {
  streams: number;
  opened: number;
  /** Proxy RSS (KiB): idle before, with every stream open, and after they all closed. */
  rssIdleKiB: number | undefined;
  rssOpenKiB: number | undefined;
  rssAfterKiB: number | undefined;
  perStreamKiB: number | undefined;
  /** The same after a full garbage collection in the proxy (when it can be asked for one): what the streams retain. */
  rssIdleGcKiB?: number | undefined;
  rssOpenGcKiB?: number | undefined;
  perStreamGcKiB?: number | undefined;
  /** V8 heap in use after that collection, idle and with the streams open, and the difference per stream (bytes). */
  heapIdleB?: number | undefined;
  heapOpenB?: number | undefined;
  heapPerStreamB?: number | undefined;
  /**
   * The heap V8 keeps committed after that collection (its pages, used or free), idle and with the streams open,
   * per stream (bytes). RSS per stream minus this is roughly what lies outside V8's heap (sockets, parsers and
   * buffers in native memory, the allocator's own growth); it can come out negative when the streams reuse pages
   * already resident at the idle reading.
   */
  heapCommittedIdleB?: number | undefined;
  heapCommittedOpenB?: number | undefined;
  heapCommittedPerStreamB?: number | undefined;
  /**
   * Memory outside V8's heap that V8 is told of (Buffers' backing stores among it), and the Buffers' own, per
   * stream (bytes, after the same collection): the native memory that JavaScript objects hold.
   */
  externalPerStreamB?: number | undefined;
  arrayBuffersPerStreamB?: number | undefined;
  /**
   * Where the RSS grew, per stream (KiB, after the same collection, from /proc/<pid>/smaps; see `memoryMap`):
   * malloc's main arena, its other arenas, other anonymous memory (V8's pages, large mallocs, stacks), files.
   */
  mapPerStreamKiB?: MemoryMap | undefined;
  /**
   * Native memory the streams hold, per stream (bytes): the growth of what glibc's malloc has in use, after the
   * same collection (see `mallocInfo`; needs gdb). With `heapPerStreamB` it is what a stream costs in memory
   * allocated, whatever the RSS shows: the RSS grows by less when the streams reuse memory malloc and V8 already
   * held free at the idle reading (`mallocFreeIdleB`), and by more when fragmentation leaves holes.
   */
  mallocPerStreamB?: number | undefined;
  mallocFreeIdleB?: number | undefined;
  /** Streams the upstream stand-in had open while the clients held theirs (should equal `opened`). */
  upstreamOpen: number | undefined;
  /** Milliseconds from dropping every client to the stand-in having none open (undefined: not within the wait). */
  allClosedMs: number | undefined;
}

/**
 * `collectGarbage`, when given, asks the proxy for a full GC and resolves true once done: the RSS is then read
 * both as found (garbage included, as a process holds it between collections) and right after a collection.
 */
export async function heldStreams(
  req: StreamRequest,
  proxyPid: number,
  channel: StandInChannel,
  count: number,
  collectGarbage?: () => Promise<GcFigures | undefined>,
  settleMs = 1000,
): Promise<HeldFigures> {
  await sleep(settleMs);
  const rssIdleKiB = rssKiB(proxyPid);
  const afterGc = async () => {
    const memory = collectGarbage ? await collectGarbage() : undefined;
    if (!memory) return { rss: undefined, heap: undefined, committed: undefined, external: undefined, arrayBuffers: undefined, map: undefined, malloc: undefined };
    await sleep(200);
    return {
      rss: rssKiB(proxyPid),
      heap: memory.heapUsed,
      committed: memory.heapTotal,
      external: memory.external,
      arrayBuffers: memory.arrayBuffers,
      map: memoryMap(proxyPid),
      malloc: mallocInfo(proxyPid),
    };
  };
  const perStream = (idle: number | undefined, open: number | undefined, n: number) =>
    idle !== undefined && open !== undefined && n > 0 ? (open - idle) / n : undefined;
  const mapPerStream = (idle: MemoryMap | undefined, open: MemoryMap | undefined, n: number): MemoryMap | undefined => {
    if (!idle || !open || n === 0) return undefined;
    const out = { ...idle };
    for (const key of Object.keys(out) as (keyof MemoryMap)[]) out[key] = (open[key] - idle[key]) / n;
    return out;
  };
  const idleGc = await afterGc();
  const sockets: Socket[] = [];
  const deadline = Date.now() + 60_000;
  try {
    // In batches, so the listen backlog and the proxy's accept loop are not the thing measured.
    for (let i = 0; i < count && Date.now() < deadline; i += 50) {
      const batch = await Promise.all(Array.from({ length: Math.min(50, count - i) }, () => openStream(req, {}, 10_000)));
      for (const s of batch) if (s) sockets.push(s);
    }
    await sleep(settleMs);
    const rssOpenKiB = rssKiB(proxyPid);
    const openGc = await afterGc();
    const upstreamOpen = await channel.openStreams();
    const dropped = nowMs();
    for (const s of sockets) s.destroy();
    let allClosedMs: number | undefined;
    for (const until = Date.now() + 10_000; Date.now() < until; ) {
      const open = await channel.openStreams();
      if (open === 0) {
        allClosedMs = nowMs() - dropped;
        break;
      }
      await sleep(20);
    }
    await sleep(settleMs);
    const rssAfterKiB = rssKiB(proxyPid);
    return {
      streams: count,
      opened: sockets.length,
      rssIdleKiB,
      rssOpenKiB,
      rssAfterKiB,
      perStreamKiB: perStream(rssIdleKiB, rssOpenKiB, sockets.length),
      rssIdleGcKiB: idleGc.rss,
      rssOpenGcKiB: openGc.rss,
      perStreamGcKiB: perStream(idleGc.rss, openGc.rss, sockets.length),
      heapIdleB: idleGc.heap,
      heapOpenB: openGc.heap,
      heapPerStreamB: perStream(idleGc.heap, openGc.heap, sockets.length),
      heapCommittedIdleB: idleGc.committed,
      heapCommittedOpenB: openGc.committed,
      heapCommittedPerStreamB: perStream(idleGc.committed, openGc.committed, sockets.length),
      externalPerStreamB: perStream(idleGc.external, openGc.external, sockets.length),
      arrayBuffersPerStreamB: perStream(idleGc.arrayBuffers, openGc.arrayBuffers, sockets.length),
      mallocPerStreamB: perStream(idleGc.malloc?.inUseB, openGc.malloc?.inUseB, sockets.length),
      mallocFreeIdleB: idleGc.malloc?.freeB,
      mapPerStreamKiB: mapPerStream(idleGc.map, openGc.map, sockets.length),
      upstreamOpen,
      allClosedMs,
    };
  } finally {
    for (const s of sockets) s.destroy();
  }
}

/** The held-stream and disconnect figures as printed lines. */
export function streamLines(figures: StreamFigures[], direct: AbortFigures | undefined): string {
  const mb = (kib: number | undefined) => (kib === undefined ? "n/a" : `${((kib * 1024) / 1e6).toFixed(1)} MB`);
  const ms = (v: number | undefined) => (v === undefined ? "n/a" : `${v.toFixed(2)} ms`);
  const kb = (kib: number | undefined) => (kib === undefined ? "n/a" : `${(kib * 1.024).toFixed(1)} KB`);
  const lines: string[] = [];
  if (direct) lines.push(`direct: a client disconnect is seen by the stand-in after p50 ${ms(direct.p50Ms)}, max ${ms(direct.maxMs)} (${direct.tries} tries)`);
  for (const f of figures) {
    const a = f.abort;
    const h = f.held;
    if (h) {
      const kbOfBytes = (bytes: number | undefined) => (bytes === undefined ? "n/a" : `${(bytes / 1000).toFixed(1)} KB`);
      lines.push(
        `${f.config}: RSS ${mb(f.rssAtStartKiB)} at start, ${mb(h.rssIdleKiB)} idle after a short warm-up (${mb(h.rssIdleGcKiB)} after a full GC), ` +
          `${mb(h.rssOpenKiB)} with ${h.opened}/${h.streams} streams open (${mb(h.rssOpenGcKiB)} after a full GC): ${kb(h.perStreamKiB)} per stream as found, ${kb(h.perStreamGcKiB)} after GC ` +
          `(the upstream had ${h.upstreamOpen ?? "n/a"} open); ${mb(h.rssAfterKiB)} after they closed; ` +
          `${h.allClosedMs === undefined ? "the upstream still had streams open 10 s after the clients left" : `the upstream saw all of them closed ${h.allClosedMs.toFixed(0)} ms after the clients left`}; ` +
          `the round instance held ${mb(f.rssAfterRoundsKiB)} idle after the load rounds`,
      );
      const map = h.mapPerStreamKiB;
      lines.push(
        `${f.config}: per stream, after GC: live JS heap ${kbOfBytes(h.heapPerStreamB)} (V8 heap committed ${kbOfBytes(h.heapCommittedPerStreamB)}), ` +
          `malloc in use ${kbOfBytes(h.mallocPerStreamB)} (external to V8 ${kbOfBytes(h.externalPerStreamB)}), ` +
          `allocated ${h.heapPerStreamB === undefined || h.mallocPerStreamB === undefined ? "n/a" : kbOfBytes(h.heapPerStreamB + h.mallocPerStreamB)} (heap + malloc), ` +
          `malloc held ${mb(h.mallocFreeIdleB === undefined ? undefined : h.mallocFreeIdleB / 1024)} free at the idle reading; ` +
          (map
            ? `RSS grew ${kb(map.mallocMainKiB)} in malloc's main arena, ${kb(map.mallocArenasKiB)} in its other arenas, ${kb(map.otherAnonKiB)} in other anonymous memory (V8's pages), ${kb(map.fileKiB)} file-backed`
            : "no memory map"),
      );
    }
    if (a) lines.push(`${f.config}: client disconnect → upstream request aborted after p50 ${ms(a.p50Ms)}, max ${ms(a.maxMs)} (${a.tries} tries${a.notAborted ? `, ${a.notAborted} NOT aborted within 2 s` : ""}${a.failed ? `, ${a.failed} failed to open` : ""})`);
  }
  return lines.join("\n");
}
