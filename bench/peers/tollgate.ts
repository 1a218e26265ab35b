/**
 * Tollgate from its build (dist/, what `tollgate serve` runs), wired as the CLI wires it: a TollgateServer on a
 * policy file, the production logger (audit JSON lines on stdout — the bench points stdout at a file) and the
 * default metrics registry. Only the signal handling differs: the bench simply stops the process.
 *
 * Started with --expose-gc, it answers an IPC `{ gc: id }` with a full garbage collection and `{ gc: id, heapUsed, external }`
 * (for the bench's RSS-per-open-stream measurement).
 *
 *   node bench/peers/tollgate.ts --policy FILE
 */
import { announce, arg, distUrl } from "./announce.ts";

const { TollgateServer } = (await import(distUrl("server.js"))) as typeof import("../../src/server.ts");
const { fileSource } = (await import(distUrl("config/source.js"))) as typeof import("../../src/config/source.ts");
const { createLogger } = (await import(distUrl("observe/audit.js"))) as typeof import("../../src/observe/audit.ts");

const server = new TollgateServer({ source: fileSource(arg("policy")), logger: createLogger() });
const { port, adminPort } = await server.start();
announce({ port, adminPort });

const gc = (globalThis as { gc?: () => void }).gc;
if (gc) {
  process.on("message", (message: unknown) => {
    if (!message || typeof message !== "object" || !("gc" in message)) return;
    gc();
    gc();
    const { heapUsed, external } = process.memoryUsage();
    process.send?.({ gc: (message as { gc: unknown }).gc, heapUsed, external });
  });
}
