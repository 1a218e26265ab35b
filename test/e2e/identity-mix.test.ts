/**
 * Several methods in one policy, through the whole corridor: API keys, JWTs and opaque tokens (introspection)
 * from a REAL local OpenID provider, and identity headers from a trusted proxy. Precedence by credential shape,
 * no fall-through on failure, headers from untrusted peers ignored and stripped, and migration mode.
 */
import t from "tap";
import { request } from "undici";
import { startHarness, makeKey, SERVER_BLOCK, type Harness } from "../helpers/harness.ts";
import { startOidcProvider, type OidcTestProvider } from "../helpers/oidc.ts";

const legacy = makeKey();
let op: OidcTestProvider;
let trusting: Harness;
let distrusting: Harness;

const policy = (trustedCidr: string) => `${SERVER_BLOCK}
upstreams:
  llm:
    url: "\${UPSTREAM_URL}"
    identity: { headers: { user: x-tollgate-user, method: x-tollgate-auth } }
authenticators:
  - name: legacy-master-key
    type: api_key
    deprecated: { sunset: "2027-03-31", link: "https://wiki.example.com/okta-migration" }
    keys: [{ id: master, hash: "${legacy.hash}", user: ci, roles: [user] }]
  - name: okta
    type: jwt
    issuers: [{ issuer: "${op.issuer}", audiences: ["${op.audience}"] }]
  - name: opaque
    type: introspection
    endpoint: "${op.introspectionEndpoint}"
    clientId: "${op.introspectionClient.clientId}"
    clientSecret: "${op.introspectionClient.clientSecret}"
    issuer: "${op.issuer}"
  - name: oauth2-proxy
    type: trusted_headers
    trustedProxies: ["${trustedCidr}"]
routes:
  - name: chat
    paths: [/v1/**]
    upstream: llm
    allow: [{ authenticated: true }]
`;

t.before(async () => {
  op = await startOidcProvider({ users: { alice: { groups: ["litellm-users"], email: "alice@example.com", scope: "chat" } } });
  trusting = await startHarness(policy("127.0.0.1/32"));
  distrusting = await startHarness(policy("10.0.0.0/8"));
});
t.teardown(async () => {
  await trusting?.stop();
  await distrusting?.stop();
  await op?.close();
});

const call = (h: Harness, headers: Record<string, string>) => request(`${h.url}/v1/models`, { headers });

t.test("each credential shape reaches its own method", async (t) => {
  const cases: [string, Record<string, string>, string][] = [
    ["API key", { authorization: `Bearer ${legacy.key}` }, "api_key"],
    ["JWT", { authorization: `Bearer ${await op.jwtAccessToken("alice")}` }, "jwt"],
    ["opaque token", { authorization: `Bearer ${await op.opaqueAccessToken("alice")}` }, "introspection"],
    ["trusted headers", { "x-forwarded-user": "alice", "x-forwarded-email": "alice@example.com" }, "trusted_headers"],
  ];
  for (const [what, headers, method] of cases) {
    const res = await call(trusting, headers);
    t.equal(res.statusCode, 200, what);
    await res.body.dump();
    t.equal(trusting.upstream.seen.at(-1)!.headers["x-tollgate-auth"], method, `${what} → ${method}`);
  }
});

t.test("a failing credential is refused by its own method, never passed to the next", async (t) => {
  const badJwt = (await op.jwtAccessToken("alice")).slice(0, -6) + "AAAAAA";
  const res = await call(trusting, { authorization: `Bearer ${badJwt}`, "x-forwarded-user": "alice" });
  t.equal(res.statusCode, 401, "a bad JWT is not rescued by trusted headers later in the chain");
  t.match(await res.body.json(), { error: { code: "invalid_token" } });
  const inactive = await call(trusting, { authorization: "Bearer opaque-token-the-provider-never-issued" });
  t.equal(inactive.statusCode, 401);
  t.match(await inactive.body.json(), { error: { code: "token_inactive" } });
  const reasons = trusting.audit().filter((a) => a.status === 401).map((a) => a.reason);
  t.ok(reasons.includes("invalid_token:signature"));
  t.ok(reasons.includes("token_inactive:inactive"), "the audit line names the reason");
});

t.test("identity headers from an untrusted peer are ignored and never forwarded", async (t) => {
  const res = await call(distrusting, { "x-forwarded-user": "admin", "x-forwarded-email": "admin@example.com", "x-forwarded-groups": "admins" });
  t.equal(res.statusCode, 401, "not an identity: the caller is anonymous");
  t.match(await res.body.json(), { error: { code: "missing_credential" } });
  const ok = await call(distrusting, { authorization: `Bearer ${legacy.key}`, "x-forwarded-user": "admin", "x-forwarded-groups": "admins" });
  t.equal(ok.statusCode, 200);
  await ok.body.dump();
  const seen = distrusting.upstream.seen.at(-1)!;
  t.equal(seen.headers["x-forwarded-user"], undefined, "stripped before forwarding");
  t.equal(seen.headers["x-forwarded-groups"], undefined);
  t.equal(seen.headers["x-tollgate-user"], "ci", "the upstream learns the real caller");
  const underscore = await call(trusting, { "x_forwarded_user": "admin" });
  t.equal(underscore.statusCode, 400, "underscore variants of identity headers are refused");
  await underscore.body.dump();
});

t.test("migration mode: the deprecated method still works, says so, and is counted", async (t) => {
  const res = await call(trusting, { "x-api-key": legacy.key });
  t.equal(res.statusCode, 200);
  await res.body.dump();
  t.match(res.headers.deprecation, /^@\d+$/);
  t.equal(res.headers.sunset, "Wed, 31 Mar 2027 00:00:00 GMT");
  t.equal(res.headers.link, '<https://wiki.example.com/okta-migration>; rel="deprecation"');
  const jwt = await call(trusting, { authorization: `Bearer ${await op.jwtAccessToken("alice")}` });
  t.equal(jwt.headers.sunset, undefined, "the replacement method carries no deprecation");
  await jwt.body.dump();
  const metrics = await (await request(`${trusting.adminUrl}/metrics`)).body.text();
  t.match(metrics, /tollgate_deprecated_auth_calls_total\{authenticator="legacy-master-key"\} [2-9]/);
});
