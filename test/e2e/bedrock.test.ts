/**
 * Bedrock through the whole corridor with the REAL @aws-sdk/client-bedrock-runtime: the client authenticates to
 * Tollgate with a virtual API key as a Bedrock API key (Authorization: Bearer), Tollgate checks the model id
 * from the path and re-signs with SigV4 using container credentials fetched by the real provider chain; a
 * Bedrock stand-in verifies every signature independently with aws4 and streams AWS event-stream frames.
 */
import t, { type Test } from "tap";
import {
  BedrockRuntimeClient,
  ConverseCommand,
  ConverseStreamCommand,
  InvokeModelCommand,
  InvokeModelWithResponseStreamCommand,
} from "@aws-sdk/client-bedrock-runtime";
import { NodeHttpHandler } from "@smithy/node-http-handler";
import { startHarness, makeKey, SERVER_BLOCK, until, type Harness } from "../helpers/harness.ts";
import { decodeFrames, startBedrockStandIn, startContainerCredentials, TEXT_DELTAS } from "../helpers/aws-stand-ins.ts";

const endpoint = await startContainerCredentials();
for (const name of Object.keys(process.env)) if (/^AWS_/.test(name)) delete process.env[name];
process.env.AWS_CONTAINER_CREDENTIALS_FULL_URI = endpoint.url;
process.env.AWS_CONTAINER_AUTHORIZATION_TOKEN = endpoint.token;
process.env.AWS_CONFIG_FILE = "/nonexistent/tollgate-test/config";
process.env.AWS_SHARED_CREDENTIALS_FILE = "/nonexistent/tollgate-test/credentials";
process.env.AWS_EC2_METADATA_DISABLED = "true";

const SONNET = "anthropic.claude-3-5-sonnet-20240620-v1:0";
const SONNET_PROFILE = "us.anthropic.claude-3-5-sonnet-20240620-v1:0";
const LLAMA = "meta.llama3-1-70b-instruct-v1:0";
const PROFILE_ARN = "arn:aws:bedrock:us-east-1:123456789012:application-inference-profile/sonnet-team-a";
const alice = makeKey();

const bedrock = await startBedrockStandIn(endpoint.lookup);
const policy = `${SERVER_BLOCK}
upstreams:
  bedrock:
    url: "\${BEDROCK_URL}"
    credential: { type: sigv4, region: us-east-1 }
authenticators:
  - name: keys
    type: api_key
    keys:
      - { id: alice-laptop, hash: "${alice.hash}", user: alice, roles: [user] }
routes:
  - name: bedrock
    methods: [POST]
    paths:
      - /model/{modelId}/invoke
      - /model/{modelId}/invoke-with-response-stream
      - /model/{modelId}/converse
      - /model/{modelId}/converse-stream
    upstream: bedrock
    model: { from: path, param: modelId, aliases: { "${SONNET_PROFILE}": "${SONNET}" } }
    models: ["anthropic.claude-3-5-sonnet*"]
    allow: [{ roles: [user] }]
`;

let h: Harness;
let client: BedrockRuntimeClient;
t.before(async () => {
  h = await startHarness(policy, { env: { BEDROCK_URL: bedrock.url } });
  client = new BedrockRuntimeClient({
    endpoint: h.url,
    region: "us-east-1",
    // The Bedrock API-key flow: the SDK sends `Authorization: Bearer <token>` instead of signing.
    token: { token: alice.key },
    authSchemePreference: ["httpBearerAuth"],
    credentials: () => Promise.reject(new Error("the client must not sign with SigV4")),
    requestHandler: new NodeHttpHandler({ connectionTimeout: 2000, requestTimeout: 10_000 }),
    maxAttempts: 1,
  });
});
t.teardown(async () => {
  client?.destroy();
  await h?.stop();
  await bedrock.close();
  await endpoint.close();
});

const messages = [{ role: "user" as const, content: [{ text: "Hello, Bedrock" }] }];

/** What the stand-in received last: signed by Tollgate, verified, never the client's key. */
function assertSignedByTollgate(t: Test, path: string): void {
  const seen = bedrock.seen.at(-1)!;
  t.equal(seen.url, path, "path as the client sent it (':' as %3A)");
  t.same(seen.verdict.ok, true, "aws4 verifies Tollgate's signature");
  const creds = endpoint.issued.at(-1)!;
  t.match(String(seen.headers.authorization), new RegExp(`^AWS4-HMAC-SHA256 Credential=${creds.accessKeyId}/\\d{8}/us-east-1/bedrock/aws4_request`));
  t.equal(seen.headers["x-amz-security-token"], creds.sessionToken, "container session token");
  t.equal(seen.headers.host, bedrock.host, "host is the stand-in's");
  t.notOk(JSON.stringify(seen.headers).includes(alice.key) || seen.body.includes(alice.key), "the client's key never reaches Bedrock");
  t.notOk(JSON.stringify(seen.headers).toLowerCase().includes("bearer"), "no bearer token upstream");
}

