/**
 * Self-test of test/helpers/oidc.ts: a real oidc-provider on 127.0.0.1, exercised over HTTP the way the JWT and
 * introspection authenticators will use it. If this file fails, the auth suites built on the helper cannot be
 * trusted.
 */
import { get } from "node:http";
import t, { type Test } from "tap";
import { createRemoteJWKSet, decodeProtectedHeader, jwtVerify } from "jose";
import { startOidcProvider, type OidcTestProvider } from "../helpers/oidc.ts";

const users = {
  alice: { groups: ["eng", "ml"], email: "alice@example.com", scope: "chat models:read" },
  bob: { groups: [] },
};

async function provider(t: Test): Promise<OidcTestProvider> {
  const p = await startOidcProvider({ users });
  t.teardown(() => p.close());
  return p;
}

/** GET on a fresh connection (no pooled socket), bounded; resolves to the status or the connect error code. */
function probe(url: string): Promise<number | string> {
  return new Promise((resolve) => {
    const req = get(url, { agent: false, timeout: 3_000 }, (res) => {
      res.resume();
      res.on("end", () => resolve(res.statusCode ?? 0));
    });
    req.on("timeout", () => req.destroy(Object.assign(new Error("timeout"), { code: "TIMEOUT" })));
    req.on("error", (err: NodeJS.ErrnoException) => resolve(err.code ?? err.message));
  });
}

async function introspect(p: OidcTestProvider, token: string, client = p.introspectionClient): Promise<{ status: number; body: Record<string, unknown> }> {
  const res = await fetch(p.introspectionEndpoint, {
    method: "POST",
    headers: {
      authorization: `Basic ${Buffer.from(`${client.clientId}:${client.clientSecret}`).toString("base64")}`,
      "content-type": "application/x-www-form-urlencoded",
    },
    body: new URLSearchParams({ token }),
    signal: AbortSignal.timeout(5_000),
  });
  return { status: res.status, body: (await res.json()) as Record<string, unknown> };
}

t.test("discovery names the issuer, JWKS, token and introspection endpoints on the ephemeral port", async (t) => {
  const p = await provider(t);
  t.match(p.issuer, /^http:\/\/127\.0\.0\.1:\d+$/);
  const res = await fetch(`${p.issuer}/.well-known/openid-configuration`, { signal: AbortSignal.timeout(5_000) });
  t.equal(res.status, 200);
  const doc = (await res.json()) as Record<string, unknown>;
  t.equal(doc.issuer, p.issuer);
  t.equal(doc.jwks_uri, p.jwksUri);
  t.equal(doc.token_endpoint, p.tokenEndpoint);
  t.equal(doc.introspection_endpoint, p.introspectionEndpoint);
  t.ok((doc.grant_types_supported as string[]).includes("client_credentials"));
  t.same(p.serverErrors, []);
});

t.test("a JWT access token verifies against the provider's JWKS and carries the user's claims", async (t) => {
  const p = await provider(t);
  const jwks = createRemoteJWKSet(new URL(p.jwksUri));
  const verify = (token: string, audience = p.audience) => jwtVerify(token, jwks, { issuer: p.issuer, audience, typ: "at+jwt", algorithms: ["RS256"] });

  const alice = await p.jwtAccessToken("alice");
  const { payload, protectedHeader } = await verify(alice);
  t.match(protectedHeader, { alg: "RS256", typ: "at+jwt", kid: p.currentKid });
  t.match(payload, { iss: p.issuer, aud: "api://tollgate-test", sub: "alice", client_id: "alice", groups: ["eng", "ml"], email: "alice@example.com", scope: "chat models:read" });
  t.equal((payload.exp ?? 0) - (payload.iat ?? 0), 300);

  t.equal((await verify(await p.jwtAccessToken("alice", { scope: "chat" }))).payload.scope, "chat", "a narrower scope on request");
  t.equal((await verify(await p.jwtAccessToken("alice", { scope: "chat admin" }))).payload.scope, "chat", "scopes beyond the user's are not granted");

  const bob = (await verify(await p.jwtAccessToken("bob"))).payload;
  t.match(bob, { sub: "bob", groups: [] });
  t.notOk("email" in bob || "scope" in bob, "no email or scope when the user has none");

  const other = await p.jwtAccessToken("alice", { resource: "api://another-api" });
  t.equal((await verify(other, "api://another-api")).payload.aud, "api://another-api");
  await t.rejects(verify(other), { code: "ERR_JWT_CLAIM_VALIDATION_FAILED", claim: "aud" }, "another resource's token fails our audience");
  await t.rejects(p.jwtAccessToken("mallory"), /unknown test user/);
  t.same(p.serverErrors, []);
});

