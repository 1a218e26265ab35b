/**
 * Browser sign-in end to end, every hop over HTTP on 127.0.0.1: a real oidc-provider (code flow, PKCE, login
 * form), a whole Tollgate with a `session` authenticator, and an upstream admin UI. The sign-in hops, role-based
 * access per user, identity headers and cookie hygiene towards the UI, 401 (not a redirect) for API callers,
 * cookie attributes, sign-out with revocation, refresh with the refresh token (also on a deprecated method), a new
 * session id per sign-in.
 * Attacks on the flow and on the cookie are in sso-attacks.test.ts.
 */
import t from "tap";
import { setTimeout as sleep } from "node:timers/promises";
import { Browser, parseSetCookie, type Hop } from "../helpers/browser.ts";
import { ACCOUNTS, apiGet, cookieNames, errorCode, lastAudit, sessionCookie, signIn, startSso, unseal, type SsoEnv } from "./sso-common.ts";

let env: SsoEnv;
t.before(async () => {
  env = await startSso();
});
t.teardown(() => env?.close());

const setCookie = (hop: Hop, name: string) => hop.setCookies.map(parseSetCookie).find((c) => c.name === name);

t.test("a browser signs in through every hop and lands on the page it asked for", async (t) => {
  const b = new Browser();
  const hops = await signIn(b, env, "/ui/admin/?tab=keys", "alice");
  t.ok(hops.every((h) => h.url.protocol === "http:" && h.url.hostname === "127.0.0.1"), "every hop is http on 127.0.0.1");
  const [start, login] = hops;
  t.equal(start!.status, 302, "Tollgate sends the unauthenticated browser to sign in");
  t.equal(start!.location!.href, `${env.url}/sso/login?next=%2Fui%2Fadmin%2F%3Ftab%3Dkeys`);
  t.equal(login!.status, 302);
  const authorize = login!.location!;
  t.equal(authorize.origin + authorize.pathname, `${env.op.issuer}/auth`, "then to the provider's authorization endpoint");
  const q = authorize.searchParams;
  t.equal(q.get("client_id"), env.op.clientId);
  t.equal(q.get("response_type"), "code");
  t.equal(q.get("redirect_uri"), `${env.url}/sso/callback`);
  t.equal(q.get("code_challenge_method"), "S256");
  t.match(q.get("code_challenge"), /^[A-Za-z0-9_-]{43}$/);
  t.ok(q.get("state") && q.get("nonce"), "state and nonce are sent");
  t.ok(q.get("scope")!.split(" ").includes("offline_access"), "refresh tokens are asked for");
  const tx = setCookie(login!, "tollgate_session_tx");
  t.ok(tx && tx.value.length > 0, "the sign-in transaction is kept in a cookie");
  t.equal(tx!.attributes.get("path"), "/sso");
  t.ok(hops.some((h) => h.method === "POST" && h.url.origin === env.op.issuer && h.url.pathname.endsWith("/login")), "the login form was submitted at the provider");
  const callback = hops.find((h) => h.url.origin === env.url && h.url.pathname === "/sso/callback")!;
  t.ok(callback, "the provider sent the browser back to /sso/callback");
  t.ok(callback.url.searchParams.get("code"), "with a code");
  t.equal(callback.url.searchParams.get("state"), q.get("state"), "and the state it was given");
  t.equal(callback.status, 302);
  t.equal(callback.location!.href, `${env.url}/ui/admin/?tab=keys`, "back to the original `next`");
  t.equal(setCookie(callback, "tollgate_session_tx")!.attributes.get("max-age"), "0", "the transaction cookie is cleared");
  t.ok(setCookie(callback, "tollgate_session")?.value, "a session cookie is set");
  const page = hops.at(-1)!;
  t.equal(page.status, 200);
  t.equal(page.body, "<!doctype html><html><body>UI /ui/admin/?tab=keys</body></html>", "the UI answered");
  t.same(env.op.logins, ["alice"]);
  t.same(env.op.tokenRequests.map((r) => [r.grantType, r.ok]), [["authorization_code", true]], "one code exchange at the token endpoint");
  t.notOk(b.jar.get("tollgate_session_tx"), "no transaction cookie is left in the browser");
  t.same(env.op.serverErrors, []);
});

