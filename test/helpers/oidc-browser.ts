/**
 * A real OpenID provider (panva's `oidc-provider` 9) on an ephemeral 127.0.0.1 port, set up for browser sign-in:
 * one confidential web client on the authorization code flow (PKCE required, refresh tokens through
 * `offline_access`), accounts with `email` and `groups` claims in the ID token, and a minimal login interaction of
 * our own (an HTML form a test browser fills in: login + password). Consent is granted automatically
 * (`loadExistingGrant` grants what the client asked for); a consent form exists only as a fallback.
 * Every grant at the token endpoint is recorded, so a test can tell a code exchange from a refresh.
 */
import { randomBytes } from "node:crypto";
import { createServer, type IncomingMessage, type Server, type ServerResponse } from "node:http";
import type { AddressInfo } from "node:net";
import { exportJWK, generateKeyPair, type JWK } from "jose";
import { MemoryAdapter, type Stored } from "./oidc-adapter.ts";

export interface BrowserAccount {
  password: string;
  email: string;
  groups: string[];
  name?: string;
}

export interface BrowserOidcOptions {
  /** Exact redirect URIs of the web client (e.g. http://127.0.0.1:PORT/sso/callback). */
  redirectUris: string[];
  /** Where RP-initiated logout may send the browser back to. */
  postLogoutRedirectUris?: string[];
  accounts: Record<string, BrowserAccount>;
  /** Default "tollgate-ui". */
  clientId?: string;
  /** How the client authenticates at the token endpoint; openid-client's default is client_secret_post. */
  tokenEndpointAuthMethod?: "client_secret_post" | "client_secret_basic";
  /** Offer RP-initiated logout (end_session_endpoint in discovery); default true. */
  endSession?: boolean;
  /** Token lifetimes in seconds. */
  ttl?: { accessToken?: number; idToken?: number; refreshToken?: number; code?: number };
}

export interface TokenRequestRecord {
  grantType: string;
  ok: boolean;
  error?: string;
}

export interface BrowserOidcProvider {
  /** `http://127.0.0.1:PORT`: the exact `iss`, and the base of discovery. */
  issuer: string;
  clientId: string;
  clientSecret: string;
  /** Grants seen at the token endpoint, in order (authorization_code, refresh_token, …). */
  tokenRequests: TokenRequestRecord[];
  /** Logins completed through the login form, by account id. */
  logins: string[];
  /** Login form submissions refused (wrong password or unknown account). */
  failedLogins: number;
  /** Errors the provider reported as server_error (a test can assert this stays empty). */
  serverErrors: Error[];
  close(): Promise<void>;
}

// oidc-provider ships no type declarations; a non-literal specifier keeps tsc from demanding them (TS7016),
// and these few shapes are all the helper touches.
interface GrantInstance {
  jti: string;
  accountId: string;
  clientId: string;
  addOIDCScope(scope: string): void;
  addOIDCClaims(claims: string[]): void;
  save(): Promise<string>;
}
interface GrantClass {
  new (init: { accountId: string; clientId: string }): GrantInstance;
  find(id: string): Promise<GrantInstance | undefined>;
}
interface ProviderContext {
  oidc: {
    params: Record<string, string | undefined>;
    client?: { clientId: string };
    session?: { accountId?: string; grantIdFor(clientId: string): string | undefined };
    result?: { consent?: { grantId?: string } };
    provider: { Grant: GrantClass };
  };
}
interface InteractionDetails {
  uid: string;
  prompt: { name: string; details: { missingOIDCScope?: string[]; missingOIDCClaims?: string[] } };
  params: Record<string, string | undefined>;
  session?: { accountId?: string };
  grantId?: string;
}
interface ProviderInstance {
  Grant: GrantClass;
  callback(): (req: IncomingMessage, res: ServerResponse) => void;
  on(event: "server_error", listener: (ctx: unknown, err: Error) => void): void;
  on(event: "grant.success", listener: (ctx: ProviderContext) => void): void;
  on(event: "grant.error", listener: (ctx: ProviderContext, err: Error & { error?: string }) => void): void;
  interactionDetails(req: IncomingMessage, res: ServerResponse): Promise<InteractionDetails>;
  interactionFinished(req: IncomingMessage, res: ServerResponse, result: Record<string, unknown>, opts?: { mergeWithLastSubmission?: boolean }): Promise<void>;
}
interface ProviderModule {
  default: new (issuer: string, configuration: Record<string, unknown>) => ProviderInstance;
}
const PROVIDER_MODULE = "oidc-provider";
let providerModule: Promise<ProviderModule> | undefined;

