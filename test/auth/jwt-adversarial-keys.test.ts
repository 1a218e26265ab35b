/**
 * Adversarial suite for the JWT authenticator, part 2: where the verification key comes from. Tokens that name
 * their own key (jwk, jku, x5u, x5c), kid injection and floods against the JWKS cooldown, keys of another
 * issuer, symmetric keys in a JWKS, and a JWKS endpoint that fails, hangs or was never up. Every JWKS is a
 * real HTTP server on 127.0.0.1 whose requests are counted.
 */
import t, { type Test } from "tap";
import { createHmac, randomBytes, randomUUID } from "node:crypto";
import { createServer } from "node:http";
import type { AddressInfo } from "node:net";
import { Writable } from "node:stream";
import { exportJWK, exportSPKI, generateKeyPair, SignJWT, type CryptoKey, type JWK } from "jose";
import { stringify } from "yaml";
import { JwtAuthenticator } from "../../src/auth/jwt.ts";
import { extractCredential } from "../../src/auth/credential.ts";
import type { Principal } from "../../src/auth/principal.ts";
import { parsePolicy } from "../../src/config/load.ts";
import type { JwtAuthenticatorConfig } from "../../src/config/authenticators.ts";
import type { Clock } from "../../src/clock.ts";
import { Metrics } from "../../src/observe/metrics.ts";
import { createLogger } from "../../src/observe/audit.ts";
import { TollgateError } from "../../src/proxy/errors.ts";

const AUD = "api://tollgate";
const T0 = Date.parse("2026-06-01T00:00:00Z");
const S0 = T0 / 1000;
const fixedClock: Clock = { now: () => T0 };

interface JwksServer {
  url: string;
  hits: number;
  /** What the endpoint serves: a key set, or a raw body; `status` and `hang` simulate outages. */
  keys: unknown[];
  body: string | undefined;
  status: number;
  hang: boolean;
  close(): Promise<void>;
}

