import t from "tap";
import { createServer, type IncomingHttpHeaders } from "node:http";
import type { AddressInfo } from "node:net";
import { exportJWK, generateKeyPair, SignJWT, type CryptoKey, type JWTPayload } from "jose";
import { TrustedHeadersAuthenticator } from "../../src/auth/trusted-headers.ts";
import { authenticator as authenticatorSchema, type TrustedHeadersAuthenticatorConfig } from "../../src/config/authenticators.ts";
import { createLogger } from "../../src/observe/audit.ts";
import { Metrics } from "../../src/observe/metrics.ts";

const KID = "proxy-key-1";
const proxyKeys = await generateKeyPair("ES256");
const attackerKeys = await generateKeyPair("ES256");
const publicJwk = { ...(await exportJWK(proxyKeys.publicKey)), kid: KID, alg: "ES256", use: "sig" };
let jwksRequests = 0;
const jwksServer = createServer((_req, res) => {
  jwksRequests++;
  res.writeHead(200, { "content-type": "application/json" }).end(JSON.stringify({ keys: [publicJwk] }));
});
await new Promise<void>((resolve) => jwksServer.listen(0, "127.0.0.1", resolve));
const jwksUri = `http://127.0.0.1:${(jwksServer.address() as AddressInfo).port}/jwks`;
t.teardown(() => {
  jwksServer.closeAllConnections();
  jwksServer.close();
});

let now = Date.parse("2026-06-01T00:00:00Z");
const clock = { now: () => now };
const ISSUER = "https://cloud.google.com/iap";
const AUDIENCE = "/projects/1/global/backendServices/2";

function make(overrides: Record<string, unknown> = {}) {
  const config = authenticatorSchema.parse({
    name: "proxy",
    type: "trusted_headers",
    trustedProxies: ["10.0.0.0/8", "fd00::/8", "127.0.0.1/32"],
    principal: { roleMappings: [{ groups: ["ml-*"], roles: ["user"] }, { groups: ["admins"], roles: ["admin"] }], emailDomains: ["example.com"] },
    ...overrides,
  }) as TrustedHeadersAuthenticatorConfig;
  return new TrustedHeadersAuthenticator(config, { clock, metrics: new Metrics({ defaultMetrics: false }), logger: createLogger(undefined, "silent") });
}
const withAssertion = (extra: Record<string, unknown> = {}) =>
  make({ assertion: { header: "X-Goog-IAP-JWT-Assertion", issuer: ISSUER, audiences: [AUDIENCE], jwksUri, ...extra } });
const req = (headers: IncomingHttpHeaders, remoteAddress = "10.1.2.3") => ({ credential: undefined, headers, remoteAddress });
const alice = { "x-forwarded-user": "u-42", "x-forwarded-email": "alice@example.com" };

async function sign(claims: JWTPayload, opts: { key?: CryptoKey; iss?: string; aud?: string; exp?: number; kid?: string } = {}): Promise<string> {
  return new SignJWT(claims)
    .setProtectedHeader({ alg: "ES256", kid: opts.kid ?? KID })
    .setIssuer(opts.iss ?? ISSUER)
    .setAudience(opts.aud ?? AUDIENCE)
    .setIssuedAt(Math.floor(now / 1000))
    .setExpirationTime(opts.exp ?? Math.floor(now / 1000) + 600)
    .sign(opts.key ?? proxyKeys.privateKey);
}

t.test("a trusted peer's headers become a principal: id from the user header, groups split and trimmed, role mappings", async (t) => {
  const auth = make();
  const p = await auth.authenticate(req({ ...alice, "x-forwarded-groups": " ml-research, ,admins ,", "x-forwarded-preferred-username": "alice" }));
  t.match(p, { id: "u-42", kind: "user", email: "alice@example.com", user: "alice@example.com", groups: ["ml-research", "admins"], authenticator: "proxy", method: "trusted_headers" });
  t.same([...p!.roles].sort(), ["admin", "user"]);
  t.match(p!.claims, { sub: "u-42", preferred_username: "alice" });
  t.same(auth.ownedHeaders, ["x-forwarded-user", "x-forwarded-email", "x-forwarded-groups", "x-forwarded-preferred-username"]);
});

t.test("custom header names (any case) and separator; the assertion header is owned too", async (t) => {
  const auth = make({
    headers: { user: "X-Auth-Request-User", email: "X-Auth-Request-Email", groups: "X-Auth-Request-Groups", preferredUsername: "X-Auth-Request-Preferred-Username" },
    groupsSeparator: "|",
    assertion: { header: "X-Proxy-Assertion", issuer: ISSUER, audiences: [AUDIENCE], jwksUri, required: false },
  });
  t.same(auth.ownedHeaders, ["x-auth-request-user", "x-auth-request-email", "x-auth-request-groups", "x-auth-request-preferred-username", "x-proxy-assertion"]);
  const p = await auth.authenticate(req({ "x-auth-request-user": "bob", "x-auth-request-email": "bob@example.com", "x-auth-request-groups": "ml-a|ml, b|" }));
  t.same(p?.groups, ["ml-a", "ml, b"]);
  t.same(p?.roles, ["user"]);
});

