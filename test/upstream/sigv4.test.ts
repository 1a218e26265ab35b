/**
 * The SigV4 upstream credential through the REAL AWS SDK Node provider chain: this file runs a container
 * credentials endpoint on 127.0.0.1 (what EKS Pod Identity and ECS serve) and points the chain at it with
 * AWS_CONTAINER_CREDENTIALS_FULL_URI + AWS_CONTAINER_AUTHORIZATION_TOKEN. Every signature Tollgate makes (with
 * @smithy/signature-v4) is checked independently with `aws4` by a Bedrock stand-in that answers 403 otherwise.
 */
import t from "tap";
import { createHash } from "node:crypto";
import { request } from "node:http";
import { Writable } from "node:stream";
import { SigV4Credential } from "../../src/upstream/sigv4.ts";
import { upstreamCredential } from "../../src/config/schema.ts";
import type { OutgoingRequest } from "../../src/upstream/credential.ts";
import { TollgateError } from "../../src/proxy/errors.ts";
import { systemClock } from "../../src/clock.ts";
import { Metrics } from "../../src/observe/metrics.ts";
import { createLogger } from "../../src/observe/audit.ts";
import { until } from "../helpers/harness.ts";
import { startBedrockStandIn, startContainerCredentials, verifySigV4 } from "../helpers/aws-stand-ins.ts";

const endpoint = await startContainerCredentials();
for (const name of Object.keys(process.env)) if (/^AWS_/.test(name)) delete process.env[name];
process.env.AWS_CONTAINER_CREDENTIALS_FULL_URI = endpoint.url;
process.env.AWS_CONTAINER_AUTHORIZATION_TOKEN = endpoint.token;
process.env.AWS_CONFIG_FILE = "/nonexistent/tollgate-test/config";
process.env.AWS_SHARED_CREDENTIALS_FILE = "/nonexistent/tollgate-test/credentials";
process.env.AWS_EC2_METADATA_DISABLED = "true";

const bedrock = await startBedrockStandIn(endpoint.lookup);
t.teardown(async () => {
  await bedrock.close();
  await endpoint.close();
});

const logText: string[] = [];
const logger = createLogger(new Writable({ write: (c, _e, cb) => void (logText.push(String(c)), cb()) }) as never, "debug");

type SigV4Config = ConstructorParameters<typeof SigV4Credential>[0];
let serial = 0;
function credential(overrides: Record<string, unknown> = {}): SigV4Credential {
  const config = upstreamCredential.parse({ type: "sigv4", region: "us-east-1", ...overrides }) as SigV4Config;
  const c = new SigV4Credential(config, { upstream: `bedrock-${++serial}`, clock: systemClock, metrics: new Metrics({ defaultMetrics: false }), logger });
  t.teardown(() => c.close());
  return c;
}

const MODEL_PATH = "/model/anthropic.claude-3-5-sonnet-20240620-v1%3A0/converse";
const BODY = Buffer.from(JSON.stringify({ messages: [{ role: "user", content: [{ text: "Hello, Bedrock" }] }], inferenceConfig: { maxTokens: 64 } }));

function outgoing(extra: Record<string, string> = {}, body = BODY, path = MODEL_PATH): OutgoingRequest {
  return {
    method: "POST",
    origin: bedrock.url,
    path,
    headers: { "content-type": "application/json", "content-length": String(body.length), "x-request-id": "req-1", ...extra },
    body,
  };
}

/** Sends a signed request as is (method, path, headers, body) and returns the stand-in's answer. */
function send(out: OutgoingRequest, body: Buffer | undefined = out.body): Promise<{ status: number; text: string }> {
  return new Promise((resolve, reject) => {
    const req = request(`${out.origin}${out.path}`, { method: out.method, headers: out.headers }, (res) => {
      let text = "";
      res.on("data", (d) => (text += d));
      res.on("end", () => resolve({ status: res.statusCode!, text }));
    });
    req.setTimeout(5000, () => req.destroy(new Error("stand-in did not answer")));
    req.on("error", reject);
    req.end(body);
  });
}

