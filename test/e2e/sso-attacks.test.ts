/**
 * Browser sign-in under attack, end to end against a real oidc-provider: a wrong `state`, another sign-in's
 * transaction, a replayed code, a missing or wrong PKCE verifier, a foreign `nonce` (a transaction cookie forged
 * with the policy's secret, which the test owns), open redirects through `next`, and tampered, truncated or
 * foreign session cookies.
 */
import t, { type Test } from "tap";
import { Browser, parseSetCookie, type Hop } from "../helpers/browser.ts";
import { apiGet, callbackOf, errorCode, lastAudit, sealAs, sessionCookie, signIn, startSso, unseal, type SsoEnv } from "./sso-common.ts";

let env: SsoEnv;
t.before(async () => {
  env = await startSso();
});
t.teardown(() => env?.close());

const TX = "tollgate_session_tx";
const txOf = (b: Browser) => b.jar.get(TX, new URL(`${env.url}/sso/callback`))!.value;
const callbackWith = (url: URL, tx: string | undefined) => new Browser().get(url, { cookie: tx === undefined ? undefined : `${TX}=${tx}` });
const codeExchanges = () => env.op.tokenRequests.filter((r) => r.grantType === "authorization_code");

/** A sign-in stopped at the callback: the callback URL and the transaction cookie that goes with it. */
async function pendingSignIn(user: string, next = "/ui/"): Promise<{ b: Browser; callback: URL; tx: string }> {
  const b = new Browser();
  const hops = await signIn(b, env, `/sso/login?next=${encodeURIComponent(next)}`, user, { stopAtCallback: true });
  return { b, callback: callbackOf(hops), tx: txOf(b) };
}

function refusedSignIn(t: Test, hop: Hop, what: string) {
  t.equal(hop.status, 400, `${what}: 400`);
  t.equal(errorCode(hop), "sign_in_failed", `${what}: sign_in_failed`);
  t.notOk(hop.setCookies.some((c) => c.startsWith("tollgate_session=") || c.startsWith("tollgate_session.")), `${what}: no session cookie`);
  const cleared = hop.setCookies.map(parseSetCookie).find((c) => c.name === TX);
  t.equal(cleared?.attributes.get("max-age"), "0", `${what}: the transaction cookie is cleared`);
}

t.test("a wrong state at the callback is refused; the genuine callback still works", async (t) => {
  const { b, callback, tx } = await pendingSignIn("alice");
  const wrong = new URL(callback);
  wrong.searchParams.set("state", "attacker-chosen-state");
  const exchanges = codeExchanges().length;
  refusedSignIn(t, await b.get(wrong), "wrong state");
  t.equal(codeExchanges().length, exchanges, "the code was never sent to the token endpoint");
  t.equal(lastAudit(env, "/sso/callback")?.reason, "sign_in_failed:state", "audited as a state failure");
  t.notOk(b.jar.get(TX), "the browser dropped the transaction");
  const genuine = await callbackWith(callback, tx);
  t.equal(genuine.status, 302, "the unspoiled callback with its own transaction signs in");
  t.equal(genuine.location?.href, `${env.url}/ui/`);
});

t.test("the callback of one sign-in with the transaction cookie of another is refused", async (t) => {
  const a = await pendingSignIn("alice");
  const b = await pendingSignIn("dave");
  refusedSignIn(t, await callbackWith(a.callback, b.tx), "alice's code, dave's transaction");
  refusedSignIn(t, await callbackWith(b.callback, a.tx), "dave's code, alice's transaction");
});

t.test("a replayed code (same callback URL, same transaction cookie) is refused", async (t) => {
  const { callback, tx } = await pendingSignIn("uma");
  const first = await callbackWith(callback, tx);
  t.equal(first.status, 302, "first use signs in");
  const replay = await callbackWith(callback, tx);
  refusedSignIn(t, replay, "replay");
  t.equal(lastAudit(env, "/sso/callback")?.reason, "sign_in_failed:invalid_grant");
  t.same(codeExchanges().slice(-2).map((r) => [r.ok, r.error]), [[true, undefined], [false, "invalid_grant"]], "the provider refused the second exchange");
});

