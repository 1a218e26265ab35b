/**
 * Shared setup of the browser sign-in suites (sso*.test.ts): a real oidc-provider with a login form, an upstream
 * "admin UI" that records what it receives, and a whole Tollgate in front of it with a `session` authenticator,
 * role-guarded UI routes marked `signIn`, and an API route. Everything listens on 127.0.0.1.
 */
import { hkdfSync, randomBytes } from "node:crypto";
import { createServer, type IncomingMessage } from "node:http";
import type { AddressInfo } from "node:net";
import { EncryptJWT, jwtDecrypt, type JWTPayload } from "jose";
import { Browser, parseForms, type Hop } from "../helpers/browser.ts";
import { startBrowserOidcProvider, type BrowserAccount, type BrowserOidcProvider } from "../helpers/oidc-browser.ts";
import { startHarness, makeKey, type Harness } from "../helpers/harness.ts";

/** Groups named in the policy's /ui/team/** rule; the session keeps only groups the policy mentions. */
const TEAM_GROUPS = Array.from({ length: 160 }, (_, i) => `ui-team-${String(i).padStart(3, "0")}-members`);

export const ACCOUNTS: Record<string, BrowserAccount> = {
  alice: { password: "alice-pw", email: "alice@example.com", groups: ["ui-admins", "staff"] },
  dave: { password: "dave-pw", email: "dave@example.com", groups: ["ui-devops", "staff"] },
  uma: { password: "uma-pw", email: "uma@example.com", groups: ["ui-users"] },
  nora: { password: "nora-pw", email: "nora@example.com", groups: ["staff"] },
  // In enough policy-relevant groups that the session cookie is split over tollgate_session.0, .1, …
  gus: { password: "gus-pw", email: "gus@example.com", groups: ["ui-users", ...TEAM_GROUPS] },
};

export interface SeenByUi {
  method: string;
  url: string;
  headers: IncomingMessage["headers"];
}

export interface SsoEnv {
  op: BrowserOidcProvider;
  h: Harness;
  /** Tollgate's origin, http://127.0.0.1:PORT. */
  url: string;
  sessionSecret: string;
  apiKey: string;
  /** Requests the upstream UI (which also stands in for the API upstream) received. */
  ui: SeenByUi[];
  close(): Promise<void>;
}

export interface SsoOptions {
  refreshAfter?: string;
  maxAge?: string;
  secure?: boolean;
  /** The IdP offers RP-initiated logout (default true). */
  endSession?: boolean;
  /** The session authenticator is being retired (migration mode): its callers get Deprecation/Sunset headers. */
  deprecated?: boolean;
}

export async function startSso(opts: SsoOptions = {}): Promise<SsoEnv> {
  const port = await freePort();
  const origin = `http://127.0.0.1:${port}`;
  const ui: SeenByUi[] = [];
  const uiServer = createServer((req, res) => {
    req.resume();
    req.on("end", () => {
      ui.push({ method: req.method ?? "", url: req.url ?? "", headers: req.headers });
      const body = `<!doctype html><html><body>UI ${req.url}</body></html>`;
      const headers: Record<string, string | number> = { "content-type": "text/html", "content-length": Buffer.byteLength(body) };
      // The UI's own cookie: it must keep reaching the UI through Tollgate.
      if (req.url === "/ui/") headers["set-cookie"] = "ui_pref=dark; Path=/ui; HttpOnly";
      res.writeHead(200, headers).end(body);
    });
  });
  await new Promise<void>((resolve) => uiServer.listen(0, "127.0.0.1", resolve));
  const uiUrl = `http://127.0.0.1:${(uiServer.address() as AddressInfo).port}`;

  const op = await startBrowserOidcProvider({
    redirectUris: [`${origin}/sso/callback`],
    postLogoutRedirectUris: [`${origin}/signed-out`],
    accounts: ACCOUNTS,
    endSession: opts.endSession ?? true,
  });
  const sessionSecret = randomBytes(36).toString("base64url");
  const key = makeKey();
  const policy = `version: 1
server:
  listen: { host: 127.0.0.1, port: ${port} }
  admin: { host: 127.0.0.1, port: 0 }
  shutdownGrace: 2s
upstreams:
  ui:
    url: "${uiUrl}"
    identity: { headers: { user: x-tollgate-user, email: x-tollgate-email, groups: x-tollgate-groups, roles: x-tollgate-roles } }
  api:
    url: "${uiUrl}"
    identity: { headers: { user: x-tollgate-user, roles: x-tollgate-roles } }
authenticators:
  - name: sso
    type: session
    provider: { preset: oidc, issuer: "${op.issuer}" }
    clientId: ${op.clientId}
    clientSecret: "${op.clientSecret}"
    redirectUri: "${origin}/sso/callback"
    scopes: [openid, profile, email, groups, offline_access]
    sessionSecret: "${sessionSecret}"
    cookie: { secure: ${opts.secure ?? false}, maxAge: ${opts.maxAge ?? "1h"} }
    refreshAfter: ${opts.refreshAfter ?? "15m"}
    postLogoutRedirect: /signed-out${opts.deprecated ? `
    deprecated: { sunset: "2027-06-30" }` : ""}
    principal:
      roleMappings:
        - { groups: [ui-admins], roles: [admin] }
        - { groups: [ui-devops], roles: [devops] }
        - { groups: [ui-users], roles: [user] }
  - name: keys
    type: api_key
    keys: [{ id: robot, hash: "${key.hash}", roles: [user] }]
routes:
  - { name: ui-admin, paths: [/ui/admin/**], upstream: ui, authenticators: [sso], signIn: sso, allow: [{ roles: [admin] }] }
  - { name: ui-logs, paths: [/ui/logs/**], upstream: ui, authenticators: [sso], signIn: sso, allow: [{ roles: [admin, devops] }] }
  - { name: ui-team, paths: [/ui/team/**], upstream: ui, authenticators: [sso], signIn: sso, allow: [{ groups: [ui-admins, ui-devops, ui-users, ${TEAM_GROUPS.join(", ")}] }] }
  - { name: ui, paths: [/ui/**], upstream: ui, authenticators: [sso], signIn: sso, allow: [{ roles: [admin, devops, user] }] }
  - { name: api, paths: [/api/**], upstream: api, authenticators: [keys, sso], signIn: sso, allow: [{ roles: [admin, devops, user] }] }
`;
  const h = await startHarness(policy);
  if (h.url !== origin) throw new Error(`Tollgate listens on ${h.url}, expected ${origin}`);
  return {
    op,
    h,
    url: origin,
    sessionSecret,
    apiKey: key.key,
    ui,
    async close() {
      await h.stop();
      await op.close();
      uiServer.closeAllConnections();
      await new Promise<void>((resolve) => uiServer.close(() => resolve()));
    },
  };
}