t.test("signs with the container credentials the real provider chain fetched, and aws4 agrees", async (t) => {
  const before = endpoint.issued.length;
  const c = credential();
  // The gateway strips a client's x-amz-* headers (ownedHeaders); stale date and token are also overwritten here.
  t.same([...c.ownedHeaders].sort(), ["x-amz-content-sha256", "x-amz-date", "x-amz-security-token"]);
  const out = outgoing({ "x-amz-date": "19990101T000000Z", "x-amz-security-token": "client-token" });
  await c.apply(out);
  t.equal(endpoint.issued.length, before + 1, "one fetch from the container endpoint");
  t.equal(endpoint.refused, 0, "the chain sent AWS_CONTAINER_AUTHORIZATION_TOKEN");
  const creds = endpoint.issued.at(-1)!;
  const h = out.headers as Record<string, string>;
  t.match(h.authorization, new RegExp(`^AWS4-HMAC-SHA256 Credential=${creds.accessKeyId}/\\d{8}/us-east-1/bedrock/aws4_request, SignedHeaders=`));
  t.equal(h["x-amz-security-token"], creds.sessionToken, "session token present");
  t.equal(h.host, bedrock.host, "host is the upstream's");
  t.equal(h["x-amz-content-sha256"], createHash("sha256").update(BODY).digest("hex"), "body hashed");
  t.not(h["x-amz-date"], "19990101T000000Z");
  const signedHeaders = /SignedHeaders=([^,]+)/.exec(String(h.authorization))![1]!.split(";");
  for (const name of ["host", "x-amz-date", "x-amz-security-token", "x-amz-content-sha256", "content-type", "x-request-id"]) t.ok(signedHeaders.includes(name), `${name} is signed`);

  const verdict = verifySigV4({ method: "POST", url: MODEL_PATH, headers: h, body: BODY }, endpoint.lookup, { service: "bedrock", region: "us-east-1" });
  t.same(verdict, { ok: true, accessKeyId: creds.accessKeyId, signedHeaders }, "aws4 recomputes the same signature");
  const res = await send(out);
  t.equal(res.status, 200, "the stand-in answers 200");
  t.ok(bedrock.seen.at(-1)!.verdict.ok, "the stand-in verified it on the wire");
  t.same(c.status(), { ready: true });
});

t.test("a request whose body or signed headers change after signing is rejected with 403", async (t) => {
  const c = credential();
  const out = outgoing();
  await c.apply(out);
  t.equal((await send(out)).status, 200, "untouched: accepted");

  const tampered = Buffer.from(BODY.toString().replace("maxTokens\":64", "maxTokens\":99"));
  t.equal(tampered.length, BODY.length, "same length, so content-length still matches");
  const res = await send(out, tampered);
  t.equal(res.status, 403, "tampered body: rejected");
  t.same(bedrock.seen.at(-1)!.verdict, { ok: false, reason: "signature_mismatch" });
  t.match(res.text, /signature_mismatch/);

  const otherHeader = { ...out, headers: { ...out.headers, "x-request-id": "req-2" } };
  t.equal((await send(otherHeader)).status, 403, "a signed header changed: rejected");
  const otherModel = { ...out, path: MODEL_PATH.replace("sonnet", "haiku") };
  t.equal((await send(otherModel)).status, 403, "another model id in the path: rejected");

  const westOut = outgoing();
  await credential({ region: "us-west-2" }).apply(westOut);
  t.equal((await send(westOut)).status, 403, "signed for another region: rejected");
  t.same(bedrock.seen.at(-1)!.verdict, { ok: false, reason: "wrong_scope" });
});

t.test("model ids with ':' (literal or %3A), a query and an empty body all verify", async (t) => {
  const c = credential();
  const cases: OutgoingRequest[] = [
    outgoing({}, BODY, "/model/anthropic.claude-3-5-sonnet-20240620-v1:0/invoke"),
    outgoing({}, BODY, "/model/arn%3Aaws%3Abedrock%3Aus-east-1%3A123456789012%3Ainference-profile%2Fus.anthropic.claude-3-5-sonnet-20240620-v1%3A0/invoke"),
    outgoing({}, BODY, `${MODEL_PATH}?b=2&a=1&a=0`),
    outgoing({}, Buffer.alloc(0), MODEL_PATH),
  ];
  for (const out of cases) {
    await c.apply(out);
    await send(out);
    t.same(bedrock.seen.at(-1)!.verdict.ok, true, `${out.path} (${out.body!.length} bytes) verifies`);
  }
});

