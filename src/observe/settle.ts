/** The settle room's last step: request metrics and the audit line, once per request, whatever its outcome. */
import type { Exchange } from "../exchange.ts";
import type { Metrics } from "./metrics.ts";
import type { AuditLog, AuditRecord } from "./audit.ts";

export function settleExchange(exchange: Exchange, metrics: Metrics, audit: AuditLog): void {
  const seconds = (performance.now() - exchange.started) / 1000;
  const routeName = exchange.route?.name ?? "none";
  // allow: admitted and sent upstream (whatever the upstream answered); deny: refused with a 4xx; error: ours.
  const decision = exchange.forwarded || exchange.status === 101 ? "allow" : exchange.status < 500 ? "deny" : "error";
  metrics.requests.inc({ route: routeName, status: String(exchange.status), auth_method: exchange.authMethod, decision });
  metrics.duration.observe({ route: routeName }, seconds);
  const p = exchange.principal;
  const record: AuditRecord = {
    requestId: exchange.requestId,
    method: exchange.req.method ?? "",
    path: pathForAudit(exchange.req.url),
    route: exchange.route?.name,
    upstream: exchange.route?.upstream,
    principal: p && p.kind !== "anonymous" ? p.id : undefined,
    user: p?.user,
    team: p?.team,
    authMethod: exchange.authMethod,
    authenticator: p?.authenticator,
    model: exchange.model,
    decision,
    reason: exchange.reason,
    status: exchange.status,
    outcome: exchange.forwarded?.outcome,
    durationMs: Math.round(seconds * 1e6) / 1e3,
    upstreamTtfbMs: exchange.forwarded?.ttfbMs === undefined ? undefined : Math.round(exchange.forwarded.ttfbMs * 1e3) / 1e3,
    usage: exchange.usage && {
      input: exchange.usage.inputTokens,
      output: exchange.usage.outputTokens,
      cachedInput: exchange.usage.cachedInputTokens,
      reasoning: exchange.usage.reasoningTokens,
      source: exchange.usage.source,
    },
    costUsd: exchange.costMicros === undefined ? undefined : exchange.costMicros / 1e6,
    remoteAddress: exchange.remoteAddress,
  };
  audit.write(record);
}

/** The path without its query: queries can carry secrets (`?key=`), paths do not. */
function pathForAudit(url: string | undefined): string {
  if (!url) return "";
  const q = url.indexOf("?");
  return (q >= 0 ? url.slice(0, q) : url).slice(0, 512);
}
