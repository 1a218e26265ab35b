/**
 * Rate limits through a whole Tollgate: requests and tokens per minute keyed by user and by user+model, the
 * OpenAI-style x-ratelimit-* headers, 429 with Retry-After and the OpenAI error shape, and the concurrency limit
 * on open streams — once with the in-memory store and once with the machine's Redis under a prefix of our own.
 */
import t, { type Test } from "tap";
import { request } from "undici";
import { createServer } from "node:http";
import { once } from "node:events";
import { WebSocketServer, WebSocket } from "ws";
import { startHarness, makeKey, SERVER_BLOCK, until } from "../helpers/harness.ts";
import { startLlmStandIn } from "../helpers/llm-stand-in.ts";
import { SHARED_REDIS_URL, deleteKeys, testPrefix } from "../helpers/redis.ts";
import { chat, usageOf, metricsText, metric, awayFromWindowEdge, secondsUntilFits, parseReset, redisStore, errorOf, readyz, wideAgent, HI, HI_TOKENS, type Reply } from "./e2e-common.ts";

const alice = makeKey();
const bob = makeKey();
const ALICE = "alice@example.com";
const BOB = "bob@example.com";
const MINUTE = 60_000;

const TOKEN_RULE = "    - { name: tpm-user-model, by: [user, model], models: [gpt-4o, gpt-4.1-mini], tokens: { limit: 1000, per: 1m } }\n";

const policy = (llmUrl: string, store: string, limitsExtra = "", tokenRule = TOKEN_RULE) => `${SERVER_BLOCK}
upstreams: { llm: { url: "${llmUrl}" } }
authenticators:
  - name: keys
    type: api_key
    keys:
      - { id: alice-key, hash: "${alice.hash}", user: ${ALICE}, team: ml, roles: [user] }
      - { id: bob-key, hash: "${bob.hash}", user: ${BOB}, team: ml, roles: [user] }
routes:
  - { name: chat, methods: [POST], paths: [/v1/chat/completions], upstream: llm, allow: [{ roles: [user] }] }
limits:
  store: ${store}
  defaultMaxTokens: 300
${limitsExtra}  rules:
    - { name: rpm-user, by: [user], models: [gpt-4o-mini], requests: { limit: 5, per: 1m } }
${tokenRule}    - { name: streams-user, by: [user], models: [gpt-4.1], concurrency: 2 }
    - { name: one-stream, by: [user], models: [gpt-4.1-nano], concurrency: 1 }
`;

function assertRateLimited(t: Test, reply: Reply, code: string): void {
  t.equal(reply.status, 429, `429 ${code}`);
  t.match(reply.headers["content-type"], /^application\/json/);
  t.match(errorOf(reply), { type: "rate_limit_error", code, param: null, message: String });
  t.match(reply.headers["retry-after"], /^[1-9]\d*$/, "Retry-After in whole seconds");
}

/** Opens a stream the stand-in holds after its first event; resolves once the response headers are in. */
async function openHeld(baseUrl: string, key: string, model: string) {
  return request(`${baseUrl}/v1/chat/completions`, {
    method: "POST",
    headers: { authorization: `Bearer ${key}`, "content-type": "application/json", "x-stand-in-hold": "1" },
    body: JSON.stringify({ model, stream: true, messages: HI }),
    dispatcher: wideAgent,
    headersTimeout: 5000,
    bodyTimeout: 10_000,
  });
}

