/**
 * Token accounting through a whole Tollgate: admission reserves prompt estimate + max_tokens (or
 * defaultMaxTokens); the end of the response reconciles tokens and spend with the provider's usage. Streams are
 * metered from the usage chunk Tollgate asks for and hidden again from a client who did not ask; an upstream
 * that sends no usage is estimated (and says so); a client that leaves mid-stream frees its lease and
 * reservation and pays for what it got.
 */
import t from "tap";
import { request } from "undici";
import { startHarness, makeKey, SERVER_BLOCK, until, type Harness, type TestKey } from "../helpers/harness.ts";
import { startLlmStandIn, sseData, type LlmStandIn } from "../helpers/llm-stand-in.ts";
import { chat, usageOf, metricsText, metric, awayFromWindowEdge, micros, wideAgent, HI, HI_TOKENS } from "./e2e-common.ts";

const users = ["alice", "bob", "carol", "dave"] as const;
const keys = Object.fromEntries(users.map((u) => [u, makeKey()])) as Record<(typeof users)[number], TestKey>;
const email = (u: string) => `${u}@example.com`;
const HOUR = 3_600_000;
const PRICE_MICROS = 10; // per token, input and output: the override below is $10 per 1M tokens

let llm: LlmStandIn;
let mute: LlmStandIn;
let h: Harness;
t.before(async () => {
  llm = await startLlmStandIn({ events: 5, intervalMs: 2 });
  mute = await startLlmStandIn({ events: 5, intervalMs: 2, streamUsage: "never" });
  h = await startHarness(`${SERVER_BLOCK}
upstreams:
  llm: { url: "${llm.url}" }
  mute: { url: "${mute.url}" }
authenticators:
  - name: keys
    type: api_key
    keys:
${users.map((u) => `      - { id: ${u}-key, hash: "${keys[u].hash}", user: ${email(u)}, roles: [user] }`).join("\n")}
routes:
  - { name: chat, methods: [POST], paths: [/v1/chat/completions], upstream: llm, allow: [{ roles: [user] }] }
  - { name: mute, methods: [POST], paths: [/mute/v1/chat/completions], upstream: mute, allow: [{ roles: [user] }] }
pricing:
  models: { gpt-4o-mini: { input: 10, output: 10 } }
limits:
  defaultMaxTokens: 300
  rules:
    - { name: tpm-user, by: [user], tokens: { limit: 100000, per: 1h } }
    - { name: budget-user, by: [user], budget: { usd: 10 } }
    - { name: streams-user, by: [user], concurrency: 10 }
`);
  await awayFromWindowEdge(HOUR, 20_000);
});
t.teardown(async () => {
  llm.release();
  await h.stop();
  await Promise.all([llm.close(), mute.close()]);
});

const standing = async (user: string) => {
  const q = { user: email(user) };
  const [tokens, budget, leases] = await Promise.all([usageOf(h.adminUrl, q, "tpm-user"), usageOf(h.adminUrl, q, "budget-user"), usageOf(h.adminUrl, q, "streams-user")]);
  return { tokens: tokens.used!, spent: micros(budget.spentUsd), reserved: micros(budget.reservedUsd), leases: leases.used! };
};
const lastAudit = (user: string) => h.audit().filter((a) => a.user === email(user)).at(-1)!;

function held(path: string, key: string, body: Record<string, unknown>, usageHeader?: string) {
  return request(`${h.url}${path}`, {
    method: "POST",
    headers: { authorization: `Bearer ${key}`, "content-type": "application/json", "x-stand-in-hold": "1", ...(usageHeader ? { "x-stand-in-usage": usageHeader } : {}) },
    body: JSON.stringify(body),
    dispatcher: wideAgent,
    headersTimeout: 5000,
    bodyTimeout: 10_000,
  });
}

