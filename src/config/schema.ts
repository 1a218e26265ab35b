/**
 * The policy file's shape. One zod schema is both the validator and the source of `tollgate schema`
 * (JSON Schema for editors). Every object is strict: an unknown key is an error, not a silent no-op.
 */
import { z } from "zod";
import { duration } from "./duration.ts";
import { name, headerName } from "./common.ts";
import { authenticator as identityAuthenticator } from "./authenticators.ts";
import { azureCredential } from "./azure.ts";
import { limits, pricing } from "./limits.ts";

// Ports often come from `${PORT:-8080}`, which interpolates to a string.
const port = z
  .union([z.number(), z.string().regex(/^\d+$/, "expected a port number")])
  .transform(Number)
  .pipe(z.number().int().min(0).max(65535));

const listener = z.strictObject({
  host: z.string().default("0.0.0.0"),
  port,
});

const server = z
  .strictObject({
    listen: listener.prefault({ port: 8080 }),
    admin: listener.prefault({ port: 9090 }),
    shutdownGrace: duration.prefault(30).describe("How long SIGTERM waits for in-flight requests and streams"),
    maxBodyBytes: z.number().int().positive().default(10 * 1024 * 1024).describe("Largest request body read for a model check; larger is 413"),
    requestTimeout: duration.prefault("300s").describe("Longest time to receive a whole request (headers and body); responses are not limited"),
    requestIdHeader: headerName.default("x-request-id"),
    trustRequestId: z.boolean().default(true).describe("Propagate a well-formed incoming request id instead of generating one"),
    watch: z.boolean().default(true).describe("Reload the policy when its file changes (SIGHUP always reloads)"),
  })
  .prefault({});

const staticCredential = z.strictObject({
  type: z.literal("static"),
  header: headerName.default("authorization"),
  value: z.string().min(1).describe("The header value, e.g. `Bearer ${LITELLM_MASTER_KEY}` or `${file:/run/secrets/key}`"),
});

const noCredential = z.strictObject({ type: z.literal("none") });

const entraCredential = z.strictObject({
  type: z.literal("entra"),
  credential: azureCredential.default({ type: "default" }).describe("How Tollgate gets its own Entra identity"),
  scope: z.string().default("https://cognitiveservices.azure.com/.default"),
  refreshBefore: duration.prefault("5m").describe("Refresh this long before the token expires"),
  timeout: duration.prefault("10s").describe("Longest wait for the identity endpoint; requests never hang past it"),
  fallbackApiKey: z.string().min(1).optional().describe("Sent as `api-key` while no Entra token can be had"),
});

const sigv4Credential = z.strictObject({
  type: z.literal("sigv4"),
  service: z.string().default("bedrock"),
  region: z.string().regex(/^[a-z]{2}(-[a-z]+)+-\d$/, "an AWS region such as us-east-1"),
  profile: z.string().optional().describe("A named profile from the shared config files"),
  assumeRole: z
    .strictObject({
      roleArn: z.string().regex(/^arn:aws[a-z-]*:iam::\d{12}:role\/.+$/, "an IAM role ARN"),
      externalId: z.string().optional(),
      sessionName: z.string().default("tollgate"),
      duration: duration.prefault("1h"),
    })
    .optional(),
  timeout: duration.prefault("10s").describe("Longest wait for credentials; requests never hang past it"),
});

export const upstreamCredential = z.discriminatedUnion("type", [staticCredential, noCredential, entraCredential, sigv4Credential]);

const identityForwarding = z
  .strictObject({
    headers: z
      .strictObject({
        principal: headerName.optional(),
        user: headerName.optional(),
        email: headerName.optional(),
        groups: headerName.optional(),
        roles: headerName.optional(),
        team: headerName.optional(),
        method: headerName.optional(),
      })
      .prefault({}),
    openaiUser: z.boolean().default(false).describe("Set the OpenAI `user` field of JSON bodies to the caller, so LiteLLM attributes spend"),
  })
  .prefault({});

const upstream = z.strictObject({
  url: z.url({ protocol: /^https?$/ }),
  credential: upstreamCredential.default({ type: "none" }),
  identity: identityForwarding,
  connections: z.number().int().positive().default(128).describe("Keep-alive pool size to this upstream"),
  timeouts: z
    .strictObject({
      connect: duration.prefault(10),
      headers: duration.prefault(600).describe("Time to the upstream's response headers"),
      idle: duration.prefault(300).describe("Longest silence inside a response body (SSE keep-alives reset it)"),
    })
    .prefault({}),
});

