/**
 * Rows of the results table: measured figures, the comparisons (with direct, nginx, HAProxy and the bare
 * undici forwarder, always within one round, the same workload), the median over rounds, and the table.
 */
import { percentile, type LoadResult } from "./load.ts";

/** json / sse: closed loop; open: the JSON workload as an open loop at a fixed rate. */
export type Mode = "json" | "sse" | "open";

export interface Row {
  config: string;
  mode: Mode;
  /** Closed loop: connections; open loop: the most connections it needed. */
  connections: number;
  /** Open loop: scheduled requests per second. */
  rate: number | undefined;
  /** How many rounds this row is the median of (1 for a single round's row). */
  rounds: number;
  requests: number;
  elapsedS: number;
  rps: number;
  p50Ms: number | undefined;
  p99Ms: number | undefined;
  p999Ms: number | undefined;
  /** Time to the first body byte (for SSE: the first event). */
  ttfbP50Ms: number | undefined;
  ttfbP99Ms: number | undefined;
  /** SSE: the gap between consecutive spaced events (20 ms at the source). */
  gapP50Ms: number | undefined;
  gapP99Ms: number | undefined;
  /** SSE: spaced events that arrived in the same chunk as the previous one (coalesced by the path). */
  coalesced: number;
  /** SSE: spaced events in a chunk of their own, but under half a spacing after the previous one (a stall upstream of the client). */
  bunched: number;
  addedP50Ms: number | undefined;
  addedP99Ms: number | undefined;
  addedP999Ms: number | undefined;
  addedTtfbP50Ms: number | undefined;
  addedTtfbP99Ms: number | undefined;
  addedGapP99Ms: number | undefined;
  ratioToDirect: number | undefined;
  ratioToNginx: number | undefined;
  intact: number;
  non200: number;
  mismatched: number;
  transportErrors: number;
  eventsMin: number | undefined;
  eventsMax: number | undefined;
  firstError: string | undefined;
  /** CPU seconds of the proxy process(es) during the measured run; undefined for direct. */
  proxyCpuS: number | undefined;
  /** Proxy CPU seconds per 1,000 requests. */
  cpuPer1kS: number | undefined;
  /** The part of proxyCpuS spent in the kernel (system time: socket reads and writes, loopback delivery). */
  proxySystemShare: number | undefined;
  /** Requests per CPU-second of the proxy: the per-core capacity figure. */
  requestsPerProxyCpuS: number | undefined;
  /** requestsPerProxyCpuS divided by nginx's, HAProxy's and the bare undici forwarder's (same workload). */
  cpuVsNginx: number | undefined;
  cpuVsHaproxy: number | undefined;
  cpuVsUndici: number | undefined;
  upstreamCpuS: number | undefined;
  /** CPU seconds of the machine's Redis during the run (Redis configurations use it). */
  redisCpuS: number | undefined;
  /** Busy fraction of each CPU during the run (CPU 0: load generator + stand-in; CPU 1: the proxy). */
  cpuBusy: number[] | undefined;
  /** CPU used during the run by processes that are not part of the bench, in cores (0.25 = a quarter core). */
  otherCpu: number | undefined;
}

export interface CpuFigures {
  proxy?: number;
  /** Of `proxy`, the seconds in the kernel. */
  proxySystem?: number;
  upstream?: number;
  redis?: number;
  busy?: number[];
  other?: number;
}

export function toRow(config: string, mode: Mode, load: LoadResult, cpu: CpuFigures): Row {
  const proxyCpuS = cpu.proxy;
  const counted = load.requests;
  return {
    config,
    mode,
    connections: load.connections,
    rate: load.rate,
    rounds: 1,
    requests: load.requests,
    elapsedS: round(load.elapsedS, 3),
    rps: load.elapsedS > 0 ? load.requests / load.elapsedS : 0,
    p50Ms: percentile(load.latencies, 0.5),
    p99Ms: percentile(load.latencies, 0.99),
    p999Ms: percentile(load.latencies, 0.999),
    ttfbP50Ms: percentile(load.ttfbs, 0.5),
    ttfbP99Ms: percentile(load.ttfbs, 0.99),
    gapP50Ms: percentile(load.gaps, 0.5),
    gapP99Ms: percentile(load.gaps, 0.99),
    coalesced: load.coalesced,
    bunched: load.bunched,
    addedP50Ms: undefined,
    addedP99Ms: undefined,
    addedP999Ms: undefined,
    addedTtfbP50Ms: undefined,
    addedTtfbP99Ms: undefined,
    addedGapP99Ms: undefined,
    ratioToDirect: undefined,
    ratioToNginx: undefined,
    intact: load.intact,
    non200: load.non200,
    mismatched: load.mismatched,
    transportErrors: load.transportErrors,
    eventsMin: load.eventsMin,
    eventsMax: load.eventsMax,
    firstError: load.firstError,
    proxyCpuS,
    cpuPer1kS: proxyCpuS !== undefined && counted > 0 ? (proxyCpuS * 1000) / counted : undefined,
    proxySystemShare: proxyCpuS !== undefined && proxyCpuS > 0 && cpu.proxySystem !== undefined ? round(cpu.proxySystem / proxyCpuS, 3) : undefined,
    requestsPerProxyCpuS: proxyCpuS !== undefined && proxyCpuS > 0 ? counted / proxyCpuS : undefined,
    cpuVsNginx: undefined,
    cpuVsHaproxy: undefined,
    cpuVsUndici: undefined,
    upstreamCpuS: cpu.upstream,
    redisCpuS: cpu.redis,
    cpuBusy: cpu.busy?.map((b) => round(b, 3)),
    otherCpu: cpu.other === undefined ? undefined : round(Math.max(0, cpu.other), 3),
  };
}