t.test("each user reaches what their roles allow, and the UI learns who they are", async (t) => {
  const expect: Record<string, { roles: string; allowed: string[]; denied: string[] }> = {
    alice: { roles: "admin", allowed: ["/ui/admin/users", "/ui/logs/today", "/ui/"], denied: [] },
    dave: { roles: "devops", allowed: ["/ui/logs/today", "/ui/"], denied: ["/ui/admin/users"] },
    uma: { roles: "user", allowed: ["/ui/"], denied: ["/ui/admin/users", "/ui/logs/today"] },
  };
  for (const [user, e] of Object.entries(expect)) {
    const b = new Browser();
    const hops = await signIn(b, env, "/ui/", user);
    t.equal(hops.at(-1)!.status, 200, `${user} signed in`);
    for (const path of e.allowed) {
      const before = env.ui.length;
      const r = await b.get(`${env.url}${path}`);
      t.equal(r.status, 200, `${user} reaches ${path}`);
      const seen = env.ui.slice(before).find((s) => s.url === path)!;
      t.ok(seen, `the UI received ${user}'s request for ${path}`);
      t.equal(seen.headers["x-tollgate-user"], ACCOUNTS[user]!.email);
      t.equal(seen.headers["x-tollgate-email"], ACCOUNTS[user]!.email);
      t.equal(seen.headers["x-tollgate-roles"], e.roles);
      // Only groups the policy mentions are kept in the session (documented); `staff` is not one of them.
      t.equal(seen.headers["x-tollgate-groups"], ACCOUNTS[user]!.groups.filter((g) => g.startsWith("ui-")).join(","));
    }
    for (const path of e.denied) {
      const before = env.ui.length;
      const r = await b.get(`${env.url}${path}`);
      t.equal(r.status, 403, `${user} is refused ${path}`);
      t.equal(errorCode(r), "forbidden");
      t.equal(r.location, undefined, "a signed-in user is refused, not sent to sign in again");
      t.equal(env.ui.length, before, "the UI never saw it");
    }
  }
  // Signed in, but in no group that maps to a role: 403 everywhere, never a sign-in loop.
  const b = new Browser();
  const hops = await signIn(b, env, "/ui/", "nora");
  t.equal(hops.at(-1)!.status, 403, "nora's sign-in ends in a 403 at /ui/");
  t.ok(sessionCookie(b, env), "she does have a session");
  t.equal(lastAudit(env, "/ui/")?.reason, "forbidden");
});

t.test("the UI gets its own cookies and forged identity headers never pass; Tollgate's cookies never reach it", async (t) => {
  const b = new Browser();
  await signIn(b, env, "/ui/", "uma");
  t.ok(b.jar.get("ui_pref"), "the UI set its own cookie through Tollgate");
  const before = env.ui.length;
  const r = await b.get(`${env.url}/ui/settings`, { headers: { "x-tollgate-roles": "admin", "x-tollgate-user": "root@example.com" } });
  t.equal(r.status, 200);
  const seen = env.ui.slice(before)[0]!;
  t.ok(cookieNames(seen.headers.cookie).includes("ui_pref"), "the UI's cookie passes");
  t.notOk(cookieNames(seen.headers.cookie).some((n) => n.startsWith("tollgate_session")), "no Tollgate cookie reaches the UI");
  t.equal(seen.headers["x-tollgate-roles"], "user", "a forged roles header is replaced by the real one");
  t.equal(seen.headers["x-tollgate-user"], "uma@example.com");
  t.equal((await b.get(`${env.url}/ui/admin/`, { headers: { "x-tollgate-roles": "admin" } })).status, 403, "and grants nothing");

  // Hand-written Cookie header: the session, a stray transaction cookie and chunk, and the UI's own cookies.
  const session = sessionCookie(b, env)!;
  const hand = await b.get(`${env.url}/ui/x`, { cookie: `ui_pref=dark; tollgate_session=${session}; tollgate_session_tx=abc; tollgate_session.3=def; theme=light` });
  t.equal(hand.status, 200);
  t.equal(env.ui.at(-1)!.headers.cookie, "ui_pref=dark; theme=light", "exactly the UI's cookies, in order");

  // A session too large for one cookie (many policy-relevant groups) travels as tollgate_session.0, .1, …
  const g = new Browser();
  const hops = await signIn(g, env, "/ui/team/", "gus");
  t.equal(hops.at(-1)!.status, 200, "gus reaches /ui/team/ by group");
  const chunks = g.jar.all().filter((c) => c.name.startsWith("tollgate_session.")).map((c) => c.name).sort();
  t.ok(chunks.length >= 2 && chunks[0] === "tollgate_session.0", `the session is chunked (${chunks.join(", ")})`);
  t.notOk(g.jar.get("tollgate_session"), "and not also whole");
  const seenGus = env.ui.at(-1)!;
  t.notOk(cookieNames(seenGus.headers.cookie).some((n) => n.startsWith("tollgate_session")), "no chunk reaches the UI");
  t.equal(String(seenGus.headers["x-tollgate-groups"]).split(",").length, ACCOUNTS.gus!.groups.length, "every policy-relevant group is kept");
});

