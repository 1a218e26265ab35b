/**
 * Adversarial suite for the JWT authenticator, part 1: what an attacker can put in a token's header and claims
 * (alg none, RS→HS confusion, crit, exp/nbf/aud/iss/typ tricks, oversized and garbage tokens), first against
 * JwtAuthenticator directly, then through a whole Tollgate (status, WWW-Authenticate, audit reason, failure
 * metric, no token in logs or metrics). Key and JWKS attacks are in jwt-adversarial-keys.test.ts.
 */
import t, { type Test } from "tap";
import { createHmac, randomUUID } from "node:crypto";
import { createServer, type Server } from "node:http";
import { connect, type AddressInfo } from "node:net";
import { Writable } from "node:stream";
import { exportJWK, exportSPKI, generateKeyPair, SignJWT, type CryptoKey, type JWK } from "jose";
import { request } from "undici";
import { stringify } from "yaml";
import { JwtAuthenticator } from "../../src/auth/jwt.ts";
import { extractCredential } from "../../src/auth/credential.ts";
import type { Principal } from "../../src/auth/principal.ts";
import { parsePolicy, ConfigError } from "../../src/config/load.ts";
import type { JwtAuthenticatorConfig } from "../../src/config/authenticators.ts";
import { Metrics } from "../../src/observe/metrics.ts";
import { createLogger } from "../../src/observe/audit.ts";
import { TollgateError } from "../../src/proxy/errors.ts";
import { startHarness, SERVER_BLOCK, until, type Harness } from "../helpers/harness.ts";

// ---- fixture: two issuers, each with RSA + EC keys behind its own JWKS server --------------------------------

const AUD = "api://tollgate";
const T0 = Math.floor(Date.now() / 1000) * 1000; // the injected clock; e2e tokens built at T0 stay valid 10 minutes
const S0 = T0 / 1000;
const clock = { now: () => T0 };

interface JwksServer {
  url: string;
  hits: number;
  close(): Promise<void>;
}

