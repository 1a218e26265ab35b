import t from "tap";
import { createServer, type Server } from "node:http";
import type { AddressInfo } from "node:net";
import { Writable } from "node:stream";
import { IntrospectionAuthenticator } from "../../src/auth/introspection.ts";
import { extractCredential } from "../../src/auth/credential.ts";
import { authenticator as authenticatorSchema, type IntrospectionAuthenticatorConfig } from "../../src/config/authenticators.ts";
import { createLogger } from "../../src/observe/audit.ts";
import { Metrics } from "../../src/observe/metrics.ts";
import { startOidcProvider } from "../helpers/oidc.ts";

/** A stand-in for an introspection, UserInfo and token-info endpoint: answers per token, records every call. */
interface Answer {
  status?: number;
  json?: unknown;
  text?: string;
  delayMs?: number;
}
interface Seen {
  path: string;
  authorization: string | undefined;
  form: URLSearchParams;
}
const answers = new Map<string, Answer>();
const seen: Seen[] = [];
const server: Server = createServer((req, res) => {
  let body = "";
  req.on("data", (c) => (body += c));
  req.on("end", () => {
    const form = new URLSearchParams(body);
    const path = req.url ?? "";
    const token = path === "/introspect" ? form.get("token") ?? "" : (req.headers.authorization ?? "").replace(/^Bearer /, "");
    seen.push({ path, authorization: req.headers.authorization, form });
    const fallback: Answer = path === "/introspect" ? { json: { active: false } } : { status: path === "/userinfo" ? 401 : 400 };
    const a = answers.get(token) ?? fallback;
    setTimeout(() => {
      if (res.destroyed) return;
      res.writeHead(a.status ?? 200, { "content-type": a.text !== undefined ? "text/plain" : "application/json" });
      res.end(a.text ?? JSON.stringify(a.json ?? {}));
    }, a.delayMs ?? 0);
  });
});
await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
const base = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
t.teardown(() => {
  server.closeAllConnections();
  server.close();
});

let now = Date.parse("2026-06-01T00:00:00Z");
const clock = { now: () => now };
const nowSec = () => Math.floor(now / 1000);
let logText = "";
const logger = createLogger(new Writable({ write: (chunk, _enc, cb) => ((logText += chunk.toString()), cb()) }) as never, "debug");

function make(overrides: Record<string, unknown> = {}) {
  const config = authenticatorSchema.parse({
    name: "idp",
    type: "introspection",
    endpoint: `${base}/introspect`,
    clientId: "tollgate client",
    clientSecret: "s3cr:t/+",
    issuer: "https://idp.example.com",
    audiences: ["api://tollgate"],
    principal: { roleMappings: [{ groups: ["ml-*"], roles: ["user"] }], emailDomains: ["example.com"] },
    ...overrides,
  }) as IntrospectionAuthenticatorConfig;
  const metrics = new Metrics({ defaultMetrics: false });
  return { auth: new IntrospectionAuthenticator(config, { clock, metrics, logger }), metrics };
}
const req = (token: string, scheme = "Bearer") => {
  const headers = { authorization: `${scheme} ${token}` };
  return { credential: extractCredential(headers), headers, remoteAddress: "127.0.0.1" };
};
const calls = (path = "/introspect") => seen.filter((s) => s.path === path).length;
async function counts(metrics: Metrics): Promise<Record<string, number>> {
  const out: Record<string, number> = {};
  for (const v of (await metrics.introspections.get()).values) out[String(v.labels.result)] = v.value;
  return out;
}
const active = (sub: string, extra: Record<string, unknown> = {}) => ({
  json: { active: true, sub, email: `${sub}@example.com`, scope: "chat models.read", groups: ["ml-research"], iss: "https://idp.example.com", aud: ["api://tollgate", "other"], exp: nowSec() + 3600, ...extra },
});
let n = 0;
const fresh = (label: string) => `opaque-${label}-${++n}-${Math.random().toString(36).slice(2)}`;

t.beforeEach(() => {
  seen.length = 0;
});