t.test("ConverseCommand", async (t) => {
  const r = await client.send(new ConverseCommand({ modelId: SONNET, messages }));
  t.equal(r.output?.message?.content?.[0]?.text, `${TEXT_DELTAS.join("")} (${SONNET})`);
  t.same(r.usage, { inputTokens: 12, outputTokens: 5, totalTokens: 17 });
  assertSignedByTollgate(t, "/model/anthropic.claude-3-5-sonnet-20240620-v1%3A0/converse");
  t.same(JSON.parse(bedrock.seen.at(-1)!.body.toString()).messages, messages, "body forwarded unchanged");
  await until(() => h.audit().length > 0, 2000, "the audit line");
  t.match(h.audit().at(-1), { principal: "alice-laptop", authenticator: "keys", model: SONNET, decision: "allow", status: 200 }, "the SDK's bearer token was Alice's key");
});

t.test("ConverseStreamCommand: events arrive while the stream is still open, and decode", async (t) => {
  let release!: () => void;
  bedrock.holdStream = new Promise<void>((r) => (release = r));
  t.teardown(() => {
    release();
    bedrock.holdStream = undefined;
  });
  const r = await client.send(new ConverseStreamCommand({ modelId: SONNET, messages }));
  const text: string[] = [];
  let stopReason: string | undefined;
  let usage: unknown;
  let released = false;
  for await (const event of r.stream!) {
    if (event.contentBlockDelta?.delta?.text !== undefined) text.push(event.contentBlockDelta.delta.text);
    if (event.messageStop) stopReason = event.messageStop.stopReason;
    if (event.metadata) usage = event.metadata.usage;
    if (!released && text.length === TEXT_DELTAS.length) {
      t.equal(stopReason, undefined, "every delta arrived before the stand-in wrote messageStop");
      released = true;
      release();
    }
  }
  t.same(text, TEXT_DELTAS);
  t.equal(stopReason, "end_turn");
  t.same(usage, { inputTokens: 12, outputTokens: 5, totalTokens: 17 });
  assertSignedByTollgate(t, "/model/anthropic.claude-3-5-sonnet-20240620-v1%3A0/converse-stream");
});

t.test("InvokeModelCommand", async (t) => {
  const body = JSON.stringify({ anthropic_version: "bedrock-2023-05-31", max_tokens: 64, messages: [{ role: "user", content: "hi" }] });
  const r = await client.send(new InvokeModelCommand({ modelId: SONNET, contentType: "application/json", accept: "application/json", body }));
  const out = JSON.parse(Buffer.from(r.body).toString());
  t.equal(out.content[0].text, TEXT_DELTAS.join(""));
  t.equal(out.model, SONNET, "the stand-in saw the decoded model id");
  assertSignedByTollgate(t, "/model/anthropic.claude-3-5-sonnet-20240620-v1%3A0/invoke");
  t.equal(bedrock.seen.at(-1)!.body.toString(), body, "body bytes unchanged");
});

t.test("InvokeModelWithResponseStreamCommand", async (t) => {
  const body = JSON.stringify({ anthropic_version: "bedrock-2023-05-31", max_tokens: 64, messages: [{ role: "user", content: "hi" }] });
  const r = await client.send(new InvokeModelWithResponseStreamCommand({ modelId: SONNET, contentType: "application/json", body }));
  const types: string[] = [];
  const text: string[] = [];
  for await (const event of r.body!) {
    const chunk = JSON.parse(Buffer.from(event.chunk!.bytes!).toString());
    types.push(chunk.type);
    if (chunk.type === "content_block_delta") text.push(chunk.delta.text);
  }
  t.same(text, TEXT_DELTAS);
  t.equal(types[0], "message_start");
  t.equal(types.at(-1), "message_stop");
  assertSignedByTollgate(t, "/model/anthropic.claude-3-5-sonnet-20240620-v1%3A0/invoke-with-response-stream");
});

t.test("event-stream responses pass through byte for byte", async (t) => {
  for (const op of ["converse-stream", "invoke-with-response-stream"]) {
    const path = `/model/${encodeURIComponent(SONNET)}/${op}`;
    const res = await fetch(h.url + path, {
      method: "POST",
      headers: { authorization: `Bearer ${alice.key}`, "content-type": "application/json" },
      body: JSON.stringify({ messages }),
      signal: AbortSignal.timeout(10_000),
    });
    const received = Buffer.from(await res.arrayBuffer());
    t.equal(res.status, 200, op);
    t.equal(res.headers.get("content-type"), "application/vnd.amazon.eventstream");
    const written = bedrock.seen.at(-1)!.written;
    t.ok(written.length > 0 && received.equals(written), `${op}: ${received.length} bytes identical to what the stand-in wrote`);
    t.ok(decodeFrames(received).length >= TEXT_DELTAS.length + 2, "and they decode as event-stream frames");
    t.same(bedrock.seen.at(-1)!.verdict.ok, true);
  }
});

