/**
 * Where an open loop's tail came from: reads a trace written by `node bench/run.ts --trace-open DIR` (one file per
 * configuration and round) and prints the latency percentiles, the requests that were the first on a connection the
 * load generator had to open during the run (it opens one when every open connection is busy), and the maximum
 * latency in each 100 ms of the run, so a tail made of one episode shows as such.
 *
 *   node bench/open-trace.ts /tmp/traces/tollgate-full-r1.json
 */
import { readFileSync } from "node:fs";

const file = process.argv[2];
if (!file) {
  process.stderr.write("usage: node bench/open-trace.ts TRACE.json\n");
  process.exit(2);
}
/** [due ms from the start, late ms, ttfb ms, latency ms, first request of a connection opened during the run] */
const records = (JSON.parse(readFileSync(file, "utf8")) as number[][]).sort((a, b) => a[0]! - b[0]!);
const pct = (values: number[], p: number) => {
  const s = [...values].sort((a, b) => a - b);
  return s.length === 0 ? NaN : s[Math.min(s.length - 1, Math.floor(p * s.length))]!;
};
const f = (x: number) => x.toFixed(2);
const latency = records.map((r) => r[3]!);
const opened = records.filter((r) => r[4] === 1).map((r) => r[3]!);
const reused = records.filter((r) => r[4] !== 1).map((r) => r[3]!);
process.stdout.write(`${records.length} requests: latency p50 ${f(pct(latency, 0.5))} p99 ${f(pct(latency, 0.99))} max ${f(pct(latency, 1))} ms; sent late (generator) p99 ${f(pct(records.map((r) => r[1]!), 0.99))} ms\n`);
process.stdout.write(`on connections opened during the run: ${opened.length} requests, latency p50 ${f(pct(opened, 0.5))} ms; on the others: p50 ${f(pct(reused, 0.5))} p99 ${f(pct(reused, 0.99))} ms\n`);

const windows = new Map<number, { count: number; max: number; opened: number }>();
for (const r of records) {
  const w = Math.floor(r[0]! / 100);
  const e = windows.get(w) ?? { count: 0, max: 0, opened: 0 };
  e.count++;
  e.max = Math.max(e.max, r[3]!);
  e.opened += r[4] === 1 ? 1 : 0;
  windows.set(w, e);
}
const over = [...windows].filter(([, e]) => e.max > 3);
process.stdout.write(`max latency per 100 ms (ms): ${[...windows].map(([w, e]) => `${w / 10}s:${Math.round(e.max)}`).join(" ")}\n`);
process.stdout.write(`${over.length} of ${windows.size} windows have a request over 3 ms; they hold ${over.reduce((s, [, e]) => s + e.count, 0)} requests and ${over.reduce((s, [, e]) => s + e.opened, 0)} first requests of new connections\n`);
