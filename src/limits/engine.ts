/**
 * The `admit` and `settle` rooms. Admission takes every applicable limit atomically per limit instance —
 * concurrency leases, request and token windows, budget reservations of the request's maximum cost — and
 * rolls back what it took when one refuses. Settlement reconciles tokens and spend with what was metered.
 * When the shared store fails, each limit follows its failure mode: deny, allow, or a local per-replica share.
 */
import { randomUUID } from "node:crypto";
import type { Logger } from "pino";
import type { LimitConfig, LimitsConfig } from "../config/limits.ts";
import type { Clock } from "../clock.ts";
import type { Metrics } from "../observe/metrics.ts";
import type { Principal } from "../auth/principal.ts";
import type { Usage } from "../metering/usage.ts";
import { compileNames, type NameMatcher } from "../policy/patterns.ts";
import { TollgateError } from "../proxy/errors.ts";
import { MemoryStore } from "./store/memory.ts";
import { StoreUnavailableError, type GiveOp, type Store, type TakeAllResult, type TakeOp, type WindowState } from "./store/types.ts";
import { instanceKeys } from "./scopes.ts";
import { periodAt } from "./periods.ts";
import { formatReset, msUntilFits, msUntilReset } from "./ratelimit-headers.ts";
import { usageReport, type UsageQuery, type UsageReport } from "./usage-report.ts";

export type { UsageQuery, UsageReport } from "./usage-report.ts";

/** Prices usage in integer micro-dollars; `priced: false` for a model the price book does not know. */
export type PriceFn = (model: string | undefined, usage: Pick<Usage, "inputTokens" | "outputTokens"> & Partial<Usage>) => { micros: number; priced: boolean };

export interface EngineDeps {
  store: Store;
  price: PriceFn;
  unknownModel: "deny" | "zero";
  clock: Clock;
  metrics: Metrics;
  logger: Logger;
}

export interface AdmitRequest {
  principal: Principal;
  route: string;
  model: string | undefined;
  /** Estimated prompt tokens. */
  inputTokens: number;
  /** max_tokens of the request, or the policy's default. */
  maxOutputTokens: number;
}

export type SettleOutcome = "complete" | "client_aborted" | "upstream_error";

export interface Admission {
  /** x-ratelimit-* headers (and x-tollgate-degraded) for the client's response. */
  headers: Record<string, string>;
  /** A lower max_tokens the remaining budget can pay for, when clamping is on and needed. */
  clampMaxTokens: number | undefined;
  /** What was reserved, for estimates when the response carries no usage. */
  reservedTokens: number;
  settle(usage: Usage, outcome: SettleOutcome): Promise<void>;
}

export interface Rule {
  config: LimitConfig;
  models: NameMatcher | undefined;
  routes: ReadonlySet<string> | undefined;
  mode: "deny" | "allow" | "local";
}

type Taken =
  | { kind: "concurrency"; store: Store; key: string; id: string }
  | { kind: "tokens"; store: Store; key: string; windowMs: number; windowStart: number; reserved: number }
  | { kind: "budget"; store: Store; key: string; id: string; expireAt: number | undefined; rule: Rule; limit: number };

interface RateView {
  limit: number;
  remaining: number;
  resetMs: number;
}

/** One limit instance to take: the store op (at the limit's full size) and the rule it is for. */
interface Plan {
  rule: Rule;
  op: TakeOp;
  /** A budget's period end (epoch ms), for Retry-After; undefined for `total`. */
  periodEnd?: number | undefined;
}

export class LimitsEngine {
  readonly #config: LimitsConfig;
  readonly #deps: EngineDeps;
  readonly #rules: Rule[];
  /** Per route, the rules that may apply there in kind order (see `sortByKind`), worked out at its first request. */
  readonly #routeRules = new Map<string, { rules: Rule[]; byModel: boolean }>();
  readonly #local = new MemoryStore();
  #degraded = false;
  readonly #unsubscribe: () => void;