async function rateSuite(t: Test, store: string): Promise<void> {
  const llm = await startLlmStandIn({ events: 3, intervalMs: 2 });
  const h = await startHarness(policy(llm.url, store));
  t.teardown(async () => {
    llm.release();
    await h.stop();
    await llm.close();
  });
  // Redis connects in the background; these tests are about shared counting, not the first milliseconds.
  await until(async () => (await readyz(h.adminUrl)).body.limits.healthy === true, 5000, "limits store connected");

  t.test("requests per minute per user: headers count down, the 6th is refused with Retry-After", async (t) => {
    await awayFromWindowEdge(MINUTE);
    const remaining: string[] = [];
    for (let i = 0; i < 5; i++) {
      const r = await chat(h.url, alice.key, { model: "gpt-4o-mini", messages: HI });
      t.equal(r.status, 200);
      t.equal(r.headers["x-ratelimit-limit-requests"], "5");
      remaining.push(String(r.headers["x-ratelimit-remaining-requests"]));
      const reset = parseReset(String(r.headers["x-ratelimit-reset-requests"]));
      t.ok(reset > 0 && reset <= 2 * MINUTE, `reset-requests ${r.headers["x-ratelimit-reset-requests"]} within two windows`);
      t.notOk(r.headers["x-ratelimit-limit-tokens"], "no token headers where no token limit applies");
    }
    t.same(remaining, ["4", "3", "2", "1", "0"]);
    const forwarded = llm.count();
    const refused = await chat(h.url, alice.key, { model: "gpt-4o-mini", messages: HI });
    assertRateLimited(t, refused, "rate_limited");
    const expected = secondsUntilFits(MINUTE, 5, 1, 5);
    t.ok(Math.abs(Number(refused.headers["retry-after"]) - expected) <= 1.5, `Retry-After ${refused.headers["retry-after"]}s ≈ ${expected.toFixed(1)}s, when the window has room again`);
    t.equal(llm.count(), forwarded, "a refused request never reaches the upstream");
    const other = await chat(h.url, bob.key, { model: "gpt-4o-mini", messages: HI });
    t.equal(other.status, 200, "another user has a window of their own");
    t.equal(other.headers["x-ratelimit-remaining-requests"], "4");
    t.match(await usageOf(h.adminUrl, { user: ALICE, model: "gpt-4o-mini" }, "rpm-user"), { kind: "requests", max: 5, used: 5, remaining: 0 });
  });

  t.test("tokens per minute per user and model: reserve prompt + max_tokens, then count the provider's usage", async (t) => {
    await awayFromWindowEdge(MINUTE);
    const q = { user: ALICE, model: "gpt-4o" };
    const first = await chat(h.url, alice.key, { model: "gpt-4o", max_tokens: 400, messages: HI });
    t.equal(first.status, 200);
    t.equal(first.headers["x-ratelimit-limit-tokens"], "1000");
    t.equal(first.headers["x-ratelimit-remaining-tokens"], String(1000 - (HI_TOKENS + 400)), "admission reserved the prompt estimate + max_tokens");
    t.ok(parseReset(String(first.headers["x-ratelimit-reset-tokens"])) > 0);
    t.notOk(first.headers["x-ratelimit-limit-requests"], "no request headers where no request limit applies");
    t.match(await usageOf(h.adminUrl, q, "tpm-user-model"), { kind: "tokens", max: 1000, used: 19 }, "settled to the provider's 12 + 7 tokens, not the reservation");

    const second = await chat(h.url, alice.key, { model: "gpt-4o", messages: HI });
    t.equal(second.headers["x-ratelimit-remaining-tokens"], String(1000 - 19 - (HI_TOKENS + 300)), "no max_tokens: defaultMaxTokens (300) is reserved");
    t.match(await usageOf(h.adminUrl, q, "tpm-user-model"), { used: 38 });

    const tooMuch = await chat(h.url, alice.key, { model: "gpt-4o", max_tokens: 960, messages: HI });
    assertRateLimited(t, tooMuch, "rate_limited");
    const expected = secondsUntilFits(MINUTE, 1000, HI_TOKENS + 960, 38);
    t.ok(Math.abs(Number(tooMuch.headers["retry-after"]) - expected) <= 1.5, `Retry-After ${tooMuch.headers["retry-after"]}s ≈ ${expected.toFixed(1)}s`);

    const otherModel = await chat(h.url, alice.key, { model: "gpt-4.1-mini", max_tokens: 400, messages: HI });
    t.equal(otherModel.headers["x-ratelimit-remaining-tokens"], String(1000 - (HI_TOKENS + 400)), "user+model: another model has its own window");
    const otherUser = await chat(h.url, bob.key, { model: "gpt-4o", max_tokens: 400, messages: HI });
    t.equal(otherUser.headers["x-ratelimit-remaining-tokens"], String(1000 - (HI_TOKENS + 400)), "user+model: another user has their own window");

    const never = await chat(h.url, alice.key, { model: "gpt-4o", max_tokens: 2000, messages: HI });
    assertRateLimited(t, never, "rate_limited");
    t.equal(never.headers["retry-after"], "60", "a request that can never fit is told to wait a whole window…");
    t.match(errorOf(never).message, /lower max_tokens/, "…and why");
    t.match(await usageOf(h.adminUrl, q, "tpm-user-model"), { used: 38 }, "refusals took nothing");
  });

  t.test("concurrency: open streams hold a lease; the third is refused; ending streams frees them", async (t) => {
    const a1 = await openHeld(h.url, alice.key, "gpt-4.1");
    const a2 = await openHeld(h.url, alice.key, "gpt-4.1");
    t.same([a1.statusCode, a2.statusCode], [200, 200]);
    t.match(await usageOf(h.adminUrl, { user: ALICE, model: "gpt-4.1" }, "streams-user"), { kind: "concurrency", max: 2, used: 2 });
    const third = await chat(h.url, alice.key, { model: "gpt-4.1", stream: true, messages: HI });
    assertRateLimited(t, third, "concurrency_limited");
    t.equal(third.headers["retry-after"], "1");
    const b1 = await openHeld(h.url, bob.key, "gpt-4.1");
    t.equal(b1.statusCode, 200, "another user's streams are counted apart");
    llm.release();
    for (const res of [a1, a2, b1]) t.match(await res.body.text(), /\[DONE\]/, "the held stream completes");
    await until(async () => (await usageOf(h.adminUrl, { user: ALICE, model: "gpt-4.1" }, "streams-user")).used === 0, 3000, "leases freed");
    const again = await chat(h.url, alice.key, { model: "gpt-4.1", stream: true, messages: HI });
    t.equal(again.status, 200, "freed leases admit new streams");
  });

  t.test("a finished stream's lease is free for the caller's next request (20 back-to-back streams, limit 1)", async (t) => {
    const statuses: number[] = [];
    for (let i = 0; i < 20; i++) statuses.push((await chat(h.url, alice.key, { model: "gpt-4.1-nano", stream: true, messages: HI })).status);
    t.same(statuses, Array(20).fill(200));
  });

  t.test("rejections are counted by limit and kind, never by user", async (t) => {
    const text = await metricsText(h.adminUrl);
    t.equal(metric(text, 'tollgate_limit_rejections_total{limit="rpm-user",kind="rate_limited"}'), 1);
    t.equal(metric(text, 'tollgate_limit_rejections_total{limit="tpm-user-model",kind="rate_limited"}'), 2);
    t.equal(metric(text, 'tollgate_limit_rejections_total{limit="streams-user",kind="concurrency_limited"}'), 1);
    for (const id of ["alice", "bob", "example.com", "-key"]) t.notOk(text.includes(id), `no "${id}" in the metrics`);
  });
}

