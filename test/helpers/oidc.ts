/**
 * A real OpenID provider (panva's `oidc-provider` 9) on an ephemeral 127.0.0.1 port, for tests of the JWT and
 * introspection authenticators. Users are confidential clients on the client_credentials grant: `sub` is the
 * user's name (its client_id), `groups`/`email` come from `extraTokenClaims`, and the scopes a user may hold are
 * the resource server's scopes for that client. A resource indicator yields a JWT (`typ: at+jwt`, aud = the
 * resource); the reserved indicator `OPAQUE_RESOURCE` yields an opaque token with the same audience, because
 * oidc-provider refuses to introspect JWTs and drops non-OIDC scopes from tokens requested without a resource.
 */
import { randomBytes } from "node:crypto";
import { createServer, type IncomingMessage, type Server, type ServerResponse } from "node:http";
import type { AddressInfo } from "node:net";
import { exportJWK, generateKeyPair, type JWK } from "jose";
import { MemoryAdapter } from "./oidc-adapter.ts";

export interface TestUser {
  clientId: string;
  clientSecret: string;
  groups: string[];
  email?: string;
  scope?: string;
}

export interface OidcTestProvider {
  /** `http://127.0.0.1:PORT`, the exact `iss` of its tokens. */
  issuer: string;
  jwksUri: string;
  tokenEndpoint: string;
  introspectionEndpoint: string;
  /** The default resource indicator and so the `aud` of JWT access tokens. */
  audience: string;
  users: Record<string, TestUser>;
  /** The one client allowed to call the introspection endpoint; authenticates with client_secret_basic. */
  introspectionClient: { clientId: string; clientSecret: string };
  /** kid of the key that signs new tokens. */
  currentKid: string;
  /** Errors the provider reported as server_error (a test can assert this stays empty). */
  serverErrors: Error[];
  /** RFC 9068 JWT access token for `resource` (default `audience`): sub, client_id, groups, email, scope. */
  jwtAccessToken(user: string, opts?: { resource?: string; scope?: string }): Promise<string>;
  /** Opaque access token (audience `audience`) with the same claims, visible only through introspection. */
  opaqueAccessToken(user: string, opts?: { scope?: string }): Promise<string>;
  /** An ID token (aud = the user's client_id, no typ at+jwt) signed by the provider's current key. */
  idToken(user: string): Promise<string>;
  /** Restart on the same port with a new signing key listed first; the old key stays published if `keepOld`. */
  rotateKeys(opts?: { keepOld?: boolean }): Promise<{ newKid: string }>;
  /** Close the port (connections refused) until restart(); issued opaque tokens survive both. */
  stop(): Promise<void>;
  restart(): Promise<void>;
  close(): Promise<void>;
}

export interface OidcProviderOptions {
  users: Record<string, { groups: string[]; email?: string; scope?: string }>;
  /** Default "api://tollgate-test". */
  audience?: string;
  /** Seconds; default 300. */
  accessTokenTtl?: number;
}

/** Resource indicator reserved for opaque tokens; their `aud` is still the configured audience. */
export const OPAQUE_RESOURCE = "urn:tollgate-test:opaque";

const INTROSPECTOR = "tollgate-introspector";
const HTTP_TIMEOUT_MS = 5_000;

// oidc-provider ships no type declarations; a non-literal specifier keeps tsc from demanding them (TS7016),
// and these few shapes are all the helper touches.
interface ProviderInstance {
  issuer: string;
  callback(): (req: IncomingMessage, res: ServerResponse) => void;
  on(event: "server_error", listener: (ctx: unknown, err: Error) => void): void;
  Client: { find(id: string): Promise<unknown> };
  IdToken: new (claims: Record<string, unknown>, opts: { client: unknown }) => {
    scope?: string;
    set(claim: string, value: unknown): void;
    issue(opts: { use: "idtoken" }): Promise<string>;
  };
}
interface ProviderModule {
  default: new (issuer: string, configuration: Record<string, unknown>) => ProviderInstance;
  errors: { InvalidTarget: new (description?: string) => Error };
}
const PROVIDER_MODULE = "oidc-provider";
let providerModule: Promise<ProviderModule> | undefined;

