/**
 * Browser sign-in in a real browser: Debian's Chromium, headless, driven by playwright-core, against the same
 * provider, recording UI and Tollgate policy as sso.test.ts (sso-common.ts). Chromium follows the redirects,
 * renders the provider's login form, submits it, and keeps the cookies itself, so what is checked here is what
 * a person's browser does: where it lands, what the UI is told, that page scripts cannot read the session
 * cookie, the attributes the browser stored, and that after sign-out the UI asks for sign-in again.
 *
 * Skipped only when /usr/bin/chromium is absent outside CI; in CI (which installs it, see .ci/run) its absence fails.
 */
import t, { type Test } from "tap";
import { existsSync } from "node:fs";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import { chromium, type BrowserContext, type Page, type Response } from "playwright-core";
import { ACCOUNTS, startSso, type SsoEnv } from "./sso-common.ts";

const CHROMIUM = "/usr/bin/chromium";
// Without the background-networking flags Chromium keeps trying hosts this machine cannot reach.
const FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking", "--disable-component-update", "--disable-sync"];
const ACTION_TIMEOUT_MS = 10_000;
const NAVIGATION_TIMEOUT_MS = 15_000;
const LAUNCH_TIMEOUT_MS = 30_000;
const CLOSE_TIMEOUT_MS = 10_000;
const SCREENSHOT = "/tmp/tollgate-sso-chromium-signed-in.png";

const missing = !existsSync(CHROMIUM);
const skip = missing && !process.env.CI ? `${CHROMIUM} is absent (CI installs Debian's chromium: .ci/run)` : false;

interface NavHop {
  status: number;
  url: string;
}

/** Every hop of a navigation, first to last: the redirects Chromium followed, then the final response. */
async function hopsOf(res: Response | null): Promise<NavHop[]> {
  if (!res) return [];
  const hops: NavHop[] = [{ status: res.status(), url: res.url() }];
  for (let req = res.request().redirectedFrom(); req; req = req.redirectedFrom()) {
    hops.unshift({ status: (await req.response())?.status() ?? 0, url: req.url() });
  }
  return hops;
}

const isLoopback = (url: URL) => url.hostname === "127.0.0.1" || url.hostname === "localhost" || url.hostname === "[::1]";

/** The provider's login form, as Chromium shows it. */
async function expectLoginForm(t: Test, page: Page, env: SsoEnv, what: string): Promise<void> {
  const at = new URL(page.url());
  t.equal(at.origin, env.op.issuer, `${what}: on the provider`);
  t.match(at.pathname, /^\/interaction\/[A-Za-z0-9_-]+$/, `${what}: at its login interaction`);
  t.equal(await page.locator("h1").textContent(), "Sign in", `${what}: the login page is shown`);
  t.equal(await page.locator('form[action$="/login"] input[name="login"]').count(), 1, `${what}: with a login field`);
  t.equal(await page.locator('form[action$="/login"] input[name="password"]').count(), 1, `${what}: and a password field`);
}

