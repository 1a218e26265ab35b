/**
 * Reference peer: a bare undici Pool forwarder, no auth, no policy. `--api dispatch` streams the way Tollgate's
 * forwarder (src/proxy/forward.ts) does — handler callbacks, pause on back-pressure; `--api stream` uses
 * Pool.stream with the client's response as the writable (the forwarder measured in the issue).
 *
 *   node bench/peers/undici-pool.ts --target http://127.0.0.1:PORT [--api dispatch|stream]
 */
import { createServer, type IncomingMessage, type ServerResponse, type OutgoingHttpHeaders } from "node:http";
import { once } from "node:events";
import { Pool } from "undici";
import { announce, arg } from "./announce.ts";

const HOP_BY_HOP = new Set(["connection", "keep-alive", "proxy-connection", "te", "trailer", "transfer-encoding", "upgrade", "expect", "host"]);
const pool = new Pool(arg("target"), { connections: 128, pipelining: 1, keepAliveTimeout: 30_000 });
const api = arg("api", "dispatch");

function strip(headers: Record<string, string | string[] | undefined>): Record<string, string | string[]> {
  const out: Record<string, string | string[]> = {};
  for (const name in headers) {
    const value = headers[name];
    if (value !== undefined && !HOP_BY_HOP.has(name)) out[name] = value;
  }
  return out;
}

function fail(res: ServerResponse): void {
  if (!res.headersSent) res.writeHead(502, { "content-type": "application/json" }).end('{"error":"bad gateway"}');
  else res.destroy();
}

function viaDispatch(req: IncomingMessage, res: ServerResponse): void {
  const hasBody = req.headers["content-length"] !== undefined || req.headers["transfer-encoding"] !== undefined;
  pool.dispatch(
    { method: req.method!, path: req.url!, headers: strip(req.headers), body: hasBody ? req : null },
    {
      onRequestStart(ctrl) {
        res.once("close", () => {
          if (!res.writableFinished) ctrl.abort(new Error("client went away"));
        });
      },
      onResponseStart(_ctrl, status, headers) {
        res.writeHead(status, strip(headers as Record<string, string | string[] | undefined>) as OutgoingHttpHeaders);
        if (String(headers["content-type"]).startsWith("text/event-stream")) res.flushHeaders();
      },
      onResponseData(ctrl, chunk) {
        if (!res.write(chunk)) {
          ctrl.pause();
          res.once("drain", () => ctrl.resume());
        }
      },
      onResponseEnd() {
        res.end();
      },
      onResponseError() {
        fail(res);
      },
    },
  );
}

function viaStream(req: IncomingMessage, res: ServerResponse): void {
  const hasBody = req.headers["content-length"] !== undefined || req.headers["transfer-encoding"] !== undefined;
  pool
    .stream({ method: req.method as "POST", path: req.url!, headers: strip(req.headers), body: hasBody ? req : null }, ({ statusCode, headers }) => {
      res.writeHead(statusCode, strip(headers as Record<string, string | string[] | undefined>) as OutgoingHttpHeaders);
      return res;
    })
    .catch(() => fail(res));
}

const server = createServer({ keepAliveTimeout: 65_000 }, api === "stream" ? viaStream : viaDispatch);
server.listen(0, "127.0.0.1");
await once(server, "listening");
announce({ port: (server.address() as { port: number }).port, api });