t.test("admission reserves prompt + max_tokens (or defaultMaxTokens); the end reconciles to the provider's usage", async (t) => {
  for (const [extra, maxOut] of [[{ max_tokens: 200 }, 200], [{}, 300]] as const) {
    const before = await standing("alice");
    const res = await held("/v1/chat/completions", keys.alice.key, { model: "gpt-4o-mini", stream: true, messages: HI, ...extra }, "30,40");
    t.equal(res.statusCode, 200);
    const reservation = HI_TOKENS + maxOut;
    t.equal(res.headers["x-ratelimit-remaining-tokens"], String(100000 - before.tokens - reservation), `x-ratelimit-remaining-tokens counts the ${reservation}-token reservation`);
    const during = await standing("alice");
    t.same(during, { tokens: before.tokens + reservation, spent: before.spent, reserved: reservation * PRICE_MICROS, leases: 1 }, `in flight: ${reservation} tokens and their price reserved, one lease`);
    llm.release();
    await res.body.text();
    await until(async () => (await standing("alice")).reserved === 0, 3000, "settlement");
    const after = await standing("alice");
    t.same(after, { tokens: before.tokens + 70, spent: before.spent + 70 * PRICE_MICROS, reserved: 0, leases: 0 }, "settled: the provider's 30 + 40 tokens, not the reservation");
    t.match(lastAudit("alice"), { status: 200, outcome: "complete", usage: { input: 30, output: 40, source: "provider" }, costUsd: 0.0007 });
  }
});

t.test("a stream metered from the usage chunk Tollgate asked for, which the client who did not ask never sees", async (t) => {
  const metricsBefore = await metricsText(h.adminUrl);
  const hidden = await chat(h.url, keys.bob.key, { model: "gpt-4o-mini", stream: true, messages: HI }, { "x-stand-in-usage": "21,5" });
  t.equal(hidden.status, 200);
  const upstreamSaw = llm.requests.at(-1)!;
  t.same(upstreamSaw.body.stream_options, { include_usage: true }, "Tollgate asked the upstream for usage");
  const usageEvent = upstreamSaw.sent.find((e) => e.includes('"usage"'));
  t.ok(usageEvent, "the upstream sent a usage chunk");
  t.equal(hidden.text, upstreamSaw.sent.filter((e) => e !== usageEvent).join(""), "the client got every other byte, in order");
  t.same(sseData(hidden.text), sseData(upstreamSaw.sent.join("")).filter((d) => !d.includes('"usage"')), "same events minus the usage chunk");
  t.notOk(hidden.text.includes("usage"), "no usage chunk reached the client");
  t.match(lastAudit("bob"), { usage: { input: 21, output: 5, source: "provider" }, costUsd: 26 * PRICE_MICROS / 1e6 });

  const shown = await chat(h.url, keys.bob.key, { model: "gpt-4o-mini", stream: true, stream_options: { include_usage: true }, messages: HI }, { "x-stand-in-usage": "22,5" });
  const asked = llm.requests.at(-1)!;
  t.equal(shown.text, asked.sent.join(""), "a client that asked for usage gets the upstream's stream unchanged…");
  t.match(sseData(shown.text).find((d) => d.includes('"usage"')), /"prompt_tokens":22/, "…usage chunk included");
  t.match(lastAudit("bob"), { usage: { input: 22, output: 5, source: "provider" } });

  const text = await metricsText(h.adminUrl);
  const delta = (series: string) => metric(text, series) - metric(metricsBefore, series);
  t.equal(delta('tollgate_tokens_total{model="gpt-4o-mini",type="input",source="provider"}'), 43);
  t.equal(delta('tollgate_tokens_total{model="gpt-4o-mini",type="output",source="provider"}'), 10);
  t.equal(delta('tollgate_tokens_total{model="gpt-4o-mini",type="output",source="estimated"}'), 0);
  t.same(await standing("bob"), { tokens: 53, spent: 53 * PRICE_MICROS, reserved: 0, leases: 0 });
});