t.test("API callers on sign-in routes get a 401 with WWW-Authenticate, never a redirect", async (t) => {
  for (const path of ["/ui/", "/ui/admin/", "/api/usage"]) {
    const r = await apiGet(`${env.url}${path}`);
    t.equal(r.status, 401, `${path}: 401`);
    t.equal(r.location, undefined, `${path}: no Location`);
    t.match(r.headers["www-authenticate"], /^Bearer realm="tollgate"/);
    t.equal(errorCode(r), "missing_credential");
  }
  const post = await new Browser().request("POST", `${env.url}/ui/`, { form: { a: "1" } });
  t.equal(post.status, 401, "a browser POST is not a navigation: 401");
  const nav = await new Browser().get(`${env.url}/api/usage?days=7`);
  t.equal(nav.status, 302, "a browser navigating to the API route is sent to sign in");
  t.equal(nav.location!.href, `${env.url}/sso/login?next=%2Fapi%2Fusage%3Fdays%3D7`);
  const keyed = await apiGet(`${env.url}/api/usage`, { authorization: `Bearer ${env.apiKey}` });
  t.equal(keyed.status, 200, "an API key works on the API route");
  t.equal(env.ui.at(-1)!.headers["x-tollgate-roles"], "user", "as the key's principal");
  const b = new Browser();
  await signIn(b, env, "/ui/", "dave");
  const fromUi = await b.get(`${env.url}/api/usage`, { headers: { accept: "application/json" } });
  t.equal(fromUi.status, 200, "the UI's own API calls with the session work");
  t.equal(env.ui.at(-1)!.headers["x-tollgate-roles"], "devops");
});

t.test("cookie attributes: HttpOnly, SameSite=Lax, Path, Max-Age within cookie.maxAge, no Secure on http", async (t) => {
  const b = new Browser();
  const hops = await signIn(b, env, "/ui/", "uma");
  const tx = setCookie(hops.find((h) => h.url.pathname === "/sso/login")!, "tollgate_session_tx")!;
  const callback = hops.find((h) => h.url.pathname === "/sso/callback")!;
  const session = setCookie(callback, "tollgate_session")!;
  for (const [what, c, path, max] of [["transaction", tx, "/sso", 600], ["session", session, "/", 3600]] as const) {
    t.ok(c.attributes.has("httponly"), `${what}: HttpOnly`);
    t.equal(c.attributes.get("samesite")?.toLowerCase(), "lax", `${what}: SameSite=Lax`);
    t.equal(c.attributes.get("path"), path, `${what}: Path=${path}`);
    const maxAge = Number(c.attributes.get("max-age"));
    t.ok(maxAge > max - 60 && maxAge <= max, `${what}: Max-Age ${maxAge} ≤ ${max}`);
    t.notOk(c.attributes.has("secure"), `${what}: no Secure with cookie.secure false`);
    t.notOk(c.attributes.has("domain"), `${what}: host-only`);
  }
});

t.test("with cookie.secure: Secure cookies; an IdP without end-session: sign-out lands on postLogoutRedirect", async (t) => {
  const secure = await startSso({ secure: true, maxAge: "30m", endSession: false });
  t.teardown(() => secure.close());
  // A browser that treats http://127.0.0.1 as a secure context (as browsers do for localhost).
  const b = new Browser({ secureContext: (u) => u.hostname === "127.0.0.1" });
  const hops = await signIn(b, secure, "/ui/", "uma");
  t.equal(hops.at(-1)!.status, 200, "signed in");
  const tx = setCookie(hops.find((h) => h.url.pathname === "/sso/login")!, "tollgate_session_tx")!;
  const session = setCookie(hops.find((h) => h.url.pathname === "/sso/callback")!, "tollgate_session")!;
  t.ok(tx.attributes.has("secure") && session.attributes.has("secure"), "both cookies are Secure");
  t.ok(Number(session.attributes.get("max-age")) <= 1800, "Max-Age within the 30m maxAge");
  // A browser that (rightly) refuses Secure cookies over plain http cannot finish a sign-in: nothing leaks.
  const strict = await signIn(new Browser(), secure, "/ui/", "uma");
  t.equal(strict.at(-1)!.status, 400, "no transaction cookie came back: the callback refuses");
  t.equal(errorCode(strict.at(-1)!), "sign_in_failed");
  const out = await b.get(`${secure.url}/sso/logout`);
  t.equal(out.status, 302);
  t.equal(out.location!.href, `${secure.url}/signed-out`, "the IdP offers no end_session_endpoint: postLogoutRedirect");
  t.equal(setCookie(out, "tollgate_session")?.attributes.get("max-age"), "0", "the session cookie is cleared");
});

