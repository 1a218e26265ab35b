/** The admin listener: /metrics, /healthz, /readyz. Never on the data port, so clients cannot scrape or probe it. */
import { createServer, type Server } from "node:http";
import type { Metrics } from "./metrics.ts";
import type { CredentialStatus } from "../upstream/credential.ts";
import type { UsageQuery, UsageReport } from "../limits/engine.ts";

export interface ReadinessSource {
  /** False while draining for shutdown or before the first policy loaded. */
  accepting(): boolean;
  upstreams(): Record<string, CredentialStatus>;
  /** The limits store: a degraded store keeps Tollgate ready (limits follow their failure modes) but is shown. */
  limits(): { store: string; healthy: boolean; degraded: boolean };
  usage(query: UsageQuery): Promise<UsageReport[]>;
}

export function createAdminServer(metrics: Metrics, readiness: ReadinessSource): Server {
  return createServer((req, res) => {
    serve(req, res).catch(() => {
      if (!res.headersSent) json(res, 400, { error: "bad request" });
      else res.destroy();
    });
  });

  async function serve(req: import("node:http").IncomingMessage, res: import("node:http").ServerResponse): Promise<void> {
    const url = new URL(req.url ?? "/", "http://admin");
    const path = url.pathname;
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
        json(res, ready ? 200 : 503, { status: ready ? "ready" : accepting ? "degraded" : "draining", upstreams, limits: readiness.limits() });
        return;
      }
      case "/usage": {
        // One caller's standing against every limit that applies to them, e.g. /usage?user=alice&team=ml&model=gpt-4o
        const q = url.searchParams;
        const query: UsageQuery = { key: q.get("key") ?? undefined, user: q.get("user") ?? undefined, team: q.get("team") ?? undefined, groups: q.getAll("group"), model: q.get("model") ?? undefined, route: q.get("route") ?? undefined };
        if (!query.key && !query.user && !query.team && query.groups!.length === 0) return json(res, 400, { error: "name a caller: key, user, team or group" });
        json(res, 200, { query, limits: await readiness.usage(query) });
        return;
      }
      default:
        json(res, 404, { error: "not found" });
    }
  }
}

function json(res: import("node:http").ServerResponse, status: number, body: unknown): void {
  const text = JSON.stringify(body);
  res.writeHead(status, { "content-type": "application/json", "cache-control": "no-store" }).end(text);
}
