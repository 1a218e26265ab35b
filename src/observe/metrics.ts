/**
 * Prometheus metrics, one registry per process (it outlives policy reloads). Labels are bounded sets taken
 * from the policy (route, upstream, authenticator names) or from code (status, reason codes): never a user,
 * email, key or token.
 */
import { Registry, Counter, Histogram, Gauge, collectDefaultMetrics } from "prom-client";

const LATENCY_BUCKETS = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120];

export class Metrics {
  readonly registry = new Registry();

  readonly requests = new Counter({
    name: "tollgate_requests_total",
    help: "Requests handled, by route, response status, authentication method and decision.",
    labelNames: ["route", "status", "auth_method", "decision"] as const,
    registers: [this.registry],
  });

  readonly duration = new Histogram({
    name: "tollgate_request_duration_seconds",
    help: "Time from request arrival to the last response byte, streams included.",
    labelNames: ["route"] as const,
    buckets: LATENCY_BUCKETS,
    registers: [this.registry],
  });

  readonly upstreamTtfb = new Histogram({
    name: "tollgate_upstream_ttfb_seconds",
    help: "Time from dispatch to the upstream's response headers.",
    labelNames: ["upstream"] as const,
    buckets: LATENCY_BUCKETS,
    registers: [this.registry],
  });

  readonly authFailures = new Counter({
    name: "tollgate_auth_failures_total",
    help: "Requests refused by authentication, by authenticator method and reason code.",
    labelNames: ["method", "reason"] as const,
    registers: [this.registry],
  });

  readonly inflight = new Gauge({
    name: "tollgate_inflight_requests",
    help: "Requests (and open streams) currently in flight.",
    registers: [this.registry],
  });

  readonly upstreamErrors = new Counter({
    name: "tollgate_upstream_errors_total",
    help: "Upstream requests that failed or were aborted, by upstream and outcome.",
    labelNames: ["upstream", "outcome"] as const,
    registers: [this.registry],
  });

  readonly configReloads = new Counter({
    name: "tollgate_config_reloads_total",
    help: "Policy reload attempts, by result (success or failure).",
    labelNames: ["result"] as const,
    registers: [this.registry],
  });

  readonly configLoadedAt = new Gauge({
    name: "tollgate_config_last_success_timestamp_seconds",
    help: "Unix time of the last policy load that took effect.",
    registers: [this.registry],
  });

  readonly deprecatedAuthCalls = new Counter({
    name: "tollgate_deprecated_auth_calls_total",
    help: "Requests authenticated by an authenticator marked deprecated, by authenticator.",
    labelNames: ["authenticator"] as const,
    registers: [this.registry],
  });

  readonly jwksFetches = new Counter({
    name: "tollgate_jwks_fetches_total",
    help: "JWKS fetches, by issuer (from the policy) and result.",
    labelNames: ["issuer", "result"] as const,
    registers: [this.registry],
  });

  readonly #jwksAges = new Map<string, () => number | undefined>();
  readonly jwksAge = new Gauge({
    name: "tollgate_jwks_age_seconds",
    help: "Age of the key set in use, by issuer.",
    labelNames: ["issuer"] as const,
    registers: [this.registry],
    collect: () => {
      this.jwksAge.reset();
      for (const [issuer, age] of this.#jwksAges) {
        const seconds = age();
        if (seconds !== undefined) this.jwksAge.set({ issuer }, seconds);
      }
    },
  });

  /** Key sets report their age at scrape time; a reload replaces the previous gateway's reporter. */
  registerJwksAge(issuer: string, age: () => number | undefined): void {
    this.#jwksAges.set(issuer, age);
  }

  readonly tokenCache = new Counter({
    name: "tollgate_token_cache_total",
    help: "Verified-token cache lookups, by authenticator and result (hit or miss).",
    labelNames: ["authenticator", "result"] as const,
    registers: [this.registry],
  });

  readonly groupOverage = new Counter({
    name: "tollgate_entra_group_overage_total",
    help: "Entra tokens whose groups had to be resolved through Microsoft Graph, by result.",
    labelNames: ["result"] as const,
    registers: [this.registry],
  });

