/** Policy shapes of the authenticators: one entry per method, each strict. */
import { isIP } from "node:net";
import { z } from "zod";
import { duration } from "./duration.ts";
import { name, headerName, claimPath, claimPaths, secureUrl } from "./common.ts";
import { azureCredential } from "./azure.ts";

const ASYMMETRIC = ["RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA", "Ed25519"] as const;
export const DEFAULT_ALGORITHMS: readonly string[] = ASYMMETRIC;

/** Marks an authenticator for retirement: its callers get Deprecation/Sunset headers and are counted. */
const deprecated = z.strictObject({
  sunset: z.iso.date().or(z.iso.datetime({ offset: true })).describe("When the method stops working (RFC 8594 Sunset)"),
  link: z.url().optional().describe("Where callers read how to migrate"),
});

const roleMapping = z
  .strictObject({
    groups: z.array(z.string()).min(1).optional().describe("Group names or ids (`*` wildcards) that grant the roles"),
    claim: claimPath.optional().describe("A claim (dot path) whose value(s) are matched against `values`"),
    values: z.array(z.string()).min(1).optional(),
    roles: z.array(z.string()).min(1),
  })
  .refine((m) => m.groups !== undefined || (m.claim !== undefined && m.values !== undefined), {
    message: "a role mapping needs `groups`, or `claim` with `values`",
  });

/** How claims (from a token, introspection, userinfo or headers) become a Principal. */
export const principalMapping = z
  .strictObject({
    id: claimPaths.default(["sub", "client_id"]),
    user: claimPaths.default(["email", "preferred_username", "upn", "unique_name", "sub"]),
    email: claimPaths.default(["email", "upn", "preferred_username"]),
    groups: claimPaths.default(["groups"]),
    roles: claimPaths.default(["roles"]),
    scopes: claimPaths.default(["scp", "scope"]),
    team: claimPaths.optional(),
    roleMappings: z.array(roleMapping).default([]),
    emailDomains: z
      .array(z.string().regex(/^[A-Za-z0-9.-]+\.[A-Za-z]{2,}$/, "a domain such as example.com"))
      .min(1)
      .optional()
      .describe("Only callers whose email is in one of these domains (exact, case-insensitive)"),
  })
  .prefault({});

const jwks = z
  .strictObject({
    maxAge: duration.prefault("10m").describe("Refetch a key set this old on the next request (in the background)"),
    cooldown: duration.prefault("30s").describe("At most one refetch for unknown key ids per this interval"),
    staleFor: duration.prefault("1h").describe("Keep using the last good key set this long while the endpoint fails"),
    timeout: duration.prefault("5s"),
  })
  .prefault({});

const issuer = z.strictObject({
  issuer: z.string().min(1).describe("Exact `iss` value; for Entra multi-tenant use {tenantid} as a placeholder"),
  jwksUri: secureUrl.optional().describe("Explicit JWKS URL; default: discovered from the issuer's openid-configuration"),
  discoveryUrl: secureUrl.optional().describe("Discovery document URL when it is not {issuer}/.well-known/openid-configuration"),
  audiences: z.array(z.string()).min(1).optional(),
  allowAnyAudience: z.literal(true).optional().describe("Explicit opt-out of the audience check (not recommended)"),
  algorithms: z.array(z.enum(["HS256", "HS384", "HS512", ...ASYMMETRIC])).min(1).default([...ASYMMETRIC]),
  leeway: duration.prefault("30s").refine((ms) => ms <= 300_000, "leeway is at most 300s"),
  typ: z.string().optional().describe("Required `typ` header, e.g. at+jwt (RFC 9068 access tokens)"),
  clientIds: z.array(z.string()).min(1).optional().describe("Allowed `azp` / `appid` / `client_id` values"),
  tenants: z.array(z.string()).min(1).optional().describe("Entra multi-tenant: allowed `tid` values"),
});

const groupOverage = z.strictObject({
  graphUrl: secureUrl.default("https://graph.microsoft.com"),
  credential: azureCredential,
  scope: z.string().default("https://graph.microsoft.com/.default"),
  cacheTtl: duration.prefault("10m"),
  timeout: duration.prefault("5s"),
});

