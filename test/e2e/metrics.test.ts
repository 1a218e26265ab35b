/** The admin port: /metrics (clean for promtool, no identities in labels), /healthz, /readyz; not on the data port. */
import t from "tap";
import { spawnSync } from "node:child_process";
import { request } from "undici";
import { startHarness, makeKey, SERVER_BLOCK, type Harness } from "../helpers/harness.ts";

const key = makeKey();
let h: Harness;
t.before(async () => {
  h = await startHarness(`${SERVER_BLOCK}
upstreams:
  llm: { url: "\${UPSTREAM_URL}", identity: { headers: { user: x-tollgate-user } } }
authenticators:
  - name: keys
    type: api_key
    keys: [{ id: alice-key, hash: "${key.hash}", user: alice@example.com, team: ml, roles: [user] }]
routes:
  - name: chat
    methods: [POST]
    paths: [/v1/chat/completions]
    upstream: llm
    allow: [{ roles: [user], models: [gpt-4o-mini] }]
`);
  const send = (auth: string, model: string) =>
    request(`${h.url}/v1/chat/completions`, { method: "POST", headers: { authorization: auth, "content-type": "application/json" }, body: JSON.stringify({ model, messages: [] }) }).then((r) => r.body.dump());
  await send(`Bearer ${key.key}`, "gpt-4o-mini");
  await send(`Bearer ${key.key}`, "gpt-4o");
  await send(`Bearer ${makeKey().key}`, "gpt-4o-mini");
  await request(`${h.url}/nope`).then((r) => r.body.dump());
});
t.teardown(() => h.stop());

t.test("request, auth-failure and latency metrics with bounded labels", async (t) => {
  const text = await (await request(`${h.adminUrl}/metrics`)).body.text();
  t.match(text, /tollgate_requests_total\{route="chat",status="200",auth_method="api_key",decision="allow"\} 1/);
  t.match(text, /tollgate_requests_total\{route="chat",status="403",auth_method="api_key",decision="deny"\} 1/);
  t.match(text, /tollgate_requests_total\{route="chat",status="401",auth_method="api_key",decision="deny"\} 1/);
  t.match(text, /tollgate_requests_total\{route="none",status="404",auth_method="none",decision="deny"\} 1/);
  t.match(text, /tollgate_auth_failures_total\{method="api_key",reason="invalid_api_key"\} 1/);
  t.match(text, /tollgate_request_duration_seconds_bucket\{le="0.005",route="chat"\}/);
  t.match(text, /tollgate_upstream_ttfb_seconds_count\{upstream="llm"\} 1/);
  t.match(text, /tollgate_build_info\{version="[^"]+",node="24\./);
  for (const secret of ["alice", "alice-key", key.key, "ml\""]) t.notOk(text.includes(secret), `no "${secret.slice(0, 8)}" in any label`);
});

// CI installs promtool, so there its absence is a failure; on a developer machine without it the check is skipped.
const hasPromtool = spawnSync("promtool", ["--version"]).status === 0;
t.test("promtool finds the exposition clean", { skip: !hasPromtool && !process.env.CI ? "promtool is not installed (apt-get install prometheus)" : false }, async (t) => {
  t.ok(hasPromtool, "promtool is installed");
  const text = await (await request(`${h.adminUrl}/metrics`)).body.text();
  const check = spawnSync("promtool", ["check", "metrics"], { input: text, encoding: "utf8" });
  t.equal(check.status, 0, check.stdout + check.stderr);
  t.equal((check.stdout + check.stderr).trim(), "", "no lint warnings");
});

t.test("health and readiness on the admin port only", async (t) => {
  const health = await request(`${h.adminUrl}/healthz`);
  t.equal(health.statusCode, 200);
  t.same(await health.body.json(), { status: "ok" });
  const ready = await request(`${h.adminUrl}/readyz`);
  t.equal(ready.statusCode, 200);
  t.match(await ready.body.json(), { status: "ready", upstreams: { llm: { ready: true } } });
  const onData = await request(`${h.url}/metrics`);
  t.equal(onData.statusCode, 404, "the data port has no metrics");
  await onData.body.dump();
});