t.test("model allow-list from the path", async (t) => {
  const before = bedrock.seen.length;
  const err = await client.send(new ConverseCommand({ modelId: LLAMA, messages })).catch((e: unknown) => e as { $metadata?: { httpStatusCode?: number } });
  t.equal(err.$metadata?.httpStatusCode, 403, "the SDK sees a 403");
  for (const model of [LLAMA, "us.meta.llama3-1-70b-instruct-v1:0", "anthropic.claude-3-opus-20240229-v1:0"]) {
    const res = await fetch(`${h.url}/model/${encodeURIComponent(model)}/converse`, {
      method: "POST",
      headers: { authorization: `Bearer ${alice.key}`, "content-type": "application/json" },
      body: JSON.stringify({ messages }),
    });
    t.equal(res.status, 403, model);
    t.equal(((await res.json()) as { error: { code: string } }).error.code, "model_not_allowed");
  }
  t.equal(bedrock.seen.length, before, "the stand-in was never called for a refused model");
  const audit = h.audit().filter((a) => a.reason === "model_not_allowed");
  t.same(audit.at(-1)?.model, "anthropic.claude-3-opus-20240229-v1:0", "the audit line names the decoded model id");

  const r = await client.send(new ConverseCommand({ modelId: SONNET_PROFILE, messages }));
  t.ok(r.output?.message, "an alias (cross-region inference profile) of an allowed model passes");
  assertSignedByTollgate(t, "/model/us.anthropic.claude-3-5-sonnet-20240620-v1%3A0/converse");
});

// LIMITATION (reported): application inference profiles, provisioned throughput and imported models are
// addressed by ARN, and the SDK sends the ARN's `/` as %2F, which path hygiene refuses everywhere. Today that is
// a clean 400 before anything is sent; supporting ARNs needs %2F allowed inside {modelId} on such routes.
t.test("a model id that is an ARN (…%2F… in the path) is refused cleanly, never forwarded", async (t) => {
  const before = bedrock.seen.length;
  const err = await client.send(new ConverseCommand({ modelId: PROFILE_ARN, messages })).catch((e: unknown) => e as { $metadata?: { httpStatusCode?: number } });
  t.equal(err.$metadata?.httpStatusCode, 400, "400 bad_path today");
  t.equal(bedrock.seen.length, before, "nothing reached Bedrock");
  t.ok(await until(() => h.audit().some((a) => a.reason === "bad_path"), 2000, "the audit line").then(() => true), "audited as bad_path");
});

t.test("the client's own AWS headers and credential never travel upstream", async (t) => {
  const res = await fetch(`${h.url}/model/${encodeURIComponent(SONNET)}/converse`, {
    method: "POST",
    headers: {
      authorization: `Bearer ${alice.key}`,
      "content-type": "application/json",
      "x-amz-date": "19990101T000000Z",
      "x-amz-security-token": "client-session-token",
      "x-amz-content-sha256": "0".repeat(64),
    },
    body: JSON.stringify({ messages }),
  });
  t.equal(res.status, 200, "signed afresh, so Bedrock accepts it");
  await res.arrayBuffer();
  const seen = bedrock.seen.at(-1)!;
  t.not(seen.headers["x-amz-date"], "19990101T000000Z");
  t.equal(seen.headers["x-amz-security-token"], endpoint.issued.at(-1)!.sessionToken);
  t.not(seen.headers["x-amz-content-sha256"], "0".repeat(64), "the body hash is Tollgate's, not the client's claim");
  t.same(seen.verdict.ok, true);
});

t.test("no credential: 401 and nothing reaches Bedrock", async (t) => {
  const before = bedrock.seen.length;
  const res = await fetch(`${h.url}/model/${encodeURIComponent(SONNET)}/converse`, { method: "POST", headers: { "content-type": "application/json" }, body: "{}" });
  t.equal(res.status, 401);
  await res.arrayBuffer();
  t.equal(bedrock.seen.length, before);
});

t.test("every request that reached the stand-in carried a valid Tollgate signature", async (t) => {
  t.ok(bedrock.seen.length >= 8, `${bedrock.seen.length} requests`);
  t.same(bedrock.seen.filter((s) => !s.verdict.ok).map((s) => s.url), [], "none failed verification");
  t.equal(endpoint.refused, 0);
  t.notOk(h.logText().includes(endpoint.issued[0]!.secretAccessKey), "the AWS secret is never logged");
});
