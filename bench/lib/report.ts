/** Rows of the results table: measured figures, the comparison with the direct call, and the Markdown table. */
import { percentile, type LoadResult } from "./load.ts";

export type Mode = "json" | "sse";

export interface Row {
  config: string;
  mode: Mode;
  connections: number;
  requests: number;
  elapsedS: number;
  rps: number;
  p50Ms: number | undefined;
  p99Ms: number | undefined;
  /** Time to the first body byte (for SSE: the first event). */
  ttfbP50Ms: number | undefined;
  ttfbP99Ms: number | undefined;
  addedP50Ms: number | undefined;
  addedP99Ms: number | undefined;
  ratioToDirect: number | undefined;
  intact: number;
  non200: number;
  mismatched: number;
  transportErrors: number;
  eventsMin: number | undefined;
  eventsMax: number | undefined;
  firstError: string | undefined;
  /** CPU seconds of the proxy process(es) during the measured run; undefined for direct. */
  proxyCpuS: number | undefined;
  /** Requests per CPU-second of the proxy: the per-core capacity figure. */
  requestsPerProxyCpuS: number | undefined;
  upstreamCpuS: number | undefined;
  /** Busy fraction of each CPU during the run (CPU 0: load generator + stand-in; CPU 1: the proxy). */
  cpuBusy: number[] | undefined;
  /** CPU used during the run by processes that are not part of the bench, in cores (0.25 = a quarter core). */
  otherCpu: number | undefined;
}

export function toRow(config: string, mode: Mode, load: LoadResult, cpu: { proxy?: number; upstream?: number; busy?: number[]; other?: number }): Row {
  const proxyCpuS = cpu.proxy;
  return {
    config,
    mode,
    connections: load.connections,
    requests: load.requests,
    elapsedS: round(load.elapsedS, 3),
    rps: load.elapsedS > 0 ? load.requests / load.elapsedS : 0,
    p50Ms: percentile(load.latencies, 0.5),
    p99Ms: percentile(load.latencies, 0.99),
    ttfbP50Ms: percentile(load.ttfbs, 0.5),
    ttfbP99Ms: percentile(load.ttfbs, 0.99),
    addedP50Ms: undefined,
    addedP99Ms: undefined,
    ratioToDirect: undefined,
    intact: load.intact,
    non200: load.non200,
    mismatched: load.mismatched,
    transportErrors: load.transportErrors,
    eventsMin: load.eventsMin,
    eventsMax: load.eventsMax,
    firstError: load.firstError,
    proxyCpuS,
    requestsPerProxyCpuS: proxyCpuS !== undefined && proxyCpuS > 0 ? load.requests / proxyCpuS : undefined,
    upstreamCpuS: cpu.upstream,
    cpuBusy: cpu.busy?.map((b) => round(b, 3)),
    otherCpu: cpu.other === undefined ? undefined : round(Math.max(0, cpu.other), 3),
  };
}

/** Fills in added latency and the ratio to the direct row of the same mode and connection count. */
export function compareToDirect(rows: Row[], directName: string): void {
  for (const row of rows) {
    const direct = rows.find((r) => r.config === directName && r.mode === row.mode && r.connections === row.connections);
    // A configuration that answered wrongly is not faster or slower, it is broken: no comparison for it.
    if (!direct || row.intact < row.requests * 0.99) continue;
    row.ratioToDirect = direct.rps > 0 ? row.rps / direct.rps : undefined;
    row.addedP50Ms = diff(row.p50Ms, direct.p50Ms);
    row.addedP99Ms = diff(row.p99Ms, direct.p99Ms);
  }
}

function diff(a: number | undefined, b: number | undefined): number | undefined {
  return a === undefined || b === undefined ? undefined : a - b;
}

function round(v: number, digits: number): number {
  const f = 10 ** digits;
  return Math.round(v * f) / f;
}

const ms = (v: number | undefined) => (v === undefined ? "-" : Math.abs(v) < 10 ? v.toFixed(2) : Math.abs(v) < 100 ? v.toFixed(1) : v.toFixed(0));
const signed = (v: number | undefined) => (v === undefined ? "-" : (v >= 0 ? "+" : "") + ms(v));
const count = (v: number | undefined) => (v === undefined ? "-" : v < 100 ? v.toFixed(1) : Math.round(v).toString());
const pct = (v: number | undefined) => (v === undefined ? "-" : `${Math.round(v * 100)}`);

/** Above this share of a core used by other processes during a run, the row is marked as noisy. */
export const NOISY = 0.1;

const COLUMNS: [string, (r: Row) => string][] = [
  ["config", (r) => r.config],
  ["mode", (r) => r.mode],
  ["conns", (r) => String(r.connections)],
  ["req/s", (r) => count(r.rps)],
  ["p50 ms", (r) => ms(r.p50Ms)],
  ["p99 ms", (r) => ms(r.p99Ms)],
  ["+p50 ms", (r) => signed(r.addedP50Ms)],
  ["+p99 ms", (r) => signed(r.addedP99Ms)],
  ["× direct", (r) => (r.ratioToDirect === undefined ? "-" : r.ratioToDirect.toFixed(2))],
  ["TTFB p50", (r) => (r.mode === "sse" ? ms(r.ttfbP50Ms) : "-")],
  ["TTFB p99", (r) => (r.mode === "sse" ? ms(r.ttfbP99Ms) : "-")],
  ["proxy CPU s", (r) => (r.proxyCpuS === undefined ? "-" : r.proxyCpuS.toFixed(2))],
  ["req/CPU-s", (r) => count(r.requestsPerProxyCpuS)],
  ["cpu0 %", (r) => pct(r.cpuBusy?.[0])],
  ["cpu1 %", (r) => pct(r.cpuBusy?.[1])],
  ["other %", (r) => pct(r.otherCpu) + ((r.otherCpu ?? 0) > NOISY ? "!" : "")],
  ["intact", (r) => `${r.intact}/${r.requests}`],
  ["events", (r) => (r.mode !== "sse" || r.eventsMin === undefined ? "-" : r.eventsMin === r.eventsMax ? String(r.eventsMin) : `${r.eventsMin}–${r.eventsMax}`)],
];

/** The results as a Markdown table (readable in a terminal, pasteable into bench/README.md). */
export function markdownTable(rows: Row[]): string {
  const cells = rows.map((r) => COLUMNS.map(([, f]) => f(r)));
  const widths = COLUMNS.map(([h], i) => Math.max(h.length, ...cells.map((c) => c[i]!.length)));
  const left = new Set([0, 1]);
  const line = (values: string[]) => "| " + values.map((v, i) => (left.has(i) ? v.padEnd(widths[i]!) : v.padStart(widths[i]!))).join(" | ") + " |";
  const rule = "|" + widths.map((w, i) => (left.has(i) ? ":" + "-".repeat(w + 1) : "-".repeat(w + 1) + ":")).join("|") + "|";
  return [line(COLUMNS.map(([h]) => h)), rule, ...cells.map(line)].join("\n");
}

/** Rows grouped so each block compares the configurations at one mode and connection count. */
export function ordered(rows: Row[], configOrder: string[]): Row[] {
  const modeRank = (m: Mode) => (m === "json" ? 0 : 1);
  return [...rows].sort((a, b) => modeRank(a.mode) - modeRank(b.mode) || a.connections - b.connections || configOrder.indexOf(a.config) - configOrder.indexOf(b.config));
}