async function serveJwks(keys: JWK[]): Promise<JwksServer> {
  const state = { hits: 0 };
  const server: Server = createServer((_req, res) => {
    state.hits++;
    res.writeHead(200, { "content-type": "application/json" }).end(JSON.stringify({ keys }));
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const url = `http://127.0.0.1:${(server.address() as AddressInfo).port}/jwks`;
  return Object.assign(state, { url, close: () => new Promise<void>((resolve) => (server.closeAllConnections(), server.close(() => resolve()))) });
}

async function makeIssuer(iss: string, tag: string) {
  const rsa = await generateKeyPair("RS256");
  const ec = await generateKeyPair("ES256");
  const rsaJwk: JWK = { ...(await exportJWK(rsa.publicKey)), kid: `${tag}-rsa`, use: "sig" };
  const ecJwk: JWK = { ...(await exportJWK(ec.publicKey)), kid: `${tag}-ec`, use: "sig" };
  const jwks = await serveJwks([rsaJwk, ecJwk]);
  return { iss, rsa, ec, rsaKid: `${tag}-rsa`, ecKid: `${tag}-ec`, rsaJwk, jwks };
}
type Issuer = Awaited<ReturnType<typeof makeIssuer>>;

const A = await makeIssuer("https://issuer-a.example.com", "a");
const B = await makeIssuer("https://issuer-b.example.com", "b");
const attacker = await generateKeyPair("RS256");
t.teardown(() => Promise.all([A.jwks.close(), B.jwks.close()]));

const b64u = (v: unknown) => Buffer.from(typeof v === "string" ? v : JSON.stringify(v)).toString("base64url");

/** A compact JWS built by hand (no library checks on the way): RSA/EC private key, HMAC secret, or none. */
async function forge(header: Record<string, unknown>, claims: unknown, signer: CryptoKey | { hmac: string | Buffer } | "none"): Promise<string> {
  const input = `${b64u(header)}.${b64u(claims)}`;
  let sig = Buffer.alloc(0);
  if (signer !== "none" && "hmac" in signer) sig = createHmac("sha256", signer.hmac).update(input).digest();
  else if (signer !== "none") {
    const algorithm = signer.algorithm.name === "ECDSA" ? { name: "ECDSA", hash: "SHA-256" } : { name: signer.algorithm.name };
    sig = Buffer.from(await crypto.subtle.sign(algorithm, signer, Buffer.from(input)));
  }
  return `${input}.${sig.toString("base64url")}`;
}

const claims = (over: Record<string, unknown> = {}) => ({
  iss: A.iss, sub: "alice", aud: AUD, email: "alice@example.com", groups: ["eng", "ml"], roles: ["reader"], scope: "chat models:read",
  iat: S0, exp: S0 + 600, jti: randomUUID(), ...over,
});

/** A well-formed token the way an IdP would mint it (jose SignJWT), RS256 by default. */
const goodToken = (issuer: Issuer = A, over: Record<string, unknown> = {}, ec = false) =>
  new SignJWT(claims({ iss: issuer.iss, ...over }))
    .setProtectedHeader({ alg: ec ? "ES256" : "RS256", kid: ec ? issuer.ecKid : issuer.rsaKid, typ: "at+jwt" })
    .sign(ec ? issuer.ec.privateKey : issuer.rsa.privateKey);

/** RS256 header with A's kid, hand-signed with `key` (A's private key unless said otherwise). */
const rs = (claimSet: unknown, header: Record<string, unknown> = {}, key: CryptoKey = A.rsa.privateKey) => forge({ alg: "RS256", kid: A.rsaKid, ...header }, claimSet, key);

const issuerEntry = (issuer: Issuer, extra: Record<string, unknown> = {}) => ({ issuer: issuer.iss, jwksUri: issuer.jwks.url, audiences: [AUD], algorithms: ["RS256", "ES256"], ...extra });
const PRINCIPAL = { roleMappings: [{ groups: ["eng"], roles: ["engineer"] }] };

/** The authenticator config exactly as the policy loader produces it from YAML. */
function jwtConfig(auth: Record<string, unknown>): JwtAuthenticatorConfig {
  const yaml = stringify({
    version: 1,
    upstreams: { llm: { url: "http://127.0.0.1:1" } },
    authenticators: [{ name: "corp", type: "jwt", principal: PRINCIPAL, ...auth }],
    routes: [{ name: "r", paths: ["/x"], upstream: "llm", allow: [{ authenticated: true }] }],
  });
  const config = parsePolicy(yaml, "policy.yaml", {}).authenticators[0]!;
  if (config.type !== "jwt") throw new Error("expected a jwt authenticator");
  return config;
}

function build(auth: Record<string, unknown> = { issuers: [issuerEntry(A), issuerEntry(B)] }) {
  const metrics = new Metrics({ defaultMetrics: false });
  const sink = new Writable({ write: (_c, _e, cb) => cb() });
  return { auth: new JwtAuthenticator(jwtConfig(auth), { clock, metrics, logger: createLogger(sink as never, "silent") }), metrics };
}

const { auth, metrics } = build();
const tryAuth = async (a: JwtAuthenticator, token: string): Promise<Principal | undefined | TollgateError> => {
  try {
    return await a.authenticate({ credential: extractCredential({ authorization: "Bearer " + token }), headers: {}, remoteAddress: "127.0.0.1" });
  } catch (err) {
    if (err instanceof TollgateError) return err;
    throw err;
  }
};
const show = (r: unknown) => (r instanceof TollgateError ? `refused ${r.reason}` : r === undefined ? "undefined (not ours)" : `PRINCIPAL ${(r as Principal).id}`);

async function refused(t: Test, token: string, code: string, detail: string | RegExp, what: string, a = auth): Promise<void> {
  const r = await tryAuth(a, token);
  t.ok(r instanceof TollgateError, `${what}: refused, not a principal (got ${show(r)})`);
  t.match(r, { code, detail }, `${what}: ${code} / ${String(detail)} (got ${show(r)})`);
}

async function notOurs(t: Test, token: string, what: string, a = auth): Promise<void> {
  const r = await tryAuth(a, token);
  t.equal(r, undefined, `${what}: not this authenticator's token (got ${show(r)})`);
}

// ---- direct: JwtAuthenticator ---------------------------------------------------------------------------------

t.test("positive control: a well-formed token yields the mapped principal; a repeat hits the verified-token cache", async (t) => {
  const token = await goodToken(A);
  const p = await tryAuth(auth, token);
  t.match(p, { id: "alice", kind: "user", email: "alice@example.com", user: "alice@example.com", groups: ["eng", "ml"], scopes: ["chat", "models:read"], method: "jwt", authenticator: "corp" });
  t.same([...(p as Principal).roles].sort(), ["engineer", "reader"], "roles from the claim plus the roleMapping (group eng → engineer)");
  t.match(await tryAuth(auth, await goodToken(A, {}, true)), { id: "alice", method: "jwt" }, "ES256 with A's EC key");
  t.match(await tryAuth(auth, await goodToken(B, { sub: "bob" })), { id: "bob" }, "issuer B with its own key");

  const hits = async () => (await metrics.tokenCache.get()).values.find((v) => v.labels.authenticator === "corp" && v.labels.result === "hit")?.value ?? 0;
  const before = await hits();
  t.match(await tryAuth(auth, token), { id: "alice" });
  t.equal(await hits(), before + 1, "tollgate_token_cache_total{authenticator=corp,result=hit} +1");
  const repeat = auth.authenticate({ credential: extractCredential({ authorization: "Bearer " + token }), headers: {}, remoteAddress: "127.0.0.1" });
  t.notOk(repeat instanceof Promise, "a cached token is answered at once, without a promise");
  t.match(repeat, { id: "alice" });
  const fresh = auth.authenticate({ credential: extractCredential({ authorization: "Bearer " + (await goodToken(A, { sub: "dora" })) }), headers: {}, remoteAddress: "127.0.0.1" });
  t.ok(fresh instanceof Promise, "a token not in the cache is verified, asynchronously");
  t.match(await fresh, { id: "dora" });
});

t.test("alg none, in every case, with and without a signature, is refused (invalid_token:alg)", async (t) => {
  for (const alg of ["none", "None", "NONE", "nOnE"]) {
    const unsigned = await forge({ alg, typ: "JWT" }, claims(), "none");
    t.match(unsigned, /\.$/, "empty signature segment");
    await refused(t, unsigned, "invalid_token", "alg", `alg ${alg}, empty signature`);
    await refused(t, unsigned + "c2lnbmF0dXJl", "invalid_token", "alg", `alg ${alg}, junk signature`);
    await refused(t, await forge({ alg, kid: A.rsaKid }, claims(), A.rsa.privateKey), "invalid_token", "alg", `alg ${alg}, real RSA signature`);
  }
  await refused(t, await forge({ typ: "JWT" }, claims(), "none"), "invalid_token", "alg", "no alg at all");
  await refused(t, await forge({ alg: "" }, claims(), "none"), "invalid_token", "alg", "alg empty");
  // String(["RS256"]) is "RS256": the allow-list check passes, so jose's own type check must catch it.
  await refused(t, await forge({ alg: ["RS256"], kid: A.rsaKid }, claims(), A.rsa.privateKey), "invalid_token", "malformed", "alg as an array");
});

t.test("RS→HS confusion: HS256 signed with the issuer's RSA public key is refused; HS* in a policy fails the load", async (t) => {
  const pem = await exportSPKI(A.rsa.publicKey);
  for (const [what, secret] of [["PEM", pem], ["PEM without trailing newline", pem.trim()], ["JWK JSON", JSON.stringify(A.rsaJwk)], ["JWK n", A.rsaJwk.n!]] as const) {
    for (const header of [{ alg: "HS256", kid: A.rsaKid }, { alg: "HS256" }, { alg: "hs256", kid: A.rsaKid }]) {
      await refused(t, await forge(header, claims(), { hmac: secret }), "invalid_token", "alg", `HS256 with the ${what} as secret, header ${JSON.stringify(header)}`);
    }
  }
  const policy = (algorithms: string) => `version: 1
upstreams: { llm: { url: "http://127.0.0.1:1" } }
authenticators:
  - name: corp
    type: jwt
    issuers:
      - issuer: https://issuer-a.example.com
        jwksUri: http://127.0.0.1:1/jwks
        audiences: ["${AUD}"]
        algorithms: ${algorithms}
routes: [{ name: r, paths: [/x], upstream: llm, allow: [{ authenticated: true }] }]
`;
  for (const algs of ["[RS256, HS256]", "[HS384]", "[HS512, ES256]", "[none]", "[RS256, None]"]) {
    const err = (() => { try { parsePolicy(policy(algs), "p.yaml", {}); return undefined; } catch (e) { return e; } })();
    t.ok(err instanceof ConfigError, `algorithms ${algs}: ConfigError`);
    t.match((err as ConfigError).problems[0], { file: "p.yaml", line: 10, path: /^authenticators\.0\.issuers\.0\.algorithms/ }, `algorithms ${algs}: names line 10`);
    t.match((err as Error).message, /^p\.yaml:10:\d+: authenticators\.0\.issuers\.0\.algorithms/);
  }
});

t.test("unknown or malformed crit is refused even with a genuine signature", async (t) => {
  await refused(t, await rs(claims(), { crit: ["exp2"], exp2: S0 + 60 }), "invalid_token", "unsupported", "crit [exp2] with exp2 present");
  await refused(t, await rs(claims(), { crit: ["exp2"] }), "invalid_token", /^(unsupported|malformed)$/, "crit [exp2] with exp2 absent");
  await refused(t, await rs(claims(), { crit: [] }), "invalid_token", "malformed", "crit []");
  await refused(t, await rs(claims(), { crit: "exp2", exp2: 1 }), "invalid_token", "malformed", "crit as a string");
  await refused(t, await rs(claims(), { crit: ["b64"], b64: false }), "invalid_token", "malformed", "crit b64:false (unencoded payload)");
});

t.test("exp and nbf are enforced with the configured leeway (30s); exp is required", async (t) => {
  await refused(t, await rs(claims({ exp: S0 - 31 })), "token_expired", "exp", "expired 31s ago (beyond leeway)");
  await refused(t, await rs(claims({ exp: S0 - 86400 })), "token_expired", "exp", "expired a day ago");
  t.match(await tryAuth(auth, await rs(claims({ exp: S0 - 29 }))), { id: "alice" }, "expired 29s ago (within leeway) is accepted");
  await refused(t, await rs(claims({ nbf: S0 + 31 })), "invalid_token", "claim_nbf", "nbf 31s ahead (beyond leeway)");
  t.match(await tryAuth(auth, await rs(claims({ nbf: S0 + 29 }))), { id: "alice" }, "nbf 29s ahead (within leeway) is accepted");
  await refused(t, await rs(claims({ exp: undefined })), "invalid_token", "claim_exp", "no exp");
  await refused(t, await rs(claims({ exp: String(S0 + 600) })), "invalid_token", "claim_exp", "exp as a string");
  await refused(t, await rs(claims({ exp: null })), "invalid_token", "claim_exp", "exp null");
  await refused(t, await rs(claims({ nbf: "0" })), "invalid_token", "claim_nbf", "nbf as a string");
});

t.test("aud: one matching member suffices; no match, wrong types and absence are refused", async (t) => {
  t.match(await tryAuth(auth, await rs(claims({ aud: ["api://other", AUD] }))), { id: "alice" }, "array with one matching member");
  await refused(t, await rs(claims({ aud: ["api://other", "api://third"] })), "invalid_token", "claim_aud", "array without a match");
  await refused(t, await rs(claims({ aud: "api://TOLLGATE" })), "invalid_token", "claim_aud", "different case");
  await refused(t, await rs(claims({ aud: AUD + "/" })), "invalid_token", "claim_aud", "trailing slash");
  for (const aud of [123, { x: 1 }, [1, 2], [[AUD]], { 0: AUD, length: 1 }, true, null, "", []]) {
    await refused(t, await rs(claims({ aud })), "invalid_token", "claim_aud", `aud ${JSON.stringify(aud)}`);
  }
  await refused(t, await rs(claims({ aud: undefined })), "invalid_token", "claim_aud", "no aud with audiences configured");
});

t.test("issuer look-alikes are never ours (and never a principal)", async (t) => {
  const variants = [A.iss + "/", "https://ISSUER-A.example.com", "HTTPS://issuer-a.example.com", "http://issuer-a.example.com", A.iss + "/extra",
    A.iss + "/../", ` ${A.iss}`, `${A.iss} `, `${A.iss}\n`, `${A.iss}\u0000`, A.iss + "?x=1", A.iss + "#", "https://issuer-a.example.com.evil.com", "https://evil.com/" + A.iss];
  for (const iss of variants) await notOurs(t, await rs(claims({ iss })), `iss ${JSON.stringify(iss)}`);
  for (const iss of [[A.iss], { iss: A.iss }, 1, null]) await notOurs(t, await rs(claims({ iss })), `iss ${JSON.stringify(iss)} (not a string)`);
  await notOurs(t, await rs(claims({ iss: undefined })), "no iss");
});

t.test("an ID token presented as an access token is refused", async (t) => {
  const idToken = async () => forge({ alg: "RS256", kid: A.rsaKid, typ: "JWT" }, claims({ aud: "client-123", nonce: "n-0S6_WzA2Mj", at_hash: "77QmUPtjPfzWtF2AnpK9RQ", auth_time: S0 - 5 }), A.rsa.privateKey);
  const strict = build({ issuers: [issuerEntry(A, { typ: "at+jwt", clientIds: ["client-123"] })] }).auth;
  await refused(t, await idToken(), "invalid_token", "claim_typ", "typ JWT when at+jwt is required", strict);
  await refused(t, await forge({ alg: "RS256", kid: A.rsaKid }, claims({ aud: "client-123", nonce: "n" }), A.rsa.privateKey), "invalid_token", "claim_typ", "no typ when at+jwt is required", strict);
  t.match(await tryAuth(strict, await goodToken(A, { client_id: "client-123" })), { id: "alice" }, "control: a real at+jwt access token passes the strict config");
  await refused(t, await idToken(), "invalid_token", "claim_aud", "without typ configured the audience check refuses it");
});

t.test("oversized tokens: maxTokenBytes (default 16384) refuses a 20 KiB token as too_large", async (t) => {
  const big = await goodToken(A, { pad: "x".repeat(20 * 1024) });
  t.ok(big.length > 20 * 1024);
  await refused(t, big, "invalid_token", "too_large", "20 KiB token");
  const small = build({ issuers: [issuerEntry(A)], maxTokenBytes: 1024 }).auth;
  await refused(t, await goodToken(A, { pad: "x".repeat(1024) }), "invalid_token", "too_large", "over a 1 KiB maxTokenBytes", small);
  t.match(await tryAuth(small, await goodToken(A)), { id: "alice" }, "control: a normal token under the same limit");
});

/** Shapes that must never become a principal. Each is left to the next method (undefined) → 401 in the chain. */
const GARBAGE: [string, () => Promise<string>][] = [
  ["a.b.c", async () => "a.b.c"],
  ["eyJ.eyJ.", async () => "eyJ.eyJ."],
  ["base64 of non-JSON", async () => `${b64u("not json at all")}.${b64u("nor this {")}.c2ln`],
  ["header JSON array", async () => rs(claims()).then((tok) => `${b64u([1, 2])}.${tok.split(".")[1]}.${tok.split(".")[2]}`)],
  ["header JSON string", async () => `${b64u('"RS256"')}.${b64u(claims())}.c2ln`],
  ["header JSON null", async () => `${b64u("null")}.${b64u(claims())}.c2ln`],
  ["payload an array", async () => forge({ alg: "RS256", kid: A.rsaKid }, [claims()], A.rsa.privateKey)],
  ["payload a number", async () => forge({ alg: "RS256", kid: A.rsaKid }, 42, A.rsa.privateKey)],
  ["payload invalid UTF-8", async () => `${b64u({ alg: "RS256", kid: A.rsaKid })}.${Buffer.from([0x7b, 0xff, 0xfe, 0x7d]).toString("base64url")}.c2ln`],
  ["four segments", async () => (await rs(claims())) + ".c2ln"],
  ["two segments", async () => (await rs(claims())).split(".").slice(0, 2).join(".")],
  ["five segments (JWE shape)", async () => `${b64u({ alg: "RSA-OAEP", enc: "A256GCM" })}.a2V5.aXY.${b64u(claims())}.dGFn`],
  ["base64 padding", async () => (await rs(claims())).replace(/\.([^.]*)$/, "==.$1")],
  ["standard-base64 '+' and '/'", async () => (await rs(claims())) + "+/"],
  ["non-base64url characters", async () => (await rs(claims())).replace(".", ".$")],
  ["embedded whitespace", async () => (await rs(claims())).replace(".", ". ")],
  ["non-ASCII characters", async () => (await rs(claims())).replace(".", ".é")],
];

t.test("garbage segments never become a principal", async (t) => {
  for (const [what, make] of GARBAGE) await notOurs(t, await make(), what);
});

// ---- e2e: the same attacks through a whole Tollgate ------------------------------------------------------------

t.test("through a real Tollgate: 401s with WWW-Authenticate, reasons in audit and metrics, tokens nowhere", async (t) => {
  const closed = createServer();
  await new Promise<void>((resolve) => closed.listen(0, "127.0.0.1", resolve));
  const deadJwks = `http://127.0.0.1:${(closed.address() as AddressInfo).port}/jwks`;
  await new Promise((resolve) => closed.close(resolve));
  const DOWN = "https://issuer-down.example.com";

  const h: Harness = await startHarness(`${SERVER_BLOCK}
upstreams:
  llm: { url: "\${UPSTREAM_URL}" }
authenticators:
  - name: corp
    type: jwt
    issuers:
      - { issuer: "${A.iss}", jwksUri: "${A.jwks.url}", audiences: ["${AUD}"], algorithms: [RS256, ES256] }
      - { issuer: "${DOWN}", jwksUri: "${deadJwks}", audiences: ["${AUD}"] }
    maxTokenBytes: 8192
    principal:
      roleMappings: [{ groups: [eng], roles: [engineer] }]
routes:
  - { name: models, methods: [GET], paths: [/v1/models], upstream: llm, allow: [{ roles: [engineer] }] }
`);
  t.teardown(() => h.stop());
  const tokens: string[] = [];
  let n = 0;
  const send = async (token: string) => {
    tokens.push(token);
    const id = `adv-${++n}`;
    const res = await request(`${h.url}/v1/models`, { headers: { authorization: `Bearer ${token}`, "x-request-id": id } });
    const body = await res.body.text();
    await until(() => h.audit().some((l) => l.requestId === id), 3000, `audit line ${id}`);
    return { status: res.statusCode, headers: res.headers, body, audit: h.audit().find((l) => l.requestId === id)! };
  };

  const good = await goodToken(A);
  const ok = await send(good);
  t.equal(ok.status, 200, "positive control through Tollgate");
  t.match(ok.audit, { principal: "alice", authMethod: "jwt", authenticator: "corp", decision: "allow", reason: "allowed" });
  t.equal((await send(good)).status, 200, "the same token again");

  const pem = await exportSPKI(A.rsa.publicKey);
  const attackerJwk = await exportJWK(attacker.publicKey);
  const refusals: [string, string, string][] = [
    ["alg none", await forge({ alg: "none" }, claims(), "none"), "invalid_token:alg"],
    ["alg NONE with a signature", await forge({ alg: "NONE" }, claims(), { hmac: "x" }), "invalid_token:alg"],
    ["HS256 with the RSA public key", await forge({ alg: "HS256", kid: A.rsaKid }, claims(), { hmac: pem }), "invalid_token:alg"],
    ["embedded jwk", await forge({ alg: "RS256", kid: "evil", jwk: attackerJwk }, claims(), attacker.privateKey), "invalid_token:embedded_key"],
    ["expired", await rs(claims({ exp: S0 - 3600 })), "token_expired:exp"],
    ["wrong audience", await rs(claims({ aud: "api://other" })), "invalid_token:claim_aud"],
    ["no exp", await rs(claims({ exp: undefined })), "invalid_token:claim_exp"],
    ["unknown kid", await forge({ alg: "RS256", kid: "nope" }, claims(), attacker.privateKey), "invalid_token:unknown_kid"],
    ["forged signature", await rs(claims(), {}, attacker.privateKey), "invalid_token:signature"],
    ["unknown crit", await rs(claims(), { crit: ["exp2"], exp2: 1 }), "invalid_token:unsupported"],
    ["over maxTokenBytes (8192), under Node's 16 KiB header limit", await goodToken(A, { pad: "x".repeat(7000) }), "invalid_token:too_large"],
  ];
  const expected = new Map<string, number>();
  for (const [what, token, reason] of refusals) {
    const r = await send(token);
    t.equal(r.status, 401, `${what}: 401`);
    t.match(r.headers["www-authenticate"], /^Bearer realm="tollgate", error="invalid_token"/, `${what}: WWW-Authenticate`);
    t.equal(JSON.parse(r.body).error.code, reason.split(":")[0], `${what}: body code`);
    t.notOk(r.body.includes(token) || JSON.stringify(r.headers).includes(token), `${what}: the token is not echoed`);
    t.match(r.audit, { reason, authMethod: "jwt", decision: "deny", status: 401 }, `${what}: audit reason ${reason}`);
    t.equal(r.audit.principal, undefined, `${what}: no principal in the audit line`);
    expected.set(reason, (expected.get(reason) ?? 0) + 1);
  }

  const strays: [string, string][] = [
    ...(await Promise.all(GARBAGE.map(async ([what, make]) => [what, await make()] as [string, string]))),
    ["iss with trailing slash", await rs(claims({ iss: A.iss + "/" }))],
    ["iss over http", await rs(claims({ iss: "http://issuer-a.example.com" }))],
  ];
  let unrecognized = 0;
  for (const [what, token] of strays) {
    const r = await send(token);
    t.equal(r.status, 401, `${what}: 401`);
    t.match(r.headers["www-authenticate"], /^Bearer realm="tollgate"/, `${what}: WWW-Authenticate`);
    t.match(r.audit, { reason: "unrecognized_credential", decision: "deny" }, `${what}: audit reason`);
    unrecognized++;
  }

  const down = await send(await forge({ alg: "RS256", kid: "k" }, claims({ iss: DOWN }), attacker.privateKey));
  t.equal(down.status, 503, "JWKS unreachable from the start: 503, never accepted");
  t.equal(down.headers["retry-after"], "5");
  t.match(down.audit, { reason: "auth_unavailable:jwks_unavailable", decision: "error" });

  const huge = await goodToken(A, { pad: "x".repeat(64 * 1024) });
  tokens.push(huge);
  const raw = await rawGet(h.url, huge);
  t.match(raw, /^HTTP\/1\.1 431 /, "a 64 KiB token is refused by Node's header limit with 431");
  t.notOk(h.upstream.seen.some((s) => String(s.headers.authorization ?? "").includes(huge.slice(-40))), "never reached the upstream");

  const text = await (await request(`${h.adminUrl}/metrics`)).body.text();
  for (const [reason, count] of expected) t.match(text, new RegExp(`tollgate_auth_failures_total\\{method="jwt",reason="${reason}"\\} ${count}\\n`), `metric for ${reason} = ${count}`);
  t.match(text, new RegExp(`tollgate_auth_failures_total\\{method="none",reason="unrecognized_credential"\\} ${unrecognized}\\n`));
  t.match(text, /tollgate_auth_failures_total\{method="jwt",reason="auth_unavailable:jwks_unavailable"\} 1\n/);
  t.match(text, /tollgate_token_cache_total\{authenticator="corp",result="hit"\} 1\n/, "the repeated good token hit the cache");
  t.equal(h.upstream.seen.length, 2, "only the two good requests reached the upstream");

  const logs = h.logText();
  for (const token of tokens) {
    const signature = token.split(".")[2] ?? "";
    for (const [where, hay] of [["logs", logs], ["metrics", text]] as const) {
      t.notOk(hay.includes(token), `token never in ${where}`);
      if (signature.length > 16) t.notOk(hay.includes(signature), `token signature never in ${where}`);
    }
  }
});

/** One GET with a raw socket, so a 64 KiB header is really sent; resolves with whatever the server answered. */
function rawGet(base: string, token: string): Promise<string> {
  const { hostname, port } = new URL(base);
  return new Promise((resolve) => {
    let data = "";
    const socket = connect(Number(port), hostname, () => socket.write(`GET /v1/models HTTP/1.1\r\nhost: ${hostname}\r\nauthorization: Bearer ${token}\r\nconnection: close\r\n\r\n`));
    socket.setTimeout(5000, () => socket.destroy());
    socket.on("data", (chunk: Buffer) => (data += chunk.toString()));
    socket.on("error", () => {});
    socket.on("close", () => resolve(data));
  });
}
