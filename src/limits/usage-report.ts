/**
 * One caller's current standing against every limit that applies to them (admin port /usage): requests and
 * tokens in the sliding window, leases in flight, budget spent and reserved with the period's end.
 */
import type { Principal } from "../auth/principal.ts";
import type { Rule } from "./engine.ts";
import type { Store } from "./store/types.ts";
import { scopeInstances, scopeKey } from "./scopes.ts";
import { periodAt } from "./periods.ts";
import { formatReset } from "./ratelimit-headers.ts";

export async function usageReport(rules: readonly Rule[], store: Store, query: UsageQuery, now: number): Promise<UsageReport[]> {
  const principal: Principal = {
    id: query.key ?? query.user ?? "query",
    kind: query.key ? "key" : "user",
    user: query.user,
    team: query.team,
    groups: query.groups ?? [],
    roles: [],
    scopes: [],
    authenticator: "admin",
    method: "admin",
    claims: {},
  };
  const scope = { principal, route: query.route ?? "", model: query.model };
  const reports: UsageReport[] = [];
  for (const rule of rules) {
    const c = rule.config;
    if ((rule.routes && query.route && !rule.routes.has(query.route)) || (rule.models && query.model && !rule.models.matches(query.model))) continue;
    for (const instance of scopeInstances(c.by, scope)) {
      const key = scopeKey(c.name, instance);
      const report: UsageReport = { limit: c.name, scope: instance, kind: c.concurrency !== undefined ? "concurrency" : c.requests ? "requests" : c.tokens ? "tokens" : "budget" };
      try {
        if (c.concurrency !== undefined) Object.assign(report, { max: c.concurrency, used: await store.leaseCount(key, now) });
        else if (c.requests || c.tokens) {
          const spec = (c.requests ?? c.tokens)!;
          const w = await store.windowTake(key, spec.per, spec.limit, 0, now);
          const used = Math.ceil(w.previous * (1 - (now - w.windowStart) / spec.per) + w.current);
          Object.assign(report, { max: spec.limit, used, remaining: Math.max(0, spec.limit - used), window: formatReset(spec.per) });
        } else {
          const b = c.budget!;
          const period = periodAt(b.period, b.timeZone, now);
          const state = await store.budgetRead(`${key}:${period.id}`, now);
          const max = Math.round(b.usd * 1e6);
          Object.assign(report, {
            period: period.id,
            resetsAt: period.end === undefined ? null : new Date(period.end).toISOString(),
            budgetUsd: b.usd,
            spentUsd: state.spent / 1e6,
            reservedUsd: state.reserved / 1e6,
            remainingUsd: Math.max(0, max - state.spent - state.reserved) / 1e6,
          });
        }
      } catch (err) {
        report.error = (err as Error).message;
      }
      reports.push(report);
    }
  }
  return reports;
}

export interface UsageQuery {
  key?: string | undefined;
  user?: string | undefined;
  team?: string | undefined;
  groups?: string[] | undefined;
  model?: string | undefined;
  route?: string | undefined;
}

export interface UsageReport {
  limit: string;
  kind: "requests" | "tokens" | "concurrency" | "budget";
  /** The dimension values of this limit instance, e.g. ["user=alice", "model=gpt-4o"]. */
  scope: string[];
  max?: number;
  used?: number;
  remaining?: number;
  window?: string;
  period?: string;
  resetsAt?: string | null;
  budgetUsd?: number;
  spentUsd?: number;
  reservedUsd?: number;
  remainingUsd?: number;
  error?: string;
}
