/**
 * The targets judged round by round over many results files: for each target, how often Tollgate's
 * configuration met it and how often the floor of the same work did (the corridor floors, Node doing only what
 * the path requires), with the median and range of each. One run's verdicts are medians of two rounds on a
 * machine whose speed moves between rounds; this shows whether a target is within Node's reach here at all.
 */
import { median, type Mode, type Row } from "./report.ts";
import type { StreamFigures } from "./streams.ts";
import { LIMITS, perStreamKB } from "./verdicts.ts";

/** What bench/run.ts writes to bench/results/ (only the parts read here). */
export interface ResultsFile {
  date: string;
  roundRows?: Row[][];
  streams?: { perConfig?: StreamFigures[] };
}

export interface RoundTarget {
  target: string;
  /** Tollgate's configuration, then the floor of the same work when there is one. */
  configs: readonly string[];
  mode: Mode;
  /** Closed loop only (the open loop's connection count is what it needed, not what it asked for). */
  connections?: number;
  value: (row: Row) => number | undefined;
  limit: number;
  atLeast: boolean;
}

export const ROUND_TARGETS: readonly RoundTarget[] = [
  { target: "per-core ≥ 0.30× nginx, API key (JSON, 32 conns)", configs: ["tollgate-key", "corridor-floor"], mode: "json", connections: 32, value: (r) => r.cpuVsNginx, limit: LIMITS.perCoreVsNginx, atLeast: true },
  { target: "per-core ≥ 0.30× nginx, full path (JSON, 32 conns)", configs: ["tollgate-full", "corridor-floor-full"], mode: "json", connections: 32, value: (r) => r.cpuVsNginx, limit: LIMITS.perCoreVsNginx, atLeast: true },
  { target: "per-core ≥ 0.95× bare undici, API key", configs: ["tollgate-key", "corridor-floor"], mode: "json", connections: 32, value: (r) => r.cpuVsUndici, limit: LIMITS.perCoreVsUndici, atLeast: true },
  { target: "per-core ≥ 0.95× bare undici, full path", configs: ["tollgate-full", "corridor-floor-full"], mode: "json", connections: 32, value: (r) => r.cpuVsUndici, limit: LIMITS.perCoreVsUndici, atLeast: true },
  { target: "first-seen RS256 ≥ 0.30× HAProxy + jwt_verify", configs: ["tollgate-jwt-fresh"], mode: "json", connections: 32, value: (r) => r.cpuVsHaproxy, limit: LIMITS.firstSeenVsHaproxy, atLeast: true },
  { target: "unloaded p50 ≤ 0.25 ms added (full path, 1 conn)", configs: ["tollgate-full", "corridor-floor-full"], mode: "json", connections: 1, value: (r) => r.addedP50Ms, limit: LIMITS.unloadedP50Ms, atLeast: false },
  { target: "unloaded p99 ≤ 2 ms added (full path, 1 conn)", configs: ["tollgate-full", "corridor-floor-full"], mode: "json", connections: 1, value: (r) => r.addedP99Ms, limit: LIMITS.unloadedP99Ms, atLeast: false },
  { target: "open loop p50 ≤ 0.5 ms added (full path)", configs: ["tollgate-full", "corridor-floor-full"], mode: "open", value: (r) => r.addedP50Ms, limit: LIMITS.openP50Ms, atLeast: false },
  { target: "open loop p99 ≤ 3 ms added (full path)", configs: ["tollgate-full", "corridor-floor-full"], mode: "open", value: (r) => r.addedP99Ms, limit: LIMITS.openP99Ms, atLeast: false },
  { target: "TTFB p50 ≤ 1 ms added, 32 streams (full path)", configs: ["tollgate-full", "corridor-floor-full"], mode: "sse", connections: 32, value: (r) => r.addedTtfbP50Ms, limit: LIMITS.ttfbP50Ms, atLeast: false },
  { target: "TTFB p99 ≤ 3 ms added, 32 streams (full path)", configs: ["tollgate-full", "corridor-floor-full"], mode: "sse", connections: 32, value: (r) => r.addedTtfbP99Ms, limit: LIMITS.ttfbP99Ms, atLeast: false },
  // One-sided, as in the run's verdicts: a gap p99 below direct's is noise, not a fault of the proxy.
  { target: "inter-event gap p99 within 1 ms of direct (full path)", configs: ["tollgate-full", "corridor-floor-full"], mode: "sse", connections: 32, value: (r) => r.addedGapP99Ms, limit: LIMITS.gapP99Ms, atLeast: false },
];

/** Memory per held stream: one figure per run, for Tollgate's full path and its floor. */
const MEMORY_TARGET = "RSS ≤ 24 KB per held stream (after a full GC where read; one figure per run)";
const MEMORY_CONFIGS = ["tollgate-full", "corridor-floor-full"] as const;

export interface Tally {
  target: string;
  config: string;
  /** Rounds (or, for memory, runs) that measured it. */
  measured: number;
  met: number;
  median: number | undefined;
  min: number | undefined;
  max: number | undefined;
}

function tally(target: string, config: string, values: number[], meets: (v: number) => boolean): Tally {
  return {
    target,
    config,
    measured: values.length,
    met: values.filter(meets).length,
    median: median(values),
    min: values.length === 0 ? undefined : Math.min(...values),
    max: values.length === 0 ? undefined : Math.max(...values),
  };
}

/**
 * Every round of every file, judged per target and configuration. Paired: a round (for memory, a run) counts for a
 * target only when every configuration of that target measured it, so Tollgate and its floor are compared over the
 * same rounds (runs from before the floors existed count for neither).
 */
export function tallyRounds(files: readonly ResultsFile[], targets: readonly RoundTarget[] = ROUND_TARGETS): Tally[] {
  const out: Tally[] = [];
  const finite = (v: number | null | undefined): v is number => typeof v === "number" && Number.isFinite(v);
  for (const t of targets) {
    const values: number[][] = t.configs.map(() => []);
    for (const file of files) {
      for (const rows of file.roundRows ?? []) {
        const found = t.configs.map((config) => {
          const row = rows.find((r) => r.config === config && r.mode === t.mode && (t.connections === undefined || r.connections === t.connections));
          return row ? t.value(row) : undefined;
        });
        if (found.every(finite)) found.forEach((v, i) => values[i]!.push(v!));
      }
    }
    t.configs.forEach((config, i) => out.push(tally(t.target, config, values[i]!, (v) => (t.atLeast ? v >= t.limit : v <= t.limit))));
  }
  const memory: number[][] = MEMORY_CONFIGS.map(() => []);
  for (const file of files) {
    const found = MEMORY_CONFIGS.map((config) => perStreamKB(file.streams?.perConfig?.find((s) => s.config === config)?.held));
    if (found.every(finite)) found.forEach((v, i) => memory[i]!.push(v!));
  }
  MEMORY_CONFIGS.forEach((config, i) => out.push(tally(MEMORY_TARGET, config, memory[i]!, (v) => v <= LIMITS.perStreamKB)));
  return out;
}

export function tallyTable(list: readonly Tally[]): string {
  const f = (v: number | undefined) => (v === undefined ? "-" : Math.abs(v) < 10 ? v.toFixed(2) : v.toFixed(1));
  const lines = ["| target | configuration | measured | met | median | range |", "|---|---|---:|---:|---:|---|"];
  let previous = "";
  for (const t of list) {
    lines.push(`| ${t.target === previous ? "" : t.target} | ${t.config} | ${t.measured} | ${t.met} | ${f(t.median)} | ${f(t.min)} – ${f(t.max)} |`);
    previous = t.target;
  }
  return lines.join("\n");
}