/** The peers every row is compared with, by configuration name. */
export interface Baselines {
  direct: string;
  nginx: string;
  haproxy: string;
  undici: string;
}

const sameWorkload = (a: Row, b: Row) => a.mode === b.mode && (a.mode === "open" ? a.rate === b.rate : a.connections === b.connections);

/**
 * Fills in, for each row of ONE round, the latency added over direct, the throughput ratios to direct and
 * nginx, and the req/CPU-s ratios to nginx, HAProxy and the bare undici forwarder.
 */
export function compare(rows: Row[], names: Baselines): void {
  for (const row of rows) {
    // A configuration that answered wrongly is not faster or slower, it is broken: no comparison for it.
    if (row.intact < row.requests * 0.99) continue;
    const find = (name: string) => rows.find((r) => r.config === name && sameWorkload(r, row) && r.intact >= r.requests * 0.99);
    const direct = find(names.direct);
    const nginx = find(names.nginx);
    if (direct) {
      row.ratioToDirect = direct.rps > 0 ? row.rps / direct.rps : undefined;
      row.addedP50Ms = diff(row.p50Ms, direct.p50Ms);
      row.addedP99Ms = diff(row.p99Ms, direct.p99Ms);
      row.addedP999Ms = diff(row.p999Ms, direct.p999Ms);
      if (row.mode === "sse") {
        row.addedTtfbP50Ms = diff(row.ttfbP50Ms, direct.ttfbP50Ms);
        row.addedTtfbP99Ms = diff(row.ttfbP99Ms, direct.ttfbP99Ms);
        row.addedGapP99Ms = diff(row.gapP99Ms, direct.gapP99Ms);
      }
    }
    if (nginx && nginx.rps > 0) row.ratioToNginx = row.rps / nginx.rps;
    row.cpuVsNginx = ratio(row.requestsPerProxyCpuS, find(names.nginx)?.requestsPerProxyCpuS);
    row.cpuVsHaproxy = ratio(row.requestsPerProxyCpuS, find(names.haproxy)?.requestsPerProxyCpuS);
    row.cpuVsUndici = ratio(row.requestsPerProxyCpuS, find(names.undici)?.requestsPerProxyCpuS);
  }
}

/** Figures whose median over rounds is reported; counts are summed, extremes kept, the worst disturbance kept. */
const MEDIAN_FIELDS = [
  "connections", "elapsedS", "rps", "p50Ms", "p99Ms", "p999Ms", "ttfbP50Ms", "ttfbP99Ms", "gapP50Ms", "gapP99Ms",
  "addedP50Ms", "addedP99Ms", "addedP999Ms", "addedTtfbP50Ms", "addedTtfbP99Ms", "addedGapP99Ms", "ratioToDirect", "ratioToNginx",
  "proxyCpuS", "cpuPer1kS", "proxySystemShare", "requestsPerProxyCpuS", "cpuVsNginx", "cpuVsHaproxy", "cpuVsUndici", "upstreamCpuS", "redisCpuS",
] as const satisfies readonly (keyof Row)[];
const SUM_FIELDS = ["requests", "intact", "non200", "mismatched", "transportErrors", "coalesced", "bunched"] as const satisfies readonly (keyof Row)[];

/** One row per configuration and workload: the median of each figure over the rounds (two rounds: their mean). */
export function medianRows(rows: Row[]): Row[] {
  const groups = new Map<string, Row[]>();
  for (const r of rows) {
    const key = `${r.config}|${r.mode}|${r.mode === "open" ? `r${r.rate}` : r.connections}`;
    const list = groups.get(key) ?? [];
    list.push(r);
    groups.set(key, list);
  }
  return [...groups.values()].map((list) => {
    const out: Row = { ...list[0]!, rounds: list.length };
    for (const f of MEDIAN_FIELDS) (out as unknown as Record<string, number | undefined>)[f] = median(list.map((r) => r[f]));
    for (const f of SUM_FIELDS) (out as unknown as Record<string, number>)[f] = list.reduce((s, r) => s + r[f], 0);
    out.eventsMin = minOf(list.map((r) => r.eventsMin));
    out.eventsMax = list.map((r) => r.eventsMax).reduce<number | undefined>((m, v) => (v === undefined ? m : m === undefined ? v : Math.max(m, v)), undefined);
    out.otherCpu = list.map((r) => r.otherCpu).reduce<number | undefined>((m, v) => (v === undefined ? m : m === undefined ? v : Math.max(m, v)), undefined);
    out.firstError = list.find((r) => r.firstError)?.firstError;
    out.cpuBusy = list[0]!.cpuBusy?.map((_, i) => median(list.map((r) => r.cpuBusy?.[i])) ?? 0);
    return out;
  });
}

