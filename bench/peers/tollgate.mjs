// @ts-check
/**
 * Tollgate from its build (dist/, what `tollgate serve` runs), wired as the CLI wires it: a TollgateServer on a
 * policy file, the production logger (audit JSON lines on stdout — the bench points stdout at a file) and the
 * default metrics registry. Signals: SIGTERM drains as `tollgate serve` does (the requests still being settled
 * finish and write their audit lines, which the bench counts), with a 2 s grace instead of the policy's.
 *
 * Plain JavaScript (type-checked through JSDoc by `npm test`), unlike the other peers: a .ts entry point makes
 * Node load its type stripper into the process, which added 9–17 MB to the RSS the bench measures and that
 * `node dist/main.js` never carries. For the same reason it does not import announce.ts.
 *
 * Started with --expose-gc, it answers an IPC `{ gc: id }` with a full garbage collection and
 * `{ gc: id, heapUsed, heapTotal, external, arrayBuffers }` (for the bench's RSS-per-open-stream measurement).
 *
 *   node bench/peers/tollgate.mjs --policy FILE [--dist /abs/path/to/other/checkout/dist]
 */
import { pathToFileURL } from "node:url";

// `--dist DIR`: another checkout's build (the bench's --ab); by default this checkout's.
const distAt = process.argv.indexOf("--dist");
const distBase = distAt >= 0 ? pathToFileURL(`${process.argv[distAt + 1]}/`) : new URL("../../dist/", import.meta.url);
const dist = (/** @type {string} */ path) => new URL(path, distBase).href;

/** @type {typeof import("../../src/server.ts")} */
const { TollgateServer } = await import(dist("server.js"));
/** @type {typeof import("../../src/config/source.ts")} */
const { fileSource } = await import(dist("config/source.js"));
/** @type {typeof import("../../src/observe/audit.ts")} */
const { createLogger } = await import(dist("observe/audit.js"));

const at = process.argv.indexOf("--policy");
const policy = at >= 0 ? process.argv[at + 1] : undefined;
if (!policy) throw new Error("missing --policy");

const server = new TollgateServer({ source: fileSource(policy), logger: createLogger() });
const { port, adminPort } = await server.start();
// As announce.ts does for the other peers: IPC when started by the bench, a stderr line by hand; exit with the bench.
if (process.send) {
  process.send({ ready: true, port, adminPort });
  process.once("disconnect", () => process.exit(0));
} else {
  process.stderr.write(`ready ${JSON.stringify({ port, adminPort })}\n`);
}
const drain = () => void server.shutdown(2000).finally(() => process.exit(0));
process.once("SIGTERM", drain);
process.once("SIGINT", drain);

const gc = /** @type {{ gc?: () => void }} */ (globalThis).gc;
if (gc) {
  process.on("message", (/** @type {unknown} */ message) => {
    if (!message || typeof message !== "object" || !("gc" in message)) return;
    gc();
    gc();
    const { heapUsed, heapTotal, external, arrayBuffers } = process.memoryUsage();
    process.send?.({ gc: message.gc, heapUsed, heapTotal, external, arrayBuffers });
  });
}