t.test("memory store", (t) => rateSuite(t, "{ type: memory }"));

t.test("redis store (the shared server, a prefix of our own)", async (t) => {
  const prefix = testPrefix("e2e-rate");
  t.teardown(() => deleteKeys(SHARED_REDIS_URL, prefix));
  await rateSuite(t, redisStore(prefix));
});

t.test("meter: limited (no token or budget rule) still enforces request and concurrency limits", async (t) => {
  const llm = await startLlmStandIn();
  const h = await startHarness(policy(llm.url, "{ type: memory }", "  meter: limited\n", ""));
  t.teardown(async () => {
    llm.release();
    await h.stop();
    await llm.close();
  });
  await awayFromWindowEdge(MINUTE);
  const statuses: number[] = [];
  for (let i = 0; i < 6; i++) statuses.push((await chat(h.url, alice.key, { model: "gpt-4o-mini", messages: HI })).status);
  t.same(statuses, [200, 200, 200, 200, 200, 429], "rpm-user (5/min) applies with meter: limited");
  const a1 = await openHeld(h.url, alice.key, "gpt-4.1");
  const a2 = await openHeld(h.url, alice.key, "gpt-4.1");
  const third = await chat(h.url, alice.key, { model: "gpt-4.1", stream: true, messages: HI });
  t.equal(third.status, 429, "streams-user (2 in flight) applies with meter: limited");
  llm.release();
  await Promise.all([a1.body.dump(), a2.body.dump()]);
});

t.test("WebSocket upgrades (Realtime) count against the caller's request limit too", async (t) => {
  const upstream = createServer();
  const wss = new WebSocketServer({ server: upstream });
  upstream.listen(0, "127.0.0.1");
  await once(upstream, "listening");
  const h = await startHarness(`${SERVER_BLOCK}
upstreams: { realtime: { url: "http://127.0.0.1:${(upstream.address() as { port: number }).port}" } }
authenticators: [{ name: keys, type: api_key, keys: [{ id: alice-key, hash: "${alice.hash}", user: ${ALICE}, roles: [user] }] }]
routes: [{ name: realtime, methods: [GET], paths: [/v1/realtime], upstream: realtime, allow: [{ roles: [user] }] }]
limits:
  rules: [{ name: rpm-realtime, by: [user], requests: { limit: 2, per: 1m } }]
`);
  t.teardown(async () => {
    await h.stop();
    wss.close();
    upstream.close();
  });
  await awayFromWindowEdge(MINUTE);
  const outcomes: (number | "open")[] = [];
  for (let i = 0; i < 3; i++) {
    const ws = new WebSocket(`${h.url.replace("http", "ws")}/v1/realtime?model=gpt-4o-realtime-preview`, { headers: { authorization: `Bearer ${alice.key}` } });
    outcomes.push(
      await Promise.race([
        once(ws, "open").then(() => "open" as const),
        once(ws, "unexpected-response").then(([, res]) => (res as { statusCode: number }).statusCode),
        new Promise<number>((r) => setTimeout(() => r(0), 3000)),
      ]),
    );
    ws.terminate();
  }
  t.same(outcomes, ["open", "open", 429], "two sessions a minute, the third refused with 429");
});