const jwtAuthenticator = z
  .strictObject({
    name,
    type: z.literal("jwt"),
    deprecated: deprecated.optional(),
    issuers: z.array(issuer).min(1),
    principal: principalMapping,
    jwks,
    maxTokenBytes: z.number().int().positive().max(65536).default(16384),
    cache: z.strictObject({ maxEntries: z.number().int().nonnegative().default(10000) }).prefault({}),
    entra: z.strictObject({ groupOverage: groupOverage.optional() }).optional().describe("Entra ID specifics"),
  })
  .superRefine((a, ctx) => {
    a.issuers.forEach((iss, i) => {
      if (!iss.audiences && !iss.allowAnyAudience) {
        ctx.addIssue({ code: "custom", path: ["issuers", i, "audiences"], message: "audiences are required (or set allowAnyAudience: true to opt out explicitly)" });
      }
      if (iss.algorithms.some((alg) => alg.startsWith("HS"))) {
        ctx.addIssue({ code: "custom", path: ["issuers", i, "algorithms"], message: "symmetric (HS*) algorithms cannot be verified against a JWKS; only asymmetric algorithms are allowed" });
      }
      if (iss.issuer.includes("{tenantid}") && !iss.tenants) {
        ctx.addIssue({ code: "custom", path: ["issuers", i, "tenants"], message: "a multi-tenant issuer needs an allow-list of tenant ids" });
      }
      if (iss.issuer.includes("{tenantid}") && !iss.jwksUri) {
        ctx.addIssue({ code: "custom", path: ["issuers", i, "jwksUri"], message: "a multi-tenant issuer needs an explicit jwksUri (e.g. https://login.microsoftonline.com/common/discovery/v2.0/keys)" });
      }
    });
  });

const introspectionAuthenticator = z.strictObject({
  name,
  type: z.literal("introspection"),
  deprecated: deprecated.optional(),
  mode: z.enum(["introspection", "userinfo", "tokeninfo"]).default("introspection"),
  endpoint: secureUrl.describe("RFC 7662 introspection, OIDC UserInfo, or token-info URL"),
  issuer: z.string().optional().describe("Expected `iss` of active tokens, when the endpoint reports one"),
  clientId: z.string().optional(),
  clientSecret: z.string().optional(),
  clientAuth: z.enum(["client_secret_basic", "client_secret_post"]).default("client_secret_basic"),
  audiences: z.array(z.string()).min(1).optional().describe("When set, an active token's `aud` must contain one"),
  tokens: z.enum(["opaque", "any"]).default("opaque").describe("opaque: JWT-shaped bearer tokens are left to JWT authenticators"),
  cacheTtl: duration.prefault("60s").describe("Positive results are cached no longer than this nor past the token's exp"),
  negativeCacheTtl: duration.prefault("5s"),
  timeout: duration.prefault("5s"),
  principal: principalMapping,
})
  .superRefine((a, ctx) => {
    if (a.mode === "introspection" && (!a.clientId || !a.clientSecret)) {
      ctx.addIssue({ code: "custom", path: ["clientId"], message: "introspection needs clientId and clientSecret (RFC 7662 client authentication)" });
    }
  });

const cidr = z.string().refine((value) => {
  const [address, prefix, extra] = value.split("/");
  const family = isIP(address ?? "");
  const bits = Number(prefix);
  return extra === undefined && family !== 0 && /^\d{1,3}$/.test(prefix ?? "") && bits <= (family === 4 ? 32 : 128);
}, "a CIDR such as 10.0.0.0/8 or ::1/128");

const trustedHeadersAuthenticator = z.strictObject({
  name,
  type: z.literal("trusted_headers"),
  deprecated: deprecated.optional(),
  trustedProxies: z.array(cidr).min(1).describe("TCP peers allowed to assert identity (never X-Forwarded-For)"),
  headers: z
    .strictObject({
      user: headerName.default("x-forwarded-user"),
      email: headerName.default("x-forwarded-email"),
      groups: headerName.default("x-forwarded-groups"),
      preferredUsername: headerName.default("x-forwarded-preferred-username"),
    })
    .prefault({}),
  groupsSeparator: z.string().min(1).default(","),
  assertion: z
    .strictObject({
      header: headerName.describe("e.g. x-goog-iap-jwt-assertion"),
      issuer: z.string(),
      audiences: z.array(z.string()).min(1),
      jwksUri: secureUrl,
      algorithms: z.array(z.enum(ASYMMETRIC)).min(1).default(["ES256", "RS256"]),
      required: z.boolean().default(true),
    })
    .optional()
    .describe("A signed assertion from the proxy, verified against its JWKS"),
  principal: principalMapping,
});

