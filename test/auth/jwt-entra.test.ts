/**
 * Entra ID shapes: v1 and v2 issuers, multi-tenant with a tenant allow-list, app roles, and group overage
 * resolved through a stand-in Microsoft Graph with Tollgate's own managed identity (the real @azure/identity
 * code path against a stand-in App Service identity endpoint on 127.0.0.1).
 */
import t from "tap";
import { createServer, type Server } from "node:http";
import { once } from "node:events";
import { Writable } from "node:stream";
import { SignJWT, exportJWK, generateKeyPair, type JWK } from "jose";
import { JwtAuthenticator } from "../../src/auth/jwt.ts";
import { extractCredential } from "../../src/auth/credential.ts";
import { parsePolicy } from "../../src/config/load.ts";
import { Metrics } from "../../src/observe/metrics.ts";
import { createLogger } from "../../src/observe/audit.ts";
import type { JwtAuthenticatorConfig } from "../../src/config/authenticators.ts";

const T1 = "11111111-1111-1111-1111-111111111111";
const T2 = "22222222-2222-2222-2222-222222222222";
const T3 = "33333333-3333-3333-3333-333333333333";
const ADMINS = "aaaaaaaa-0000-0000-0000-000000000001";
const USERS = "aaaaaaaa-0000-0000-0000-000000000003";

async function listen(server: Server): Promise<string> {
  server.listen(0, "127.0.0.1");
  await once(server, "listening");
  return `http://127.0.0.1:${(server.address() as { port: number }).port}`;
}

const { privateKey, publicKey } = await generateKeyPair("RS256", { extractable: true });
const jwk: JWK = { ...(await exportJWK(publicKey)), kid: "entra-key-1", use: "sig", alg: "RS256" };
const jwksServer = createServer((_req, res) => res.writeHead(200, { "content-type": "application/json" }).end(JSON.stringify({ keys: [jwk] })));
const jwksUrl = `${await listen(jwksServer)}/discovery/v2.0/keys`;

// Stand-in App Service managed identity endpoint (what IDENTITY_ENDPOINT points at in Azure).
let msiCalls = 0;
const msi = createServer((req, res) => {
  msiCalls++;
  const url = new URL(req.url!, "http://x");
  if (req.headers["x-identity-header"] !== "msi-secret-header" || !url.searchParams.get("resource")?.startsWith("https://graph.microsoft.com")) {
    return void res.writeHead(400).end("{}");
  }
  res.writeHead(200, { "content-type": "application/json" }).end(JSON.stringify({ access_token: "graph-token-from-msi", expires_on: String(Math.floor(Date.now() / 1000) + 3600), resource: "https://graph.microsoft.com", token_type: "Bearer" }));
});
process.env.IDENTITY_ENDPOINT = `${await listen(msi)}/msi/token`;
process.env.IDENTITY_HEADER = "msi-secret-header";

// Stand-in Microsoft Graph: getMemberObjects, paged, requiring the managed identity's token.
let graphCalls = 0;
let graphDown = false;
const graph = createServer((req, res) => {
  graphCalls++;
  if (graphDown) return void res.writeHead(503).end();
  if (req.headers.authorization !== "Bearer graph-token-from-msi") return void res.writeHead(401).end();
  const url = new URL(req.url!, "http://x");
  if (url.pathname === "/v1.0/users/oid-overage/getMemberObjects") {
    return void res.writeHead(200, { "content-type": "application/json" }).end(JSON.stringify({ value: [USERS], "@odata.nextLink": `http://${req.headers.host}/page2` }));
  }
  if (url.pathname === "/page2") return void res.writeHead(200, { "content-type": "application/json" }).end(JSON.stringify({ value: [ADMINS] }));
  res.writeHead(404).end();
});
const graphUrl = await listen(graph);

t.teardown(() => {
  for (const s of [jwksServer, msi, graph]) s.close();
});

function authenticator(issuers: string, extra = ""): JwtAuthenticator {
  const policy = parsePolicy(
    `version: 1
upstreams: { llm: { url: "http://127.0.0.1:1" } }
authenticators:
  - name: entra
    type: jwt
    issuers:
${issuers}
    principal:
      id: [oid, sub]
      roleMappings:
        - { groups: ["${ADMINS}"], roles: [admin] }
        - { groups: ["${USERS}"], roles: [user] }
${extra}
routes: [{ name: r, paths: [/x], upstream: llm, allow: [{ authenticated: true }] }]
`,
    "p.yaml",
    {},
  );
  const logger = createLogger(new Writable({ write: (_c, _e, cb) => cb() }) as never, "silent");
  return new JwtAuthenticator(policy.authenticators[0] as JwtAuthenticatorConfig, { clock: { now: () => Date.now() }, metrics: new Metrics({ defaultMetrics: false }), logger });
}

const sign = (claims: Record<string, unknown>, iss: string, aud = "api://litellm") =>
  new SignJWT(claims).setProtectedHeader({ alg: "RS256", kid: "entra-key-1", typ: "JWT" }).setIssuer(iss).setAudience(aud).setIssuedAt().setExpirationTime("10m").sign(privateKey);
// Always a promise here, whether the authenticator answered at once (a cached token) or after verifying.
const auth = async (a: JwtAuthenticator, token: string) => a.authenticate({ credential: extractCredential({ authorization: `Bearer ${token}` }), headers: {}, remoteAddress: "127.0.0.1" });

