/**
 * Budgets through a whole Tollgate: calendar periods in a time zone (period id and resetsAt on /usage), soft
 * thresholds logged and counted, budget_exceeded with Retry-After until the period ends, clampMaxTokens (what
 * the upstream received), unpriced models denied or priced at zero, the admin /usage report, and no identity in
 * any metric label.
 */
import t from "tap";
import { startHarness, makeKey, SERVER_BLOCK, type Harness } from "../helpers/harness.ts";
import { startLlmStandIn, type LlmStandIn } from "../helpers/llm-stand-in.ts";
import { chat, usage, usageOf, metricsText, metric, micros, errorOf, HI, HI_TOKENS } from "./e2e-common.ts";
import { request } from "undici";

const alice = makeKey();
const bob = makeKey();
const carol = makeKey();
const ALICE = "alice@example.com";

const policy = (llmUrl: string, unknownModel: "deny" | "zero") => `${SERVER_BLOCK}
upstreams: { llm: { url: "${llmUrl}" } }
authenticators:
  - name: keys
    type: api_key
    keys:
      - { id: alice-key, hash: "${alice.hash}", user: ${ALICE}, team: ml, roles: [user] }
      - { id: bob-key, hash: "${bob.hash}", user: bob@example.com, team: ml, roles: [user] }
      - { id: carol-key, hash: "${carol.hash}", user: carol@example.com, team: ops, roles: [user] }
routes:
  - { name: chat, methods: [POST], paths: [/v1/chat/completions], upstream: llm, allow: [{ roles: [user] }] }
pricing:
  unknownModel: ${unknownModel}
  models:
    gpt-4o-mini: { input: 10, output: 10 }
    gpt-4o: { input: 10, output: 20 }
limits:
  clampMaxTokens: true
  rules:
    - { name: rpm-user, by: [user], requests: { limit: 100, per: 1m } }
    - { name: streams-user, by: [user], concurrency: 5 }
    - { name: team-monthly, by: [team], models: [gpt-4o-mini], budget: { usd: 0.01, period: monthly, timeZone: Asia/Kolkata, softThresholds: [0.5, 0.8] } }
    - { name: user-daily, by: [user], models: [gpt-4o], budget: { usd: 0.01, period: daily, timeZone: Pacific/Kiritimati } }
    - { name: acme-budget, by: [user], models: ["acme-*"], budget: { usd: 1 } }
`;

/** The period in a zone without daylight saving (fixed UTC offset), computed apart from Tollgate's own code. */
function fixedZonePeriod(kind: "monthly" | "daily", offsetMs: number, now = Date.now()): { id: string; end: number } {
  const local = new Date(now + offsetMs);
  const [y, m, d] = [local.getUTCFullYear(), local.getUTCMonth(), local.getUTCDate()];
  const pad = (n: number) => String(n).padStart(2, "0");
  if (kind === "monthly") return { id: `${y}-${pad(m + 1)}`, end: Date.UTC(y, m + 1, 1) - offsetMs };
  return { id: `${y}-${pad(m + 1)}-${pad(d)}`, end: Date.UTC(y, m, d + 1) - offsetMs };
}
const KOLKATA = 5.5 * 3_600_000; // UTC+05:30 all year
const KIRITIMATI = 14 * 3_600_000; // UTC+14:00 all year

let llm: LlmStandIn;
let h: Harness;
t.before(async () => {
  llm = await startLlmStandIn();
  h = await startHarness(policy(llm.url, "deny"));
});
t.teardown(async () => {
  await h.stop();
  await llm.close();
});