const INTERACTION = /^\/interaction\/([A-Za-z0-9_-]+)(\/login|\/confirm)?$/;
const MAX_FORM_BYTES = 16 * 1024;

export async function startBrowserOidcProvider(opts: BrowserOidcOptions): Promise<BrowserOidcProvider> {
  const { default: Provider } = await (providerModule ??= import(PROVIDER_MODULE) as Promise<ProviderModule>);
  const clientId = opts.clientId ?? "tollgate-ui";
  const clientSecret = randomBytes(24).toString("base64url");
  const ttl = { accessToken: 60, idToken: 60, refreshToken: 3600, code: 60, ...opts.ttl };
  const tokenRequests: TokenRequestRecord[] = [];
  const logins: string[] = [];
  const serverErrors: Error[] = [];
  let failedLogins = 0;
  const store: Stored = new Map();

  const server: Server = createServer();
  await new Promise<void>((resolve, reject) => {
    server.once("error", reject);
    server.listen(0, "127.0.0.1", () => resolve());
  });
  const issuer = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;

  const provider = new Provider(issuer, {
    adapter: (model: string) => new MemoryAdapter(model, store),
    clients: [
      {
        client_id: clientId,
        client_secret: clientSecret,
        redirect_uris: opts.redirectUris,
        post_logout_redirect_uris: opts.postLogoutRedirectUris ?? [],
        grant_types: ["authorization_code", "refresh_token"],
        response_types: ["code"],
        token_endpoint_auth_method: opts.tokenEndpointAuthMethod ?? "client_secret_post",
      },
    ],
    jwks: { keys: [await signingKey()] },
    cookies: { keys: [randomBytes(32).toString("base64url")] },
    // Which claims each scope releases; `groups` is its own scope, as at Okta.
    claims: { openid: ["sub"], email: ["email", "email_verified"], profile: ["name", "preferred_username"], groups: ["groups"] },
    // With the code flow, oidc-provider would otherwise keep scope claims out of the ID token (userinfo only);
    // Tollgate reads the ID token, as it does with Entra and Okta.
    conformIdTokenClaims: false,
    pkce: { required: () => true },
    features: {
      devInteractions: { enabled: false },
      rpInitiatedLogout: { enabled: opts.endSession ?? true },
    },
    interactions: { url: (_ctx: unknown, interaction: { uid: string }) => `/interaction/${interaction.uid}` },
    findAccount: async (_ctx: unknown, sub: string) => {
      const account = opts.accounts[sub];
      if (!account) return undefined;
      return {
        accountId: sub,
        claims: async () => ({ sub, email: account.email, email_verified: true, name: account.name ?? sub, preferred_username: sub, groups: account.groups }),
      };
    },
    // Consent is granted automatically: the grant holds whatever (known) scopes the client asked for.
    loadExistingGrant: async (ctx: ProviderContext) => {
      const client = ctx.oidc.client!.clientId;
      const existing = ctx.oidc.result?.consent?.grantId ?? ctx.oidc.session?.grantIdFor(client);
      if (existing) {
        const grant = await ctx.oidc.provider.Grant.find(existing);
        if (grant) return grant;
      }
      const accountId = ctx.oidc.session?.accountId;
      if (!accountId) return undefined;
      const grant = new ctx.oidc.provider.Grant({ accountId, clientId: client });
      grant.addOIDCScope(ctx.oidc.params.scope ?? "openid");
      await grant.save();
      return grant;
    },
    // oidc-provider follows OIDC Core to the letter and drops `offline_access` unless prompt=consent is sent, which
    // Tollgate (like most relying parties) does not; Entra and Okta issue the refresh token all the same. So does
    // this provider, to any client registered for the refresh_token grant.
    issueRefreshToken: async (_ctx: unknown, client: { grantTypeAllowed(type: string): boolean }) => client.grantTypeAllowed("refresh_token"),
    expiresWithSession: async () => false,
    ttl: {
      AccessToken: ttl.accessToken,
      IdToken: ttl.idToken,
      RefreshToken: ttl.refreshToken,
      AuthorizationCode: ttl.code,
      Grant: 3600,
      Interaction: 600,
      Session: 3600,
    },
    clientBasedCORS: () => false,
  });
  provider.on("server_error", (_ctx, err) => serverErrors.push(err));
  provider.on("grant.success", (ctx) => tokenRequests.push({ grantType: ctx.oidc.params.grant_type ?? "?", ok: true }));
  provider.on("grant.error", (ctx, err) => tokenRequests.push({ grantType: ctx.oidc.params.grant_type ?? "?", ok: false, error: err.error ?? err.message }));
  const oidcHandler = provider.callback();

  const interaction = async (req: IncomingMessage, res: ServerResponse, uid: string, action: string | undefined) => {
    const details = await provider.interactionDetails(req, res);
    if (details.uid !== uid) return page(res, 400, "<p>interaction mismatch</p>");
    if (!action && req.method === "GET") {
      if (details.prompt.name === "login") return page(res, 200, loginForm(uid, details.params.login_hint));
      return page(res, 200, consentForm(uid));
    }
    if (req.method !== "POST") return page(res, 405, "<p>method not allowed</p>");
    const form = new URLSearchParams(await readBody(req));
    if (action === "/login") {
      const login = form.get("login") ?? "";
      const account = Object.hasOwn(opts.accounts, login) ? opts.accounts[login] : undefined;
      if (!account || form.get("password") !== account.password) {
        failedLogins++;
        return page(res, 200, loginForm(uid, login, "Invalid login or password."));
      }
      logins.push(login);
      return provider.interactionFinished(req, res, { login: { accountId: login } }, { mergeWithLastSubmission: false });
    }
    // Fallback consent (loadExistingGrant normally makes it unnecessary): grant what is missing.
    const accountId = details.session?.accountId;
    if (!accountId || details.params.client_id === undefined) return page(res, 400, "<p>no session</p>");
    const grant = (details.grantId ? await provider.Grant.find(details.grantId) : undefined) ?? new provider.Grant({ accountId, clientId: details.params.client_id });
    const missing = details.prompt.details;
    if (missing.missingOIDCScope) grant.addOIDCScope(missing.missingOIDCScope.join(" "));
    if (missing.missingOIDCClaims) grant.addOIDCClaims(missing.missingOIDCClaims);
    const grantId = await grant.save();
    return provider.interactionFinished(req, res, { consent: { grantId } }, { mergeWithLastSubmission: true });
  };

  server.on("request", (req: IncomingMessage, res: ServerResponse) => {
    const path = (req.url ?? "/").split("?")[0]!;
    const m = INTERACTION.exec(path);
    if (!m) return oidcHandler(req, res);
    interaction(req, res, m[1]!, m[2]).catch((err: Error) => {
      serverErrors.push(err);
      if (!res.headersSent) page(res, 400, `<p>${escapeHtml(err.message)}</p>`);
      else res.destroy();
    });
  });

  return {
    issuer,
    clientId,
    clientSecret,
    tokenRequests,
    logins,
    get failedLogins() {
      return failedLogins;
    },
    serverErrors,
    close: () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
}

function loginForm(uid: string, login: string | undefined, error?: string): string {
  return `<h1>Sign in</h1>${error ? `<p class="error">${escapeHtml(error)}</p>` : ""}
<form method="post" action="/interaction/${uid}/login">
  <input type="text" name="login" value="${escapeHtml(login ?? "")}">
  <input type="password" name="password" value="">
  <button type="submit">Sign in</button>
</form>`;
}

function consentForm(uid: string): string {
  return `<h1>Authorize</h1>
<form method="post" action="/interaction/${uid}/confirm">
  <input type="hidden" name="prompt" value="consent">
  <button type="submit">Continue</button>
</form>`;
}

function page(res: ServerResponse, status: number, body: string): void {
  const html = `<!doctype html><html><head><title>test IdP</title></head><body>${body}</body></html>`;
  res.writeHead(status, { "content-type": "text/html; charset=utf-8", "content-length": Buffer.byteLength(html), "cache-control": "no-store" });
  res.end(html);
}

async function readBody(req: IncomingMessage): Promise<string> {
  let size = 0;
  const chunks: Buffer[] = [];
  for await (const chunk of req) {
    size += (chunk as Buffer).length;
    if (size > MAX_FORM_BYTES) throw new Error("form too large");
    chunks.push(chunk as Buffer);
  }
  return Buffer.concat(chunks).toString("utf8");
}

function escapeHtml(s: string): string {
  return s.replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);
}

async function signingKey(): Promise<JWK> {
  const { privateKey } = await generateKeyPair("RS256", { extractable: true });
  return { ...(await exportJWK(privateKey)), kid: `sso-${randomBytes(6).toString("hex")}`, alg: "RS256", use: "sig" };
}
