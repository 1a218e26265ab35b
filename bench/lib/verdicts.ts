/**
 * The performance issue's targets, judged from this run's figures (medians over the rounds). A target whose
 * figures are missing (a peer not installed, a row broken) is reported as n/a, never as a pass.
 */
import type { Row } from "./report.ts";
import type { HeldFigures, StreamFigures } from "./streams.ts";

export interface Verdict {
  target: string;
  measured: string;
  pass: boolean | undefined;
}


/** The issue's limits, shared by these per-run verdicts and the round-by-round tally (bench/lib/rounds.ts). */
export const LIMITS = {
  perCoreVsNginx: 0.3,
  perCoreVsUndici: 0.95,
  firstSeenVsHaproxy: 0.3,
  unloadedP50Ms: 0.25,
  unloadedP99Ms: 2,
  openP50Ms: 0.5,
  openP99Ms: 3,
  ttfbP50Ms: 1,
  ttfbP99Ms: 3,
  gapP99Ms: 1,
  perStreamKB: 24,
  idleMB: 64,
  abortMs: 100,
} as const;

/**
 * RSS per additional held stream in KB (the figures are KiB): after the full GC where it was read, else as found;
 * undefined unless every stream opened, or when the reading is not a number (NaN is written to JSON as null).
 */
export function perStreamKB(held: HeldFigures | undefined): number | undefined {
  const kib = held && held.opened === held.streams ? (held.perStreamGcKiB ?? held.perStreamKiB) : undefined;
  return typeof kib === "number" && Number.isFinite(kib) ? kib * 1.024 : undefined;
}

const f2 = (v: number | undefined) => (v === undefined ? "n/a" : v.toFixed(2));
const f3 = (v: number | undefined) => (v === undefined ? "n/a" : v.toFixed(3));
const k = (v: number | undefined) => (v === undefined ? "n/a" : `${(v / 1000).toFixed(1)} k`);