t.test("an upstream stream without usage is estimated, and marked so in the audit line and the metric", async (t) => {
  const metricsBefore = await metricsText(h.adminUrl);
  const res = await chat(h.url, keys.carol.key, { model: "gpt-4o-mini", stream: true, messages: HI }, {}, "/mute/v1/chat/completions");
  t.equal(res.status, 200);
  const upstreamSaw = mute.requests.at(-1)!;
  t.same(upstreamSaw.body.stream_options, { include_usage: true }, "Tollgate asked…");
  t.notOk(upstreamSaw.sent.some((e) => e.includes('"usage"')), "…the upstream ignored it");
  t.equal(res.text, upstreamSaw.sent.join(""), "the client's stream is the upstream's, nothing removed");
  const output = Math.ceil("tok0 tok1 tok2 tok3 tok4 ".length / 4); // 25 generated characters at 4 a token
  t.match(lastAudit("carol"), { status: 200, usage: { input: HI_TOKENS, output, source: "estimated" }, costUsd: ((HI_TOKENS + output) * PRICE_MICROS) / 1e6 });
  const text = await metricsText(h.adminUrl);
  const delta = (series: string) => metric(text, series) - metric(metricsBefore, series);
  t.equal(delta('tollgate_tokens_total{model="gpt-4o-mini",type="input",source="estimated"}'), HI_TOKENS);
  t.equal(delta('tollgate_tokens_total{model="gpt-4o-mini",type="output",source="estimated"}'), output);
  t.same(await standing("carol"), { tokens: HI_TOKENS + output, spent: (HI_TOKENS + output) * PRICE_MICROS, reserved: 0, leases: 0 });
});

t.test("a client that disconnects mid-stream: upstream aborted, lease and reservation freed, what it got is charged", async (t) => {
  const aborted = llm.abortedStreams();
  const metricsBefore = await metricsText(h.adminUrl);
  const res = await held("/v1/chat/completions", keys.dave.key, { model: "gpt-4o-mini", stream: true, max_tokens: 200, messages: HI });
  t.equal(res.statusCode, 200);
  let first = "";
  for await (const chunk of res.body) {
    first = String(chunk);
    break; // leave after the first event
  }
  t.match(first, /tok0/, "the client read the first event before leaving");
  await until(() => llm.abortedStreams() === aborted + 1, 3000, "the upstream request aborted");
  await until(async () => {
    const s = await standing("dave");
    return s.reserved === 0 && s.leases === 0;
  }, 3000, "lease and reservation freed");
  const output = Math.ceil("tok0 ".length / 4);
  t.same(await standing("dave"), { tokens: HI_TOKENS + output, spent: (HI_TOKENS + output) * PRICE_MICROS, reserved: 0, leases: 0 }, "charged the prompt and the one event it got, not the 200-token reservation");
  await until(() => lastAudit("dave")?.outcome === "client_aborted", 2000, "audit line");
  t.match(lastAudit("dave"), { outcome: "client_aborted", reason: "client_aborted", usage: { input: HI_TOKENS, output, source: "estimated" }, costUsd: ((HI_TOKENS + output) * PRICE_MICROS) / 1e6 });
  const text = await metricsText(h.adminUrl);
  t.equal(metric(text, 'tollgate_tokens_total{model="gpt-4o-mini",type="output",source="estimated"}') - metric(metricsBefore, 'tollgate_tokens_total{model="gpt-4o-mini",type="output",source="estimated"}'), output);
  t.equal(metric(text, 'tollgate_upstream_errors_total{upstream="llm",outcome="client_aborted"}'), 1);
});

t.test("an upstream error is charged nothing and gives the reservation back", async (t) => {
  const before = await standing("alice");
  const res = await chat(h.url, keys.alice.key, { model: "gpt-4o-mini", max_tokens: 100, messages: HI }, { "x-stand-in-status": "500" });
  t.equal(res.status, 500, "the upstream's error passes through");
  t.same(await standing("alice"), { ...before, reserved: 0, leases: 0 }, "no tokens, no spend, nothing left reserved");
  t.match(lastAudit("alice"), { status: 500, usage: { input: 0, output: 0 }, costUsd: 0 });
});