t.test("Chromium signs in through the provider's login form, holds an HttpOnly Lax session, and signs out", { skip, timeout: 90_000 }, async (t) => {
  if (missing) {
    t.fail(`${CHROMIUM} is absent: CI must install Debian's chromium (.ci/run)`);
    return;
  }
  const env = await startSso();
  t.teardown(() => env.close());
  const profile = await mkdtemp(join(tmpdir(), "tollgate-chromium-"));
  t.teardown(() => rm(profile, { recursive: true, force: true }));

  // A persistent context so the profile is a fresh --user-data-dir of our own (launch() makes its own elsewhere).
  const context: BrowserContext = await chromium.launchPersistentContext(profile, {
    executablePath: CHROMIUM,
    headless: true,
    args: FLAGS,
    timeout: LAUNCH_TIMEOUT_MS,
    viewport: { width: 800, height: 480 },
  });
  t.teardown(async () => {
    const closed = await Promise.race([context.close().then(() => true), sleep(CLOSE_TIMEOUT_MS, false, { ref: false })]);
    if (!closed) t.comment(`Chromium did not close within ${CLOSE_TIMEOUT_MS} ms`);
  });
  context.setDefaultTimeout(ACTION_TIMEOUT_MS);
  context.setDefaultNavigationTimeout(NAVIGATION_TIMEOUT_MS);
  // Nothing leaves the machine (the provider's logout page @imports a web font): such requests are refused here.
  const refused: string[] = [];
  await context.route(
    (url) => !isLoopback(url),
    (route) => {
      refused.push(route.request().url());
      return route.abort("blockedbyclient");
    },
  );
  const page = context.pages()[0] ?? (await context.newPage());

  // Signed out: /ui/ → /sso/login → the provider's authorization endpoint → its login form.
  const start = await page.goto(`${env.url}/ui/`);
  const startHops = await hopsOf(start);
  t.same(
    startHops.slice(0, 2),
    [
      { status: 302, url: `${env.url}/ui/` },
      { status: 302, url: `${env.url}/sso/login?next=%2Fui%2F` },
    ],
    "Tollgate sends the signed-out browser to /sso/login, remembering /ui/",
  );
  t.equal(new URL(startHops[2]!.url).origin + new URL(startHops[2]!.url).pathname, `${env.op.issuer}/auth`, "then to the provider's authorization endpoint");
  t.equal(start?.status(), 200);
  await expectLoginForm(t, page, env, "signed out");
  const txCookie = (await context.cookies(`${env.url}/sso/callback`)).find((c) => c.name === "tollgate_session_tx");
  t.ok(txCookie?.httpOnly, "the browser holds the HttpOnly sign-in transaction cookie");

  // Fill in the form as a person would, and submit it.
  const account = ACCOUNTS.alice!;
  const uiBefore = env.ui.length;
  await page.locator('input[name="login"]').fill("alice");
  await page.locator('input[name="password"]').fill(account.password);
  const landed = page.waitForResponse((r) => r.request().isNavigationRequest() && r.url() === `${env.url}/ui/`);
  await page.locator('form[action$="/login"] button[type="submit"]').click();
  const signedIn = await landed;
  await page.waitForLoadState("load");
  t.equal(page.url(), `${env.url}/ui/`, "the browser ends on Tollgate's /ui/");
  t.equal(signedIn.status(), 200);
  const signedInHops = await hopsOf(signedIn);
  t.ok(
    signedInHops.some((h) => h.status === 302 && h.url.startsWith(`${env.url}/sso/callback?`)),
    `by way of /sso/callback (${signedInHops.map((h) => new URL(h.url).pathname).join(" → ")})`,
  );
  t.equal(await page.locator("body").textContent(), "UI /ui/", "the page is the UI upstream's");
  t.same(env.op.logins, ["alice"], "the provider's login form was submitted once");
  t.same(env.op.serverErrors, []);

  const seen = env.ui.slice(uiBefore).filter((s) => s.url === "/ui/");
  t.equal(seen.length, 1, "the UI upstream received the page request once");
  const headers = seen[0]?.headers ?? {};
  t.equal(headers["x-tollgate-user"], account.email, "the UI is told who signed in");
  t.equal(headers["x-tollgate-email"], account.email);
  t.equal(headers["x-tollgate-roles"], "admin", "with alice's role (ui-admins → admin)");
  t.equal(headers["x-tollgate-groups"], "ui-admins", "and only the groups the policy mentions");
  t.notMatch(String(headers.cookie ?? ""), /tollgate_session/, "no Tollgate cookie reaches the UI");

  await page.screenshot({ path: SCREENSHOT });
  t.comment(`screenshot of the signed-in page: ${SCREENSHOT}`);

  // HttpOnly: page scripts can neither read nor overwrite the session.
  t.notMatch(await page.evaluate<string>("document.cookie"), /tollgate_session/, "document.cookie does not show the session cookie");
  const stored = async () => (await context.cookies(`${env.url}/ui/`)).find((c) => c.name === "tollgate_session");
  const session = await stored();
  t.ok(session, "the browser holds tollgate_session");
  t.equal(session?.httpOnly, true, "HttpOnly");
  t.equal(session?.sameSite, "Lax", "SameSite=Lax");
  t.equal(session?.secure, false, "not Secure (cookie.secure is false on http)");
  t.equal(session?.path, "/");
  t.equal(session?.domain, "127.0.0.1", "host-only on Tollgate's host");
  const lifetime = (session?.expires ?? 0) - Date.now() / 1000;
  t.ok(lifetime > 3500 && lifetime <= 3601, `expires within the policy's 1h maxAge (${Math.round(lifetime)} s)`);
  await page.evaluate("document.cookie = 'tollgate_session=forged; path=/'");
  t.equal((await stored())?.value, session?.value, "a page script cannot overwrite it");
  t.notOk((await context.cookies(`${env.url}/sso/callback`)).some((c) => c.name === "tollgate_session_tx"), "no sign-in transaction cookie is left");

  // Sign out: Tollgate clears the session and hands over to the provider's logout, which the person confirms.
  const out = await page.goto(`${env.url}/sso/logout`, { waitUntil: "domcontentloaded" });
  t.same((await hopsOf(out))[0], { status: 302, url: `${env.url}/sso/logout` });
  t.equal(new URL(page.url()).origin + new URL(page.url()).pathname, `${env.op.issuer}/session/end`, "Tollgate sends the browser to the provider's end-session endpoint");
  t.notOk(await stored(), "the browser no longer holds tollgate_session");
  await Promise.all([
    page.waitForURL(`${env.url}/signed-out`, { waitUntil: "domcontentloaded" }),
    page.getByRole("button", { name: "Yes, sign me out" }).click(),
  ]);
  t.pass("the provider signs out and sends the browser back to postLogoutRedirect");

  const uiAfter = env.ui.length;
  const again = await page.goto(`${env.url}/ui/`);
  t.same(
    (await hopsOf(again)).slice(0, 2),
    [
      { status: 302, url: `${env.url}/ui/` },
      { status: 302, url: `${env.url}/sso/login?next=%2Fui%2F` },
    ],
    "after sign-out /ui/ redirects to sign-in again",
  );
  await expectLoginForm(t, page, env, "signed out again");
  t.equal(env.ui.length, uiAfter, "the UI upstream saw nothing after sign-out");
  t.same(env.op.logins, ["alice"], "no sign-in happened without the form");
  t.comment(`off-machine requests refused: ${refused.length ? refused.join(", ") : "none"}`);
});
