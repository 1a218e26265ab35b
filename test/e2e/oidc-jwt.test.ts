/**
 * End to end against a REAL local OpenID provider (oidc-provider): JWT access tokens with groups and scopes,
 * discovery, JWKS; allow/deny by group and route through a whole Tollgate; a key rotation at the provider
 * accepted without a restart; `tollgate explain` on the same policy.
 */
import t from "tap";
import { writeFileSync } from "node:fs";
import { join } from "node:path";
import OpenAI from "openai";
import { request } from "undici";
import { startHarness, SERVER_BLOCK, tempDir, type Harness } from "../helpers/harness.ts";
import { startOidcProvider, type OidcTestProvider } from "../helpers/oidc.ts";
import { runCli } from "../helpers/process.ts";

let op: OidcTestProvider;
let h: Harness;
let policy: string;

t.before(async () => {
  op = await startOidcProvider({
    users: {
      alice: { groups: ["litellm-users"], email: "alice@example.com", scope: "chat" },
      dev: { groups: ["litellm-developers"], email: "dev@example.com", scope: "chat embeddings" },
      root: { groups: ["litellm-admins"], email: "root@example.com", scope: "chat admin" },
      mallory: { groups: ["litellm-users"], email: "mallory@evil.test", scope: "chat" },
      nobody: { groups: [], email: "nobody@example.com", scope: "chat" },
    },
  });
  policy = `${SERVER_BLOCK}
upstreams:
  litellm:
    url: "\${UPSTREAM_URL}"
    credential: { type: static, value: "Bearer litellm-master" }
    identity: { headers: { user: x-tollgate-user, groups: x-tollgate-groups, roles: x-tollgate-roles }, openaiUser: true }
authenticators:
  - name: okta
    type: jwt
    issuers:
      - issuer: "${op.issuer}"
        audiences: ["${op.audience}"]
        typ: at+jwt
    jwks: { cooldown: 0s }
    principal:
      roleMappings:
        - { groups: [litellm-admins], roles: [admin] }
        - { groups: [litellm-developers], roles: [developer] }
        - { groups: [litellm-users], roles: [user] }
      emailDomains: [example.com]
routes:
  - name: chat
    methods: [POST]
    paths: [/v1/chat/completions]
    upstream: litellm
    allow:
      - roles: [admin, developer]
      - roles: [user]
        models: [gpt-4o-mini]
  - name: embeddings
    methods: [POST]
    paths: [/v1/embeddings]
    upstream: litellm
    allow: [{ roles: [developer, admin] }]
  - name: admin
    paths: [/admin/**]
    upstream: litellm
    allow: [{ roles: [admin] }]
`;
  h = await startHarness(policy);
});
t.teardown(async () => {
  await h?.stop();
  await op?.close();
});

const chat = (token: string, model = "gpt-4o-mini") =>
  new OpenAI({ apiKey: token, baseURL: `${h.url}/v1`, maxRetries: 0 }).chat.completions.create({ model, messages: [{ role: "user", content: "hi" }] });

t.test("group → role → route and model decisions with provider-issued tokens", async (t) => {
  const alice = await op.jwtAccessToken("alice");
  const r = await chat(alice);
  t.equal(r.choices[0]?.message.content, "Hello from the stand-in upstream.");
  const seen = h.upstream.seen.at(-1)!;
  t.equal(seen.headers.authorization, "Bearer litellm-master", "the upstream gets Tollgate's credential");
  t.equal(seen.headers["x-tollgate-user"], "alice@example.com");
  t.equal(seen.headers["x-tollgate-groups"], "litellm-users");
  t.equal(seen.headers["x-tollgate-roles"], "user");
  t.equal(JSON.parse(seen.body).user, "alice@example.com");
  t.notOk(JSON.stringify(seen.headers).includes(alice), "the token never reaches the upstream");

  await t.rejects(chat(alice, "gpt-4o"), { status: 403, code: "model_not_allowed" }, "users: the cheap model only");
  const dev = await op.jwtAccessToken("dev");
  t.ok(await chat(dev, "gpt-4o"), "developers: any model");
  const embed = (token: string) => request(`${h.url}/v1/embeddings`, { method: "POST", headers: { authorization: `Bearer ${token}` }, body: '{"model":"text-embedding-3-small","input":"x"}' });
  t.equal((await embed(dev)).statusCode, 200);
  t.equal((await embed(alice)).statusCode, 403);
  const root = await op.jwtAccessToken("root");
  t.equal((await request(`${h.url}/admin/keys`, { headers: { authorization: `Bearer ${root}` } })).statusCode, 404, "admins reach /admin (the stand-in has no such page)");
  const denied = await request(`${h.url}/admin/keys`, { headers: { authorization: `Bearer ${dev}` } });
  t.equal(denied.statusCode, 403);
  await denied.body.dump();
  const nobody = await op.jwtAccessToken("nobody");
  await t.rejects(chat(nobody), { status: 403, code: "forbidden" }, "no group, no role");
  await t.rejects(chat(await op.jwtAccessToken("mallory")), { status: 403, code: "email_domain_not_allowed" });
});