t.test("v1 and v2 issuers of one tenant, with app roles and security groups by object id", async (t) => {
  const a = authenticator(`      - { issuer: "https://sts.windows.net/${T1}/", jwksUri: "${jwksUrl}", audiences: [api://litellm] }
      - { issuer: "https://login.microsoftonline.com/${T1}/v2.0", jwksUri: "${jwksUrl}", audiences: [api://litellm], clientIds: [client-app] }`);
  const v1 = await auth(a, await sign({ ver: "1.0", tid: T1, oid: "oid-1", sub: "pairwise-1", upn: "ada@contoso.com", appid: "client-app", roles: ["LiteLLM.Admin"], groups: [ADMINS] }, `https://sts.windows.net/${T1}/`));
  t.match(v1, { id: "oid-1", kind: "user", email: "ada@contoso.com", user: "ada@contoso.com", groups: [ADMINS] });
  t.same([...v1!.roles].sort(), ["LiteLLM.Admin", "admin"], "app roles plus roles mapped from group object ids");
  const v2 = await auth(a, await sign({ ver: "2.0", tid: T1, oid: "oid-2", sub: "pairwise-2", preferred_username: "bo@contoso.com", azp: "client-app", groups: [USERS] }, `https://login.microsoftonline.com/${T1}/v2.0`));
  t.match(v2, { id: "oid-2", email: "bo@contoso.com", roles: ["user"] });
  await t.rejects(auth(a, await sign({ tid: T1, oid: "o", azp: "other-app" }, `https://login.microsoftonline.com/${T1}/v2.0`)), { code: "invalid_token", detail: "client_id" });
  t.equal(await auth(a, await sign({ tid: T2, oid: "o" }, `https://login.microsoftonline.com/${T2}/v2.0`)), undefined, "another tenant's issuer is not ours");
  const app = await auth(a, await sign({ ver: "2.0", tid: T1, oid: "svc", sub: "svc", azp: "client-app", idtyp: "app", roles: ["Batch.Run"] }, `https://login.microsoftonline.com/${T1}/v2.0`));
  t.match(app, { kind: "service", roles: ["Batch.Run"] }, "app-only tokens are services");
});

t.test("multi-tenant: the issuer template admits only allow-listed tenants whose tid matches", async (t) => {
  const a = authenticator(`      - { issuer: "https://login.microsoftonline.com/{tenantid}/v2.0", jwksUri: "${jwksUrl}", audiences: [api://litellm], tenants: ["${T1}", "${T2}"] }`);
  for (const tid of [T1, T2]) t.match(await auth(a, await sign({ tid, oid: `o-${tid}` }, `https://login.microsoftonline.com/${tid}/v2.0`)), { id: `o-${tid}` });
  await t.rejects(auth(a, await sign({ tid: T3, oid: "o" }, `https://login.microsoftonline.com/${T3}/v2.0`)), { code: "invalid_token", detail: "tenant" });
  await t.rejects(auth(a, await sign({ tid: T2, oid: "o" }, `https://login.microsoftonline.com/${T1}/v2.0`)), { code: "invalid_token", detail: "tenant" }); // tid must match the issuer's tenant
  t.equal(await auth(a, await sign({ tid: T1, oid: "o" }, "https://login.microsoftonline.com/not-a-guid/v2.0")), undefined);
  t.throws(
    () => authenticator(`      - { issuer: "https://login.microsoftonline.com/{tenantid}/v2.0", jwksUri: "${jwksUrl}", audiences: [x] }`),
    /multi-tenant issuer needs an allow-list of tenant ids/,
  );
});

t.test("group overage: groups come from Graph via the managed identity, cached per user; Graph down denies", async (t) => {
  const overage = `    entra:
      groupOverage:
        graphUrl: "${graphUrl}"
        credential: { type: managed_identity }
        timeout: 2s`;
  const a = authenticator(`      - { issuer: "https://login.microsoftonline.com/${T1}/v2.0", jwksUri: "${jwksUrl}", audiences: [api://litellm] }`, overage);
  const token = await sign({ tid: T1, oid: "oid-overage", preferred_username: "many@contoso.com", _claim_names: { groups: "src1" }, _claim_sources: { src1: { endpoint: "https://graph.windows.net/x" } } }, `https://login.microsoftonline.com/${T1}/v2.0`);
  const p = await auth(a, token);
  t.same(p!.groups, [USERS, ADMINS], "both pages of Graph's answer");
  t.same([...p!.roles].sort(), ["admin", "user"]);
  t.ok(msiCalls >= 1, "the managed identity endpoint issued the Graph token");
  const callsBefore = graphCalls;
  const other = await sign({ tid: T1, oid: "oid-overage", hasgroups: true }, `https://login.microsoftonline.com/${T1}/v2.0`);
  t.same((await auth(a, other))!.groups, [USERS, ADMINS]);
  t.equal(graphCalls, callsBefore, "membership is cached per user");
  graphDown = true;
  const stranger = await sign({ tid: T1, oid: "oid-unknown", hasgroups: true }, `https://login.microsoftonline.com/${T1}/v2.0`);
  await t.rejects(auth(a, stranger), { code: "auth_unavailable", status: 503, detail: "group_overage" });
  graphDown = false;
  const noResolver = authenticator(`      - { issuer: "https://login.microsoftonline.com/${T1}/v2.0", jwksUri: "${jwksUrl}", audiences: [api://litellm] }`);
  t.same((await auth(noResolver, stranger))!.groups, [], "without a resolver the caller has no groups (logged and counted, never guessed)");
});