export function verdicts(rows: Row[], streams: StreamFigures[], fullName = "tollgate-full"): Verdict[] {
  const row = (config: string, mode: Row["mode"], connections?: number) => rows.find((r) => r.config === config && r.mode === mode && (connections === undefined || r.connections === connections));
  const out: Verdict[] = [];
  const atMost = (target: string, v: number | undefined, limit: number, measured: string) => out.push({ target, measured, pass: v === undefined ? undefined : v <= limit });
  const atLeast = (target: string, v: number | undefined, limit: number, measured: string) => out.push({ target, measured, pass: v === undefined ? undefined : v >= limit });

  for (const [config, label] of [
    [fullName, "full path, repeated token"],
    ["tollgate-key", "API-key path"],
  ] as const) {
    const r = row(config, "json", 32);
    const rpcs = r?.requestsPerProxyCpuS;
    // The corridor floor (the API-key path's required work, written as plainly as Node allows) says whether the
    // target is within reach of any Node implementation in this very run.
    const floor = row(config === "tollgate-key" ? "corridor-floor" : "corridor-floor-full", "json", 32);
    atLeast(`per-core throughput, ${label} (JSON, 32 conns): req/CPU-s ≥ 0.30× nginx`, r?.cpuVsNginx, LIMITS.perCoreVsNginx, `${f2(r?.cpuVsNginx)}× (${k(rpcs)} vs ${k(row("nginx", "json", 32)?.requestsPerProxyCpuS)})${floor?.cpuVsNginx === undefined ? "" : `; its floor ${f2(floor.cpuVsNginx)}×`}`);
    atLeast(`per-core throughput, ${label} (JSON, 32 conns): req/CPU-s ≥ 0.95× bare undici forwarder`, r?.cpuVsUndici, LIMITS.perCoreVsUndici, `${f2(r?.cpuVsUndici)}× (${k(rpcs)} vs ${k(row("undici-dispatch", "json", 32)?.requestsPerProxyCpuS)})${floor?.cpuVsUndici === undefined ? "" : `; its floor ${f2(floor.cpuVsUndici)}×`}`);
  }
  // The full path's floor (peers/corridor-floor.ts with a JWT and the Redis admission) in the same run, beside each
  // full-path figure: what any Node implementation of that work measured here.
  const floorFull = (mode: Row["mode"], connections: number | undefined, pick: (r: Row) => number | undefined) => {
    const r = row("corridor-floor-full", mode, connections);
    const v = r ? pick(r) : undefined;
    return v === undefined ? "" : `; full-path floor +${f3(v)} ms`;
  };
  const fresh = row("tollgate-jwt-fresh", "json", 32);
  atLeast("first-seen-token JWT (JSON, 32 conns): req/CPU-s ≥ 0.30× HAProxy + jwt_verify", fresh?.cpuVsHaproxy, LIMITS.firstSeenVsHaproxy, `${f2(fresh?.cpuVsHaproxy)}× (${k(fresh?.requestsPerProxyCpuS)} vs ${k(row("haproxy-jwt", "json", 32)?.requestsPerProxyCpuS)})`);

  const one = row(fullName, "json", 1);
  atMost("added latency unloaded (full path, JSON, 1 conn): p50 ≤ 0.25 ms", one?.addedP50Ms, LIMITS.unloadedP50Ms, `+${f3(one?.addedP50Ms)} ms${floorFull("json", 1, (r) => r.addedP50Ms)}`);
  atMost("added latency unloaded (full path, JSON, 1 conn): p99 ≤ 2 ms", one?.addedP99Ms, LIMITS.unloadedP99Ms, `+${f3(one?.addedP99Ms)} ms${floorFull("json", 1, (r) => r.addedP99Ms)}`);
  const open = row(fullName, "open");
  atMost(`added latency at ${open?.rate ?? 2000} req/s open loop (full path): p50 ≤ 0.5 ms`, open?.addedP50Ms, LIMITS.openP50Ms, `+${f3(open?.addedP50Ms)} ms${floorFull("open", undefined, (r) => r.addedP50Ms)}`);
  atMost(`added latency at ${open?.rate ?? 2000} req/s open loop (full path): p99 ≤ 3 ms`, open?.addedP99Ms, LIMITS.openP99Ms, `+${f3(open?.addedP99Ms)} ms${floorFull("open", undefined, (r) => r.addedP99Ms)}`);

  const sse = row(fullName, "sse", 32);
  atMost("streaming, 32 streams (full path): added TTFB p50 ≤ 1 ms", sse?.addedTtfbP50Ms, LIMITS.ttfbP50Ms, `+${f3(sse?.addedTtfbP50Ms)} ms${floorFull("sse", 32, (r) => r.addedTtfbP50Ms)}`);
  atMost("streaming, 32 streams (full path): added TTFB p99 ≤ 3 ms", sse?.addedTtfbP99Ms, LIMITS.ttfbP99Ms, `+${f3(sse?.addedTtfbP99Ms)} ms${floorFull("sse", 32, (r) => r.addedTtfbP99Ms)}`);
  // One-sided: a gap p99 below direct's is noise, not a fault of the proxy.
  atMost("streaming, 32 streams (full path): inter-event gap p99 within 1 ms of direct", sse?.addedGapP99Ms, LIMITS.gapP99Ms, `${f2(sse?.gapP99Ms)} ms vs direct ${f2(row("direct", "sse", 32)?.gapP99Ms)} ms`);
  const intact = sse ? sse.intact === sse.requests && sse.eventsMin === sse.eventsMax : undefined;
  out.push({
    target: "streaming, 32 streams (full path): no event coalescing, every stream intact",
    measured: sse
      ? `${sse.coalesced} events coalesced with the previous one (direct: ${row("direct", "sse", 32)?.coalesced ?? "n/a"}), ${sse.bunched} bunched (direct: ${row("direct", "sse", 32)?.bunched ?? "n/a"}); ${sse.intact}/${sse.requests} streams intact, ${sse.eventsMin}${sse.eventsMin === sse.eventsMax ? "" : `–${sse.eventsMax}`} events each`
      : "n/a",
    pass: sse && intact !== undefined ? sse.coalesced === 0 && intact : undefined,
  });

  const s = streams.find((x) => x.config === fullName);
  const held = s?.held;
  // Judged after a full GC in Tollgate (what the streams retain); the figure as found, garbage included, is shown too.
  const floorStreams = streams.find((x) => x.config === "corridor-floor-full")?.held;
  const floorHeld = floorStreams && floorStreams.opened === floorStreams.streams ? floorStreams : undefined;
  const kbOf = (kib: number | undefined) => (kib === undefined ? "n/a" : `${(kib * 1.024).toFixed(1)} KB`);
  atMost(
    `RSS per additional open stream at ${held?.streams ?? 1000} streams (full path, after a full GC) ≤ 24 KB`,
    perStreamKB(held),
    LIMITS.perStreamKB,
    held
      ? `${kbOf(held.perStreamGcKiB)} after GC, ${kbOf(held.perStreamKiB)} as found (${held.opened}/${held.streams} opened; RSS ${mb(held.rssIdleKiB)} → ${mb(held.rssOpenKiB)})` +
        (perStreamKB(floorHeld) !== undefined ? `; full-path floor ${perStreamKB(floorHeld)!.toFixed(1)} KB after GC` : "") +
        (allocated(held) !== undefined ? `; allocated per stream (live JS heap + malloc in use) ${allocated(held)}${floorHeld && allocated(floorHeld) !== undefined ? `, full-path floor ${allocated(floorHeld)}` : ""}` : "")
      : "n/a",
  );
  const idle = held?.rssIdleGcKiB ?? held?.rssIdleKiB;
  atMost(
    "RSS idle (full path, fresh process after a short warm-up and a full GC) ≤ 64 MB",
    idle === undefined ? undefined : (idle * 1024) / 1e6,
    LIMITS.idleMB,
    held ? `${mb(held.rssIdleGcKiB)} after GC, ${mb(held.rssIdleKiB)} as found (${mb(s?.rssAtStartKiB)} right after start; ${mb(s?.rssAfterRoundsKiB)} idle after the load rounds)` : "n/a",
  );
  const abort = s?.abort;
  const abortOk = abort ? abort.notAborted === 0 && abort.failed === 0 && abort.maxMs !== undefined : undefined;
  out.push({
    target: "client disconnect aborts the upstream request within 100 ms (full path, max of all tries)",
    measured: abort ? `p50 ${f2(abort.p50Ms)} ms, max ${f2(abort.maxMs)} ms over ${abort.tries} tries${abort.notAborted ? `, ${abort.notAborted} not aborted` : ""}${abort.failed ? `, ${abort.failed} failed to open` : ""}` : "n/a",
    pass: abort && abortOk !== undefined ? abortOk && abort.maxMs! <= LIMITS.abortMs : undefined,
  });
  return out;
}

/** A held stream's memory allocated (live JS heap + malloc in use, after GC), as text; undefined when not read. */
function allocated(h: HeldFigures): string | undefined {
  return h.heapPerStreamB === undefined || h.mallocPerStreamB === undefined ? undefined : `${((h.heapPerStreamB + h.mallocPerStreamB) / 1000).toFixed(1)} KB`;
}

function mb(kib: number | undefined): string {
  return kib === undefined ? "n/a" : `${((kib * 1024) / 1e6).toFixed(1)} MB`;
}

export function verdictLines(list: Verdict[]): string {
  return list.map((v) => `${v.pass === undefined ? "N/A " : v.pass ? "PASS" : "FAIL"}  ${v.target}: ${v.measured}`).join("\n");
}