t.test("only TCP peers inside trustedProxies may assert identity; X-Forwarded-For is ignored", async (t) => {
  const auth = make();
  for (const peer of ["10.255.0.1", "fd00::1", "fd12:3456::7", "::ffff:10.0.0.9", "127.0.0.1"]) {
    t.match(await auth.authenticate(req(alice, peer)), { id: "u-42" }, `trusted ${peer}`);
  }
  for (const peer of ["192.168.1.5", "::ffff:192.168.1.5", "fe80::1", "::1", "11.0.0.1", "", "not-an-ip"]) {
    t.equal(await auth.authenticate(req({ ...alice, "x-forwarded-for": "10.0.0.1" }, peer)), undefined, `untrusted ${peer || "(none)"}`);
  }
  t.throws(() => make({ trustedProxies: ["10.0.0.0/33"] }), /CIDR such as/);
  t.throws(() => make({ trustedProxies: ["10.0.0/8"] }), /CIDR such as/);
});

t.test("a trusted peer without identity headers is not this method's request", async (t) => {
  t.equal(await make().authenticate(req({ "x-other": "1" })), undefined);
  t.equal(await make().authenticate(req({ "x-forwarded-user": "" })), undefined);
});

t.test("a repeated single-valued identity header is refused with 400 bad_header", async (t) => {
  const auth = make();
  await t.rejects(auth.authenticate(req({ "x-forwarded-user": "alice, mallory" })), { code: "bad_header", status: 400 });
  await t.rejects(auth.authenticate(req({ "x-forwarded-user": ["alice", "mallory"] as never })), { code: "bad_header" });
  await t.rejects(auth.authenticate(req({ ...alice, "x-forwarded-email": "alice@example.com,mallory@example.com" })), { code: "bad_header" });
});

t.test("identity without a user, or outside the email domains, is refused", async (t) => {
  const auth = make();
  await t.rejects(auth.authenticate(req({ "x-forwarded-email": "alice@example.com" })), { code: "invalid_assertion", status: 401, detail: "no_user" });
  await t.rejects(auth.authenticate(req({ "x-forwarded-user": "eve", "x-forwarded-email": "eve@evil.org" })), { code: "email_domain_not_allowed", status: 403 });
});

t.test("a valid signed assertion that agrees with the headers is accepted", async (t) => {
  const auth = withAssertion();
  const assertion = await sign({ sub: "u-42", email: "alice@example.com", hd: "example.com" });
  const p = await auth.authenticate(req({ ...alice, "x-goog-iap-jwt-assertion": assertion }));
  t.match(p, { id: "u-42", email: "alice@example.com", claims: { hd: "example.com", iss: ISSUER } });
  t.ok(auth.ownedHeaders?.includes("x-goog-iap-jwt-assertion"));
  const iap = await auth.authenticate(req({ "x-forwarded-user": "u-42", "x-forwarded-email": "accounts.google.com:Alice@Example.com", "x-goog-iap-jwt-assertion": assertion }));
  t.match(iap, { id: "u-42", email: "Alice@Example.com" }, "IAP's namespaced email header matches the assertion's email");
  t.match(await auth.authenticate(req({ "x-goog-iap-jwt-assertion": assertion })), { id: "u-42", email: "alice@example.com" }, "the assertion alone identifies");
  t.equal(jwksRequests, 1, "the JWKS is fetched once and cached");
});

t.test("missing, mis-addressed, forged, expired or disagreeing assertions → 401 invalid_assertion", async (t) => {
  const auth = withAssertion();
  const header = "x-goog-iap-jwt-assertion";
  await t.rejects(auth.authenticate(req(alice)), { code: "invalid_assertion", status: 401, detail: "missing" });
  const cases: [string, Promise<string>, Record<string, string>][] = [
    ["audience", sign({ sub: "u-42" }, { aud: "/projects/other" }), alice],
    ["issuer", sign({ sub: "u-42" }, { iss: "https://evil.example.com" }), alice],
    ["signature", sign({ sub: "u-42" }, { key: attackerKeys.privateKey }), alice],
    ["expired", sign({ sub: "u-42" }, { exp: Math.floor(now / 1000) - 120 }), alice],
    ["email_mismatch", sign({ sub: "u-42", email: "mallory@example.com" }), alice],
    ["subject_mismatch", sign({ sub: "u-99", email: "alice@example.com" }), alice],
    ["malformed", Promise.resolve("not.a.jwt"), alice],
  ];
  for (const [detail, token, headers] of cases) {
    await t.rejects(auth.authenticate(req({ ...headers, [header]: await token })), { code: "invalid_assertion", status: 401, detail }, detail);
  }
  const optional = withAssertion({ required: false });
  t.match(await optional.authenticate(req(alice)), { id: "u-42" }, "required: false accepts the plain headers alone");
  await t.rejects(optional.authenticate(req({ ...alice, [header]: await sign({ sub: "u-42" }, { aud: "x" }) })), { code: "invalid_assertion" }, "but a present assertion must verify");
});

t.test("an unreachable assertion JWKS denies with 503, not 401", async (t) => {
  const dead = createServer();
  await new Promise<void>((resolve) => dead.listen(0, "127.0.0.1", resolve));
  const port = (dead.address() as AddressInfo).port;
  await new Promise<void>((resolve) => dead.close(() => resolve()));
  const auth = withAssertion({ jwksUri: `http://127.0.0.1:${port}/jwks`, issuer: "https://other-issuer.example.com" });
  const assertion = await sign({ sub: "u-42" }, { iss: "https://other-issuer.example.com" });
  await t.rejects(auth.authenticate(req({ ...alice, "x-goog-iap-jwt-assertion": assertion })), { code: "auth_unavailable", status: 503 });
});
