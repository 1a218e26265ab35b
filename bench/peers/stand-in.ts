/**
 * The stand-in OpenAI-compatible upstream from Tollgate's build, as a process of its own: ~1 KB JSON
 * completions with usage, and SSE streams of N events M ms apart with a usage chunk and [DONE]. A second
 * stand-in in the same process holds streams open (an event a second, for as long as the client stays): the
 * bench's held-open streams (RSS per open stream) and client-disconnect probes go there.
 *
 * Over IPC it reports, for every request carrying `x-bench-probe`, the moment (CLOCK_MONOTONIC, the clock
 * `process.hrtime` reads in every process) its response closed, and answers `{ stats }` queries with the
 * number of streams the holding stand-in has open and has seen aborted.
 *
 *   node bench/peers/stand-in.ts --events 20 --interval 20 --bytes 1024 [--port 0]
 */
import { announce, arg, distUrl } from "./announce.ts";

const { startStandInUpstream } = (await import(distUrl("demo/stand-in-upstream.js"))) as typeof import("../../src/demo/stand-in-upstream.ts");

const upstream = await startStandInUpstream(
  { events: Number(arg("events", "20")), intervalMs: Number(arg("interval", "20")), responseBytes: Number(arg("bytes", "1024")), remember: 0 },
  Number(arg("port", "0")),
);
const hold = await startStandInUpstream({ events: 1_000_000, intervalMs: 1000, remember: 0 }, 0);

const nowMs = () => Number(process.hrtime.bigint()) / 1e6;
for (const server of [upstream.server, hold.server]) {
  server.prependListener("request", (req, res) => {
    const probe = req.headers["x-bench-probe"];
    if (typeof probe !== "string" || !process.send) return;
    process.send({ probe, received: nowMs() });
    res.once("close", () => process.send?.({ probe, closed: nowMs(), finished: res.writableFinished }));
  });
}
process.on("message", (message: unknown) => {
  if (message && typeof message === "object" && (message as { stats?: unknown }).stats !== undefined) {
    process.send?.({ stats: (message as { stats: unknown }).stats, open: hold.openStreams(), aborted: hold.abortedStreams() });
  }
});

announce({ port: upstream.port, url: upstream.url, holdPort: hold.port, holdUrl: hold.url });