export async function startOidcProvider(opts: OidcProviderOptions): Promise<OidcTestProvider> {
  const { default: Provider, errors } = await (providerModule ??= import(PROVIDER_MODULE) as Promise<ProviderModule>);
  const audience = opts.audience ?? "api://tollgate-test";
  const ttl = opts.accessTokenTtl ?? 300;
  const users: Record<string, TestUser> = {};
  for (const [name, u] of Object.entries(opts.users)) {
    users[name] = { clientId: name, clientSecret: secret(), groups: u.groups, email: u.email, scope: u.scope };
  }
  const byClient = new Map(Object.values(users).map((u) => [u.clientId, u]));
  const introspectionClient = { clientId: INTROSPECTOR, clientSecret: secret() };
  const store = new Map<string, { payload: Record<string, unknown>; expiresAt: number }>();
  const serverErrors: Error[] = [];
  let keys: JWK[] = [await newSigningKey()];
  let provider!: ProviderInstance;
  let handler: (req: IncomingMessage, res: ServerResponse) => void = (_req, res) => res.writeHead(503).end();
  // Every response closes its connection: stop()/rotateKeys() destroy sockets, and a client that pooled one
  // (fetch, jose's remote JWKS) would otherwise race the FIN with its next request and see "other side closed".
  const serve = (req: IncomingMessage, res: ServerResponse) => {
    res.shouldKeepAlive = false;
    handler(req, res);
  };

  const server0 = createServer(serve);
  await listen(server0, 0);
  const port = (server0.address() as AddressInfo).port;
  let server: Server | undefined = server0;
  const issuer = `http://127.0.0.1:${port}`;

  const build = () => {
    provider = new Provider(issuer, {
      adapter: (model: string) => new MemoryAdapter(model, store),
      clients: [
        ...Object.values(users).map((u) => ({
          client_id: u.clientId,
          client_secret: u.clientSecret,
          grant_types: ["client_credentials"],
          response_types: [],
          redirect_uris: [],
          // No `scope` metadata: it may only list the provider's static (OIDC) scopes. A user's scopes are
          // enforced as the resource server's scope for that client instead (see getResourceServerInfo).
        })),
        { client_id: INTROSPECTOR, client_secret: introspectionClient.clientSecret, grant_types: [], response_types: [], redirect_uris: [] },
      ],
      // The first key is the one selected for signing (keystore.selectForSign); all are published at jwks_uri.
      jwks: { keys },
      features: {
        devInteractions: { enabled: false },
        clientCredentials: { enabled: true },
        introspection: { enabled: true, allowedPolicy: async (ctx: { oidc: { client: { clientId: string } } }) => ctx.oidc.client.clientId === INTROSPECTOR },
        resourceIndicators: {
          enabled: true,
          defaultResource: async () => undefined,
          useGrantedResource: async () => false,
          getResourceServerInfo: async (_ctx: unknown, resource: string, client: { clientId: string }) => {
            const user = byClient.get(client.clientId);
            if (!user) throw new errors.InvalidTarget("client is not a test user");
            const opaque = resource === OPAQUE_RESOURCE;
            return { audience: opaque ? audience : resource, scope: user.scope ?? "", accessTokenTTL: ttl, accessTokenFormat: opaque ? "opaque" : "jwt" };
          },
        },
      },
      extraTokenClaims: async (_ctx: unknown, token: { clientId: string }) => {
        const user = byClient.get(token.clientId);
        return user ? { groups: user.groups, ...(user.email ? { email: user.email } : {}) } : undefined;
      },
      // Explicit values and hooks silence the "default … function called, you SHOULD change it" notices.
      ttl: { AccessToken: ttl, ClientCredentials: ttl, IdToken: ttl },
      clientBasedCORS: () => false,
    });
    provider.on("server_error", (_ctx, err) => serverErrors.push(err));
    handler = provider.callback();
  };
  build();

  const up = async () => {
    if (server) return;
    const s = createServer(serve);
    await listen(s, port);
    server = s;
  };
  const down = async () => {
    const s = server;
    if (!s) return;
    server = undefined;
    s.closeAllConnections();
    await new Promise<void>((resolve) => s.close(() => resolve()));
  };

  const tokenRequest = async (user: string, resource: string, scope: string | undefined) => {
    const u = users[user];
    if (!u) throw new Error(`unknown test user ${user}`);
    const body = new URLSearchParams({ grant_type: "client_credentials", resource });
    const requested = scope ?? u.scope;
    if (requested) body.set("scope", requested);
    const res = await fetch(`${issuer}/token`, {
      method: "POST",
      headers: { authorization: basic(u.clientId, u.clientSecret), "content-type": "application/x-www-form-urlencoded" },
      body,
      signal: AbortSignal.timeout(HTTP_TIMEOUT_MS),
    });
    const json = (await res.json()) as { access_token?: string; error?: string; error_description?: string };
    if (!res.ok || !json.access_token) throw new Error(`token endpoint ${res.status}: ${json.error} ${json.error_description ?? ""}`);
    return json.access_token;
  };

  return {
    issuer,
    jwksUri: `${issuer}/jwks`,
    tokenEndpoint: `${issuer}/token`,
    introspectionEndpoint: `${issuer}/token/introspection`,
    audience,
    users,
    introspectionClient,
    get currentKid() {
      return keys[0]!.kid!;
    },
    serverErrors,
    jwtAccessToken: (user, o = {}) => tokenRequest(user, o.resource ?? audience, o.scope),
    opaqueAccessToken: (user, o = {}) => tokenRequest(user, OPAQUE_RESOURCE, o.scope),
    async idToken(user) {
      // client_credentials never yields an ID token and every other grant needs an end-user interaction, so this
      // uses the provider's own IdToken model outside a request: same keystore, issuer, TTL and signing alg as an
      // ID token from the authorization endpoint, with aud = the client and no at+jwt typ.
      const u = users[user];
      if (!u) throw new Error(`unknown test user ${user}`);
      const token = new provider.IdToken({ sub: u.clientId }, { client: await provider.Client.find(u.clientId) });
      token.scope = "openid"; // the claims mask for scope openid is what lets `sub` through
      token.set("groups", u.groups);
      if (u.email) token.set("email", u.email);
      return token.issue({ use: "idtoken" });
    },
    async rotateKeys({ keepOld = false } = {}) {
      const key = await newSigningKey();
      keys = keepOld ? [key, ...keys] : [key];
      await down();
      build();
      await up();
      return { newKid: key.kid! };
    },
    stop: down,
    restart: up,
    close: down,
  };
}

async function newSigningKey(): Promise<JWK> {
  const { privateKey } = await generateKeyPair("RS256", { extractable: true });
  return { ...(await exportJWK(privateKey)), kid: `test-${randomBytes(6).toString("hex")}`, alg: "RS256", use: "sig" };
}

function secret(): string {
  return randomBytes(24).toString("base64url");
}

function basic(id: string, secret: string): string {
  return `Basic ${Buffer.from(`${encodeURIComponent(id)}:${encodeURIComponent(secret)}`).toString("base64")}`;
}

/** Listens on 127.0.0.1; on a restart the old socket may linger a moment, so EADDRINUSE is retried (bounded). */
async function listen(server: Server, port: number): Promise<void> {
  for (let attempt = 0; ; attempt++) {
    try {
      await new Promise<void>((resolve, reject) => {
        server.once("error", reject);
        server.listen(port, "127.0.0.1", () => {
          server.off("error", reject);
          resolve();
        });
      });
      return;
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== "EADDRINUSE" || attempt >= 40) throw err;
      await new Promise((r) => setTimeout(r, 50));
    }
  }
}
