/**
 * The limits store goes away mid-run (a private redis-server, killed and started again on the same port):
 * a budget (default onStoreFailure: deny) answers 503 limits_unavailable; a rate limit (default local) keeps
 * limiting per replica at limit ÷ replicas; an `allow` limit lets requests through; Tollgate stays ready but
 * shows the degraded state (/readyz, tollgate_limits_degraded, x-tollgate-degraded). Redis back: shared
 * counting resumes without a restart.
 */
import t from "tap";
import { Redis } from "ioredis";
import { startHarness, makeKey, SERVER_BLOCK, until, type Harness } from "../helpers/harness.ts";
import { startLlmStandIn, type LlmStandIn } from "../helpers/llm-stand-in.ts";
import { startPrivateRedis, testPrefix, type PrivateRedis } from "../helpers/redis.ts";
import { chat, usageOf, metricsText, metric, readyz, redisStore, errorOf, awayFromWindowEdge, micros, HI } from "./e2e-common.ts";

const alice = makeKey();
const ALICE = "alice@example.com";
const prefix = testPrefix("e2e-outage");

const policy = (llmUrl: string, redisUrl: string) => `${SERVER_BLOCK}
upstreams: { llm: { url: "${llmUrl}" } }
authenticators: [{ name: keys, type: api_key, keys: [{ id: alice-key, hash: "${alice.hash}", user: ${ALICE}, roles: [user] }] }]
routes:
  - { name: chat, methods: [POST], paths: [/v1/chat/completions], upstream: llm, allow: [{ roles: [user] }] }
pricing:
  models: { gpt-4o-mini: { input: 10, output: 10 } }
limits:
  store: ${redisStore(prefix, redisUrl)}
  replicas: 2
  rules:
    - { name: budget-user, by: [user], models: [gpt-4o-mini], budget: { usd: 1 } }
    - { name: rpm-local, by: [user], models: [gpt-4o], requests: { limit: 10, per: 1m } }
    - { name: rpm-open, by: [user], models: [gpt-4.1-mini], requests: { limit: 2, per: 1m }, onStoreFailure: allow }
    - { name: one-stream, by: [user], models: [gpt-4.1], concurrency: 1 }
`;

let redis: PrivateRedis;
let llm: LlmStandIn;
let h: Harness;
let inspect: Redis;
t.before(async () => {
  redis = await startPrivateRedis();
  llm = await startLlmStandIn();
  h = await startHarness(policy(llm.url, redis.url));
  inspect = new Redis(redis.url, { lazyConnect: true, maxRetriesPerRequest: 1, retryStrategy: () => 100 });
  inspect.on("error", () => {});
});
t.teardown(async () => {
  inspect.disconnect();
  await h.stop();
  await llm.close();
  await redis.close();
});

const send = (model: string) => chat(h.url, alice.key, { model, max_tokens: 10, messages: HI });
const statuses = async (model: string, n: number) => {
  const out: number[] = [];
  for (let i = 0; i < n; i++) out.push((await send(model)).status);
  return out;
};
/** The request counter of rpm-local for alice in Redis, summed over its window buckets. */
async function countInRedis(): Promise<number> {
  if (inspect.status !== "ready") await inspect.connect().catch(() => {});
  const keys = await inspect.keys(`${prefix}{rpm-local:*`);
  const values = keys.length ? await inspect.mget(...keys) : [];
  return values.reduce((sum, v) => sum + Number(v ?? 0), 0);
}
const degradedGauge = async () => metric(await metricsText(h.adminUrl), "tollgate_limits_degraded");

t.test("a request in Tollgate's first moments, before Redis has connected, is not treated as an outage", async (t) => {
  const early = await startHarness(policy(llm.url, redis.url));
  t.teardown(() => early.stop());
  const r = await chat(early.url, alice.key, { model: "gpt-4o-mini", max_tokens: 10, messages: HI });
  t.equal(r.status, 200, `the store is up; the budget is checked, not refused (got ${r.status} ${errorOf(r).code ?? ""})`);
});

t.test("store healthy: limits are counted in Redis", async (t) => {
  await until(async () => (await readyz(h.adminUrl)).body.limits.healthy === true, 5000, "Redis connected");
  await awayFromWindowEdge(60_000, 15_000);
  const first = await send("gpt-4o");
  t.equal(first.status, 200);
  t.equal(first.headers["x-ratelimit-limit-requests"], "10", "the whole shared limit");
  t.notOk(first.headers["x-tollgate-degraded"]);
  t.same(await statuses("gpt-4o", 2), [200, 200]);
  t.equal(await countInRedis(), 3, "three requests counted in Redis");
  t.same(await statuses("gpt-4.1-mini", 3), [200, 200, 429], "rpm-open limits while Redis answers");
  t.equal((await send("gpt-4o-mini")).status, 200, "the budget is checked in Redis");
  t.match(await readyz(h.adminUrl), { status: 200, body: { status: "ready", limits: { store: "redis", healthy: true, degraded: false } } });
  t.equal(await degradedGauge(), 0);
});

