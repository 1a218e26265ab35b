/**
 * Tollgate from its build (dist/, what `tollgate serve` runs), wired as the CLI wires it: a TollgateServer on a
 * policy file, the production logger (audit JSON lines on stdout — the bench points stdout at a file) and the
 * default metrics registry. Only the signal handling differs: the bench simply stops the process.
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
