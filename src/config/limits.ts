/** Policy shapes for limits, budgets, their shared store and pricing. */
import { z } from "zod";
import { duration } from "./duration.ts";
import { name } from "./common.ts";

const hostPort = z.strictObject({ host: z.string(), port: z.number().int().min(1).max(65535) });

const redisStore = z.strictObject({
  type: z.literal("redis"),
  mode: z.enum(["standalone", "sentinel", "cluster"]).default("standalone"),
  url: z.string().regex(/^rediss?:\/\//, "a redis:// or rediss:// URL").optional().describe("standalone: redis://[:password@]host:port/db"),
  nodes: z.array(hostPort).min(1).optional().describe("cluster: startup nodes"),
  sentinels: z.array(hostPort).min(1).optional(),
  masterName: z.string().optional().describe("sentinel: the monitored master's name"),
  password: z.string().optional(),
  keyPrefix: z.string().default("tollgate:"),
  commandTimeout: duration.prefault("500ms").describe("A command slower than this counts as the store being down"),
  tls: z.boolean().default(false),
});

const memoryStore = z.strictObject({ type: z.literal("memory") });

export const store = z.discriminatedUnion("type", [memoryStore, redisStore]).superRefine((s, ctx) => {
  if (s.type !== "redis") return;
  if (s.mode === "standalone" && !s.url) ctx.addIssue({ code: "custom", path: ["url"], message: "a standalone Redis needs url" });
  if (s.mode === "cluster" && !s.nodes) ctx.addIssue({ code: "custom", path: ["nodes"], message: "a Redis Cluster needs startup nodes" });
  if (s.mode === "sentinel" && (!s.sentinels || !s.masterName)) ctx.addIssue({ code: "custom", path: ["sentinels"], message: "Sentinel needs sentinels and masterName" });
});

export const DIMENSIONS = ["key", "user", "team", "group", "model", "route", "global"] as const;
export type Dimension = (typeof DIMENSIONS)[number];

const failureMode = z.enum(["deny", "allow", "local"]);

const budget = z.strictObject({
  usd: z.number().positive(),
  period: z.enum(["daily", "weekly", "monthly", "total"]).default("monthly"),
  timeZone: z.string().default("UTC").refine((tz) => {
    try {
      new Intl.DateTimeFormat("en-US", { timeZone: tz });
      return true;
    } catch {
      return false;
    }
  }, "an IANA time zone such as Europe/Berlin"),
  softThresholds: z.array(z.number().gt(0).lt(1)).default([0.8]).describe("Fractions of the budget that are logged and counted when crossed"),
});

const limit = z
  .strictObject({
    name,
    by: z.array(z.enum(DIMENSIONS)).min(1).default(["global"]).describe("One limit per combination of these (e.g. [user, model])"),
    routes: z.array(z.string()).min(1).optional().describe("Only on these routes"),
    models: z.array(z.string()).min(1).optional().describe("Only for these models (wildcards)"),
    requests: z.strictObject({ limit: z.number().int().positive(), per: duration.prefault("1m") }).optional(),
    tokens: z.strictObject({ limit: z.number().int().positive(), per: duration.prefault("1m") }).optional(),
    concurrency: z.number().int().positive().optional().describe("Requests (and open streams) in flight at once"),
    budget: budget.optional(),
    onStoreFailure: failureMode.optional().describe("deny (503), allow, or local (an in-process share); default: budgets deny, the rest local"),
  })
  .refine((l) => [l.requests, l.tokens, l.concurrency, l.budget].filter((x) => x !== undefined).length === 1, {
    message: "a limit sets exactly one of requests, tokens, concurrency or budget",
  });

export const limits = z
  .strictObject({
    store: store.default({ type: "memory" }),
    replicas: z.number().int().positive().default(1).describe("Replicas sharing the limits: `local` fallback holds 1/replicas of each limit"),
    defaultMaxTokens: z.number().int().positive().default(1024).describe("Output tokens reserved when a request sets no max_tokens"),
    charsPerToken: z.number().positive().default(4),
    clampMaxTokens: z.boolean().default(false).describe("Lower max_tokens to what the remaining budget can pay for"),
    leaseTtl: duration.prefault("15m").describe("How long a crashed replica's reservations and leases live"),
    meter: z.enum(["all", "limited"]).default("all").describe("Meter token usage on every request (metrics) or only where a token or budget limit applies"),
    rules: z.array(limit).default([]),
  })
  .prefault({});

const price = z.strictObject({
  input: z.number().nonnegative().describe("USD per 1M input tokens"),
  output: z.number().nonnegative().describe("USD per 1M output tokens"),
  cachedInput: z.number().nonnegative().optional(),
  cacheWrite: z.number().nonnegative().optional(),
});

export const pricing = z
  .strictObject({
    unknownModel: z.enum(["deny", "zero"]).default("zero").describe("A model with no price: deny budgeted requests, or price at zero with a warning metric"),
    models: z.record(z.string(), price).default({}).describe("Overrides of the shipped price table (`*` wildcards allowed)"),
  })
  .prefault({});

export type LimitsConfig = z.output<typeof limits>;
export type LimitConfig = LimitsConfig["rules"][number];
export type StoreConfig = z.output<typeof store>;
export type RedisStoreConfig = Extract<StoreConfig, { type: "redis" }>;
export type PricingConfig = z.output<typeof pricing>;
export type PriceConfig = z.output<typeof price>;
