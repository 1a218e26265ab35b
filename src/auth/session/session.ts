/**
 * Browser sign-in for admin UIs: the OIDC authorization code flow with PKCE, state and nonce (openid-client),
 * an encrypted session cookie, refresh with the refresh token, revocation at sign-out. The same claim mapping
 * and route rules as the API apply; the upstream UI receives the identity headers, never the cookie.
 *
 *   {basePath}/login?next=/ui/   → the IdP       {basePath}/callback → session, back to `next`
 *   {basePath}/logout            → session revoked, cookies cleared, RP-initiated logout at the IdP if offered
 */
import { randomUUID } from "node:crypto";
import type { IncomingMessage, ServerResponse } from "node:http";
import * as oidc from "openid-client";
import type { Authenticator, AuthRequest } from "../authenticator.ts";
import type { AuthenticatorDeps } from "../index.ts";
import type { Principal, PrincipalKind } from "../principal.ts";
import type { SessionAuthenticatorConfig, DeprecationConfig } from "../../config/authenticators.ts";
import type { Store } from "../../limits/store/types.ts";
import type { NameMatcher } from "../../policy/patterns.ts";
import { compilePrincipalMapping, type PrincipalFactory } from "../claims.ts";
import { GraphGroupResolver, hasGroupOverage } from "../entra-groups.ts";
import { isLoopbackUrl } from "../loopback.ts";
import { TollgateError } from "../../proxy/errors.ts";
import { Sealer } from "./seal.ts";
import { parseCookies, readChunked, chunkedCookies, clearCookies, serializeCookie, type CookieAttributes } from "./cookies.ts";
import { safeNext } from "./redirect.ts";

const TRANSACTION_TTL_MS = 10 * 60_000;

export interface SessionDeps extends AuthenticatorDeps {
  store: Store;
  /** Groups the policy refers to: only those are kept in the cookie (an Entra user can be in hundreds). */
  groupFilter: NameMatcher;
}

interface SessionPayload {
  sid: string;
  p: { id: string; kind: PrincipalKind; user?: string; email?: string; team?: string; groups: string[]; roles: string[]; scopes: string[] };
  /** When to re-validate with the refresh token (epoch ms). */
  fresh: number;
  rt?: string;
  /** Absolute end of the session (epoch ms). */
  end: number;
}

export class SessionAuthenticator implements Authenticator {
  readonly name: string;
  readonly type = "session";
  readonly deprecation: DeprecationConfig | undefined;
  readonly basePath: string;
  readonly #config: SessionAuthenticatorConfig;
  readonly #deps: SessionDeps;
  readonly #sessions: Sealer;
  readonly #transactions: Sealer;
  readonly #principals: PrincipalFactory;
  readonly #overage: GraphGroupResolver | undefined;
  readonly #cookieName: string;
  readonly #txName: string;
  readonly #attrs: CookieAttributes;
  readonly #origin: string;
  readonly #tenants: ReadonlySet<string> | undefined;
  #discovered: Promise<oidc.Configuration> | undefined;
  readonly #refreshing = new Map<string, Promise<SessionPayload>>();

  constructor(config: SessionAuthenticatorConfig, deps: SessionDeps) {
    this.name = config.name;
    this.deprecation = config.deprecated;
    this.basePath = config.basePath;
    this.#config = config;
    this.#deps = deps;
    this.#sessions = new Sealer(config.sessionSecret, "session");
    this.#transactions = new Sealer(config.sessionSecret, "sign-in");
    this.#principals = compilePrincipalMapping(config.principal, config.name, this.type);
    this.#overage = config.entra?.groupOverage ? new GraphGroupResolver(config.entra.groupOverage, deps) : undefined;
    this.#cookieName = config.cookie.name;
    this.#txName = `${config.cookie.name}_tx`;
    this.#attrs = { path: "/", secure: config.cookie.secure, domain: config.cookie.domain, maxAge: Math.floor(config.cookie.maxAge / 1000) };
    this.#origin = new URL(config.redirectUri).origin;
    this.#tenants = config.provider.preset === "entra" && config.provider.tenants ? new Set(config.provider.tenants.map((t) => t.toLowerCase())) : undefined;
  }

  /** Cookies the upstream must never receive. */
  ownsCookie(name: string): boolean {
    return name === this.#cookieName || name.startsWith(`${this.#cookieName}.`) || name === this.#txName;
  }