t.test("one fetch however many requests wait for the first credentials", async (t) => {
  endpoint.delayMs = 150;
  t.teardown(() => void (endpoint.delayMs = 0));
  const before = endpoint.issued.length;
  const c = credential();
  const outs = Array.from({ length: 25 }, () => outgoing());
  await Promise.all(outs.map((o) => c.apply(o)));
  t.equal(endpoint.issued.length - before, 1, "25 concurrent requests, one credential fetch");
  const key = endpoint.issued.at(-1)!.accessKeyId;
  t.ok(outs.every((o) => String(o.headers.authorization).includes(`Credential=${key}/`)), "all signed with it");
  for (const o of outs.slice(0, 3)) t.equal((await send(o)).status, 200);
});

t.test("credentials are refreshed in the background before they expire", async (t) => {
  // 1.5 s longer than the refresher's 5-minute margin: the refresher's timer fires 1.5 s after each fetch.
  endpoint.lifetimeMs = 5 * 60_000 + 1500;
  t.teardown(() => void (endpoint.lifetimeMs = 6 * 3600_000));
  const before = endpoint.issued.length;
  const c = credential();
  const first = outgoing();
  await c.apply(first);
  const firstKey = endpoint.issued.at(-1)!.accessKeyId;
  t.equal(firstKey, endpoint.issued[before]!.accessKeyId);
  let second = outgoing();
  // Requests keep signing with the first credentials until the timer (1.5 s) has fetched the next ones.
  await until(async () => {
    second = outgoing();
    await c.apply(second);
    return !String(second.headers.authorization).includes(`Credential=${firstKey}/`);
  }, 5000, "requests signed with refreshed credentials");
  const refreshed = endpoint.issued[before + 1]!;
  t.ok(String(second.headers.authorization).includes(`Credential=${refreshed.accessKeyId}/`), "signed with the background refresh's credentials");
  t.equal(second.headers["x-amz-security-token"], refreshed.sessionToken);
  t.equal((await send(second)).status, 200, "and the stand-in accepts them");
});

t.test("credentials that live less than the refresh window are not refetched in a loop", async (t) => {
  endpoint.lifetimeMs = 60_000; // a minute: shorter than the 5-minute refresh margin
  t.teardown(() => void (endpoint.lifetimeMs = 6 * 3600_000));
  const before = endpoint.issued.length;
  const c = credential();
  const out = outgoing();
  await c.apply(out);
  t.equal((await send(out)).status, 200, "usable");
  await new Promise((r) => setTimeout(r, 1000));
  c.close();
  const fetches = endpoint.issued.length - before;
  t.ok(fetches <= 3, `at most a few fetches in a second (saw ${fetches})`);
});

t.test("a slow or refusing credentials endpoint fails the request fast with 503, never a hang", async (t) => {
  endpoint.delayMs = 2000;
  t.teardown(() => void (endpoint.delayMs = 0));
  const slow = credential({ timeout: "300ms" });
  const started = Date.now();
  const err = await slow.apply(outgoing()).catch((e: unknown) => e);
  t.ok(err instanceof TollgateError && err.code === "upstream_credential_unavailable" && err.status === 503, "503 upstream_credential_unavailable");
  t.ok(Date.now() - started < 1500, `bounded by the timeout (${Date.now() - started} ms)`);
  t.equal(slow.status().ready, false);
  endpoint.delayMs = 0;

  const refusedBefore = endpoint.refused;
  process.env.AWS_CONTAINER_AUTHORIZATION_TOKEN = "wrong-token";
  t.teardown(() => void (process.env.AWS_CONTAINER_AUTHORIZATION_TOKEN = endpoint.token));
  const refused = credential({ timeout: "500ms" });
  const err2 = await refused.apply(outgoing()).catch((e: unknown) => e);
  t.ok(err2 instanceof TollgateError && err2.code === "upstream_credential_unavailable", "refused token: 503, no fallback");
  t.ok(endpoint.refused > refusedBefore, "the endpoint saw the wrong token and refused it");
});

t.test("no secret ever reaches the logs", async (t) => {
  const text = logText.join("");
  const leaked = endpoint.issued.filter((c) => text.includes(c.secretAccessKey) || text.includes(c.sessionToken!));
  t.same(leaked.map((c) => c.accessKeyId), [], `none of ${endpoint.issued.length} secret keys or session tokens logged`);
  t.notOk(text.includes(endpoint.token), "container authorization token not logged");
});
