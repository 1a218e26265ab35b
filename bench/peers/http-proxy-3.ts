/**
 * Reference peer: a bare http-proxy-3 forwarder with a keep-alive agent (without one, http-proxy-3 opens a
 * connection per request). No auth, no policy: the floor of what a Tollgate on http-proxy-3 could reach.
 *
 *   node bench/peers/http-proxy-3.ts --target http://127.0.0.1:PORT
 */
import { createServer, Agent } from "node:http";
import { once } from "node:events";
import { createProxyServer } from "http-proxy-3";
import { announce, arg } from "./announce.ts";

const agent = new Agent({ keepAlive: true, maxSockets: 128, keepAliveMsecs: 30_000 });
const proxy = createProxyServer({ target: arg("target"), agent });
// Mandatory: without an error handler a failed upstream request kills the process.
proxy.on("error", (_err, _req, res) => {
  if ("writeHead" in res && !res.headersSent) res.writeHead(502, { "content-type": "application/json" }).end('{"error":"bad gateway"}');
  else res.destroy();
});
const server = createServer({ keepAliveTimeout: 65_000 }, (req, res) => proxy.web(req, res));
server.listen(0, "127.0.0.1");
await once(server, "listening");
announce({ port: (server.address() as { port: number }).port });