async function serveJwks(keys: unknown[]): Promise<JwksServer> {
  const state = { hits: 0, keys, body: undefined as string | undefined, status: 200, hang: false };
  const server = createServer((_req, res) => {
    state.hits++;
    if (state.hang) return;
    res.writeHead(state.status, { "content-type": "application/json" }).end(state.body ?? JSON.stringify({ keys: state.keys }));
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const url = `http://127.0.0.1:${(server.address() as AddressInfo).port}/jwks`;
  const close = () => new Promise<void>((resolve) => (server.closeAllConnections(), server.close(() => resolve())));
  t.teardown(close);
  return Object.assign(state, { url, close });
}

/** An issuer with an RSA and an EC key (each with a kid) behind its own JWKS server. */
async function makeIssuer(iss: string, tag: string) {
  const rsa = await generateKeyPair("RS256");
  const ec = await generateKeyPair("ES256");
  const rsaJwk: JWK = { ...(await exportJWK(rsa.publicKey)), kid: `${tag}-rsa`, use: "sig" };
  const ecJwk: JWK = { ...(await exportJWK(ec.publicKey)), kid: `${tag}-ec`, use: "sig" };
  return { iss, rsa, ec, rsaKid: `${tag}-rsa`, ecKid: `${tag}-ec`, rsaJwk, ecJwk, jwks: await serveJwks([rsaJwk, ecJwk]) };
}
type Issuer = Awaited<ReturnType<typeof makeIssuer>>;

const A = await makeIssuer("https://issuer-a.example.com", "a");
const B = await makeIssuer("https://issuer-b.example.com", "b");
const attacker = await generateKeyPair("RS256");
const attackerJwk: JWK = { ...(await exportJWK(attacker.publicKey)), kid: "evil" };
const evil = await serveJwks([attackerJwk]); // what jku / x5u point at: it must never be asked

const b64u = (v: unknown) => Buffer.from(typeof v === "string" ? v : JSON.stringify(v)).toString("base64url");

/** A compact JWS built by hand, so a header can carry anything; RS256/ES256 by key type, or HMAC. */
async function forge(header: Record<string, unknown>, claims: unknown, signer: CryptoKey | { hmac: Buffer }): Promise<string> {
  const input = `${b64u(header)}.${b64u(claims)}`;
  const sig =
    "hmac" in signer
      ? createHmac("sha256", signer.hmac).update(input).digest()
      : Buffer.from(await crypto.subtle.sign(signer.algorithm.name === "ECDSA" ? { name: "ECDSA", hash: "SHA-256" } : { name: signer.algorithm.name }, signer, Buffer.from(input)));
  return `${input}.${sig.toString("base64url")}`;
}

const claims = (over: Record<string, unknown> = {}) => ({ iss: A.iss, sub: "alice", aud: AUD, iat: S0, exp: S0 + 3 * 3600, jti: randomUUID(), ...over });
const goodToken = (issuer: Issuer = A, over: Record<string, unknown> = {}) =>
  new SignJWT(claims({ iss: issuer.iss, ...over })).setProtectedHeader({ alg: "RS256", kid: issuer.rsaKid }).sign(issuer.rsa.privateKey);
/** An attacker's token for issuer A: its own key, any header. */
const evilToken = (header: Record<string, unknown>, over: Record<string, unknown> = {}) => forge({ alg: "RS256", ...header }, claims(over), attacker.privateKey);

const entry = (issuer: { iss: string }, jwksUri: string, extra: Record<string, unknown> = {}) => ({ issuer: issuer.iss, jwksUri, audiences: [AUD], algorithms: ["RS256", "ES256"], ...extra });

function jwtConfig(auth: Record<string, unknown>): JwtAuthenticatorConfig {
  const yaml = stringify({
    version: 1,
    upstreams: { llm: { url: "http://127.0.0.1:1" } },
    authenticators: [{ name: "corp", type: "jwt", ...auth }],
    routes: [{ name: "r", paths: ["/x"], upstream: "llm", allow: [{ authenticated: true }] }],
  });
  const config = parsePolicy(yaml, "policy.yaml", {}).authenticators[0]!;
  if (config.type !== "jwt") throw new Error("expected a jwt authenticator");
  return config;
}

function build(auth: Record<string, unknown>, clock: Clock = fixedClock, config?: (c: JwtAuthenticatorConfig) => JwtAuthenticatorConfig) {
  const metrics = new Metrics({ defaultMetrics: false });
  const sink = new Writable({ write: (_c, _e, cb) => cb() });
  const parsed = jwtConfig(auth);
  return { auth: new JwtAuthenticator(config ? config(parsed) : parsed, { clock, metrics, logger: createLogger(sink as never, "silent") }), metrics };
}

const tryAuth = async (a: JwtAuthenticator, token: string): Promise<Principal | undefined | TollgateError> => {
  try {
    return await a.authenticate({ credential: extractCredential({ authorization: "Bearer " + token }), headers: {}, remoteAddress: "127.0.0.1" });
  } catch (err) {
    if (err instanceof TollgateError) return err;
    throw err;
  }
};
const show = (r: unknown) => (r instanceof TollgateError ? `refused ${r.reason}` : r === undefined ? "undefined (not ours)" : `PRINCIPAL ${(r as Principal).id}`);

async function refused(t: Test, a: JwtAuthenticator, token: string, code: string, detail: string | RegExp, what: string): Promise<TollgateError | undefined> {
  const r = await tryAuth(a, token);
  t.ok(r instanceof TollgateError, `${what}: refused, not a principal (got ${show(r)})`);
  t.match(r, { code, detail }, `${what}: ${code} / ${String(detail)} (got ${show(r)})`);
  return r instanceof TollgateError ? r : undefined;
}
async function accepted(t: Test, a: JwtAuthenticator, token: string, what: string): Promise<void> {
  const r = await tryAuth(a, token);
  t.match(r, { id: "alice", method: "jwt" }, `${what}: accepted (got ${show(r)})`);
}

/** A mutable clock for one test. */
function testClock(): { t: number; clock: Clock } {
  const c: { t: number; clock: Clock } = { t: T0, clock: { now: () => c.t } };
  return c;
}

t.test("tokens that name their own key (jwk, jku, x5u, x5c) are refused and never followed", async (t) => {
  const { auth } = build({ issuers: [entry(A, A.jwks.url)] });
  const spki = (await exportSPKI(attacker.publicKey)).replace(/-----[^-]+-----|\s/g, "");
  for (const kid of ["evil", A.rsaKid]) {
    await refused(t, auth, await evilToken({ kid, jwk: attackerJwk }), "invalid_token", "embedded_key", `embedded jwk, kid ${kid}`);
    await refused(t, auth, await evilToken({ kid, jku: evil.url }), "invalid_token", "embedded_key", `jku → attacker JWKS, kid ${kid}`);
    await refused(t, auth, await evilToken({ kid, x5u: evil.url }), "invalid_token", "embedded_key", `x5u → attacker, kid ${kid}`);
    await refused(t, auth, await evilToken({ kid, jku: A.jwks.url }), "invalid_token", "embedded_key", `jku naming the issuer's own JWKS, kid ${kid}`);
  }
  await refused(t, auth, await evilToken({ jwk: attackerJwk }), "invalid_token", "embedded_key", "embedded jwk without kid");
  await refused(t, auth, await evilToken({ kid: "evil", jku: null }), "invalid_token", "embedded_key", "jku: null");
  // x5c is not followed either: the key still comes from the issuer's JWKS by kid, so the attacker's key is never used.
  await refused(t, auth, await evilToken({ kid: "evil", x5c: [spki] }), "invalid_token", /^(embedded_key|unknown_kid)$/, "x5c with the attacker's cert-less key, attacker kid");
  await refused(t, auth, await evilToken({ kid: A.rsaKid, x5c: [spki] }), "invalid_token", /^(embedded_key|signature)$/, "x5c with the attacker's key, A's kid");
  await refused(t, auth, await evilToken({ x5c: [spki] }), "invalid_token", /^(embedded_key|signature)$/, "x5c with the attacker's key, no kid");
  await new Promise((r) => setTimeout(r, 50));
  t.equal(evil.hits, 0, "the attacker's JWKS server received no request");
});

t.test("kid injection: path, SQL, 10 KB, non-string and foreign kids are unknown keys; the JWKS is asked at most once more", async (t) => {
  const I = await makeIssuer(A.iss, "i");
  const { auth } = build({ issuers: [entry(I, I.jwks.url)] });
  await accepted(t, auth, await goodToken(I), "control");
  t.equal(I.jwks.hits, 1, "one initial fetch");
  const kids: unknown[] = ["../../etc/passwd", "' OR 1=1 --", "x".repeat(10 * 1024), "\u0000", "", `${I.rsaKid} `, I.rsaKid.toUpperCase(), "__proto__", "constructor", 123, null, { $ne: null }, [I.rsaKid]];
  for (const kid of kids) {
    const token = await evilToken({ kid });
    t.ok(token.length < 16384, "under maxTokenBytes, so the kid itself is what is judged");
    await refused(t, auth, token, "invalid_token", "unknown_kid", `kid ${JSON.stringify(kid).slice(0, 40)}`);
  }
  await refused(t, auth, await forge({ alg: "RS256", kid: B.rsaKid }, claims({ iss: I.iss }), B.rsa.privateKey), "invalid_token", "unknown_kid", "issuer B's kid and key on an issuer-A token");
  await refused(t, auth, await forge({ alg: "ES256", kid: B.ecKid }, claims({ iss: I.iss }), B.ec.privateKey), "invalid_token", "unknown_kid", "issuer B's EC kid and key on an issuer-A token");
  t.ok(I.jwks.hits <= 2, `at most one refetch within the cooldown (JWKS requests: ${I.jwks.hits})`);
  await accepted(t, auth, await goodToken(I), "a valid token still verifies");
});

t.test("a flood of 200 random kids: at most one refetch per cooldown, good keys stay", async (t) => {
  const I = await makeIssuer(A.iss, "f");
  const c = testClock();
  const { auth, metrics } = build({ issuers: [entry(I, I.jwks.url)] }, c.clock); // cooldown 30s by default
  await accepted(t, auth, await goodToken(I), "control before the flood");
  const flood = await Promise.all(Array.from({ length: 200 }, () => evilToken({ kid: randomBytes(12).toString("base64url") })));
  const results = await Promise.all(flood.map((token) => tryAuth(auth, token)));
  t.equal(results.filter((r) => r instanceof TollgateError && r.code === "invalid_token" && r.detail === "unknown_kid").length, 200, "all 200 refused as unknown_kid");
  t.ok(I.jwks.hits <= 2, `JWKS requests: ${I.jwks.hits} (initial + at most one refetch)`);
  await accepted(t, auth, await goodToken(I), "a fresh valid token right after the flood");

  c.t += 10_000;
  for (const token of flood.slice(0, 50)) await tryAuth(auth, token);
  t.ok(I.jwks.hits <= 2, "still within the cooldown 10s later: no refetch");
  c.t += 21_000;
  const before = I.jwks.hits;
  await Promise.all(flood.slice(50, 100).map((token) => tryAuth(auth, token)));
  t.equal(I.jwks.hits, before + 1, "after the cooldown, one refetch for the whole burst");

  // A refetch that fails (IdP error) keeps the good keys.
  I.jwks.status = 500;
  c.t += 31_000;
  await refused(t, auth, await evilToken({ kid: "rotated?" }), "invalid_token", "unknown_kid", "unknown kid while the IdP errors");
  await accepted(t, auth, await goodToken(I), "good keys survive a failed refetch");
  const fetches = (await metrics.jwksFetches.get()).values;
  t.ok(fetches.some((v) => v.labels.result === "failure" && v.value === 1), "the failed refetch is counted");
});

t.test("a flood of unknown kids on a cold cache: one initial fetch and at most one refetch", async (t) => {
  const I = await makeIssuer(A.iss, "cold");
  const { auth } = build({ issuers: [entry(I, I.jwks.url)] });
  const results = await Promise.all(Array.from({ length: 200 }, async () => tryAuth(auth, await evilToken({ kid: randomUUID() }))));
  t.equal(results.filter((r) => r instanceof TollgateError && r.detail === "unknown_kid").length, 200, "all refused as unknown_kid");
  t.ok(I.jwks.hits <= 2, `JWKS requests: ${I.jwks.hits}`);
  await accepted(t, auth, await goodToken(I), "a valid token right after");
});

t.test("a key of issuer B is never accepted for issuer A (and B's JWKS is not consulted for A's tokens)", async (t) => {
  const { auth } = build({ issuers: [entry(A, A.jwks.url), entry(B, B.jwks.url)] });
  const bHits = B.jwks.hits;
  await refused(t, auth, await forge({ alg: "RS256", kid: B.rsaKid }, claims(), B.rsa.privateKey), "invalid_token", "unknown_kid", "iss A, B's kid, signed by B");
  await refused(t, auth, await forge({ alg: "RS256", kid: A.rsaKid }, claims(), B.rsa.privateKey), "invalid_token", "signature", "iss A, A's kid, signed by B");
  await refused(t, auth, await forge({ alg: "RS256" }, claims(), B.rsa.privateKey), "invalid_token", "signature", "iss A, no kid, signed by B");
  await refused(t, auth, await forge({ alg: "ES256", kid: A.ecKid }, claims(), B.ec.privateKey), "invalid_token", "signature", "iss A, A's EC kid, signed by B's EC key");
  await refused(t, auth, await forge({ alg: "RS256", kid: A.ecKid }, claims(), A.rsa.privateKey), "invalid_token", "unknown_kid", "RS256 naming A's EC kid");
  const psychic = (await forge({ alg: "ES256", kid: A.ecKid }, claims(), B.ec.privateKey)).replace(/[^.]+$/, Buffer.alloc(64).toString("base64url"));
  await refused(t, auth, psychic, "invalid_token", "signature", "ES256 with an all-zero (r = s = 0) signature");
  t.equal(B.jwks.hits, bHits, "B's JWKS untouched by issuer-A tokens");
  await refused(t, auth, await forge({ alg: "RS256", kid: A.rsaKid }, claims({ iss: B.iss }), A.rsa.privateKey), "invalid_token", "unknown_kid", "iss B, A's kid, signed by A");
  await accepted(t, auth, await goodToken(B, { sub: "alice" }), "control: B's own token");
});

t.test("symmetric (oct) keys in a JWKS are never used", async (t) => {
  const secret = randomBytes(32);
  const octJwk = { kty: "oct", kid: "shared", k: secret.toString("base64url") };
  const mixed = await serveJwks([octJwk, { ...octJwk, kid: "shared-rs", alg: "RS256" }, A.rsaJwk]);
  const hs = await forge({ alg: "HS256", kid: "shared" }, claims(), { hmac: secret });
  await refused(t, build({ issuers: [entry(A, mixed.url)] }).auth, hs, "invalid_token", "alg", "HS256 with the oct key's kid");
  // Even if HS256 slipped past the policy schema, the JWKS never yields a symmetric key.
  const widened = build({ issuers: [entry(A, mixed.url)] }, fixedClock, (c) => ({ ...c, issuers: c.issuers.map((i) => ({ ...i, algorithms: [...i.algorithms, "HS256" as const] })) })).auth;
  await refused(t, widened, hs, "invalid_token", "unsupported", "HS256 with HS256 forced into the config");
  await refused(t, widened, await evilToken({ kid: "shared-rs" }), "invalid_token", "unknown_kid", "RS256 naming an oct key that claims alg RS256");
  await accepted(t, widened, await goodToken(A), "control: A's RSA key in the same set");

  const onlyOct = await serveJwks([octJwk]);
  await refused(t, build({ issuers: [entry(A, onlyOct.url)] }).auth, await goodToken(A), "auth_unavailable", "jwks_unavailable", "a JWKS of only oct keys is no key set");
  const encOnly = await serveJwks([{ ...A.rsaJwk, use: "enc" }]);
  await refused(t, build({ issuers: [entry(A, encOnly.url)] }).auth, await goodToken(A), "auth_unavailable", "jwks_unavailable", "an encryption-only key is no signing key");
});

t.test("JWKS endpoint down after a good fetch: stale keys serve for staleFor, then 503 jwks_stale", async (t) => {
  const I = await makeIssuer(A.iss, "s");
  const c = testClock();
  const { auth } = build({ issuers: [entry(I, I.jwks.url)], jwks: { maxAge: "10m", staleFor: "1h", cooldown: "30s" } }, c.clock);
  await accepted(t, auth, await goodToken(I), "fresh keys");
  await I.jwks.close();
  c.t = T0 + 11 * 60_000;
  await accepted(t, auth, await goodToken(I), "11 min (past maxAge, endpoint down)");
  await new Promise((r) => setTimeout(r, 50)); // the background refresh fails meanwhile
  c.t = T0 + 69 * 60_000;
  await accepted(t, auth, await goodToken(I), "69 min (within maxAge + staleFor)");
  await refused(t, auth, await evilToken({ kid: "new" }), "invalid_token", "unknown_kid", "unknown kid in the stale window");
  c.t = T0 + 71 * 60_000;
  const err = await refused(t, auth, await goodToken(I), "auth_unavailable", "jwks_stale", "71 min (past maxAge + staleFor)");
  t.equal(err?.status, 503);
  t.match(err?.headers, { "retry-after": /^\d+$/ });
  c.t = T0 + 5 * 3600_000;
  await refused(t, auth, await goodToken(I, { exp: S0 + 6 * 3600 }), "auth_unavailable", "jwks_stale", "hours later, still down");
});

t.test("an idle gateway with a healthy JWKS endpoint: the first token after maxAge + staleFor is verified, not refused", async (t) => {
  const I = await makeIssuer(A.iss, "idle");
  const c = testClock();
  const { auth } = build({ issuers: [entry(I, I.jwks.url)], jwks: { maxAge: "10m", staleFor: "1h" } }, c.clock);
  await accepted(t, auth, await goodToken(I), "fresh keys");
  c.t = T0 + 71 * 60_000; // no request for 71 minutes (a night, a weekend); the endpoint never failed
  await accepted(t, auth, await goodToken(I), "first request after the idle period");
  t.equal(I.jwks.hits, 2, "the key set was refetched");
});

t.test("JWKS endpoint down, failing, hanging or garbled from the start: 503 jwks_unavailable, never accepted", async (t) => {
  const closed = createServer();
  await new Promise<void>((resolve) => closed.listen(0, "127.0.0.1", resolve));
  const deadUrl = `http://127.0.0.1:${(closed.address() as AddressInfo).port}/jwks`;
  await new Promise((resolve) => closed.close(resolve));
  const dead = build({ issuers: [entry(A, deadUrl)] }).auth;
  for (const token of [await goodToken(A), await evilToken({ kid: A.rsaKid }), await evilToken({ kid: "x" })]) {
    const err = await refused(t, dead, token, "auth_unavailable", "jwks_unavailable", "connection refused");
    t.equal(err?.status, 503);
  }

  const failing = await serveJwks([A.rsaJwk]);
  failing.status = 500;
  const c = testClock();
  const auth = build({ issuers: [entry(A, failing.url)] }, c.clock).auth;
  await refused(t, auth, await goodToken(A), "auth_unavailable", "jwks_unavailable", "500 from the JWKS");
  await refused(t, auth, await goodToken(A), "auth_unavailable", "jwks_unavailable", "again, within the cooldown");
  t.equal(failing.hits, 1, "an outage is not met with a storm: no second fetch within the cooldown");
  failing.status = 200;
  c.t += 31_000;
  await accepted(t, auth, await goodToken(A), "after the cooldown the endpoint is retried and recovers");

  for (const [what, body] of [["HTML", "<html>login</html>"], ["keys not an array", '{"keys":"nope"}'], ["empty key set", '{"keys":[]}'], ["JSON null", "null"], ["keys without kty", '{"keys":[{"kid":"a-rsa","n":"AQAB","e":"AQAB"}]}']] as const) {
    const garbled = await serveJwks([]);
    garbled.body = body;
    await refused(t, build({ issuers: [entry(A, garbled.url)] }).auth, await goodToken(A), "auth_unavailable", "jwks_unavailable", `JWKS body: ${what}`);
  }

  const hanging = await serveJwks([A.rsaJwk]);
  hanging.hang = true;
  const started = Date.now();
  await refused(t, build({ issuers: [entry(A, hanging.url)], jwks: { timeout: "300ms" } }).auth, await goodToken(A), "auth_unavailable", "jwks_unavailable", "a JWKS that never answers");
  t.ok(Date.now() - started < 3000, `gives up after the configured timeout (${Date.now() - started} ms)`);
});