t.test("an active token becomes a principal: scopes, groups, role mappings; client_secret_basic RFC 6749 encoding", async (t) => {
  const { auth, metrics } = make();
  const token = fresh("alice");
  answers.set(token, active("alice"));
  const p = await auth.authenticate(req(token));
  t.match(p, { id: "alice", email: "alice@example.com", scopes: ["chat", "models.read"], groups: ["ml-research"], roles: ["user"], method: "introspection", authenticator: "idp" });
  t.equal(calls(), 1);
  const call = seen[0]!;
  t.equal(call.form.get("token"), token);
  t.equal(call.form.get("token_type_hint"), "access_token");
  t.notOk(call.form.has("client_secret"), "basic: the secret is not in the body");
  const [id, secret] = Buffer.from(call.authorization!.replace(/^Basic /, ""), "base64").toString().split(":");
  t.same([id, secret], ["tollgate+client", "s3cr%3At%2F%2B"], "id and secret are form-urlencoded before base64");
  t.same(await counts(metrics), { active: 1 });
});

t.test("client_secret_post puts the credentials in the form body", async (t) => {
  const { auth } = make({ clientAuth: "client_secret_post" });
  const token = fresh("post");
  answers.set(token, active("alice"));
  t.match(await auth.authenticate(req(token)), { id: "alice" });
  t.equal(seen[0]!.authorization, undefined);
  t.equal(seen[0]!.form.get("client_id"), "tollgate client");
  t.equal(seen[0]!.form.get("client_secret"), "s3cr:t/+");
});

t.test("refusals: inactive, expired, wrong issuer, wrong audience, email domain", async (t) => {
  const { auth, metrics } = make();
  const cases: [Answer, { code: string; status?: number; detail?: string }][] = [
    [{ json: { active: false } }, { code: "token_inactive", status: 401 }],
    [active("a", { exp: nowSec() - 1 }), { code: "token_inactive", detail: "expired" }],
    [active("a", { iss: "https://evil.example.com" }), { code: "invalid_token", detail: "issuer" }],
    [active("a", { aud: "api://someone-else" }), { code: "invalid_token", detail: "audience" }],
    [active("a", { aud: undefined }), { code: "invalid_token", detail: "audience" }],
    [active("bob", { email: "bob@other.org" }), { code: "email_domain_not_allowed", status: 403 }],
  ];
  for (const [answer, expected] of cases) {
    const token = fresh("refused");
    answers.set(token, answer);
    await t.rejects(auth.authenticate(req(token)), expected);
  }
  t.same(await counts(metrics), { inactive: 1, active: 5 }, "the metric records what the endpoint answered");
});

t.test("negative answers are cached for negativeCacheTtl, then asked again", async (t) => {
  const { auth, metrics } = make({ negativeCacheTtl: "5s" });
  const token = fresh("inactive");
  await t.rejects(auth.authenticate(req(token)), { code: "token_inactive" });
  now += 4_000;
  await t.rejects(auth.authenticate(req(token)), { code: "token_inactive" });
  t.equal(calls(), 1, "the second refusal came from the cache");
  now += 2_000;
  answers.set(token, active("alice"));
  t.match(await auth.authenticate(req(token)), { id: "alice" }, "after the negative ttl the endpoint is asked again");
  t.equal(calls(), 2);
  t.same(await counts(metrics), { inactive: 1, cache_hit: 1, active: 1 });
});

t.test("positive answers are cached no longer than cacheTtl nor past the token's exp", async (t) => {
  const { auth } = make({ cacheTtl: "60s" });
  const long = fresh("long");
  answers.set(long, active("alice"));
  await auth.authenticate(req(long));
  now += 59_000;
  await auth.authenticate(req(long));
  t.equal(calls(), 1, "within cacheTtl: cached");
  now += 2_000;
  await auth.authenticate(req(long));
  t.equal(calls(), 2, "past cacheTtl: asked again");

  const short = fresh("short");
  answers.set(short, active("alice", { exp: nowSec() + 10 }));
  await auth.authenticate(req(short));
  now += 9_000;
  await auth.authenticate(req(short));
  t.equal(calls(), 3, "before exp: cached");
  now += 2_000;
  await t.rejects(auth.authenticate(req(short)), { code: "token_inactive", detail: "expired" }, "past exp the cache is not trusted");
  t.equal(calls(), 4);
});