t.test("tokens the provider issued for something else are refused", async (t) => {
  await t.rejects(chat(await op.jwtAccessToken("alice", { resource: "api://another-api" })), { status: 401, code: "invalid_token" }, "wrong audience");
  await t.rejects(chat(await op.idToken("alice")), { status: 401, code: "invalid_token" }, "an ID token is not an access token");
  const audit = h.audit().filter((a) => a.status === 401);
  t.ok(audit.some((a) => a.reason === "invalid_token:claim_aud"), "the audit line names the reason");
  t.ok(audit.some((a) => a.reason === "invalid_token:claim_typ" || a.reason === "invalid_token:claim_aud"));
});

t.test("a key rotation at the provider is picked up without a restart", async (t) => {
  const before = await op.jwtAccessToken("alice");
  await chat(before);
  const { newKid } = await op.rotateKeys({ keepOld: true });
  const after = await op.jwtAccessToken("alice");
  t.match(JSON.parse(Buffer.from(after.split(".")[0]!, "base64url").toString()).kid, newKid);
  t.ok(await chat(after), "a token signed by the new key is accepted");
  t.ok(await chat(before), "a token signed by the old, still published key is still accepted");
  const metrics = await (await request(`${h.adminUrl}/metrics`)).body.text();
  t.match(metrics, new RegExp(`tollgate_jwks_fetches_total\\{issuer="${op.issuer.replace(/[.:/]/g, "\\$&")}",result="success"\\} 2`));
  t.match(metrics, /tollgate_jwks_age_seconds\{issuer="[^"]+"\} \d/);
});

t.test("`tollgate explain` shows the chain of rules, offline from claims and online from a token", async (t) => {
  const file = join(tempDir(), "policy.yaml");
  writeFileSync(file, policy.replace('"${UPSTREAM_URL}"', "http://127.0.0.1:1"));
  const claims = join(tempDir(), "claims.json");
  writeFileSync(claims, JSON.stringify({ sub: "u1", email: "dev@example.com", groups: ["litellm-users"] }));
  const offline = await runCli(["explain", "--config", file, "--claims", claims, "--path", "/v1/chat/completions", "--model", "gpt-4o"]);
  t.equal(offline.code, 1, offline.stdout + offline.stderr);
  t.match(offline.stdout, /route     chat → upstream litellm/);
  t.match(offline.stdout, /roles \[user\]  groups \[litellm-users\]/);
  t.match(offline.stdout, /rule #2 \(roles any of \[user\] and models \[gpt-4o-mini\]\): matches the caller/);
  t.match(offline.stdout, /decision  DENY 403 model_not_allowed/);
  const online = await runCli(["explain", "--config", file, "--token", await op.jwtAccessToken("dev"), "--path", "/v1/embeddings"]);
  t.equal(online.code, 0, online.stdout + online.stderr);
  t.match(online.stdout, /via okta \(jwt\) — verified/);
  t.match(online.stdout, /decision  ALLOW by rule #1/);
  const bad = await runCli(["explain", "--config", file, "--token", (await op.jwtAccessToken("dev")).slice(0, -4) + "AAAA", "--path", "/v1/embeddings"]);
  t.equal(bad.code, 1);
  t.match(bad.stdout, /DENY 401 invalid_token/);
  const nowhere = await runCli(["explain", "--config", file, "--path", "/v1/../../etc/passwd", "--method", "GET"]);
  t.match(nowhere.stdout, /DENY 404 no_route/);
});