const apiKey = z.strictObject({
  id: name,
  hash: z.string().regex(/^sha256:[0-9a-f]{64}$/, "expected sha256:<64 hex digits> (see `tollgate keys new`)"),
  user: z.string().optional(),
  email: z.string().optional(),
  team: z.string().optional(),
  groups: z.array(z.string()).default([]),
  roles: z.array(z.string()).default([]),
  models: z.array(z.string()).optional().describe("Models this key may use (wildcards allowed); omitted = whatever the route allows"),
  expires: z.iso.datetime({ offset: true }).optional(),
  disabled: z.boolean().default(false),
});

const apiKeyAuthenticator = z.strictObject({
  name,
  type: z.literal("api_key"),
  deprecated: z
    .strictObject({ sunset: z.iso.date().or(z.iso.datetime({ offset: true })), link: z.url().optional() })
    .optional()
    .describe("Retiring this method (e.g. master key → JWT): callers get Deprecation/Sunset headers and are counted"),
  prefix: z.string().default("tg_").describe("Bearer tokens with this prefix are API keys; x-api-key and api-key headers always are"),
  keys: z.array(apiKey).default([]),
});

export const authenticator = z.discriminatedUnion("type", [apiKeyAuthenticator, ...identityAuthenticator.options]);

const allowRule = z
  .strictObject({
    public: z.literal(true).optional().describe("Anyone, even without a credential"),
    authenticated: z.literal(true).optional().describe("Any authenticated caller"),
    roles: z.array(z.string()).min(1).optional().describe("Caller has at least one of these roles"),
    groups: z.array(z.string()).min(1).optional().describe("Caller is in at least one of these groups"),
    principals: z.array(z.string()).min(1).optional().describe("Caller's principal id or user is one of these"),
    models: z.array(z.string()).min(1).optional().describe("Narrows the models this rule allows (wildcards allowed)"),
  })
  .refine((r) => r.public || r.authenticated || r.roles || r.groups || r.principals, {
    message: "an allow rule needs one of public, authenticated, roles, groups or principals",
  });

const httpMethod = z.enum(["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "*"]);

const route = z.strictObject({
  name,
  methods: z.array(httpMethod).min(1).default(["*"]),
  paths: z.array(z.string().regex(/^\/[^?#\s]*$/, "a path pattern starts with '/' and has no query")).min(1),
  upstream: name,
  authenticators: z.array(name).optional().describe("Only these authenticators apply on this route (default: all, in policy order)"),
  allow: z.array(allowRule).min(1),
  models: z.array(z.string()).min(1).optional().describe("Models this route allows (wildcards allowed)"),
  model: z
    .strictObject({
      from: z.enum(["body", "path"]).default("body").describe("body: the JSON `model`; path: a path parameter (Azure deployments, Bedrock model ids)"),
      param: z.string().optional().describe("The path parameter holding the model, e.g. deployment or modelId"),
      aliases: z.record(z.string(), z.string()).optional().describe("Deployment (or model id) → the model name allow-lists check"),
    })
    .refine((m) => m.from !== "path" || m.param !== undefined, { message: "model.from: path needs model.param" })
    .optional(),
  maxBodyBytes: z.number().int().positive().optional(),
  signIn: name.optional().describe("A `session` authenticator: unauthenticated browsers are sent to sign in instead of getting a 401"),
});

export const policySchema = z.strictObject({
  version: z.literal(1),
  server,
  audit: z.strictObject({ enabled: z.boolean().default(true) }).prefault({}),
  upstreams: z.record(name, upstream).refine((u) => Object.keys(u).length > 0, "at least one upstream is required"),
  authenticators: z.array(authenticator).default([]),
  routes: z.array(route).min(1),
  limits,
  pricing,
});

export type PolicyInput = z.input<typeof policySchema>;
export type Policy = z.output<typeof policySchema>;
export type RouteConfig = Policy["routes"][number];
export type AllowRuleConfig = RouteConfig["allow"][number];
export type UpstreamConfig = Policy["upstreams"][string];
export type AuthenticatorConfig = Policy["authenticators"][number];
export type ApiKeyConfig = z.output<typeof apiKey>;
export type UpstreamCredentialConfig = z.output<typeof upstreamCredential>;

export function policyJsonSchema(): unknown {
  return z.toJSONSchema(policySchema, { io: "input", unrepresentable: "any" });
}
