/** The admin listener: /metrics, /healthz, /readyz. Never on the data port, so clients cannot scrape or probe it. */
import { createServer, type Server } from "node:http";
import type { Metrics } from "./metrics.ts";
import type { CredentialStatus } from "../upstream/credential.ts";

export interface ReadinessSource {
  /** False while draining for shutdown or before the first policy loaded. */
  accepting(): boolean;
  upstreams(): Record<string, CredentialStatus>;
}

export function createAdminServer(metrics: Metrics, readiness: ReadinessSource): Server {
  return createServer(async (req, res) => {
    const path = (req.url ?? "/").split("?")[0];
    if (req.method !== "GET" && req.method !== "HEAD") {
      res.writeHead(405, { allow: "GET, HEAD" }).end();
      return;
    }
    switch (path) {
      case "/metrics": {
        const body = await metrics.registry.metrics();
        res.writeHead(200, { "content-type": metrics.registry.contentType }).end(body);
        return;
      }
      case "/healthz":
        json(res, 200, { status: "ok" });
        return;
      case "/readyz": {
        const upstreams = readiness.upstreams();
        const accepting = readiness.accepting();
        const ready = accepting && Object.values(upstreams).every((u) => u.ready);
        json(res, ready ? 200 : 503, { status: ready ? "ready" : accepting ? "degraded" : "draining", upstreams });
        return;
      }
      default:
        json(res, 404, { error: "not found" });
    }
  });
}

function json(res: import("node:http").ServerResponse, status: number, body: unknown): void {
  const text = JSON.stringify(body);
  res.writeHead(status, { "content-type": "application/json", "cache-control": "no-store" }).end(text);
}