t.test("a callback without the PKCE verifier (no transaction cookie), or with a wrong one, is refused", async (t) => {
  const { callback, tx } = await pendingSignIn("uma");
  const exchanges = codeExchanges().length;
  refusedSignIn(t, await callbackWith(callback, undefined), "no transaction cookie");
  t.equal(lastAudit(env, "/sso/callback")?.reason, "sign_in_failed:no_transaction");
  t.equal(codeExchanges().length, exchanges, "nothing was sent to the token endpoint");
  refusedSignIn(t, await callbackWith(callback, "not-a-sealed-transaction"), "garbage transaction cookie");

  // Same state and nonce, another verifier: the provider's PKCE check refuses the code.
  const real = await unseal(env.sessionSecret, "sign-in", tx);
  const wrongVerifier = await sealAs(env.sessionSecret, "sign-in", { ...real, v: "A".repeat(43) }, Date.now() + 60_000);
  refusedSignIn(t, await callbackWith(callback, wrongVerifier), "wrong PKCE verifier");
  t.same(codeExchanges().slice(-1).map((r) => [r.ok, r.error]), [[false, "invalid_grant"]], "the token endpoint refused the verifier");
});

t.test("a foreign nonce is refused (transaction forged with the policy's secret: right state and verifier)", async (t) => {
  const { callback, tx } = await pendingSignIn("alice");
  const real = await unseal(env.sessionSecret, "sign-in", tx);
  t.equal(real.s, callback.searchParams.get("state"), "the forged cookie keeps the genuine state");
  const forged = await sealAs(env.sessionSecret, "sign-in", { v: real.v, s: real.s, n: "a-nonce-of-another-sign-in", next: real.next }, Date.now() + 60_000);
  refusedSignIn(t, await callbackWith(callback, forged), "foreign nonce");
  t.same(codeExchanges().slice(-1).map((r) => r.ok), [true], "state and PKCE passed: the code was exchanged, the ID token's nonce refused");
  t.equal(lastAudit(env, "/sso/callback")?.reason, "sign_in_failed:nonce", "audited as a nonce failure");
});

/** `next` values an attacker's link could carry, as written in the query (percent-encoded ones stay encoded). */
const OPEN_REDIRECTS = [
  "//evil.example",
  "https://evil.example",
  "/\\evil.example",
  "%2F%2Fevil.example",
  "%252F%252Fevil.example",
  "/%09/evil.example",
  "https:evil.example",
  "/.//evil.example",
  "/ui/../..//evil.example",
  "/ui/%252e%252e/%252e%252e//evil.example",
];
const nextQuery = (raw: string) => (/%/.test(raw) ? raw : encodeURIComponent(raw));
const sameSitePath = (p: unknown) => typeof p === "string" && p.startsWith("/") && !p.startsWith("//") && !p.startsWith("/\\");

t.test("open redirects through `next` end on this site", async (t) => {
  for (const raw of OPEN_REDIRECTS) {
    const b = new Browser();
    const hops = await signIn(b, env, `/sso/login?next=${nextQuery(raw)}`, "uma");
    const leaving = hops.find((h) => h.location && h.location.origin !== env.url && h.location.origin !== env.op.issuer);
    t.equal(leaving, undefined, `next=${raw}: no hop leaves for another site${leaving ? ` (went to ${leaving.location!.href})` : ""}`);
    const callback = hops.find((h) => h.url.pathname === "/sso/callback");
    t.equal(callback?.status, 302, `next=${raw}: signed in`);
    const location = callback?.headers.location as string | undefined;
    t.ok(sameSitePath(location), `next=${raw}: Location ${location} is a same-site path`);
  }
  const kept = await signIn(new Browser(), env, `/sso/login?next=${encodeURIComponent("/ui/logs/?q=a%20b#x")}`, "alice");
  t.equal(kept.find((h) => h.url.pathname === "/sso/callback")?.headers.location, "/ui/logs/?q=a%20b#x", "a same-site next survives intact");
});