  /** Set-Cookie headers deleting this method's session cookies (a tampered or ended session). */
  clearSession(cookieHeader: string | undefined): string[] {
    return clearCookies(this.#cookieName, parseCookies(cookieHeader).keys(), this.#attrs);
  }

  /** Where an unauthenticated browser goes to sign in, coming back to `next`. */
  loginUrl(next: string): string {
    return `${this.basePath}/login?next=${encodeURIComponent(safeNext(next))}`;
  }

  handles(path: string): boolean {
    return path === `${this.basePath}/login` || path === `${this.basePath}/callback` || path === `${this.basePath}/logout`;
  }

  async authenticate(req: AuthRequest): Promise<Principal | undefined> {
    const cookies = parseCookies(typeof req.headers.cookie === "string" ? req.headers.cookie : undefined);
    const sealed = readChunked(cookies, this.#cookieName);
    if (!sealed) return undefined;
    this.#checkSameSite(req);
    const now = this.#deps.clock.now();
    const opened = await this.#sessions.open(sealed, now);
    if (!opened) throw new TollgateError("invalid_session", undefined, undefined, "unreadable");
    let session = opened as unknown as SessionPayload;
    if (now >= session.end) throw new TollgateError("session_expired", undefined, undefined, "max_age");
    let revoked: boolean;
    try {
      revoked = await this.#deps.store.isRevoked(`session:${session.sid}`, now);
    } catch {
      throw new TollgateError("auth_unavailable", undefined, { "retry-after": "5" }, "session_store");
    }
    if (revoked) throw new TollgateError("session_expired", undefined, undefined, "signed_out");
    if (now >= session.fresh && session.rt) {
      session = await this.#refresh(session);
      for (const c of await this.#sessionCookies(session, cookies)) req.setCookie?.(c);
    }
    return this.#principalOf(session);
  }

  /**
   * A cookie travels with cross-site requests a page on a sibling subdomain can make (SameSite=Lax stops only
   * other sites' POSTs): state-changing requests must come from this site's own pages.
   */
  #checkSameSite(req: AuthRequest): void {
    const method = req.method ?? "GET";
    if (method === "GET" || method === "HEAD" || method === "OPTIONS") return;
    const origin = req.headers.origin;
    const fetchSite = req.headers["sec-fetch-site"];
    if ((typeof origin === "string" && origin !== this.#origin) || fetchSite === "cross-site" || fetchSite === "same-site") {
      throw new TollgateError("forbidden", "Cross-site requests with a session cookie are refused.", undefined, "cross_site");
    }
  }

  /** Serves {basePath}/login, /callback and /logout; resolves with the audit reason. */
  async serve(req: IncomingMessage, res: ServerResponse, path: string, search: string): Promise<string> {
    const params = new URLSearchParams(search);
    const cookies = parseCookies(req.headers.cookie);
    if (path.endsWith("/login")) return this.#login(res, params.get("next"));
    if (path.endsWith("/callback")) return this.#callback(res, search, cookies);
    const fetchSite = req.headers["sec-fetch-site"];
    return this.#logout(res, cookies, typeof fetchSite === "string" ? fetchSite : undefined);
  }

  async #login(res: ServerResponse, next: string | null): Promise<string> {
    const config = await this.#configuration();
    const verifier = oidc.randomPKCECodeVerifier();
    const state = oidc.randomState();
    const nonce = oidc.randomNonce();
    const now = this.#deps.clock.now();
    const tx = await this.#transactions.seal({ v: verifier, s: state, n: nonce, next: safeNext(next) }, now + TRANSACTION_TTL_MS);
    const url = oidc.buildAuthorizationUrl(config, {
      redirect_uri: this.#config.redirectUri,
      scope: this.#config.scopes.join(" "),
      code_challenge: await oidc.calculatePKCECodeChallenge(verifier),
      code_challenge_method: "S256",
      state,
      nonce,
      ...this.#config.authorizationParams,
    });
    redirect(res, url.href, [serializeCookie(this.#txName, tx, { ...this.#attrs, path: this.basePath, maxAge: TRANSACTION_TTL_MS / 1000 })]);
    return "sign_in_started";
  }

  async #callback(res: ServerResponse, search: string, cookies: Map<string, string>): Promise<string> {
    const now = this.#deps.clock.now();
    const sealedTx = cookies.get(this.#txName);
    const tx = sealedTx ? await this.#transactions.open(sealedTx, now) : undefined;
    // The transaction cookie is single-use whatever happens next.
    const clearTx = serializeCookie(this.#txName, "", { ...this.#attrs, path: this.basePath, maxAge: 0 });
    if (!tx || typeof tx.v !== "string" || typeof tx.s !== "string" || typeof tx.n !== "string") {
      throw withCookies(new TollgateError("sign_in_failed", "No sign-in is in progress in this browser; start again.", undefined, "no_transaction"), [clearTx]);
    }
    const config = await this.#configuration();
    let claims: Record<string, unknown>;
    let refreshToken: string | undefined;
    try {
      const tokens = await oidc.authorizationCodeGrant(config, new URL(`${this.#config.redirectUri}${search}`), {
        pkceCodeVerifier: tx.v,
        expectedState: tx.s,
        expectedNonce: tx.n,
        idTokenExpected: true,
      });
      claims = (tokens.claims() ?? {}) as Record<string, unknown>;
      refreshToken = tokens.refresh_token;
    } catch (err) {
      const detail = signInDetail(err);
      this.#deps.logger.warn({ authenticator: this.name, reason: detail }, "sign-in callback refused");
      throw withCookies(new TollgateError("sign_in_failed", undefined, undefined, detail), [clearTx]);
    }
    const principal = await this.#fromClaims(claims);
    const session: SessionPayload = {
      sid: randomUUID(), // a new session id at every sign-in
      p: this.#compact(principal),
      fresh: now + this.#config.refreshAfter,
      end: now + this.#config.cookie.maxAge,
      ...(refreshToken ? { rt: refreshToken } : {}),
    };
    redirect(res, safeNext(typeof tx.next === "string" ? tx.next : "/"), [clearTx, ...(await this.#sessionCookies(session, cookies))]);
    return "signed_in";
  }

  async #logout(res: ServerResponse, cookies: Map<string, string>, fetchSite: string | undefined): Promise<string> {
    // A link on another site must not sign people out.
    if (fetchSite === "cross-site") throw new TollgateError("forbidden", "Sign out from this site.", undefined, "cross_site");
    const now = this.#deps.clock.now();
    const sealed = readChunked(cookies, this.#cookieName);
    const session = sealed ? ((await this.#sessions.open(sealed, now)) as unknown as SessionPayload | undefined) : undefined;
    if (session?.sid) await this.#deps.store.revoke(`session:${session.sid}`, Math.max(1000, session.end - now), now);
    const cleared = clearCookies(this.#cookieName, cookies.keys(), this.#attrs);
    let target = this.#config.postLogoutRedirect;
    try {
      const config = await this.#configuration();
      if (config.serverMetadata().end_session_endpoint) {
        target = oidc.buildEndSessionUrl(config, { client_id: this.#config.clientId, post_logout_redirect_uri: this.#origin + this.#config.postLogoutRedirect }).href;
      }
    } catch {
      // The IdP is unreachable: the local session is over all the same.
    }
    redirect(res, target, cleared);
    return "signed_out";
  }

  async #refresh(session: SessionPayload): Promise<SessionPayload> {
    // Refresh tokens rotate: concurrent requests of one session share one refresh.
    let pending = this.#refreshing.get(session.sid);
    if (!pending) {
      pending = (async () => {
        try {
          const tokens = await oidc.refreshTokenGrant(await this.#configuration(), session.rt!);
          const claims = tokens.claims() as Record<string, unknown> | undefined;
          const p = claims ? this.#compact(await this.#fromClaims(claims)) : session.p;
          return { ...session, p, fresh: this.#deps.clock.now() + this.#config.refreshAfter, ...(tokens.refresh_token ? { rt: tokens.refresh_token } : {}) };
        } catch (err) {
          if (err instanceof TollgateError) throw err;
          throw new TollgateError("session_expired", undefined, undefined, "refresh_failed");
        }
      })().finally(() => setTimeout(() => this.#refreshing.delete(session.sid), 5000).unref());
      this.#refreshing.set(session.sid, pending);
    }
    return pending;
  }

  async #fromClaims(claims: Record<string, unknown>): Promise<Principal> {
    if (this.#tenants && !this.#tenants.has(String(claims.tid ?? "").toLowerCase())) {
      throw new TollgateError("sign_in_failed", "Your organization may not sign in here.", undefined, "tenant");
    }
    let groups: readonly string[] | undefined;
    if (hasGroupOverage(claims)) {
      const userId = typeof claims.oid === "string" ? claims.oid : String(claims.sub);
      groups = this.#overage ? await this.#overage.groups(userId, typeof claims.tid === "string" ? claims.tid : undefined) : [];
    }
    return this.#principals.fromClaims(claims, groups ? { groups } : undefined);
  }

  #compact(p: Principal): SessionPayload["p"] {
    return {
      id: p.id,
      kind: p.kind,
      ...(p.user ? { user: p.user } : {}),
      ...(p.email ? { email: p.email } : {}),
      ...(p.team ? { team: p.team } : {}),
      groups: p.groups.filter((g) => this.#deps.groupFilter.matches(g)),
      roles: [...p.roles],
      scopes: [...p.scopes],
    };
  }

  #principalOf(session: SessionPayload): Principal {
    const p = session.p;
    return Object.freeze({ ...p, groups: Object.freeze(p.groups), roles: Object.freeze(p.roles), scopes: Object.freeze(p.scopes), authenticator: this.name, method: this.type, claims: Object.freeze({ sid: session.sid }) });
  }

  async #sessionCookies(session: SessionPayload, present: Map<string, string>): Promise<string[]> {
    const sealed = await this.#sessions.seal(session as unknown as Record<string, unknown>, session.end);
    const maxAge = Math.max(0, Math.floor((session.end - this.#deps.clock.now()) / 1000));
    return chunkedCookies(this.#cookieName, sealed, { ...this.#attrs, maxAge }, new Set(present.keys()));
  }

  /** Discovery once (openid-client), retried on the next request if it failed. */
  #configuration(): Promise<oidc.Configuration> {
    this.#discovered ??= this.#discover().catch((err: unknown) => {
      this.#discovered = undefined;
      this.#deps.logger.warn({ authenticator: this.name, err: (err as Error).message }, "OIDC discovery failed");
      throw new TollgateError("auth_unavailable", "The identity provider cannot be reached; retry shortly.", { "retry-after": "5" }, "discovery");
    });
    return this.#discovered;
  }

  #discover(): Promise<oidc.Configuration> {
    const p = this.#config.provider;
    const server =
      p.preset === "entra"
        ? new URL(`https://login.microsoftonline.com/${p.tenant}/v2.0`)
        : p.preset === "okta"
          ? new URL(`https://${p.domain}/oauth2/${p.authorizationServer}`)
          : new URL(p.discoveryUrl ?? p.issuer);
    return oidc.discovery(server, this.#config.clientId, this.#config.clientSecret, undefined, {
      ...(isLoopbackUrl(server) ? { execute: [oidc.allowInsecureRequests] } : {}),
      timeout: 10,
    });
  }
}

function redirect(res: ServerResponse, location: string, cookies: string[]): void {
  res.writeHead(302, { location, "set-cookie": cookies, "cache-control": "no-store", "content-length": "0" });
  res.end();
}

/** Cookies to send with an error response (clearing the used sign-in transaction). */
export const errorCookies = new WeakMap<TollgateError, string[]>();
function withCookies(err: TollgateError, cookies: string[]): TollgateError {
  errorCookies.set(err, cookies);
  return err;
}

/** A stable reason for the audit line from openid-client's errors (their codes are generic; message and cause are not). */
function signInDetail(err: unknown): string {
  if ((err as { error?: string }).error === "invalid_grant") return "invalid_grant";
  // openid-client wraps oauth4webapi's error, which names the parameter or claim: read the whole cause chain.
  let text = "";
  for (let e = err as { message?: string; claim?: string; cause?: unknown } | undefined, depth = 0; e && depth < 4; e = e.cause as typeof e, depth++) {
    text += ` ${e.message ?? ""} ${typeof e.claim === "string" ? e.claim : ""}`;
  }
  if (/\bstate\b/i.test(text)) return "state";
  if (/\bnonce\b/i.test(text)) return "nonce";
  if (/code_verifier|pkce/i.test(text)) return "pkce";
  return "token_exchange";
}