  constructor(config: LimitsConfig, deps: EngineDeps) {
    this.#config = config;
    this.#deps = deps;
    this.#rules = config.rules.map((c) => ({
      config: c,
      models: c.models ? compileNames(c.models) : undefined,
      routes: c.routes ? new Set(c.routes) : undefined,
      mode: c.onStoreFailure ?? (c.budget ? "deny" : "local"),
    }));
    // Clear the degraded state as soon as the store is back, not at the next request.
    this.#unsubscribe = deps.store.onReconnect(() => this.#setDegraded(false));
  }

  get store(): Store {
    return this.#deps.store;
  }

  /** Whether some token or budget limit may apply on this route, so the body must be read and usage metered. */
  meters(route: string): boolean {
    return this.#rules.some((r) => (r.config.tokens || r.config.budget) && (!r.routes || r.routes.has(route)));
  }

  /** Whether a limit on this route depends on the model, so the body's `model` must be read. */
  needsModel(route: string): boolean {
    return this.#rules.some((r) => r.models && (!r.routes || r.routes.has(route)));
  }

  /** Whether any limit may apply on this route (admission is skipped entirely otherwise). */
  limits(route: string): boolean {
    return this.#rules.some((r) => !r.routes || r.routes.has(route));
  }

  status(): { store: string; healthy: boolean; degraded: boolean } {
    return { store: this.#deps.store.kind, healthy: this.#deps.store.healthy(), degraded: this.#degraded };
  }

  async admit(req: AdmitRequest): Promise<Admission | undefined> {
    const rules = this.#applicable(req.route, req.model);
    if (rules.length === 0) return undefined;
    const now = this.#deps.clock.now();
    const scope = { principal: req.principal, route: req.route, model: req.model };
    const taken: Taken[] = [];
    const headers: Record<string, string> = {};
    let requestsView: RateView | undefined;
    let tokensView: RateView | undefined;
    let outputTokens = req.maxOutputTokens;
    let clampMaxTokens: number | undefined;

    let priced = { micros: 0, priced: true };
    if (rules.some((r) => r.config.budget)) {
      priced = this.#deps.price(req.model, { inputTokens: req.inputTokens, outputTokens });
      if (!priced.priced) {
        this.#deps.metrics.unpricedRequests.inc();
        if (this.#deps.unknownModel === "deny") throw new TollgateError("unpriced_model");
      }
      if (this.#config.clampMaxTokens && priced.priced) {
        const clamp = await this.#affordableOutput(rules.filter((r) => r.config.budget), scope, req, now);
        // A clamp below one token would send max_tokens: 0 upstream: the request is refused instead.
        if (clamp !== undefined && clamp >= 1 && clamp < outputTokens) {
          outputTokens = clamp;
          clampMaxTokens = clamp;
          priced = this.#deps.price(req.model, { inputTokens: req.inputTokens, outputTokens });
        }
      }
    }
    const tokenCost = storeCount(req.inputTokens + outputTokens);

    // Every limit instance is taken in one step, all or nothing (one Lua script on a standalone or Sentinel Redis,
    // shared with the requests of the same loop turn): a refused request takes nothing, not even for a round trip.
    // The refusal reported is the first in kind order (concurrency, requests, tokens, budgets), so clients see the
    // same reason whatever the timing.
    const plans: Plan[] = [];
    for (const rule of rules) {
      for (const key of instanceKeys(rule.config.name, rule.config.by, scope)) plans.push(this.#plan(rule, key, now, tokenCost, priced.micros));
    }
    for (const { plan, store, state, scale } of await this.#takeAll(plans, now)) {
      const c = plan.rule.config;
      if (plan.op.kind === "lease") taken.push({ kind: "concurrency", store, key: plan.op.key, id: plan.op.id });
      else if (plan.op.kind === "budget") taken.push({ kind: "budget", store, key: plan.op.key, id: plan.op.id, expireAt: plan.op.expireAt, rule: plan.rule, limit: plan.op.limit });
      else {
        const w = state as WindowState;
        const spec = (c.requests ?? c.tokens)!;
        const limit = scaled(spec.limit, scale);
        const elapsed = now - w.windowStart;
        const view = { limit, remaining: Math.max(0, Math.floor(limit - (w.previous * (1 - elapsed / spec.per) + w.current))), resetMs: msUntilReset(w.previous, w.current, elapsed, spec.per) };
        if (c.requests) {
          if (!requestsView || view.remaining < requestsView.remaining) requestsView = view;
        } else {
          if (!tokensView || view.remaining < tokensView.remaining) tokensView = view;
          taken.push({ kind: "tokens", store, key: plan.op.key, windowMs: spec.per, windowStart: w.windowStart, reserved: plan.op.cost });
        }
      }
    }

    if (requestsView) {
      headers["x-ratelimit-limit-requests"] = String(requestsView.limit);
      headers["x-ratelimit-remaining-requests"] = String(requestsView.remaining);
      headers["x-ratelimit-reset-requests"] = formatReset(requestsView.resetMs);
    }
    if (tokensView) {
      headers["x-ratelimit-limit-tokens"] = String(tokensView.limit);
      headers["x-ratelimit-remaining-tokens"] = String(tokensView.remaining);
      headers["x-ratelimit-reset-tokens"] = formatReset(tokensView.resetMs);
    }
    if (this.#degraded) headers["x-tollgate-degraded"] = "limits-store";
    let settled = false;
    return {
      headers,
      clampMaxTokens,
      reservedTokens: tokenCost,
      settle: async (usage, outcome) => {
        if (settled) return;
        settled = true;
        await this.#settle(taken, req, usage, outcome);
      },
    };
  }

  /** The rules this request counts against, in kind order; no new array unless a rule is limited to some models. */
  #applicable(route: string, model: string | undefined): Rule[] {
    let entry = this.#routeRules.get(route);
    if (!entry) {
      const rules = sortByKind(this.#rules.filter((r) => !r.routes || r.routes.has(route)));
      entry = { rules, byModel: rules.some((r) => r.models) };
      this.#routeRules.set(route, entry);
    }
    return entry.byModel ? entry.rules.filter((r) => !r.models || (model !== undefined && r.models.matches(model))) : entry.rules;
  }

  /** What taking one limit instance means: the store op and the rule it is for. */
  #plan(rule: Rule, key: string, now: number, tokenCost: number, micros: number): Plan {
    const c = rule.config;
    const ttlMs = this.#config.leaseTtl;
    if (c.concurrency !== undefined) return { rule, op: { kind: "lease", key, limit: c.concurrency, id: randomUUID(), ttlMs } };
    if (c.requests || c.tokens) {
      const spec = (c.requests ?? c.tokens)!;
      return { rule, op: { kind: "window", key, windowMs: spec.per, limit: spec.limit, cost: c.requests ? 1 : tokenCost } };
    }
    const budget = c.budget!;
    const period = periodAt(budget.period, budget.timeZone, now);
    const expireAt = period.end === undefined ? undefined : period.end + 86_400_000;
    return { rule, op: { kind: "budget", key: `${key}:${period.id}`, limit: Math.round(budget.usd * 1e6), amount: storeCount(micros), id: randomUUID(), ttlMs, expireAt }, periodEnd: period.end };
  }

  /**
   * Takes every planned instance on the shared store, all or nothing; when the store is down, each limit follows
   * its failure mode (the first `deny` refuses the request, `allow` limits are skipped, `local` ones are taken
   * on this replica's share). Throws the refusal of the first instance that refused.
   */
  async #takeAll(plans: Plan[], now: number): Promise<{ plan: Plan; store: Store; state: TakeAllResult["states"][number]; scale: number }[]> {
    const shared = this.#deps.store;
    if (shared.healthy()) {
      try {
        const result = await shared.takeAll(plans.map((p) => p.op), now);
        this.#setDegraded(false);
        return this.#outcome(plans, result, shared, 1, now);
      } catch (err) {
        if (!(err instanceof StoreUnavailableError)) throw err;
        // A script that timed out may still run on the server: give back the leases and reservations it may
        // have taken (by id, so giving back what was never taken changes nothing). Windows are left to decay.
        const undo = plans.flatMap(({ op }): GiveOp[] => (op.kind === "lease" ? [{ kind: "lease", key: op.key, id: op.id }] : op.kind === "budget" ? [{ kind: "budget", key: op.key, id: op.id, actual: 0, expireAt: op.expireAt }] : []));
        if (undo.length > 0) this.#compensate(async () => {
          const outcomes = await shared.giveAll(undo, this.#deps.clock.now());
          const failed = outcomes.find((o) => o instanceof Error);
          if (failed) throw failed;
        });
      }
    }
    this.#setDegraded(true);
    for (const p of plans) this.#deps.metrics.storeFallbacks.inc({ limit: p.rule.config.name, mode: p.rule.mode });
    const denied = plans.find((p) => p.rule.mode === "deny");
    if (denied) throw new TollgateError("limits_unavailable", undefined, { "retry-after": "5" }, denied.rule.config.name);
    const local = plans.filter((p) => p.rule.mode === "local");
    if (local.length === 0) return [];
    const scale = this.#localScale;
    // This replica's share of each limit (limit ÷ replicas).
    const shares = local.map(({ op }) => ({ ...op, limit: scaled(op.limit, scale) }));
    return this.#outcome(local, await this.#local.takeAll(shares, now), this.#local, scale, now);
  }

  #outcome(plans: Plan[], result: TakeAllResult, store: Store, scale: number, now: number) {
    if (result.refused >= 0) throw this.#refusal(plans[result.refused]!, result.states[result.refused]!, scale, now);
    return plans.map((plan, i) => ({ plan, store, state: result.states[i]!, scale }));
  }

  #refusal(plan: Plan, state: TakeAllResult["states"][number], scale: number, now: number): TollgateError {
    const { rule, op } = plan;
    if (op.kind === "lease") return this.#reject(rule, "concurrency_limited", { "retry-after": "1" });
    if (op.kind === "budget") {
      const retry = plan.periodEnd === undefined ? 86_400 : Math.max(1, Math.ceil((plan.periodEnd - now) / 1000));
      return this.#reject(rule, "budget_exceeded", { "retry-after": String(retry) });
    }
    const w = state as WindowState;
    const wait = msUntilFits(w.previous, w.current, now - w.windowStart, op.windowMs, scaled(op.limit, scale), op.cost);
    const seconds = Number.isFinite(wait) ? Math.max(1, Math.ceil(wait / 1000)) : Math.ceil(op.windowMs / 1000);
    return this.#reject(rule, "rate_limited", { "retry-after": String(seconds) }, Number.isFinite(wait) ? undefined : "The request alone exceeds the token limit; lower max_tokens.");
  }

  get #localScale(): number {
    return 1 / this.#config.replicas;
  }

  async #affordableOutput(budgets: Rule[], scope: { principal: Principal; route: string; model: string | undefined }, req: AdmitRequest, now: number): Promise<number | undefined> {
    let remaining = Number.POSITIVE_INFINITY;
    for (const rule of budgets) {
      const b = rule.config.budget!;
      const period = periodAt(b.period, b.timeZone, now);
      for (const key of instanceKeys(rule.config.name, rule.config.by, scope)) {
        const r = await this.#withStore(rule, (store) => store.budgetRead(`${key}:${period.id}`, now));
        if (r) remaining = Math.min(remaining, Math.round(b.usd * 1e6) - r.result.spent - r.result.reserved);
      }
    }
    if (!Number.isFinite(remaining)) return undefined;
    const input = this.#deps.price(req.model, { inputTokens: req.inputTokens, outputTokens: 0 }).micros;
    const perMillion = this.#deps.price(req.model, { inputTokens: 0, outputTokens: 1_000_000 }).micros;
    if (perMillion <= 0) return undefined;
    return Math.max(0, Math.floor(((remaining - input) * 1_000_000) / perMillion));
  }

  async #settle(taken: Taken[], req: AdmitRequest, usage: Usage, outcome: SettleOutcome): Promise<void> {
    // Whole numbers: Redis counts in 64-bit integers, and an upstream may report a fractional or absurd count.
    const tokens = storeCount(usage.inputTokens + usage.outputTokens);
    const cost = storeCount(this.#deps.price(req.model, usage).micros);
    const now = this.#deps.clock.now();
    // Every settlement of a request goes out in one step per store (one script on Redis standalone/Sentinel).
    // Nearly always there is one store (the shared one, or this replica's while it is down).
    const store = taken[0]?.store;
    if (taken.every((t) => t.store === store)) {
      if (store) await this.#settleOn(store, taken, tokens, cost, now, outcome);
      return;
    }
    const byStore = new Map<Store, Taken[]>();
    for (const t of taken) {
      const group = byStore.get(t.store);
      if (group) group.push(t);
      else byStore.set(t.store, [t]);
    }
    await Promise.all([...byStore].map(([store, group]) => this.#settleOn(store, group, tokens, cost, now, outcome)));
  }

  async #settleOn(store: Store, group: Taken[], tokens: number, cost: number, now: number, outcome: SettleOutcome): Promise<void> {
    const ops = group.map((t): GiveOp => (t.kind === "concurrency" ? { kind: "lease", key: t.key, id: t.id } : t.kind === "tokens" ? { kind: "window", key: t.key, windowMs: t.windowMs, windowStart: t.windowStart, delta: tokens - t.reserved } : { kind: "budget", key: t.key, id: t.id, actual: cost, expireAt: t.expireAt }));
    const outcomes = await store.giveAll(ops, now);
    for (let i = 0; i < group.length; i++) {
      const t = group[i]!;
      const o = outcomes[i];
      if (o instanceof Error) {
        // The reservation or lease expires by itself (leaseTtl); the spend it should have recorded is logged.
        this.#deps.metrics.settleFailures.inc({ kind: t.kind });
        this.#deps.logger.warn({ kind: t.kind, outcome, costMicros: cost, err: o.message }, "could not settle a limit; its reservation will expire");
        continue;
      }
      if (t.kind === "budget" && o) this.#crossings(t, o.spent - cost, o.spent);
      if (store !== this.#local) this.#setDegraded(false);
    }
  }

  #crossings(t: Extract<Taken, { kind: "budget" }>, before: number, after: number): void {
    for (const fraction of t.rule.config.budget!.softThresholds) {
      const mark = fraction * t.limit;
      if (before < mark && after >= mark) {
        this.#deps.metrics.budgetThresholds.inc({ limit: t.rule.config.name, threshold: String(fraction) });
        this.#deps.logger.warn({ limit: t.rule.config.name, threshold: fraction, spentUsd: after / 1e6, budgetUsd: t.limit / 1e6 }, "budget threshold crossed");
      }
    }
  }

  #reject(rule: Rule, code: "rate_limited" | "concurrency_limited" | "budget_exceeded", headers: Record<string, string>, message?: string): TollgateError {
    this.#deps.metrics.limitRejections.inc({ limit: rule.config.name, kind: code });
    return new TollgateError(code, message, headers, rule.config.name);
  }

  /**
   * Runs `op` on the shared store; when it is down, applies the limit's failure mode. Returns undefined
   * when the limit is skipped (`allow`), and which store answered otherwise.
   */
  async #withStore<T>(rule: Rule, op: (store: Store, scale: number) => Promise<T>): Promise<{ result: T; store: Store } | undefined> {
    const shared = this.#deps.store;
    if (shared.healthy()) {
      try {
        const result = await op(shared, 1);
        this.#setDegraded(false);
        return { result, store: shared };
      } catch (err) {
        if (!(err instanceof StoreUnavailableError)) throw err;
      }
    }
    this.#setDegraded(true);
    this.#deps.metrics.storeFallbacks.inc({ limit: rule.config.name, mode: rule.mode });
    if (rule.mode === "deny") throw new TollgateError("limits_unavailable", undefined, { "retry-after": "5" }, rule.config.name);
    if (rule.mode === "allow") return undefined;
    return { result: await op(this.#local, this.#localScale), store: this.#local };
  }

  /** Best effort, in the background, a few times; whatever it misses expires with `leaseTtl`. */
  #compensate(undo: () => Promise<void>): void {
    void (async () => {
      for (let attempt = 1; attempt <= 3; attempt++) {
        await new Promise((r) => setTimeout(r, 500 * attempt).unref());
        try {
          await undo();
          return;
        } catch {
          // try again
        }
      }
    })();
  }

  #setDegraded(degraded: boolean): void {
    if (degraded === this.#degraded) return;
    this.#degraded = degraded;
    this.#deps.metrics.limitsDegraded.set(degraded ? 1 : 0);
    if (degraded) this.#deps.logger.error({ store: this.#deps.store.kind }, "limits store unreachable: each limit follows its failure mode");
    else this.#deps.logger.info({ store: this.#deps.store.kind }, "limits store reachable again: shared counting resumed");
  }

  /** One caller's standing against every limit that applies to them (admin port /usage). */
  usage(query: UsageQuery): Promise<UsageReport[]> {
    return usageReport(this.#rules, this.#deps.store, query, this.#deps.clock.now());
  }

  async close(): Promise<void> {
    this.#unsubscribe();
    await this.#local.close();
  }
}

/** A whole number every store keeps exactly (Redis's INCRBY takes 64-bit integers); not a number counts as 0. */
function storeCount(n: number): number {
  return Number.isFinite(n) ? Math.max(-Number.MAX_SAFE_INTEGER, Math.min(Number.MAX_SAFE_INTEGER, Math.round(n))) : 0;
}

function scaled(limit: number, scale: number): number {
  return scale === 1 ? limit : Math.max(1, Math.floor(limit * scale));
}

const KIND_ORDER = (r: Rule) => (r.config.concurrency !== undefined ? 0 : r.config.requests ? 1 : r.config.tokens ? 2 : 3);
function sortByKind(rules: Rule[]): Rule[] {
  return [...rules].sort((a, b) => KIND_ORDER(a) - KIND_ORDER(b));
}
