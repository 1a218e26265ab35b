/**
 * Admission takes every applicable limit in one step, all or nothing (one Lua script on Redis): a refused
 * request leaves the request and token windows, the concurrency leases and the budget as they were, whichever
 * limit refused it, on the shared Redis store, the in-memory one and a Redis Cluster (where the instances are
 * taken one by one and given back).
 */
import t from "tap";
import { startHarness, makeKey, SERVER_BLOCK } from "../helpers/harness.ts";
import { startLlmStandIn, type LlmStandIn } from "../helpers/llm-stand-in.ts";
import { chat, usage, errorOf, HI, HI_TOKENS, type UsageReportJson } from "./e2e-common.ts";
import { SHARED_REDIS_URL, testPrefix, deleteKeys, hasRedisServer, startCluster, yamlNodes, type TestCluster } from "../helpers/redis.ts";

const alice = makeKey();
const ALICE = "alice@example.com";

const policy = (llmUrl: string, store: string) => `${SERVER_BLOCK}
upstreams: { llm: { url: "${llmUrl}" } }
authenticators:
  - name: keys
    type: api_key
    keys:
      - { id: alice-key, hash: "${alice.hash}", user: ${ALICE}, team: ml, roles: [user] }
routes:
  - { name: chat, methods: [POST], paths: [/v1/chat/completions], upstream: llm, allow: [{ roles: [user] }] }
pricing:
  models:
    gpt-4o-mini: { input: 10, output: 10 }
    cheap-1: { input: 1, output: 1 }
limits:
${store}
  rules:
    - { name: rpm-user, by: [user], requests: { limit: 100, per: 1m } }
    - { name: streams-user, by: [user], concurrency: 3 }
    - { name: tpm-user, by: [user], tokens: { limit: 1000, per: 1m } }
    - { name: team-budget, by: [team], budget: { usd: 0.005 } }
`;

let llm: LlmStandIn;
// On a Cluster the instances live on different slots: each is taken by its own script and given back on refusal.
let cluster: TestCluster | undefined;
const withCluster = hasRedisServer() || Boolean(process.env.CI);
t.before(async () => {
  llm = await startLlmStandIn();
  if (withCluster) cluster = await startCluster();
});
t.teardown(async () => {
  await llm.close();
  await cluster?.close();
});

const redisPrefix = testPrefix("admission");
const stores: [name: string, store: () => string][] = [
  ["memory store", () => ""],
  ["redis store", () => `  store: { type: redis, url: "${SHARED_REDIS_URL}", keyPrefix: "${redisPrefix}" }`],
  ["redis cluster store", () => `  store: { type: redis, mode: cluster, nodes: ${yamlNodes(cluster!.nodes)}, keyPrefix: "tg:" }`],
];

for (const [name, storeOf] of stores) {
  t.test(name, { skip: name === "redis cluster store" && !withCluster ? "redis-server is not installed" : false }, async (t) => {
    const store = storeOf();
    const h = await startHarness(policy(llm.url, store));
    t.teardown(async () => {
      await h.stop();
      if (name === "redis store") await deleteKeys(SHARED_REDIS_URL, redisPrefix);
    });
    const standing = async () => {
      const reports = await usage(h.adminUrl, { user: ALICE, team: "ml", model: "gpt-4o-mini" });
      const by = (limit: string) => reports.find((r) => r.limit === limit) as UsageReportJson;
      return { requests: by("rpm-user").used, inFlight: by("streams-user").used, tokens: by("tpm-user").used, reservedUsd: by("team-budget").reservedUsd, spentUsd: by("team-budget").spentUsd };
    };

    // $10 per million tokens: 600 tokens cost $0.006, over the $0.005 budget, while the token window (1,000) admits them.
    const overBudget = await chat(h.url, alice.key, { model: "gpt-4o-mini", max_tokens: 600 - HI_TOKENS, messages: HI });
    t.equal(overBudget.status, 429);
    t.equal(errorOf(overBudget).code, "budget_exceeded");
    t.match(await standing(), { requests: 0, inFlight: 0, tokens: 0, reservedUsd: 0, spentUsd: 0 }, "the budget refused: no request, token, lease or budget was taken");

    // At $1 per million tokens, 1,100 tokens ($0.0011) fit the budget; the token window (1,000) refuses them.
    const overTokens = await chat(h.url, alice.key, { model: "cheap-1", max_tokens: 1100 - HI_TOKENS, messages: HI });
    t.equal(overTokens.status, 429);
    t.equal(errorOf(overTokens).code, "rate_limited");
    t.match(await standing(), { requests: 0, inFlight: 0, tokens: 0, reservedUsd: 0, spentUsd: 0 }, "the token window refused: nothing was taken");

    // 1,100 tokens at $10 per million: both the token window and the budget refuse; the reason is the same every time.
    for (let i = 0; i < 5; i++) {
      const both = await chat(h.url, alice.key, { model: "gpt-4o-mini", max_tokens: 1100 - HI_TOKENS, messages: HI });
      t.equal(errorOf(both).code, "rate_limited", "the first refusal in kind order (tokens before budgets) is the one reported");
    }
    t.match(await standing(), { requests: 0, inFlight: 0, tokens: 0, reservedUsd: 0, spentUsd: 0 });

    const fits = await chat(h.url, alice.key, { model: "gpt-4o-mini", max_tokens: 100 - HI_TOKENS, messages: HI }, { "x-stand-in-usage": `${HI_TOKENS},10` });
    t.equal(fits.status, 200, "a request every limit admits goes through");
    t.match(await standing(), { requests: 1, inFlight: 0, tokens: HI_TOKENS + 10, reservedUsd: 0 }, "and is settled to what it used");
    t.ok((await standing()).spentUsd! > 0, "and its cost is spent");
  });
}
