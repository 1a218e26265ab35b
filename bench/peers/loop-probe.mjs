// @ts-check
/**
 * A diagnostic preloaded into a proxy under test: once a second it appends the event loop's delay (p50, p99, max)
 * and the garbage collections of that second (count, total, longest) to /tmp/loop-probe-<pid>.log. It attributes
 * latency tails: a tail longer than the longest stall of the event loop happened outside the JavaScript thread.
 *
 *   node bench/run.ts --only tollgate-jwt --connections 1 --streams 0 --aborts 0 \
 *     "--tollgate-node-flags=--max-semi-space-size=2 --import=./bench/peers/loop-probe.mjs"
 *
 * Sampling every millisecond costs CPU: figures taken with it are not comparable (use --no-write).
 */
import { monitorEventLoopDelay, PerformanceObserver } from "node:perf_hooks";
import { appendFileSync } from "node:fs";

const delay = monitorEventLoopDelay({ resolution: 1 });
delay.enable();
let gcCount = 0;
let gcTotal = 0;
let gcMax = 0;
new PerformanceObserver((list) => {
  for (const entry of list.getEntries()) {
    gcCount++;
    gcTotal += entry.duration;
    gcMax = Math.max(gcMax, entry.duration);
  }
}).observe({ entryTypes: ["gc"] });

const file = `/tmp/loop-probe-${process.pid}.log`;
const ms = (/** @type {number} */ ns) => (ns / 1e6).toFixed(2);
setInterval(() => {
  appendFileSync(file, `${new Date().toISOString()} loop delay p50 ${ms(delay.percentile(50))} p99 ${ms(delay.percentile(99))} max ${ms(delay.max)} ms; gc ${gcCount} in ${gcTotal.toFixed(1)} ms, longest ${gcMax.toFixed(2)} ms\n`);
  delay.reset();
  gcCount = 0;
  gcTotal = 0;
  gcMax = 0;
}, 1000).unref();
