/**
 * Two `tollgate serve` processes on one policy file and one Redis prefix enforce ONE limit between them: 10
 * requests a minute per user means 10 in total across both replicas, whichever gets the 11th refuses it; the
 * concurrency limit counts streams open on either.
 */
import t from "tap";
import { writeFileSync } from "node:fs";
import { join } from "node:path";
import { request } from "undici";
import { makeKey, tempDir, SERVER_BLOCK, until } from "../helpers/harness.ts";
import { startServe, type RunningTollgate } from "../helpers/process.ts";
import { startLlmStandIn, type LlmStandIn } from "../helpers/llm-stand-in.ts";
import { SHARED_REDIS_URL, deleteKeys, testPrefix } from "../helpers/redis.ts";
import { chat, usageOf, readyz, redisStore, errorOf, awayFromWindowEdge, wideAgent, HI, type Reply } from "./e2e-common.ts";

const users = { alice: makeKey(), bob: makeKey(), carol: makeKey() };
const prefix = testPrefix("e2e-replicas");

let llm: LlmStandIn;
let a: RunningTollgate;
let b: RunningTollgate;
const dataUrl = (tg: RunningTollgate) => `http://127.0.0.1:${tg.port}`;
const adminUrl = (tg: RunningTollgate) => `http://127.0.0.1:${tg.adminPort}`;

t.before(async () => {
  llm = await startLlmStandIn({ remember: false });
  const file = join(tempDir(), "policy.yaml");
  writeFileSync(
    file,
    `${SERVER_BLOCK}
upstreams: { llm: { url: "\${UPSTREAM_URL}" } }
authenticators:
  - name: keys
    type: api_key
    keys:
${Object.entries(users).map(([u, k]) => `      - { id: ${u}-key, hash: "${k.hash}", user: ${u}@example.com, roles: [user] }`).join("\n")}
routes:
  - { name: chat, methods: [POST], paths: [/v1/chat/completions], upstream: llm, allow: [{ roles: [user] }] }
limits:
  store: ${redisStore(prefix)}
  rules:
    - { name: rpm-user, by: [user], models: [gpt-4o-mini], requests: { limit: 10, per: 1m } }
    - { name: streams-user, by: [user], models: [gpt-4.1], concurrency: 2 }
`,
  );
  [a, b] = await Promise.all([startServe(["--config", file], { UPSTREAM_URL: llm.url }), startServe(["--config", file], { UPSTREAM_URL: llm.url })]);
  for (const tg of [a, b]) await until(async () => (await readyz(adminUrl(tg))).body.limits?.healthy === true, 10_000, "replica connected to Redis");
});
t.teardown(async () => {
  llm?.release();
  for (const tg of [a, b]) if (tg && tg.child.exitCode === null) tg.child.kill("SIGKILL");
  await Promise.all([a?.exited, b?.exited]);
  await llm?.close();
  await deleteKeys(SHARED_REDIS_URL, prefix);
});

t.test("10 requests a minute per user across two replicas: 10 in total, the 11th refused by whichever gets it", async (t) => {
  await awayFromWindowEdge(60_000, 10_000);
  const replies: { replica: "A" | "B"; reply: Reply }[] = [];
  for (let i = 0; i < 20; i++) {
    const replica = i % 2 === 0 ? "A" : "B";
    replies.push({ replica, reply: await chat(dataUrl(replica === "A" ? a : b), users.alice.key, { model: "gpt-4o-mini", messages: HI }) });
  }
  t.same(replies.map((r) => r.reply.status), [...Array(10).fill(200), ...Array(10).fill(429)], "alternating A, B, A, …: ten pass, then all refused");
  t.same(replies.slice(0, 10).map((r) => r.reply.headers["x-ratelimit-remaining-requests"]), ["9", "8", "7", "6", "5", "4", "3", "2", "1", "0"], "one counter: remaining counts down across both replicas");
  t.equal(replies[10]!.replica, "A", "the 11th went to A…");
  t.equal(replies[11]!.replica, "B", "…and the 12th to B: both refuse");
  t.ok(replies.slice(10).every((r) => errorOf(r.reply).code === "rate_limited"));
  for (const tg of [a, b]) t.match(await usageOf(adminUrl(tg), { user: "alice@example.com", model: "gpt-4o-mini" }, "rpm-user"), { used: 10, remaining: 0 }, "either replica's /usage shows the shared count");
});

t.test("30 concurrent requests split over both replicas: exactly 10 admitted", async (t) => {
  await awayFromWindowEdge(60_000, 10_000);
  const replies = await Promise.all(Array.from({ length: 30 }, (_, i) => chat(dataUrl(i % 2 === 0 ? a : b), users.bob.key, { model: "gpt-4o-mini", messages: HI })));
  const ok = replies.map((r, i) => ({ status: r.status, replica: i % 2 === 0 ? "A" : "B" })).filter((r) => r.status === 200);
  t.equal(ok.length, 10, `10 admitted (A ${ok.filter((r) => r.replica === "A").length}, B ${ok.filter((r) => r.replica === "B").length})`);
  t.equal(replies.filter((r) => r.status === 429).length, 20, "the rest refused");
});

t.test("concurrency counts streams open on either replica", async (t) => {
  const open = (tg: RunningTollgate) =>
    request(`${dataUrl(tg)}/v1/chat/completions`, {
      method: "POST",
      headers: { authorization: `Bearer ${users.carol.key}`, "content-type": "application/json", "x-stand-in-hold": "1" },
      body: JSON.stringify({ model: "gpt-4.1", stream: true, messages: HI }),
      dispatcher: wideAgent,
      headersTimeout: 5000,
      bodyTimeout: 10_000,
    });
  const onA = await open(a);
  const onB = await open(b);
  t.same([onA.statusCode, onB.statusCode], [200, 200]);
  for (const tg of [a, b]) {
    const third = await chat(dataUrl(tg), users.carol.key, { model: "gpt-4.1", stream: true, messages: HI });
    t.equal(third.status, 429, "a third stream is refused on either replica");
    t.equal(errorOf(third).code, "concurrency_limited");
  }
  llm.release();
  await Promise.all([onA.body.text(), onB.body.text()]);
  await until(async () => (await usageOf(adminUrl(b), { user: "carol@example.com", model: "gpt-4.1" }, "streams-user")).used === 0, 3000, "leases freed");
  t.equal((await chat(dataUrl(b), users.carol.key, { model: "gpt-4.1", stream: true, messages: HI })).status, 200, "freed on A, usable on B");
});