t.test("a monthly team budget in Asia/Kolkata: soft thresholds logged and counted, then budget_exceeded until the month ends", async (t) => {
  const body = { model: "gpt-4o-mini", max_tokens: 200 - HI_TOKENS, messages: HI }; // reserves 200 tokens = $0.002
  const crossings = async () => {
    const text = await metricsText(h.adminUrl);
    return [0.5, 0.8].map((x) => metric(text, `tollgate_budget_threshold_crossings_total{limit="team-monthly",threshold="${x}"}`));
  };
  const seen: number[][] = [];
  for (const key of [alice, bob, alice, bob, alice]) {
    const r = await chat(h.url, key.key, body, { "x-stand-in-usage": `${HI_TOKENS},${200 - HI_TOKENS}` }); // spends $0.002
    t.equal(r.status, 200);
    seen.push(await crossings());
  }
  t.same(seen, [[0, 0], [0, 0], [1, 0], [1, 1], [1, 1]], "50% crossed by the 3rd request ($0.006), 80% by the 4th ($0.008), each once");
  const logged = h.logs.filter((l) => l.msg === "budget threshold crossed");
  t.match(logged, [
    { level: "warn", limit: "team-monthly", threshold: 0.5, spentUsd: 0.006, budgetUsd: 0.01 },
    { level: "warn", limit: "team-monthly", threshold: 0.8, spentUsd: 0.008, budgetUsd: 0.01 },
  ]);
  t.equal(logged.length, 2);

  const forwarded = llm.count();
  const refused = await chat(h.url, bob.key, body);
  const period = fixedZonePeriod("monthly", KOLKATA);
  t.equal(refused.status, 429);
  t.match(errorOf(refused), { type: "insufficient_quota", code: "budget_exceeded", param: null });
  const retry = Number(refused.headers["retry-after"]);
  t.ok(Math.abs(retry - (period.end - Date.now()) / 1000) <= 2, `Retry-After ${retry}s runs to the end of the month in Kolkata (${new Date(period.end).toISOString()})`);
  t.equal(llm.count(), forwarded, "not forwarded");
  t.equal((await chat(h.url, carol.key, body, { "x-stand-in-usage": "5,5" })).status, 200, "another team's budget is its own");

  t.match(await usageOf(h.adminUrl, { team: "ml", model: "gpt-4o-mini" }, "team-monthly"), {
    kind: "budget",
    scope: ["team=ml"],
    period: period.id,
    resetsAt: new Date(period.end).toISOString(),
    budgetUsd: 0.01,
    spentUsd: 0.01,
    reservedUsd: 0,
    remainingUsd: 0,
  });
  const text = await metricsText(h.adminUrl);
  t.equal(metric(text, 'tollgate_limit_rejections_total{limit="team-monthly",kind="budget_exceeded"}'), 1);
});

t.test("a daily user budget in Pacific/Kiritimati; clampMaxTokens lowers the output limit to what is left", async (t) => {
  const clamped = await chat(h.url, alice.key, { model: "gpt-4o", max_completion_tokens: 5000, messages: HI }, { "x-stand-in-usage": `${HI_TOKENS},495` });
  t.equal(clamped.status, 200);
  const affordable = Math.floor((10_000 - HI_TOKENS * 10) / 20); // $0.01 less the prompt, at $20 per 1M output tokens
  const sent = llm.requests.at(-1)!.body;
  t.equal(sent.max_completion_tokens, affordable, `the upstream received max_completion_tokens ${affordable}, not 5000`);
  t.notOk("max_tokens" in sent, "the field the client used is the one lowered");

  const unset = await chat(h.url, bob.key, { model: "gpt-4o", messages: HI }, { "x-stand-in-usage": "5,100" });
  t.equal(unset.status, 200);
  t.equal(llm.requests.at(-1)!.body.max_tokens, affordable, "no max_tokens: defaultMaxTokens (1024) is more than the budget pays for, so max_tokens is set");

  const roomy = await chat(h.url, carol.key, { model: "gpt-4o", max_tokens: 50, messages: HI }, { "x-stand-in-usage": "5,50" });
  t.equal(roomy.status, 200);
  t.equal(llm.requests.at(-1)!.body.max_tokens, 50, "a request the budget can pay for is left alone");

  const period = fixedZonePeriod("daily", KIRITIMATI);
  const spent = HI_TOKENS * 10 + 495 * 20;
  t.match(await usageOf(h.adminUrl, { user: ALICE, model: "gpt-4o" }, "user-daily"), {
    scope: [`user=${ALICE}`],
    period: period.id,
    resetsAt: new Date(period.end).toISOString(),
    spentUsd: spent / 1e6,
    reservedUsd: 0,
    remainingUsd: (10_000 - spent) / 1e6,
  });
  const full = await chat(h.url, bob.key, { model: "gpt-4o", max_tokens: 600, messages: HI }, { "x-stand-in-usage": "5,395" });
  t.equal(full.status, 200, "bob's own day still has room for a clamped request");
  t.equal(llm.requests.at(-1)!.body.max_tokens, Math.floor((10_000 - 2050 - HI_TOKENS * 10) / 20), "clamped to what is left of his day");
  const over = await chat(h.url, bob.key, { model: "gpt-4o", max_tokens: 10, messages: HI });
  t.equal(over.status, 429);
  t.equal(errorOf(over).code, "budget_exceeded");
  const retry = Number(over.headers["retry-after"]);
  t.ok(Math.abs(retry - (period.end - Date.now()) / 1000) <= 2, `Retry-After ${retry}s runs to midnight in Kiritimati`);
});