const sessionProvider = z.discriminatedUnion("preset", [
  z.strictObject({
    preset: z.literal("entra"),
    tenant: z.string().describe("Tenant id or domain; `organizations` or `common` for multi-tenant sign-in"),
    tenants: z.array(z.string()).min(1).optional().describe("Multi-tenant: the tenant ids allowed to sign in"),
  }),
  z.strictObject({ preset: z.literal("okta"), domain: z.string(), authorizationServer: z.string().default("default") }),
  z.strictObject({ preset: z.literal("oidc"), issuer: secureUrl, discoveryUrl: secureUrl.optional() }),
]);

const sessionAuthenticator = z
  .strictObject({
    name,
    type: z.literal("session"),
    deprecated: deprecated.optional(),
    provider: sessionProvider,
    clientId: z.string().min(1),
    clientSecret: z.string().min(1),
    redirectUri: secureUrl.describe("Registered at the IdP; its path is {basePath}/callback, e.g. https://llm.example.com/sso/callback"),
    basePath: z.string().regex(/^\/[A-Za-z0-9/_-]*[A-Za-z0-9_-]$/, "a path such as /sso").default("/sso"),
    scopes: z.array(z.string()).default(["openid", "profile", "email", "offline_access"]),
    authorizationParams: z.record(z.string(), z.string()).default({}).describe("Extra authorization request parameters, e.g. prompt: consent where a provider issues refresh tokens only then"),
    sessionSecret: z.string().min(32, "at least 32 characters (e.g. openssl rand -base64 48)").describe("Encrypts and authenticates the session cookie"),
    cookie: z
      .strictObject({
        name: z.string().regex(/^[A-Za-z0-9_-]+$/).default("tollgate_session"),
        secure: z.boolean().default(true).describe("false only for local http development"),
        domain: z.string().optional(),
        maxAge: duration.prefault("12h").describe("Absolute session lifetime; a sign-in is needed after it"),
      })
      .prefault({}),
    refreshAfter: duration.prefault("15m").describe("Re-validate the session with the refresh token this often (when the IdP gave one)"),
    postLogoutRedirect: z.string().regex(/^\/(?![/\\])/, "a same-site path").default("/"),
    principal: principalMapping,
    entra: z.strictObject({ groupOverage: groupOverage.optional() }).optional(),
  })
  .superRefine((a, ctx) => {
    if (new URL(a.redirectUri).pathname !== `${a.basePath}/callback`) {
      ctx.addIssue({ code: "custom", path: ["redirectUri"], message: `the redirect URI's path must be ${a.basePath}/callback` });
    }
    if (a.provider.preset === "entra" && ["organizations", "common"].includes(a.provider.tenant) && !a.provider.tenants) {
      ctx.addIssue({ code: "custom", path: ["provider", "tenants"], message: "multi-tenant sign-in needs an allow-list of tenant ids" });
    }
  });

export const authenticator = z.discriminatedUnion("type", [jwtAuthenticator, introspectionAuthenticator, trustedHeadersAuthenticator, sessionAuthenticator]);

export type JwtAuthenticatorConfig = z.output<typeof jwtAuthenticator>;
export type JwtIssuerConfig = z.output<typeof issuer>;
export type IntrospectionAuthenticatorConfig = z.output<typeof introspectionAuthenticator>;
export type TrustedHeadersAuthenticatorConfig = z.output<typeof trustedHeadersAuthenticator>;
export type PrincipalMappingConfig = z.output<typeof principalMapping>;
export type JwksConfig = z.output<typeof jwks>;
export type GroupOverageConfig = z.output<typeof groupOverage>;
export type DeprecationConfig = z.output<typeof deprecated>;
export type SessionAuthenticatorConfig = z.output<typeof sessionAuthenticator>;