t.test("sign-out ends access: cookies cleared, RP-initiated logout at the IdP, the old cookie is refused", async (t) => {
  const b = new Browser();
  await signIn(b, env, "/ui/", "alice");
  const old = sessionCookie(b, env)!;
  const logins = env.op.logins.length;
  const out = await b.get(`${env.url}/sso/logout`);
  t.equal(out.status, 302);
  t.equal(out.location!.origin + out.location!.pathname, `${env.op.issuer}/session/end`, "to the provider's end_session_endpoint");
  t.equal(out.location!.searchParams.get("client_id"), env.op.clientId);
  t.equal(out.location!.searchParams.get("post_logout_redirect_uri"), `${env.url}/signed-out`);
  t.equal(setCookie(out, "tollgate_session")?.attributes.get("max-age"), "0", "the session cookie is cleared");
  t.notOk(sessionCookie(b, env), "the browser holds no session any more");
  const end = await b.follow(out, { onPage: (page) => (page.url.origin === env.op.issuer && page.status === 200 ? b.submit(page, {}, { button: "Yes, sign me out" }) : undefined), stopBefore: (u) => u.origin === env.url });
  t.equal(end.at(-1)!.location?.href, `${env.url}/signed-out`, "the provider confirms the logout and sends the browser back");

  const again = await b.get(`${env.url}/ui/`);
  t.equal(again.status, 302, "the browser must sign in again");
  const replayed = await b.get(`${env.url}/ui/`, { cookie: `tollgate_session=${old}` });
  t.equal(replayed.status, 302, "the old cookie, replayed by a browser, is sent to sign in");
  t.equal(replayed.location!.pathname, "/sso/login");
  const api = await apiGet(`${env.url}/ui/`, { cookie: `tollgate_session=${old}` });
  t.equal(api.status, 401, "the old cookie, replayed by an API client: 401");
  t.equal(errorCode(api), "session_expired");
  t.equal(lastAudit(env, "/ui/")?.reason, "session_expired:signed_out", "refused because it was revoked");
  await signIn(b, env, "/ui/", "alice");
  t.equal(env.op.logins.length, logins + 1, "the IdP session ended too: the login form was shown again");

  // A chunked session is cleared chunk by chunk.
  const g = new Browser();
  await signIn(g, env, "/ui/team/", "gus");
  const gOut = await g.get(`${env.url}/sso/logout`);
  const cleared = gOut.setCookies.map(parseSetCookie).filter((c) => c.name.startsWith("tollgate_session.") && c.attributes.get("max-age") === "0");
  t.ok(cleared.length >= 2, `every chunk is cleared (${cleared.map((c) => c.name).join(", ")})`);
  t.same(g.jar.all().filter((c) => c.name.startsWith("tollgate_session")), [], "nothing of the session is left");
});