/** The median of the finite values (two middle ones: their mean); undefined when there are none. */
export function median(values: (number | undefined)[]): number | undefined {
  const v = values.filter((x): x is number => x !== undefined && Number.isFinite(x)).sort((a, b) => a - b);
  if (v.length === 0) return undefined;
  const mid = Math.floor(v.length / 2);
  return v.length % 2 ? v[mid] : (v[mid - 1]! + v[mid]!) / 2;
}

function minOf(values: (number | undefined)[]): number | undefined {
  const v = values.filter((x): x is number => x !== undefined);
  return v.length ? Math.min(...v) : undefined;
}

function diff(a: number | undefined, b: number | undefined): number | undefined {
  return a === undefined || b === undefined ? undefined : a - b;
}

function ratio(a: number | undefined, b: number | undefined): number | undefined {
  return a === undefined || b === undefined || b <= 0 ? undefined : a / b;
}

function round(v: number, digits: number): number {
  const f = 10 ** digits;
  return Math.round(v * f) / f;
}

const ms = (v: number | undefined) => (v === undefined ? "-" : Math.abs(v) < 10 ? v.toFixed(2) : Math.abs(v) < 100 ? v.toFixed(1) : v.toFixed(0));
const signed = (v: number | undefined) => (v === undefined ? "-" : (v >= 0 ? "+" : "") + ms(v));
const count = (v: number | undefined) => (v === undefined ? "-" : v < 100 ? v.toFixed(1) : Math.round(v).toString());
const pct = (v: number | undefined) => (v === undefined ? "-" : `${Math.round(v * 100)}`);
const times = (v: number | undefined) => (v === undefined ? "-" : v.toFixed(2));
const sse = (r: Row, text: string) => (r.mode === "sse" ? text : "-");

/** Above this share of a core used by other processes during a run, the row is marked as noisy. */
export const NOISY = 0.1;

export function workloadLabel(r: { mode: Mode; connections: number; rate?: number | undefined }): string {
  return r.mode === "open" ? `${r.rate}/s` : String(r.connections);
}

const COLUMNS: [string, (r: Row) => string][] = [
  ["config", (r) => r.config],
  ["mode", (r) => r.mode],
  ["conns", (r) => workloadLabel(r)],
  ["req/s", (r) => count(r.rps)],
  ["p50 ms", (r) => ms(r.p50Ms)],
  ["p99 ms", (r) => ms(r.p99Ms)],
  ["p99.9 ms", (r) => ms(r.p999Ms)],
  ["+p50", (r) => signed(r.addedP50Ms)],
  ["+p99", (r) => signed(r.addedP99Ms)],
  ["+p99.9", (r) => signed(r.addedP999Ms)],
  ["× direct", (r) => times(r.ratioToDirect)],
  ["× nginx", (r) => times(r.ratioToNginx)],
  ["TTFB p50", (r) => sse(r, ms(r.ttfbP50Ms))],
  ["TTFB p99", (r) => sse(r, ms(r.ttfbP99Ms))],
  ["+TTFB p50", (r) => sse(r, signed(r.addedTtfbP50Ms))],
  ["+TTFB p99", (r) => sse(r, signed(r.addedTtfbP99Ms))],
  ["gap p99", (r) => sse(r, ms(r.gapP99Ms))],
  ["+gap p99", (r) => sse(r, signed(r.addedGapP99Ms))],
  ["coalesced/bunched", (r) => sse(r, `${r.coalesced}/${r.bunched}`)],
  ["CPU s/1k req", (r) => (r.cpuPer1kS === undefined ? "-" : r.cpuPer1kS.toFixed(3))],
  ["kernel %", (r) => (r.proxySystemShare === undefined ? "-" : String(Math.round(r.proxySystemShare * 100)))],
  ["req/CPU-s", (r) => count(r.requestsPerProxyCpuS)],
  ["÷ nginx", (r) => times(r.cpuVsNginx)],
  ["÷ HAProxy", (r) => times(r.cpuVsHaproxy)],
  ["÷ undici", (r) => times(r.cpuVsUndici)],
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

/** Rows grouped so each block compares the configurations at one workload. */
export function ordered(rows: Row[], configOrder: string[]): Row[] {
  const modeRank = (m: Mode) => (m === "json" ? 0 : m === "open" ? 1 : 2);
  return [...rows].sort((a, b) => modeRank(a.mode) - modeRank(b.mode) || (a.mode === "open" ? (a.rate ?? 0) - (b.rate ?? 0) : a.connections - b.connections) || configOrder.indexOf(a.config) - configOrder.indexOf(b.config));
}