t.test("an ID token is signed by the same key but is told apart from an access token", async (t) => {
  const p = await provider(t);
  const jwks = createRemoteJWKSet(new URL(p.jwksUri));
  const id = await p.idToken("alice");
  const { payload, protectedHeader } = await jwtVerify(id, jwks, { issuer: p.issuer, audience: "alice" });
  t.match(payload, { sub: "alice", groups: ["eng", "ml"], email: "alice@example.com" });
  t.equal(protectedHeader.kid, p.currentKid);
  t.not(protectedHeader.typ, "at+jwt");
  await t.rejects(jwtVerify(id, jwks, { issuer: p.issuer, typ: "at+jwt" }), { code: "ERR_JWT_CLAIM_VALIDATION_FAILED", claim: "typ" });
});

t.test("an opaque token introspects as active with the user's claims; garbage as inactive", async (t) => {
  const p = await provider(t);
  const opaque = await p.opaqueAccessToken("alice");
  t.notMatch(opaque, /\./, "not a JWT");

  const active = await introspect(p, opaque);
  t.equal(active.status, 200);
  t.match(active.body, { active: true, iss: p.issuer, aud: "api://tollgate-test", client_id: "alice", groups: ["eng", "ml"], email: "alice@example.com", scope: "chat models:read", token_type: "Bearer" });
  t.equal((active.body.exp as number) - (active.body.iat as number), 300);
  t.equal((await introspect(p, await p.opaqueAccessToken("alice", { scope: "models:read" }))).body.scope, "models:read");

  t.same((await introspect(p, "not-a-token-at-all")).body, { active: false });
  t.same((await introspect(p, opaque, p.users.alice!)).body, { active: false }, "only the introspection client may introspect");
  const wrongSecret = await introspect(p, opaque, { clientId: p.introspectionClient.clientId, clientSecret: "wrong" });
  t.match(wrongSecret, { status: 401, body: { error: "invalid_client" } });
  const jwt = await introspect(p, await p.jwtAccessToken("alice"));
  t.match(jwt, { status: 400, body: { error: "unsupported_token_type" } }, "oidc-provider refuses to introspect JWT access tokens");
  t.same(p.serverErrors, []);
});

t.test("rotateKeys restarts on the same port with a new signing key; keepOld decides the old key's fate", async (t) => {
  const p = await provider(t);
  const { issuer } = p;
  const jwks = createRemoteJWKSet(new URL(p.jwksUri), { cooldownDuration: 0 });
  const options = { issuer: p.issuer, audience: p.audience, typ: "at+jwt" };
  const firstKid = p.currentKid;
  const first = await p.jwtAccessToken("alice");
  const opaque = await p.opaqueAccessToken("alice");
  await jwtVerify(first, jwks, options);

  const { newKid } = await p.rotateKeys({ keepOld: true });
  t.not(newKid, firstKid);
  t.equal(p.currentKid, newKid);
  t.equal(p.issuer, issuer);
  const second = await p.jwtAccessToken("alice");
  t.equal(decodeProtectedHeader(second).kid, newKid);
  t.equal((await jwtVerify(second, jwks, options)).protectedHeader.kid, newKid, "the cached JWKS refetches on an unknown kid");
  await jwtVerify(first, jwks, options);
  const published = (await (await fetch(p.jwksUri)).json()) as { keys: { kid: string; d?: string }[] };
  t.same(published.keys.map((k) => k.kid), [newKid, firstKid]);
  t.notOk(published.keys.some((k) => "d" in k), "only public parts are published");
  t.equal((await introspect(p, opaque)).body.active, true, "opaque tokens survive the restart");

  const { newKid: thirdKid } = await p.rotateKeys({ keepOld: false });
  const third = await p.jwtAccessToken("alice");
  t.equal((await jwtVerify(third, jwks, options)).protectedHeader.kid, thirdKid);
  const fresh = createRemoteJWKSet(new URL(p.jwksUri));
  await t.rejects(jwtVerify(first, fresh, options), { code: "ERR_JWKS_NO_MATCHING_KEY" }, "a dropped key no longer verifies");
  await t.rejects(jwtVerify(second, fresh, options), { code: "ERR_JWKS_NO_MATCHING_KEY" });
  t.same(p.serverErrors, []);
});

t.test("stop closes the port and restart serves again on the same port", async (t) => {
  const p = await provider(t);
  const before = await p.opaqueAccessToken("alice");
  t.equal(await probe(p.jwksUri), 200);
  await p.stop();
  t.equal(await probe(p.jwksUri), "ECONNREFUSED");
  await t.rejects(p.jwtAccessToken("alice"), "no tokens while it is down");
  await p.stop(); // idempotent
  await p.restart();
  t.equal(await probe(p.jwksUri), 200);
  const jwks = createRemoteJWKSet(new URL(p.jwksUri));
  await jwtVerify(await p.jwtAccessToken("alice"), jwks, { issuer: p.issuer, audience: p.audience });
  t.equal((await introspect(p, before)).body.active, true);
});