t.test("a budget that cannot pay for one output token refuses, rather than forwarding max_tokens: 0", async (t) => {
  // Alice's day has $0.00005 left after the test above: exactly her prompt's price, nothing for output.
  const before = llm.count();
  const r = await chat(h.url, alice.key, { model: "gpt-4o", max_tokens: 100, messages: HI }, { "x-stand-in-usage": "5,0" });
  const forwarded = llm.count() > before ? llm.requests.at(-1)!.body : undefined;
  t.equal(r.status, 429, "budget_exceeded");
  t.equal(errorOf(r).code, "budget_exceeded");
  t.equal(forwarded?.max_tokens, undefined, `nothing forwarded (got max_tokens ${String(forwarded?.max_tokens)})`);
});

t.test("an unknown model under a budget: denied with unpriced_model when the policy says deny", async (t) => {
  const before = llm.count();
  const r = await chat(h.url, alice.key, { model: "acme-llm-1", messages: HI });
  t.equal(r.status, 403);
  t.match(errorOf(r), { type: "permission_error", code: "unpriced_model" });
  t.equal(llm.count(), before, "not forwarded");
  t.equal(metric(await metricsText(h.adminUrl), "tollgate_unpriced_requests_total"), 1);
});

t.test("an unknown model under a budget: allowed at zero cost and counted when the policy says zero", async (t) => {
  const zero = await startHarness(policy(llm.url, "zero"));
  t.teardown(() => zero.stop());
  for (let i = 0; i < 2; i++) t.equal((await chat(zero.url, alice.key, { model: "acme-llm-1", messages: HI })).status, 200);
  const text = await metricsText(zero.adminUrl);
  t.equal(metric(text, "tollgate_unpriced_requests_total"), 2);
  t.equal(metric(text, 'tollgate_tokens_total{model="other",type="input",source="provider"}'), 24, "its tokens are still metered, as model `other`");
  t.match(await usageOf(zero.adminUrl, { user: ALICE, model: "acme-llm-1" }, "acme-budget"), { spentUsd: 0, reservedUsd: 0, remainingUsd: 1 });
  t.same(zero.audit().map((a) => a.costUsd), [undefined, undefined], "no cost recorded for an unpriced model");
});

t.test("/usage on the admin port: one principal's usage, limits and remaining budget", async (t) => {
  const reports = await usage(h.adminUrl, { user: "carol@example.com", team: "ops", model: "gpt-4o-mini" });
  t.match(reports, [
    { limit: "rpm-user", kind: "requests", scope: ["user=carol@example.com"], max: 100, used: Number, remaining: Number, window: "1m0s" },
    { limit: "streams-user", kind: "concurrency", scope: ["user=carol@example.com"], max: 5, used: 0 },
    { limit: "team-monthly", kind: "budget", scope: ["team=ops"], budgetUsd: 0.01, spentUsd: 0.0001, reservedUsd: 0, remainingUsd: 0.0099 },
  ]);
  t.equal(reports.length, 3, "only the limits that apply to this caller and model");
  const rpm = reports[0]!;
  t.ok(rpm.used! >= 1 && rpm.used! + rpm.remaining! === 100, "requests used and remaining add up");
  const none = await request(`${h.adminUrl}/usage?model=gpt-4o`);
  t.equal(none.statusCode, 400, "a caller must be named");
  await none.body.dump();
  const onData = await request(`${h.url}/usage?user=${ALICE}`);
  t.equal(onData.statusCode, 404, "not on the data port");
  await onData.body.dump();
});

t.test("no user id, email, key id or team in any metric label", async (t) => {
  const text = await metricsText(h.adminUrl);
  t.match(text, /tollgate_spend_usd_total\{model="gpt-4o-mini"\}/);
  for (const id of ["alice", "bob", "carol", "example.com", "-key", '="ml"', '="ops"']) t.notOk(text.includes(id), `no ${id} in the metrics`);
});

t.test("micro-dollar arithmetic: /usage spend equals the audit lines' costs", async (t) => {
  const audit = h.audit().filter((a) => a.model === "gpt-4o-mini" && typeof a.costUsd === "number");
  const ml = audit.filter((a) => a.team === "ml").reduce((sum, a) => sum + micros(a.costUsd as number), 0);
  t.equal(ml, micros((await usageOf(h.adminUrl, { team: "ml", model: "gpt-4o-mini" }, "team-monthly")).spentUsd));
});