/** A port free a moment ago: Tollgate's redirect URI must be known before it starts (and registered at the IdP). */
async function freePort(): Promise<number> {
  const s = createServer();
  await new Promise<void>((resolve) => s.listen(0, "127.0.0.1", resolve));
  const port = (s.address() as AddressInfo).port;
  await new Promise<void>((resolve) => s.close(() => resolve()));
  return port;
}

/**
 * Navigates to `start` on Tollgate and follows every hop, filling in the IdP's login form (once) as `login`.
 * Never leaves for a third site (the last hop's `location` shows where it would have gone). With
 * `stopAtCallback`, stops before requesting /sso/callback: the last hop's `location` is the callback URL.
 */
export async function signIn(b: Browser, env: SsoEnv, start: string, login: string, opts: { stopAtCallback?: boolean } = {}): Promise<Hop[]> {
  const account = ACCOUNTS[login];
  if (!account) throw new Error(`unknown account ${login}`);
  let submitted = false;
  return b.navigate(new URL(start, env.url), {
    stopBefore: (url: URL) => (url.origin !== env.url && url.origin !== env.op.issuer) || (opts.stopAtCallback === true && url.origin === env.url && url.pathname === "/sso/callback"),
    onPage: async (page) => {
      if (page.url.origin !== env.op.issuer || page.status !== 200) return undefined;
      const forms = parseForms(page.body, page.url);
      if (!submitted && forms.some((f) => f.action.pathname.endsWith("/login"))) {
        submitted = true;
        return b.submit(page, { login, password: account.password }, { action: /\/login$/ });
      }
      if (forms.some((f) => f.action.pathname.endsWith("/confirm"))) return b.submit(page, {}, { action: /\/confirm$/ });
      return undefined;
    },
  });
}

/** The callback URL a sign-in stopped at (see signIn's stopAtCallback). */
export function callbackOf(hops: Hop[]): URL {
  const last = hops.at(-1)!;
  if (!last.location || last.location.pathname !== "/sso/callback") throw new Error(`sign-in did not reach the callback: ${hops.map((h) => `${h.status} ${h.url.href}`).join(" → ")}`);
  return last.location;
}

/** Same key derivation and format as src/auth/session/seal.ts: HKDF-SHA256 of the policy's secret, JWE dir+A256GCM. */
function keyFor(secret: string, purpose: "session" | "sign-in"): Uint8Array {
  return new Uint8Array(hkdfSync("sha256", secret, "tollgate", `tollgate ${purpose} v1`, 32));
}

export async function sealAs(secret: string, purpose: "session" | "sign-in", payload: JWTPayload, expiresAtMs: number): Promise<string> {
  return new EncryptJWT(payload).setProtectedHeader({ alg: "dir", enc: "A256GCM", typ: purpose }).setIssuedAt().setExpirationTime(Math.floor(expiresAtMs / 1000)).encrypt(keyFor(secret, purpose));
}

export async function unseal(secret: string, purpose: "session" | "sign-in", token: string): Promise<Record<string, unknown>> {
  const { payload } = await jwtDecrypt(token, keyFor(secret, purpose), { typ: purpose });
  return payload as Record<string, unknown>;
}

/** The session cookie's value in the jar, reassembled when chunked. */
export function sessionCookie(b: Browser, env: SsoEnv): string | undefined {
  const at = new URL("/ui/", env.url);
  const whole = b.jar.get("tollgate_session", at)?.value;
  if (whole) return whole;
  let value = "";
  for (let i = 0; ; i++) {
    const part = b.jar.get(`tollgate_session.${i}`, at)?.value;
    if (part === undefined) break;
    value += part;
  }
  return value || undefined;
}

/** The last audit line for a path (without query). */
export function lastAudit(env: SsoEnv, path: string): Record<string, unknown> | undefined {
  return env.h.audit().filter((a) => a.path === path).at(-1);
}

/** The `error.code` of an OpenAI-shaped error body. */
export function errorCode(hop: Hop): string | undefined {
  try {
    return (JSON.parse(hop.body) as { error?: { code?: string } }).error?.code;
  } catch {
    return undefined;
  }
}

/** Cookie names in a Cookie header. */
export function cookieNames(header: string | string[] | undefined): string[] {
  if (typeof header !== "string") return [];
  return header.split(";").map((p) => p.trim().split("=")[0]!).filter(Boolean);
}

/** A request as an API client would send it: no cookie jar, JSON accepted. */
export async function apiGet(url: string, headers: Record<string, string> = {}): Promise<Hop> {
  return new Browser().get(url, { headers: { accept: "application/json", ...headers }, cookie: headers.cookie });
}