t.test("50 concurrent requests with one uncached token share one call", async (t) => {
  const { auth, metrics } = make();
  const token = fresh("flight");
  answers.set(token, { ...active("alice"), delayMs: 100 });
  const results = await Promise.all(Array.from({ length: 50 }, () => auth.authenticate(req(token))));
  t.equal(calls(), 1);
  t.ok(results.every((p) => p === results[0] && p?.id === "alice"));
  t.same(await counts(metrics), { active: 1, cache_hit: 49 });
});

t.test("endpoint down, 5xx, malformed or slow → 503 auth_unavailable, never cached", async (t) => {
  const dead = createServer();
  await new Promise<void>((resolve) => dead.listen(0, "127.0.0.1", resolve));
  const deadPort = (dead.address() as AddressInfo).port;
  await new Promise<void>((resolve) => dead.close(() => resolve()));
  const down = make({ endpoint: `http://127.0.0.1:${deadPort}/introspect` });
  await t.rejects(down.auth.authenticate(req(fresh("down"))), { code: "auth_unavailable", status: 503, headers: { "retry-after": "5" }, detail: "unreachable" });

  const { auth, metrics } = make({ timeout: "200ms" });
  for (const [answer, detail] of [[{ status: 500, text: "oops" }, "endpoint_status"], [{ text: "not json" }, "malformed_response"], [{ json: { sub: "no-active-field" } }, "malformed_response"]] as const) {
    const token = fresh("broken");
    answers.set(token, answer);
    await t.rejects(auth.authenticate(req(token)), { code: "auth_unavailable", detail });
    answers.set(token, active("alice"));
    t.match(await auth.authenticate(req(token)), { id: "alice" }, `after ${detail} the failure was not cached`);
  }
  const slow = fresh("slow");
  answers.set(slow, { ...active("alice"), delayMs: 1_500 });
  const started = performance.now();
  await t.rejects(auth.authenticate(req(slow)), { code: "auth_unavailable", detail: "timeout" });
  t.ok(performance.now() - started < 1_200, "gave up at the configured timeout");
  t.match(await counts(metrics), { error: 4, active: 3 });
});

t.test("only bearer tokens are its kind; JWT-shaped ones are left to JWT authenticators in opaque mode", async (t) => {
  const jwtShaped = "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJ4In0.c2ln";
  answers.set(jwtShaped, active("jwt-user"));
  const { auth } = make();
  t.equal(await auth.authenticate(req(jwtShaped)), undefined);
  t.equal(await auth.authenticate(req("dXNlcjpwYXNz", "Basic")), undefined);
  const headers = { "x-api-key": "tg_something" };
  t.equal(await auth.authenticate({ credential: extractCredential(headers), headers, remoteAddress: "127.0.0.1" }), undefined);
  t.equal(await auth.authenticate({ credential: undefined, headers: {}, remoteAddress: "127.0.0.1" }), undefined);
  t.equal(calls(), 0);
  t.match(await make({ tokens: "any" }).auth.authenticate(req(jwtShaped)), { id: "jwt-user" }, "tokens: any introspects them too");
});

t.test("userinfo mode: 200 → claims, 401/403 → inactive, 5xx → 503", async (t) => {
  const { auth } = make({ mode: "userinfo", endpoint: `${base}/userinfo`, clientId: undefined, clientSecret: undefined, audiences: undefined, issuer: undefined });
  const good = fresh("ui");
  answers.set(good, { json: { sub: "u-1", email: "carol@example.com", groups: ["ml-x"] } });
  t.match(await auth.authenticate(req(good)), { id: "u-1", email: "carol@example.com", roles: ["user"] });
  t.equal(seen[0]!.authorization, `Bearer ${good}`);
  for (const status of [401, 403]) {
    const token = fresh("ui-bad");
    answers.set(token, { status, json: { error: "invalid_token" } });
    await t.rejects(auth.authenticate(req(token)), { code: "token_inactive" });
  }
  const broken = fresh("ui-500");
  answers.set(broken, { status: 502, text: "bad gateway" });
  await t.rejects(auth.authenticate(req(broken)), { code: "auth_unavailable", detail: "endpoint_status" });
});

