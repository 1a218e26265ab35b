/**
 * Azure OpenAI with API keys disabled, end to end: the real `openai` SDK (AzureOpenAI for deployment paths,
 * OpenAI for the v1 API) sends a Tollgate virtual key; Tollgate authenticates it, checks the deployment (or
 * the body's model) against the route, and calls a stand-in Azure OpenAI resource with its own managed
 * identity token, obtained by the real @azure/identity ManagedIdentityCredential from a stand-in App
 * Service identity endpoint on 127.0.0.1. The stand-in resource, like one with local auth disabled, answers
 * 401 to anything but that bearer token.
 */
import t, { type Test } from "tap";
import { createServer, type IncomingHttpHeaders, type ServerResponse } from "node:http";
import { once } from "node:events";
import OpenAI, { AzureOpenAI } from "openai";
import { startHarness, makeKey, SERVER_BLOCK, type Harness } from "../helpers/harness.ts";

const MI_TOKEN = "eyJ0eXAiOiJKV1QiLCJhbGciOiJSUzI1NiJ9.managed-identity-token.sig";
const API_VERSION = "2024-10-21";

async function listen(server: ReturnType<typeof createServer>): Promise<string> {
  server.listen(0, "127.0.0.1");
  await once(server, "listening");
  return `http://127.0.0.1:${(server.address() as { port: number }).port}`;
}

// Stand-in App Service managed identity endpoint.
let identityCalls = 0;
const identity = createServer((req, res) => {
  identityCalls++;
  const url = new URL(req.url!, "http://x");
  if (req.headers["x-identity-header"] !== "e2e-identity-header" || url.searchParams.get("resource") !== "https://cognitiveservices.azure.com") {
    return void res.writeHead(400).end("{}");
  }
  const body = { access_token: MI_TOKEN, expires_on: String(Math.floor(Date.now() / 1000) + 3600), resource: "https://cognitiveservices.azure.com", token_type: "Bearer" };
  res.writeHead(200, { "content-type": "application/json" }).end(JSON.stringify(body));
});
process.env.IDENTITY_ENDPOINT = `${await listen(identity)}/msi/token`;
process.env.IDENTITY_HEADER = "e2e-identity-header";

// Stand-in Azure OpenAI resource: deployment paths with api-version, and the v1 API.
interface Seen {
  url: string;
  headers: IncomingHttpHeaders;
  body: Record<string, unknown>;
}
const seen: Seen[] = [];
const DEPLOYMENT_PATH = /^\/openai\/deployments\/([^/]+)\/chat\/completions$/;
const aoai = createServer(async (req, res) => {
  const chunks: Buffer[] = [];
  for await (const chunk of req) chunks.push(chunk as Buffer);
  const body = JSON.parse(Buffer.concat(chunks).toString("utf8") || "{}") as Record<string, unknown>;
  seen.push({ url: req.url!, headers: req.headers, body });
  const url = new URL(req.url!, "http://x");
  if (req.headers["api-key"] !== undefined) return json(res, 401, { error: { code: "AuthenticationTypeDisabled", message: "Key based authentication is disabled for this resource." } });
  if (req.headers.authorization !== `Bearer ${MI_TOKEN}`) return json(res, 401, { error: { code: "PermissionDenied", message: "Principal does not have access." } });
  const deployment = DEPLOYMENT_PATH.exec(url.pathname)?.[1];
  if (deployment !== undefined && url.searchParams.get("api-version") !== API_VERSION) return json(res, 404, { error: { code: "404", message: "Resource not found" } });
  if (deployment === undefined && url.pathname !== "/openai/v1/chat/completions") return json(res, 404, { error: { code: "404", message: "Resource not found" } });
  const model = deployment ?? String(body.model);
  if (body.stream === true) return void sse(res, model);
  json(res, 200, {
    id: "chatcmpl-aoai",
    object: "chat.completion",
    created: 0,
    model,
    choices: [{ index: 0, message: { role: "assistant", content: `hello from ${model}` }, finish_reason: "stop" }],
    usage: { prompt_tokens: 9, completion_tokens: 3, total_tokens: 12 },
  });
});
const aoaiUrl = await listen(aoai);

function json(res: ServerResponse, status: number, body: unknown): void {
  res.writeHead(status, { "content-type": "application/json" }).end(JSON.stringify(body));
}

async function sse(res: ServerResponse, model: string): Promise<void> {
  res.writeHead(200, { "content-type": "text/event-stream", "cache-control": "no-cache" });
  const base = { id: "chatcmpl-aoai", object: "chat.completion.chunk", created: 0, model };
  // Azure opens a stream with the prompt filter results and no choices.
  res.write(`data: ${JSON.stringify({ ...base, model: "", choices: [], prompt_filter_results: [{ prompt_index: 0, content_filter_results: {} }] })}\n\n`);
  for (const content of ["stream", "ed ", "via ", "Tollgate"]) {
    res.write(`data: ${JSON.stringify({ ...base, choices: [{ index: 0, delta: { content }, finish_reason: null }] })}\n\n`);
    await new Promise((r) => setTimeout(r, 5));
  }
  res.write(`data: ${JSON.stringify({ ...base, choices: [{ index: 0, delta: {}, finish_reason: "stop" }] })}\n\n`);
  res.end("data: [DONE]\n\n");
}

