/**
 * The stand-in OpenAI-compatible upstream from Tollgate's build, as a process of its own:
 * ~1 KB JSON completions with usage, and SSE streams of N events M ms apart with a usage chunk and [DONE].
 *
 *   node bench/peers/stand-in.ts --events 20 --interval 20 --bytes 1024 [--port 0]
 */
import { announce, arg, distUrl } from "./announce.ts";

const { startStandInUpstream } = (await import(distUrl("demo/stand-in-upstream.js"))) as typeof import("../../src/demo/stand-in-upstream.ts");

const upstream = await startStandInUpstream(
  { events: Number(arg("events", "20")), intervalMs: Number(arg("interval", "20")), responseBytes: Number(arg("bytes", "1024")), remember: 0 },
  Number(arg("port", "0")),
);
announce({ port: upstream.port, url: upstream.url });
