/**
 * An upstream that reports fractional token counts (or absurdly large ones) on a Redis store: Redis counts in 64-bit
 * integers, so Tollgate sends whole, bounded numbers. Before, such a settlement failed on Redis — the window and the
 * budget were left unreconciled and the lease held until it expired — and, once settlements of concurrent requests
 * shared one script call, it failed theirs too.
 */
import t from "tap";
import { startHarness, makeKey, SERVER_BLOCK, until } from "../helpers/harness.ts";
import { startLlmStandIn } from "../helpers/llm-stand-in.ts";
import { SHARED_REDIS_URL, deleteKeys, testPrefix } from "../helpers/redis.ts";
import { chat, usageOf, metricsText, micros, redisStore, awayFromWindowEdge } from "./e2e-common.ts";

t.test("fractional and huge upstream usage settles on Redis, and does not disturb the requests settled beside it", async (t) => {
  const prefix = testPrefix("e2e-fractional");
  t.teardown(() => deleteKeys(SHARED_REDIS_URL, prefix));
  const llm = await startLlmStandIn({ events: 3, intervalMs: 2 });
  t.teardown(() => llm.close());
  const keys = { odd: makeKey(), even: makeKey() };
  const h = await startHarness(`${SERVER_BLOCK}
upstreams:
  llm: { url: "${llm.url}" }
authenticators:
  - name: keys
    type: api_key
    keys:
      - { id: odd-key, hash: "${keys.odd.hash}", user: odd@example.com, roles: [user] }
      - { id: even-key, hash: "${keys.even.hash}", user: even@example.com, roles: [user] }
routes:
  - { name: chat, methods: [POST], paths: [/v1/chat/completions], upstream: llm, allow: [{ roles: [user] }] }
pricing:
  models: { gpt-4o-mini: { input: 10, output: 10 } }
limits:
  store: ${redisStore(prefix)}
  defaultMaxTokens: 300
  rules:
    - { name: tpm, by: [user], tokens: { limit: 1000000000000000, per: 1h } }
    - { name: budget, by: [user], budget: { usd: 1000000000 } }
    - { name: streams, by: [user], concurrency: 10 }
`);
  t.teardown(() => h.stop());
  await awayFromWindowEdge(3_600_000, 20_000);
  const body = { model: "gpt-4o-mini", messages: [{ role: "user", content: "hi" }], max_tokens: 20 };

  // Settled in the same turn: a fractional count beside an ordinary one.
  const [odd, even] = await Promise.all([
    chat(h.url, keys.odd.key, body, { "x-stand-in-usage": "10.4,7.5" }),
    chat(h.url, keys.even.key, body, { "x-stand-in-usage": "10,7" }),
  ]);
  t.equal(odd.status, 200);
  t.equal(even.status, 200);
  const standing = async (user: string) => {
    const q = { user };
    const [tokens, budget, streams] = await Promise.all([usageOf(h.adminUrl, q, "tpm"), usageOf(h.adminUrl, q, "budget"), usageOf(h.adminUrl, q, "streams")]);
    return { tokens: tokens.used, spent: micros(budget.spentUsd), reserved: micros(budget.reservedUsd), leases: streams.used };
  };
  await until(async () => (await standing("even@example.com")).leases === 0 && (await standing("odd@example.com")).leases === 0);
  t.same(await standing("even@example.com"), { tokens: 17, spent: 170, reserved: 0, leases: 0 }, "the ordinary request settled exactly");
  t.same(await standing("odd@example.com"), { tokens: 18, spent: 170, reserved: 0, leases: 0 }, "the fractional one settled too: 17.9 tokens counted as 18, priced on whole tokens");

  // Beyond what Redis (or a double) can count exactly: bounded, still settled.
  const huge = await chat(h.url, keys.odd.key, body, { "x-stand-in-usage": "1e30,1" });
  t.equal(huge.status, 200);
  await until(async () => (await standing("odd@example.com")).leases === 0);
  t.equal((await standing("odd@example.com")).reserved, 0, "its reservation was settled, not left to expire");
  const failures = (await metricsText(h.adminUrl))
    .split("\n")
    .filter((l) => l.startsWith("tollgate_limits_settle_failures_total"))
    .reduce((sum, l) => sum + Number(l.split(" ").at(-1)), 0);
  t.equal(failures, 0, "no settlement failed (of any kind)");
});