  readonly introspections = new Counter({
    name: "tollgate_introspection_requests_total",
    help: "Calls to introspection / userinfo / token-info endpoints, by authenticator and result.",
    labelNames: ["authenticator", "result"] as const,
    registers: [this.registry],
  });

  readonly credentialRefreshes = new Counter({
    name: "tollgate_upstream_credential_refreshes_total",
    help: "Upstream credential fetches and refreshes (Entra tokens, AWS credentials), by upstream and result.",
    labelNames: ["upstream", "result"] as const,
    registers: [this.registry],
  });

  readonly credentialFallbacks = new Counter({
    name: "tollgate_upstream_credential_fallbacks_total",
    help: "Requests sent with the fallback API key because no Entra token was available, by upstream.",
    labelNames: ["upstream"] as const,
    registers: [this.registry],
  });

  readonly #credentialExpiry = new Map<string, () => number | undefined>();
  readonly credentialExpiry = new Gauge({
    name: "tollgate_upstream_credential_expiry_seconds",
    help: "Seconds until the upstream credential in use expires (absent for credentials that do not expire).",
    labelNames: ["upstream"] as const,
    registers: [this.registry],
    collect: () => {
      this.credentialExpiry.reset();
      for (const [upstream, seconds] of this.#credentialExpiry) {
        const value = seconds();
        if (value !== undefined) this.credentialExpiry.set({ upstream }, value);
      }
    },
  });

  registerCredentialExpiry(upstream: string, seconds: () => number | undefined): void {
    this.#credentialExpiry.set(upstream, seconds);
  }

  readonly limitRejections = new Counter({
    name: "tollgate_limit_rejections_total",
    help: "Requests refused by a limit, by limit name (from the policy) and kind.",
    labelNames: ["limit", "kind"] as const,
    registers: [this.registry],
  });

  readonly limitsDegraded = new Gauge({
    name: "tollgate_limits_degraded",
    help: "1 while the shared limits store is unreachable and limits follow their failure modes.",
    registers: [this.registry],
  });

  readonly storeFallbacks = new Counter({
    name: "tollgate_limits_store_fallbacks_total",
    help: "Limit checks made without the shared store, by limit and failure mode (deny, allow, local).",
    labelNames: ["limit", "mode"] as const,
    registers: [this.registry],
  });

  readonly settleFailures = new Counter({
    name: "tollgate_limits_settle_failures_total",
    help: "Settlements that could not reach the store (their reservations expire by themselves), by kind.",
    labelNames: ["kind"] as const,
    registers: [this.registry],
  });

  readonly budgetThresholds = new Counter({
    name: "tollgate_budget_threshold_crossings_total",
    help: "Soft budget thresholds crossed, by limit and threshold.",
    labelNames: ["limit", "threshold"] as const,
    registers: [this.registry],
  });

  readonly tokens = new Counter({
    name: "tollgate_tokens_total",
    help: "Tokens metered, by model (priced models by name, others as `other`), type and source (provider or estimated).",
    labelNames: ["model", "type", "source"] as const,
    registers: [this.registry],
  });

  readonly spend = new Counter({
    name: "tollgate_spend_usd_total",
    help: "Spend in USD at the price table, by model (priced models by name, others as `other`).",
    labelNames: ["model"] as const,
    registers: [this.registry],
  });

  readonly unpricedRequests = new Counter({
    name: "tollgate_unpriced_requests_total",
    help: "Budgeted requests for a model without a price (priced at zero or denied, as the policy says).",
    registers: [this.registry],
  });

  constructor(options: { defaultMetrics?: boolean } = {}) {
    this.limitsDegraded.set(0);
    // Both series exist from the start, so `increase()` sees the first failure too.
    this.configReloads.inc({ result: "success" }, 0);
    this.configReloads.inc({ result: "failure" }, 0);
    if (options.defaultMetrics !== false) collectDefaultMetrics({ register: this.registry, prefix: "tollgate_process_" });
    new Gauge({
      name: "tollgate_build_info",
      help: "Always 1; labels carry the Tollgate and Node.js versions.",
      labelNames: ["version", "node"] as const,
      registers: [this.registry],
    }).set({ version: VERSION, node: process.versions.node }, 1);
  }
}

export const VERSION = "0.1.0";
