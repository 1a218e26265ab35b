// @ts-check
/**
 * A diagnostic preloaded into a proxy under test: V8's own account of the garbage a request makes and what
 * collecting it costs. Once the process has received GC_SKIP requests (default 6,000: past the bench's warm-up), it
 * records every collection for GC_WINDOW_MS (default 3 s: inside an 8 s closed-loop run) with `v8.GCProfiler` and
 * counts the requests received meanwhile (the `http.server.request.start` diagnostics channel), then writes
 * /tmp/gc-probe-<pid>.json:
 *   - allocatedKBPerRequest: heap growth between collections (what the JavaScript allocated), per request;
 *   - survivedKBPerRequest:  what scavenges copied within the young generation, per request;
 *   - promotedKBPerRequest:  what scavenges moved to the old generation (to be marked and swept later), per request;
 *   - gcUsPerRequest:        the main thread's time in collections, per request; scavenges per 1,000 requests.
 * Unlike a sampling heap profile these are V8's counts, so two builds compare within a few per cent.
 *
 *   node bench/run.ts --only tollgate-full --connections 32 --rate 0 --streams 0 --aborts 0 --rounds 1 --duration 8 \
 *     --no-write "--tollgate-node-flags=--max-semi-space-size=2 --import=./bench/peers/gc-probe.mjs"
 */
import { GCProfiler } from "node:v8";
import { subscribe } from "node:diagnostics_channel";
import { writeFileSync } from "node:fs";

const skip = Number(process.env.GC_SKIP ?? 6000);
const windowMs = Number(process.env.GC_WINDOW_MS ?? 3000);

/** @typedef {{ spaceName: string, spaceUsedSize: number }} Space */
/** @typedef {{ heapStatistics: { usedHeapSize: number }, heapSpaceStatistics: Space[] }} HeapState */
/** @typedef {{ gcType: string, cost: number, beforeGC: HeapState, afterGC: HeapState }} Collection */

let seen = 0;
let requests = 0;
let counting = false;
subscribe("http.server.request.start", () => {
  if (counting) requests++;
  else if (++seen === skip) measure();
});

/** @param {HeapState} state @param {string} name */
const used = (state, name) => state.heapSpaceStatistics.find((s) => s.spaceName === name)?.spaceUsedSize ?? 0;

function measure() {
  const profiler = new GCProfiler();
  profiler.start();
  counting = true;
  setTimeout(() => {
    counting = false;
    const collections = /** @type {Collection[]} */ (profiler.stop()?.statistics ?? []);
    let allocated = 0;
    let survived = 0;
    let promoted = 0;
    let costUs = 0;
    let scavenges = 0;
    /** @type {Record<string, number>} */
    const byType = {};
    for (let i = 0; i < collections.length; i++) {
      const c = collections[i];
      if (!c) continue;
      costUs += c.cost;
      byType[c.gcType] = (byType[c.gcType] ?? 0) + 1;
      const previous = collections[i - 1];
      if (previous) allocated += Math.max(0, c.beforeGC.heapStatistics.usedHeapSize - previous.afterGC.heapStatistics.usedHeapSize);
      if (c.gcType === "Scavenge") {
        scavenges++;
        survived += used(c.afterGC, "new_space");
        promoted += Math.max(0, used(c.afterGC, "old_space") - used(c.beforeGC, "old_space"));
      }
    }
    const per = (/** @type {number} */ bytes) => Math.round((bytes / 1024 / Math.max(1, requests)) * 100) / 100;
    const report = {
      windowMs,
      requests,
      collections: byType,
      allocatedKBPerRequest: per(allocated),
      survivedKBPerRequest: per(survived),
      promotedKBPerRequest: per(promoted),
      gcUsPerRequest: Math.round((costUs / Math.max(1, requests)) * 10) / 10,
      scavengesPer1k: Math.round((scavenges * 1000 * 10) / Math.max(1, requests)) / 10,
    };
    writeFileSync(`/tmp/gc-probe-${process.pid}.json`, JSON.stringify(report, null, 2) + "\n");
  }, windowMs).unref();
}
