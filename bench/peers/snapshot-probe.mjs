// @ts-check
/**
 * A diagnostic preloaded into a proxy under test: writes a V8 heap snapshot once the process has warmed up and is
 * idle (fewer than 40 TCP sockets, after 1.6 s), then a second one 300 ms after it first holds 1,000 or more TCP
 * sockets (the held-streams phase: two sockets per stream). `node bench/heap-diff.ts IDLE HELD ServerResponse` then
 * lists what each open stream keeps, by constructor.
 *
 *   node bench/run.ts --only tollgate-full --connections 1 --rate 0 --rounds 1 --duration 1 --aborts 0 --no-write \
 *     "--tollgate-node-flags=--max-semi-space-size=2 --import=./bench/peers/snapshot-probe.mjs"
 *
 * Each snapshot blocks the process for about a second: the run's own figures are not comparable.
 */
import { writeHeapSnapshot } from "node:v8";

let idle = false;
const timer = setInterval(() => {
  const sockets = process.getActiveResourcesInfo().filter((r) => r === "TCPSocketWrap").length;
  if (!idle && process.uptime() > 1.6 && sockets < 40) {
    idle = true;
    writeHeapSnapshot(`/tmp/snapshot-idle-${process.pid}.heapsnapshot`);
  } else if (idle && sockets >= 1000) {
    clearInterval(timer);
    setTimeout(() => writeHeapSnapshot(`/tmp/snapshot-held-${process.pid}.heapsnapshot`), 300);
  }
}, 200);
timer.unref();
