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
import { StoreUnavailableError, type Store } from "./store/types.ts";
import { scopeInstances, scopeKey } from "./scopes.ts";
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

/** What a request or token window answered: its view for the x-ratelimit headers, and a token reservation. */
interface RateSample {
  view: RateView;
  requests: boolean;
  tokens: Extract<Taken, { kind: "tokens" }> | undefined;
}

export class LimitsEngine {
  readonly #config: LimitsConfig;
  readonly #deps: EngineDeps;
  readonly #rules: Rule[];
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
    const rules = this.#rules.filter((r) => (!r.routes || r.routes.has(req.route)) && (!r.models || (req.model !== undefined && r.models.matches(req.model))));
    if (rules.length === 0) return undefined;
    const now = this.#deps.clock.now();
    const scope = { principal: req.principal, route: req.route, model: req.model };
    const taken: Taken[] = [];
    const headers: Record<string, string> = {};
    let requestsView: RateView | undefined;
    let tokensView: RateView | undefined;
    let outputTokens = req.maxOutputTokens;
    let clampMaxTokens: number | undefined;

    const budgets = rules.filter((r) => r.config.budget);
    let priced = { micros: 0, priced: true };
    if (budgets.length > 0) {
      priced = this.#deps.price(req.model, { inputTokens: req.inputTokens, outputTokens });
      if (!priced.priced) {
        this.#deps.metrics.unpricedRequests.inc();
        if (this.#deps.unknownModel === "deny") throw new TollgateError("unpriced_model");
      }
      if (this.#config.clampMaxTokens && priced.priced) {
        const clamp = await this.#affordableOutput(budgets, scope, req, now);
        // A clamp below one token would send max_tokens: 0 upstream: the request is refused instead.
        if (clamp !== undefined && clamp >= 1 && clamp < outputTokens) {
          outputTokens = clamp;
          clampMaxTokens = clamp;
          priced = this.#deps.price(req.model, { inputTokens: req.inputTokens, outputTokens });
        }
      }
    }
    const tokenCost = req.inputTokens + outputTokens;

    // Every limit instance is taken at once: with the store's auto-pipelining their commands share one write
    // and one round trip, where one after the other cost a round trip each (the full path's unloaded latency
    // was mostly these). When one refuses, what the others took is given back, so a refused request leaves no
    // trace but a transient reservation; the refusal reported is the first in kind order (concurrency,
    // requests, tokens, budgets) so that clients see the same reason whatever the timing.
    const attempts: Promise<Taken | RateSample | undefined>[] = [];
    for (const rule of sortByKind(rules)) {
      for (const instance of scopeInstances(rule.config.by, scope)) attempts.push(this.#takeOne(rule, scopeKey(rule.config.name, instance), now, tokenCost, priced.micros));
    }
    const outcomes = await Promise.allSettled(attempts);
    const refusal = outcomes.find((o) => o.status === "rejected");
    for (const o of outcomes) {
      if (o.status !== "fulfilled" || !o.value) continue;
      if ("kind" in o.value) taken.push(o.value);
      if ("view" in o.value) {
        const { view, requests } = o.value;
        if (requests && (!requestsView || view.remaining < requestsView.remaining)) requestsView = view;
        if (!requests && (!tokensView || view.remaining < tokensView.remaining)) tokensView = view;
      }
      if ("tokens" in o.value && o.value.tokens) taken.push(o.value.tokens);
    }
    if (refusal) {
      await this.#release(taken);
      throw (refusal as PromiseRejectedResult).reason;
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

  /** Takes one limit instance; rejects with the limit's refusal. */
  async #takeOne(rule: Rule, key: string, now: number, tokenCost: number, micros: number): Promise<Taken | RateSample | undefined> {
    const c = rule.config;
    if (c.concurrency !== undefined) {
      const id = randomUUID();
      const r = await this.#withStore(rule, (store, scale) => store.leaseAcquire(key, scaled(c.concurrency!, scale), id, this.#config.leaseTtl, now), (store) => store.leaseRelease(key, id));
      if (!r) return undefined;
      if (!r.result.allowed) throw this.#reject(rule, "concurrency_limited", { "retry-after": "1" });
      return { kind: "concurrency", store: r.store, key, id };
    }
    if (c.requests || c.tokens) {
      const spec = (c.requests ?? c.tokens)!;
      const cost = c.requests ? 1 : tokenCost;
      const r = await this.#withStore(rule, (store, scale) => store.windowTake(key, spec.per, scaled(spec.limit, scale), cost, now));
      if (!r) return undefined;
      const w = r.result;
      const limit = scaled(spec.limit, r.store === this.#local ? this.#localScale : 1);
      const elapsed = now - w.windowStart;
      if (!w.allowed) {
        const wait = msUntilFits(w.previous, w.current, elapsed, spec.per, limit, cost);
        const seconds = Number.isFinite(wait) ? Math.max(1, Math.ceil(wait / 1000)) : Math.ceil(spec.per / 1000);
        throw this.#reject(rule, "rate_limited", { "retry-after": String(seconds) }, Number.isFinite(wait) ? undefined : "The request alone exceeds the token limit; lower max_tokens.");
      }
      const view = { limit, remaining: Math.max(0, Math.floor(limit - (w.previous * (1 - elapsed / spec.per) + w.current))), resetMs: msUntilReset(w.previous, w.current, elapsed, spec.per) };
      return { view, requests: Boolean(c.requests), tokens: c.tokens ? { kind: "tokens", store: r.store, key, windowMs: spec.per, windowStart: w.windowStart, reserved: cost } : undefined };
    }
    const budget = c.budget!;
    const period = periodAt(budget.period, budget.timeZone, now);
    const budgetKey = `${key}:${period.id}`;
    const limit = Math.round(budget.usd * 1e6);
    const id = randomUUID();
    const expireAt = period.end === undefined ? undefined : period.end + 86_400_000;
    const r = await this.#withStore(
      rule,
      (store, scale) => store.budgetReserve(budgetKey, scaled(limit, scale), micros, id, this.#config.leaseTtl, now, expireAt),
      async (store) => void (await store.budgetSettle(budgetKey, id, 0, this.#deps.clock.now(), expireAt)),
    );
    if (!r) return undefined;
    if (!r.result.allowed) {
      const retry = period.end === undefined ? 86_400 : Math.max(1, Math.ceil((period.end - now) / 1000));
      throw this.#reject(rule, "budget_exceeded", { "retry-after": String(retry) });
    }
    return { kind: "budget", store: r.store, key: budgetKey, id, expireAt, rule, limit };
  }

  get #localScale(): number {
    return 1 / this.#config.replicas;
  }

  async #affordableOutput(budgets: Rule[], scope: { principal: Principal; route: string; model: string | undefined }, req: AdmitRequest, now: number): Promise<number | undefined> {
    let remaining = Number.POSITIVE_INFINITY;
    for (const rule of budgets) {
      const b = rule.config.budget!;
      const period = periodAt(b.period, b.timeZone, now);
      for (const instance of scopeInstances(rule.config.by, scope)) {
        const r = await this.#withStore(rule, (store) => store.budgetRead(`${scopeKey(rule.config.name, instance)}:${period.id}`, now));
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
    const tokens = usage.inputTokens + usage.outputTokens;
    const cost = this.#deps.price(req.model, usage).micros;
    const now = this.#deps.clock.now();
    // The limits are independent of one another: their settlements go out together (one round trip, and one
    // pipelined write with the store's auto-pipelining) instead of one after the other.
    await Promise.all(
      taken.map(async (t) => {
        try {
          if (t.kind === "concurrency") await t.store.leaseRelease(t.key, t.id);
          else if (t.kind === "tokens") await t.store.windowAdjust(t.key, t.windowMs, t.windowStart, tokens - t.reserved);
          else {
            const after = await t.store.budgetSettle(t.key, t.id, cost, now, t.expireAt);
            this.#crossings(t, after.spent - cost, after.spent);
          }
          if (t.store !== this.#local) this.#setDegraded(false);
        } catch (err) {
          // The reservation or lease expires by itself (leaseTtl); the spend it should have recorded is logged.
          this.#deps.metrics.settleFailures.inc({ kind: t.kind });
          this.#deps.logger.warn({ kind: t.kind, outcome, costMicros: cost, err: (err as Error).message }, "could not settle a limit; its reservation will expire");
        }
      }),
    );
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

  async #release(taken: Taken[]): Promise<void> {
    const now = this.#deps.clock.now();
    await Promise.allSettled(
      taken.map((t) =>
        t.kind === "concurrency"
          ? t.store.leaseRelease(t.key, t.id)
          : t.kind === "tokens"
            ? t.store.windowAdjust(t.key, t.windowMs, t.windowStart, -t.reserved)
            : t.store.budgetSettle(t.key, t.id, 0, now, t.expireAt),
      ),
    );
  }

  #reject(rule: Rule, code: "rate_limited" | "concurrency_limited" | "budget_exceeded", headers: Record<string, string>, message?: string): TollgateError {
    this.#deps.metrics.limitRejections.inc({ limit: rule.config.name, kind: code });
    return new TollgateError(code, message, headers, rule.config.name);
  }

  /**
   * Runs `op` on the shared store; when it is down, applies the limit's failure mode. Returns undefined
   * when the limit is skipped (`allow`), and which store answered otherwise.
   */
  async #withStore<T>(rule: Rule, op: (store: Store, scale: number) => Promise<T>, undo?: (store: Store) => Promise<void>): Promise<{ result: T; store: Store } | undefined> {
    const shared = this.#deps.store;
    if (shared.healthy()) {
      try {
        const result = await op(shared, 1);
        this.#setDegraded(false);
        return { result, store: shared };
      } catch (err) {
        if (!(err instanceof StoreUnavailableError)) throw err;
        // A command that timed out may still run on the server: give back what it may have taken.
        if (undo) this.#compensate(() => undo(shared));
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

function scaled(limit: number, scale: number): number {
  return scale === 1 ? limit : Math.max(1, Math.floor(limit * scale));
}

const KIND_ORDER = (r: Rule) => (r.config.concurrency !== undefined ? 0 : r.config.requests ? 1 : r.config.tokens ? 2 : 3);
function sortByKind(rules: Rule[]): Rule[] {
  return [...rules].sort((a, b) => KIND_ORDER(a) - KIND_ORDER(b));
}