t.test("tokeninfo mode: Google-style answers (string numbers, user_id, azp) → claims; 400 → inactive", async (t) => {
  const { auth } = make({ mode: "tokeninfo", endpoint: `${base}/tokeninfo`, clientId: undefined, clientSecret: undefined, issuer: undefined, audiences: ["client-123"] });
  const token = fresh("ti");
  answers.set(token, { json: { azp: "client-123", user_id: "1170", scope: "openid email", email: "dan@example.com", expires_in: "30", email_verified: "true" } });
  t.match(await auth.authenticate(req(token)), { id: "1170", email: "dan@example.com", scopes: ["openid", "email"], claims: { aud: "client-123", exp: nowSec() + 30 } });
  now += 29_000;
  await auth.authenticate(req(token));
  t.equal(calls("/tokeninfo"), 1, "cached until the exp derived from expires_in");
  now += 2_000;
  await auth.authenticate(req(token));
  t.equal(calls("/tokeninfo"), 2, "then asked again (cacheTtl is 60s)");
  const other = fresh("ti-aud");
  answers.set(other, { json: { aud: "someone-else", sub: "x", exp: String(nowSec() + 600) } });
  await t.rejects(auth.authenticate(req(other)), { code: "invalid_token", detail: "audience" });
  await t.rejects(auth.authenticate(req(fresh("ti-unknown"))), { code: "token_inactive" });
});

t.test("the token never appears in a log line, a metric or an error message", async (t) => {
  logText = "";
  const { auth, metrics } = make({ timeout: "100ms" });
  const secret = fresh("secret-token-value");
  const errors: unknown[] = [];
  for (const answer of [{ status: 500, text: secret }, { text: `{"echo":"${secret}"` }, { ...active("alice"), delayMs: 400 }, { json: { active: false } }]) {
    answers.set(secret, answer);
    auth.close();
    await auth.authenticate(req(secret)).catch((e: unknown) => errors.push(e));
  }
  t.equal(errors.length, 4);
  t.ok(logText.length > 0, "failures were logged");
  t.notOk(logText.includes(secret), "not in the log");
  t.notOk((await metrics.registry.metrics()).includes(secret), "not in the metrics");
  for (const e of errors) t.notOk(JSON.stringify(e).includes(secret) || String((e as Error).message).includes(secret), "not in the error");
});

t.test("construction refuses plain http to a non-loopback host and introspection without client credentials", async (t) => {
  t.throws(() => make({ endpoint: "http://idp.example.com/introspect" }), /https/);
  t.throws(() => make({ clientSecret: undefined }), /clientId and clientSecret/);
});

t.test("end to end against a real OpenID provider's introspection endpoint", async (t) => {
  const op = await startOidcProvider({ users: { alice: { groups: ["ml-research"], email: "alice@example.com", scope: "chat" } } });
  t.teardown(() => op.close());
  for (const clientAuth of ["client_secret_basic", "client_secret_post"]) {
    const { auth } = make({ endpoint: op.introspectionEndpoint, clientId: op.introspectionClient.clientId, clientSecret: op.introspectionClient.clientSecret, clientAuth, issuer: op.issuer, audiences: [op.audience] });
    const token = await op.opaqueAccessToken("alice");
    t.match(await auth.authenticate(req(token)), { id: "alice", email: "alice@example.com", groups: ["ml-research"], roles: ["user"], scopes: ["chat"] }, clientAuth);
    await t.rejects(auth.authenticate(req(`${token}x`)), { code: "token_inactive" });
  }
  t.same(op.serverErrors, []);
});