t.test("the session is refreshed with the refresh token after refreshAfter, and follows changes at the IdP", async (t) => {
  const fast = await startSso({ refreshAfter: "1s" });
  t.teardown(() => fast.close());
  const b = new Browser();
  await signIn(b, fast, "/ui/", "dave");
  const first = await unseal(fast.sessionSecret, "session", sessionCookie(b, fast)!);
  t.ok(first.rt, "the session holds a refresh token");
  t.equal((await b.get(`${fast.url}/ui/admin/`)).status, 403, "dave is devops, not admin");
  await sleep(Math.max(0, (first.fresh as number) - Date.now()) + 100);
  const groups = ACCOUNTS.dave!.groups;
  ACCOUNTS.dave!.groups = ["ui-admins"]; // promoted at the IdP
  t.teardown(() => void (ACCOUNTS.dave!.groups = groups));
  const refreshesBefore = fast.op.tokenRequests.filter((r) => r.grantType === "refresh_token").length;
  // Concurrent requests of one session share one refresh (the refresh token may rotate).
  const burst = await Promise.all(Array.from({ length: 4 }, () => b.get(`${fast.url}/ui/admin/`, { cookie: b.jar.header(new URL(`${fast.url}/ui/`)) })));
  t.same(burst.map((r) => r.status), [200, 200, 200, 200], "after the refresh dave is admin");
  const refreshes = fast.op.tokenRequests.filter((r) => r.grantType === "refresh_token");
  t.equal(refreshes.length - refreshesBefore, 1, "one refresh_token grant at the provider's token endpoint");
  t.ok(refreshes.every((r) => r.ok));
  const renewed = parseSetCookie(burst[0]!.setCookies.find((c) => c.startsWith("tollgate_session="))!);
  t.not(renewed.value, "", "the response carries a new session cookie");
  const second = await unseal(fast.sessionSecret, "session", sessionCookie(b, fast)!);
  t.equal(second.sid, first.sid, "same session");
  t.ok((second.fresh as number) > (first.fresh as number), "fresh again");
  t.equal(second.end, first.end, "the absolute end does not move");
  t.same((second.p as { roles: string[] }).roles, ["admin"]);
  const calm = await b.get(`${fast.url}/ui/`);
  t.notOk(calm.setCookies.some((c) => c.startsWith("tollgate_session")), "a fresh session is not re-issued");
  t.same(fast.op.serverErrors, []);
});

t.test("a deprecated session method: the refreshed cookie and the Deprecation headers both reach the browser, and stay its own", async (t) => {
  // Regression: the per-authenticator Deprecation headers once replaced this request's own response headers, so a
  // session refreshed on that request lost its new cookie; they are now merged into a copy, never shared.
  const retiring = await startSso({ refreshAfter: "1s", deprecated: true });
  t.teardown(() => retiring.close());
  const dave = new Browser();
  const nora = new Browser();
  await signIn(dave, retiring, "/ui/", "dave");
  await signIn(nora, retiring, "/ui/", "nora");
  const first = await unseal(retiring.sessionSecret, "session", sessionCookie(dave, retiring)!);
  await sleep(Math.max(0, (first.fresh as number) - Date.now()) + 100);

  const refreshed = await dave.get(`${retiring.url}/ui/`);
  t.equal(refreshed.status, 200);
  t.ok(refreshed.headers["deprecation"], "the Deprecation header is there");
  t.match(refreshed.headers["sunset"], /2027/, "and the Sunset header");
  const renewed = setCookie(refreshed, "tollgate_session");
  t.ok(renewed && renewed.value !== "", "the refreshed session cookie is there too");
  const second = await unseal(retiring.sessionSecret, "session", sessionCookie(dave, retiring)!);
  t.equal(second.sid, first.sid, "the same session, refreshed");

  // The next caller of the same method gets the Deprecation headers and nothing of dave's.
  const other = await nora.get(`${retiring.url}/ui/`, { cookie: nora.jar.header(new URL(`${retiring.url}/ui/`)) });
  t.ok(other.headers["deprecation"], "nora is told too");
  t.notOk(other.setCookies.some((c) => renewed !== undefined && c.includes(renewed.value)), "dave's cookie never reaches nora");
  const noraSession = await unseal(retiring.sessionSecret, "session", sessionCookie(nora, retiring)!);
  t.not(noraSession.sid, first.sid, "nora keeps her own session");
});

t.test("a new session id at every sign-in", async (t) => {
  const b = new Browser();
  await signIn(b, env, "/ui/", "uma");
  const one = await unseal(env.sessionSecret, "session", sessionCookie(b, env)!);
  const logins = env.op.logins.length;
  const hops = await signIn(b, env, "/sso/login?next=/ui/", "uma");
  t.equal(env.op.logins.length, logins, "the second sign-in rode the IdP session (no login form)");
  t.equal(hops.at(-1)!.status, 200);
  const two = await unseal(env.sessionSecret, "session", sessionCookie(b, env)!);
  const other = new Browser();
  await signIn(other, env, "/ui/", "uma");
  const three = await unseal(env.sessionSecret, "session", sessionCookie(other, env)!);
  t.match(one.sid, /^[0-9a-f-]{36}$/);
  t.equal(new Set([one.sid, two.sid, three.sid]).size, 3, "three sign-ins, three session ids");
});