// Defence in depth: the callback sanitizes `next` a second time, which is what keeps the sign-ins above on-site;
// the transaction itself must not carry an off-site target either (safeNext's own promise).
t.test("the sign-in transaction records only a same-site next", async (t) => {
  for (const raw of OPEN_REDIRECTS) {
    const login = await new Browser().get(`${env.url}/sso/login?next=${nextQuery(raw)}`);
    const tx = login.setCookies.map(parseSetCookie).find((c) => c.name === TX)!;
    const recorded = (await unseal(env.sessionSecret, "sign-in", tx.value)).next;
    t.ok(sameSitePath(recorded), `next=${raw}: recorded as ${JSON.stringify(recorded)}`);
  }
});

t.test("tampered, truncated and foreign session cookies are refused", async (t) => {
  const b = new Browser();
  await signIn(b, env, "/ui/", "alice");
  const good = sessionCookie(b, env)!;
  const payload = await unseal(env.sessionSecret, "session", good);
  const parts = good.split(".");
  const flip = (s: string, i: number) => s.slice(0, i) + (s[i] === "A" ? "B" : "A") + s.slice(i + 1);
  const flipped = (part: number) => parts.map((p, i) => (i === part ? flip(p, Math.floor(p.length / 2)) : p)).join(".");
  const variants: Record<string, string> = {
    "a byte of the ciphertext flipped": flipped(3),
    "a byte of the tag flipped": flipped(4),
    "a byte of the IV flipped": flipped(2),
    "a byte of the header flipped": flipped(0),
    truncated: good.slice(0, -12),
    "cut at a dot": parts.slice(0, 4).join("."),
    "sealed with another secret": await sealAs("another-secret-another-secret-another", "session", payload, Date.now() + 3_600_000),
    "a sign-in transaction presented as a session": await sealAs(env.sessionSecret, "sign-in", payload, Date.now() + 3_600_000),
    empty: "",
  };
  // Control: the same payload sealed with the policy's secret is accepted, so the refusals above are about the cookie.
  const resealed = await sealAs(env.sessionSecret, "session", payload, Date.now() + 3_600_000);
  t.equal((await apiGet(`${env.url}/ui/admin/`, { cookie: `tollgate_session=${resealed}` })).status, 200, "control: a correctly sealed cookie passes");

  for (const [what, value] of Object.entries(variants)) {
    const before = env.ui.length;
    const nav = await new Browser().get(`${env.url}/ui/admin/`, { cookie: `tollgate_session=${value}` });
    t.equal(nav.status, 302, `${what}: a browser is sent to sign in again`);
    t.equal(nav.location?.href, `${env.url}/sso/login?next=%2Fui%2Fadmin%2F`, `${what}: to the login`);
    const api = await apiGet(`${env.url}/ui/admin/`, { cookie: `tollgate_session=${value}` });
    t.equal(api.status, 401, `${what}: an API caller gets 401`);
    t.match(api.headers["www-authenticate"], /^Bearer /);
    t.equal(errorCode(api), value === "" ? "missing_credential" : "invalid_session", `${what}: ${value === "" ? "no session at all" : "invalid_session"}`);
    if (value !== "") t.equal(lastAudit(env, "/ui/admin/")?.reason, "invalid_session:unreadable", `${what}: audited as unreadable`);
    t.equal(env.ui.length, before, `${what}: the UI saw nothing`);
  }

  // A session sealed with the right secret but past its absolute end.
  const ended = await sealAs(env.sessionSecret, "session", { ...payload, end: Date.now() - 1000 }, Date.now() + 3_600_000);
  const late = await apiGet(`${env.url}/ui/`, { cookie: `tollgate_session=${ended}` });
  t.equal(late.status, 401);
  t.equal(errorCode(late), "session_expired");

  // A chunked session with one chunk altered.
  const g = new Browser();
  await signIn(g, env, "/ui/team/", "gus");
  const at = new URL(`${env.url}/ui/team/`);
  const chunk1 = g.jar.get("tollgate_session.1", at)!;
  g.jar.set(at, "tollgate_session.1", flip(chunk1.value, Math.floor(chunk1.value.length / 2)));
  const spoiled = await g.get(`${env.url}/ui/team/`, { headers: { accept: "application/json" } });
  t.equal(spoiled.status, 401, "a chunked session with a flipped byte is refused");
  t.equal(errorCode(spoiled), "invalid_session");
});
