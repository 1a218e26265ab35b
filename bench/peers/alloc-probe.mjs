// @ts-check
/**
 * A diagnostic preloaded into a proxy under test: samples every allocation (those the garbage collector has
 * already freed included, so it shows allocation *rate*, not what stays live) from ALLOC_START_MS to ALLOC_STOP_MS
 * after start (default 2.5 s to 6.5 s: inside a 6 s closed-loop run), then writes
 * /tmp/alloc-<pid>.heapprofile (Chrome DevTools opens it; `node bench/heap-summary.ts FILE` lists the top sites).
 *
 *   node bench/run.ts --only tollgate-key --connections 32 --rate 0 --streams 0 --aborts 0 --rounds 1 --duration 6 \
 *     --no-write "--tollgate-node-flags=--max-semi-space-size=2 --import=./bench/peers/alloc-probe.mjs"
 */
import { Session } from "node:inspector/promises";
import { writeFileSync } from "node:fs";

const start = Number(process.env.ALLOC_START_MS ?? 2500);
const stop = Number(process.env.ALLOC_STOP_MS ?? 6500);
const session = new Session();
session.connect();
setTimeout(async () => {
  await session.post("HeapProfiler.enable");
  await session.post("HeapProfiler.startSampling", { samplingInterval: 4096, includeObjectsCollectedByMajorGC: true, includeObjectsCollectedByMinorGC: true });
  setTimeout(async () => {
    const { profile } = await session.post("HeapProfiler.stopSampling");
    writeFileSync(`/tmp/alloc-${process.pid}.heapprofile`, JSON.stringify(profile));
  }, stop - start).unref();
}, start).unref();
