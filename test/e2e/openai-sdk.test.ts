/** The whole corridor with the real `openai` SDK: allowed, denied, streamed, and what the upstream receives. */
import t from "tap";
import OpenAI from "openai";
import { startHarness, makeKey, SERVER_BLOCK, type Harness } from "../helpers/harness.ts";

const alice = makeKey();
const bob = makeKey();
const expired = makeKey();

const policy = `${SERVER_BLOCK}
upstreams:
  llm:
    url: "\${UPSTREAM_URL}"
    credential: { type: static, header: authorization, value: "Bearer upstream-master-secret" }
    identity:
      headers: { user: x-tollgate-user, team: x-tollgate-team, groups: x-tollgate-groups, principal: x-tollgate-key-id }
      openaiUser: true
authenticators:
  - name: keys
    type: api_key
    keys:
      - { id: alice-laptop, hash: "${alice.hash}", user: alice, team: ml, groups: [ml-eng], roles: [user] }
      - { id: bob-ci, hash: "${bob.hash}", user: bob, roles: [user], models: [gpt-4o-mini] }
      - { id: old, hash: "${expired.hash}", user: carol, roles: [user], expires: "2020-01-01T00:00:00Z" }
routes:
  - name: chat
    methods: [POST]
    paths: [/v1/chat/completions]
    upstream: llm
    allow:
      - roles: [user]
        models: [gpt-4o-mini, gpt-4o]
  - name: models
    methods: [GET]
    paths: [/v1/models]
    upstream: llm
    allow: [{ authenticated: true }]
  - name: admin
    paths: [/admin/**]
    upstream: llm
    allow: [{ roles: [admin] }]
`;

let h: Harness;
t.before(async () => {
  h = await startHarness(policy);
});
t.teardown(() => h.stop());

const client = (key: string) => new OpenAI({ apiKey: key, baseURL: `${h.url}/v1`, maxRetries: 0 });

t.test("an allowed call reaches the upstream with Tollgate's credential, never the client's", async (t) => {
  const r = await client(alice.key).chat.completions.create({ model: "gpt-4o-mini", messages: [{ role: "user", content: "hi" }] });
  t.equal(r.choices[0]?.message.content, "Hello from the stand-in upstream.");
  const seen = h.upstream.seen.at(-1)!;
  t.equal(seen.headers.authorization, "Bearer upstream-master-secret");
  t.equal(seen.headers["x-tollgate-user"], "alice");
  t.equal(seen.headers["x-tollgate-team"], "ml");
  t.equal(seen.headers["x-tollgate-groups"], "ml-eng");
  t.equal(seen.headers["x-tollgate-key-id"], "alice-laptop");
  t.equal(JSON.parse(seen.body).user, "alice", "OpenAI user field is set for spend attribution");
  const everything = JSON.stringify(seen.headers) + seen.body;
  t.notOk(everything.includes(alice.key), "the client's key never reaches the upstream");
  t.ok(seen.headers["x-request-id"], "a request id is forwarded");
});

t.test("a key sent as x-api-key or api-key works and is stripped", async (t) => {
  for (const header of ["x-api-key", "api-key"]) {
    const res = await fetch(`${h.url}/v1/chat/completions`, {
      method: "POST",
      headers: { [header]: alice.key, "content-type": "application/json" },
      body: JSON.stringify({ model: "gpt-4o", messages: [] }),
    });
    t.equal(res.status, 200, header);
    await res.arrayBuffer();
    const seen = h.upstream.seen.at(-1)!;
    t.equal(seen.headers[header], undefined, `${header} stripped`);
    t.notOk(JSON.stringify(seen.headers).includes(alice.key));
  }
});

t.test("denials: 401 bad key, 401 expired, 401 none, 403 model, 403 route, 404 no route", async (t) => {
  const bad = makeKey();
  await t.rejects(client(bad.key).chat.completions.create({ model: "gpt-4o-mini", messages: [] }), { status: 401, code: "invalid_api_key" });
  await t.rejects(client(expired.key).chat.completions.create({ model: "gpt-4o-mini", messages: [] }), { status: 401, code: "key_expired" });
  await t.rejects(client(alice.key).chat.completions.create({ model: "o1-pro", messages: [] }), { status: 403, code: "model_not_allowed" });
  await t.rejects(client(bob.key).chat.completions.create({ model: "gpt-4o", messages: [] }), { status: 403, code: "model_not_allowed" }, "per-key model list");
  const none = await fetch(`${h.url}/v1/chat/completions`, { method: "POST", body: "{}" });
  t.equal(none.status, 401);
  t.match(none.headers.get("www-authenticate"), /^Bearer .*error="invalid_token"/);
  t.match(await none.json(), { error: { code: "missing_credential", type: "authentication_error", message: String } });
  const admin = await fetch(`${h.url}/admin/keys`, { headers: { authorization: `Bearer ${alice.key}` } });
  t.equal(admin.status, 403);
  t.match(await admin.json(), { error: { type: "permission_error", code: "forbidden" } });
  const nowhere = await fetch(`${h.url}/v2/unknown`, { headers: { authorization: `Bearer ${alice.key}` } });
  t.equal(nowhere.status, 404);
  t.match(await nowhere.json(), { error: { code: "no_route", message: String } });
});

t.test("streaming: events reach the client before the stream ends", async (t) => {
  const started = Date.now();
  const stream = await client(alice.key).chat.completions.create({ model: "gpt-4o-mini", stream: true, messages: [{ role: "user", content: "hi" }] });
  const arrivals: number[] = [];
  for await (const chunk of stream) if (chunk.choices[0]?.delta.content) arrivals.push(Date.now() - started);
  t.equal(arrivals.length, 5);
  // The stand-in waits 10 ms between events: if Tollgate buffered, all would arrive together at the end.
  t.ok(arrivals[4]! - arrivals[0]! >= 30, `events spread over time: ${arrivals.join(",")}`);
});

t.test("GET /v1/models lists models for any authenticated key", async (t) => {
  const models = await client(bob.key).models.list();
  t.ok(models.data.some((m) => m.id === "gpt-4o-mini"));
});

t.test("every request has an audit line without the key", async (t) => {
  const audit = h.audit();
  t.ok(audit.length >= 8);
  const denied = audit.find((a) => a.reason === "model_not_allowed");
  t.match(denied, { decision: "deny", status: 403, principal: String, authMethod: "api_key", route: "chat", requestId: String });
  const allowed = audit.find((a) => a.decision === "allow" && a.route === "chat");
  t.match(allowed, { principal: "alice-laptop", user: "alice", model: String, status: 200, outcome: "complete" });
  for (const k of [alice.key, bob.key, expired.key]) t.notOk(h.logText().includes(k), "no key in any log line");
});