const librechat = makeKey();
const policy = `${SERVER_BLOCK}
upstreams:
  aoai:
    url: "${aoaiUrl}"
    credential:
      type: entra
      credential: { type: managed_identity }
      timeout: 5s
    identity:
      headers: { user: x-tollgate-user, principal: x-tollgate-key-id }
authenticators:
  - name: keys
    type: api_key
    keys:
      - { id: librechat, hash: "${librechat.hash}", user: librechat, roles: [user] }
routes:
  - name: azure-deployments
    methods: [POST]
    paths: ["/openai/deployments/{deployment}/**"]
    upstream: aoai
    model: { from: path, param: deployment, aliases: { prod-gpt4o: gpt-4o } }
    models: [gpt-4o, gpt-4o-mini]
    allow: [{ roles: [user] }]
  - name: azure-v1
    methods: [POST]
    paths: [/openai/v1/chat/completions]
    upstream: aoai
    models: [gpt-4o, gpt-4o-mini]
    allow: [{ roles: [user] }]
`;

let h: Harness;
t.before(async () => {
  h = await startHarness(policy);
});
t.teardown(async () => {
  await h.stop();
  for (const s of [identity, aoai]) {
    s.closeAllConnections();
    s.close();
  }
});

const azure = (deployment: string, apiKey = librechat.key) => new AzureOpenAI({ endpoint: h.url, apiKey, apiVersion: API_VERSION, deployment, maxRetries: 0, timeout: 10_000 });
const v1 = () => new OpenAI({ baseURL: `${h.url}/openai/v1`, apiKey: librechat.key, maxRetries: 0, timeout: 10_000 });
const messages = [{ role: "user" as const, content: "hi" }];

/** What every request that reached the resource must look like: our token, never the client's key. */
function upstreamSawOnlyTollgate(t: Test, s: Seen): void {
  t.equal(s.headers.authorization, `Bearer ${MI_TOKEN}`, "Authorization is exactly the managed identity token");
  t.equal(s.headers["api-key"], undefined, "no api-key header");
  t.equal(s.headers["x-api-key"], undefined, "no x-api-key header");
  t.notOk(JSON.stringify(s.headers).includes(librechat.key), "the client's key appears in no header");
  t.equal(s.headers["x-tollgate-user"], "librechat", "the caller is forwarded as identity, not as a credential");
}

t.test("an aliased deployment through AzureOpenAI: JSON, with the managed identity token upstream", async (t) => {
  const before = seen.length;
  const r = await azure("prod-gpt4o").chat.completions.create({ model: "gpt-4o", messages });
  t.equal(r.choices[0]?.message.content, "hello from prod-gpt4o");
  t.equal(seen.length, before + 1);
  const s = seen.at(-1)!;
  t.equal(s.url, `/openai/deployments/prod-gpt4o/chat/completions?api-version=${API_VERSION}`, "deployment path and api-version pass through");
  upstreamSawOnlyTollgate(t, s);
  t.equal(identityCalls, 1, "one identity call so far");
});

t.test("streaming through AzureOpenAI: SSE chunks arrive in order", async (t) => {
  const stream = await azure("gpt-4o-mini").chat.completions.create({ model: "gpt-4o-mini", messages, stream: true });
  let text = "";
  let chunks = 0;
  for await (const chunk of stream) {
    chunks++;
    text += chunk.choices[0]?.delta.content ?? "";
  }
  t.equal(text, "streamed via Tollgate");
  t.equal(chunks, 6, "prompt-filter chunk, four deltas, finish");
  const s = seen.at(-1)!;
  t.equal(s.url, `/openai/deployments/gpt-4o-mini/chat/completions?api-version=${API_VERSION}`);
  t.equal(s.body.stream, true);
  upstreamSawOnlyTollgate(t, s);
});

t.test("a deployment outside the allow-list is 403 model_not_allowed and never reaches Azure", async (t) => {
  const before = seen.length;
  await t.rejects(azure("gpt-35-legacy").chat.completions.create({ model: "gpt-4o", messages }), { status: 403, code: "model_not_allowed", type: "permission_error" });
  // The body's model does not matter on deployment routes: the deployment in the path is what Azure runs.
  await t.rejects(azure("o1-preview").chat.completions.create({ model: "gpt-4o", messages }), { status: 403, code: "model_not_allowed" });
  t.equal(seen.length, before, "the stand-in was never called");
});

t.test("a bad virtual key is 401 and never reaches Azure", async (t) => {
  const before = seen.length;
  await t.rejects(azure("prod-gpt4o", makeKey().key).chat.completions.create({ model: "gpt-4o", messages }), { status: 401, code: "invalid_api_key" });
  t.equal(seen.length, before);
});

t.test("the v1 API: the body's model is checked; the client's bearer key is replaced by the token", async (t) => {
  const before = seen.length;
  const r = await v1().chat.completions.create({ model: "gpt-4o", messages });
  t.equal(r.choices[0]?.message.content, "hello from gpt-4o");
  const s = seen.at(-1)!;
  t.equal(s.url, "/openai/v1/chat/completions");
  upstreamSawOnlyTollgate(t, s);

  const stream = await v1().chat.completions.create({ model: "gpt-4o-mini", messages, stream: true });
  let text = "";
  for await (const chunk of stream) text += chunk.choices[0]?.delta.content ?? "";
  t.equal(text, "streamed via Tollgate");
  upstreamSawOnlyTollgate(t, seen.at(-1)!);

  await t.rejects(v1().chat.completions.create({ model: "gpt-4.5-preview", messages }), { status: 403, code: "model_not_allowed" });
  t.equal(seen.length, before + 2, "the refused model never reached Azure");
  t.equal(identityCalls, 1, "the token was fetched once and reused for every request");
});