t.test("store down: deny → 503, local → limit ÷ replicas, allow → through; ready but degraded", async (t) => {
  await redis.stop();
  await until(async () => (await readyz(h.adminUrl)).body.limits.healthy === false, 5000, "the loss noticed");
  const forwarded = llm.count();

  const budget = await send("gpt-4o-mini");
  t.equal(budget.status, 503, "a budget cannot be checked: denied");
  t.match(errorOf(budget), { type: "api_error", code: "limits_unavailable" });
  t.equal(budget.headers["retry-after"], "5");
  t.equal(llm.count(), forwarded, "not forwarded");

  const local: string[] = [];
  for (let i = 0; i < 6; i++) {
    const r = await send("gpt-4o");
    local.push(`${r.status}:${r.headers["x-ratelimit-limit-requests"] ?? "-"}:${r.headers["x-tollgate-degraded"] ?? "-"}`);
  }
  t.same(local, [...Array(5).fill("200:5:limits-store"), "429:-:-"], "each replica allows its share, 10 ÷ 2 = 5, and says it is degraded");

  const open = [];
  for (let i = 0; i < 4; i++) open.push(await send("gpt-4.1-mini"));
  t.same(open.map((r) => r.status), [200, 200, 200, 200], "an `allow` limit lets everything through while the store is down");
  t.ok(open.every((r) => r.headers["x-tollgate-degraded"] === "limits-store" && r.headers["x-ratelimit-limit-requests"] === undefined), "degraded, and no rate headers for a limit not applied");

  const ready = await readyz(h.adminUrl);
  t.equal(ready.status, 200, "Tollgate stays ready");
  t.match(ready.body, { status: "ready", limits: { store: "redis", healthy: false, degraded: true } });
  const text = await metricsText(h.adminUrl);
  t.equal(metric(text, "tollgate_limits_degraded"), 1);
  t.equal(metric(text, 'tollgate_limits_store_fallbacks_total{limit="budget-user",mode="deny"}'), 1);
  t.equal(metric(text, 'tollgate_limits_store_fallbacks_total{limit="rpm-local",mode="local"}'), 6);
  t.equal(metric(text, 'tollgate_limits_store_fallbacks_total{limit="rpm-open",mode="allow"}'), 4);
  t.match(await usageOf(h.adminUrl, { user: ALICE, model: "gpt-4o" }, "rpm-local"), { error: /Redis/ }, "/usage says it cannot read the store");
});

t.test("store back: shared counting resumes without a restart", async (t) => {
  await redis.start();
  await until(async () => (await readyz(h.adminUrl)).body.limits.healthy === true, 10_000, "Tollgate reconnected");
  const r = await send("gpt-4o");
  t.equal(r.status, 200);
  t.equal(r.headers["x-ratelimit-limit-requests"], "10", "the whole shared limit again");
  t.equal(r.headers["x-ratelimit-remaining-requests"], "9", "counted afresh in the restarted (empty) Redis");
  t.notOk(r.headers["x-tollgate-degraded"], "no longer degraded");
  t.match(await readyz(h.adminUrl), { status: 200, body: { limits: { healthy: true, degraded: false } } });
  t.equal(await degradedGauge(), 0);
  t.same(await statuses("gpt-4o", 2), [200, 200]);
  t.equal(await countInRedis(), 3, "the counts are in Redis again");
  t.match(await usageOf(h.adminUrl, { user: ALICE, model: "gpt-4o" }, "rpm-local"), { used: 3, remaining: 7 });
  t.equal((await send("gpt-4o-mini")).status, 200, "the budget is checked again");
  t.equal((await send("gpt-4.1-mini")).status, 200);
  t.equal((await send("gpt-4.1-mini")).status, 200);
  t.equal((await send("gpt-4.1-mini")).status, 429, "rpm-open limits again, in Redis");
});

t.test("degraded is reported as soon as the store is back, not only after the next request", async (t) => {
  await redis.stop();
  await until(async () => (await readyz(h.adminUrl)).body.limits.healthy === false, 5000, "the loss noticed");
  t.equal((await send("gpt-4o-mini")).status, 503);
  t.equal(await degradedGauge(), 1);
  await redis.start();
  await until(async () => (await readyz(h.adminUrl)).body.limits.healthy === true, 10_000, "Tollgate reconnected");
  await new Promise((r) => setTimeout(r, 200));
  t.match((await readyz(h.adminUrl)).body.limits, { healthy: true, degraded: false }, "/readyz: a healthy store is not degraded");
  t.equal(await degradedGauge(), 0, "tollgate_limits_degraded back to 0 with no traffic");
});

t.test("a store command that times out but still runs later leaves no phantom reservation or lease behind", async (t) => {
  await until(async () => (await readyz(h.adminUrl)).body.limits.healthy === true, 10_000, "Redis connected");
  t.equal(micros((await usageOf(h.adminUrl, { user: ALICE, model: "gpt-4o-mini" }, "budget-user")).reservedUsd), 0);
  // Redis holds every command for 700 ms: Tollgate gives up after commandTimeout (250 ms); Redis then runs them.
  await inspect.call("CLIENT", "PAUSE", "700", "ALL");
  const [budget, stream] = await Promise.all([send("gpt-4o-mini"), send("gpt-4.1")]);
  t.equal(budget.status, 503, "the budget reservation timed out: denied (onStoreFailure deny)");
  t.equal(stream.status, 200, "the lease timed out: taken from the local share (onStoreFailure local), and finished");
  await new Promise((r) => setTimeout(r, 1000));
  const reserved = micros((await usageOf(h.adminUrl, { user: ALICE, model: "gpt-4o-mini" }, "budget-user")).reservedUsd);
  t.equal(reserved, 0, `nothing stays reserved for a refused request (${reserved} micro-dollars held until leaseTtl)`);
  const leases = (await usageOf(h.adminUrl, { user: ALICE, model: "gpt-4.1" }, "one-stream")).used;
  t.equal(leases, 0, "no lease stays held for a request that has finished");
  const next = await send("gpt-4.1");
  t.equal(next.status, 200, `the caller's next request is admitted (got ${next.status} ${errorOf(next).code ?? ""})`);
});
