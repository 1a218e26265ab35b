/**
 * IRSA (web identity) and role chaining through the REAL AWS SDK: the Node provider chain reads the projected
 * service-account token from AWS_WEB_IDENTITY_TOKEN_FILE and calls AssumeRoleWithWebIdentity on an STS stand-in
 * (AWS_ENDPOINT_URL_STS → 127.0.0.1); `assumeRole` then calls AssumeRole signed with those credentials. A
 * separate file from sigv4.test.ts because the chain tries web identity before container credentials.
 */
import t from "tap";
import { createServer } from "node:http";
import type { AddressInfo } from "node:net";
import { randomBytes } from "node:crypto";
import { mkdtempSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Writable } from "node:stream";
import { SigV4Credential } from "../../src/upstream/sigv4.ts";
import { upstreamCredential } from "../../src/config/schema.ts";
import { systemClock } from "../../src/clock.ts";
import { Metrics } from "../../src/observe/metrics.ts";
import { createLogger } from "../../src/observe/audit.ts";
import { startBedrockStandIn, verifySigV4, type AwsCredentials, type Verdict } from "../helpers/aws-stand-ins.ts";

const ROLE_ARN = "arn:aws:iam::123456789012:role/tollgate-irsa";
const CHAINED_ROLE_ARN = "arn:aws:iam::210987654321:role/bedrock-invoker";
const SA_TOKEN = "eyJhbGciOiJSUzI1NiJ9.projected-service-account-token." + randomBytes(16).toString("base64url");

interface StsCall {
  action: string;
  params: URLSearchParams;
  verdict?: Verdict;
}
const calls: StsCall[] = [];
const issued: AwsCredentials[] = [];
const lookup = (id: string) => issued.find((c) => c.accessKeyId === id);

function credentialsXml(prefix: string): string {
  const creds = { accessKeyId: `${prefix}${String(issued.length + 1).padStart(8, "0")}`, secretAccessKey: randomBytes(30).toString("base64"), sessionToken: randomBytes(40).toString("base64") };
  issued.push(creds);
  const expiration = new Date(Date.now() + 3600_000).toISOString();
  return `<Credentials><AccessKeyId>${creds.accessKeyId}</AccessKeyId><SecretAccessKey>${creds.secretAccessKey}</SecretAccessKey><SessionToken>${creds.sessionToken}</SessionToken><Expiration>${expiration}</Expiration></Credentials>`;
}

const sts = createServer((req, res) => {
  const chunks: Buffer[] = [];
  req.on("data", (c: Buffer) => chunks.push(c));
  req.on("end", () => {
    const body = Buffer.concat(chunks);
    const params = new URLSearchParams(body.toString());
    const call: StsCall = { action: params.get("Action") ?? "", params };
    calls.push(call);
    const reply = (status: number, xml: string) => res.writeHead(status, { "content-type": "text/xml" }).end(xml);
    const ns = 'xmlns="https://sts.amazonaws.com/doc/2011-06-15/"';
    const fault = (code: string) => reply(403, `<ErrorResponse ${ns}><Error><Type>Sender</Type><Code>${code}</Code><Message>${code}</Message></Error><RequestId>r</RequestId></ErrorResponse>`);
    if (call.action === "AssumeRoleWithWebIdentity") {
      if (params.get("WebIdentityToken") !== SA_TOKEN || params.get("RoleArn") !== ROLE_ARN) return fault("InvalidIdentityToken");
      const result = `<SubjectFromWebIdentityToken>system:serviceaccount:llm:tollgate</SubjectFromWebIdentityToken><Audience>sts.amazonaws.com</Audience><AssumedRoleUser><Arn>arn:aws:sts::123456789012:assumed-role/tollgate-irsa/${params.get("RoleSessionName")}</Arn><AssumedRoleId>AROAIRSA:tollgate</AssumedRoleId></AssumedRoleUser>${credentialsXml("ASIAWEBIDENTITY")}`;
      return reply(200, `<AssumeRoleWithWebIdentityResponse ${ns}><AssumeRoleWithWebIdentityResult>${result}</AssumeRoleWithWebIdentityResult><ResponseMetadata><RequestId>r1</RequestId></ResponseMetadata></AssumeRoleWithWebIdentityResponse>`);
    }
    if (call.action === "AssumeRole") {
      // AssumeRole must be signed by the web identity credentials: verified like any AWS API would.
      call.verdict = verifySigV4({ method: req.method!, url: req.url!, headers: req.headers, body }, lookup, { service: "sts", region: "us-east-1" });
      if (!call.verdict.ok) return fault("SignatureDoesNotMatch");
      const result = `<AssumedRoleUser><Arn>arn:aws:sts::210987654321:assumed-role/bedrock-invoker/${params.get("RoleSessionName")}</Arn><AssumedRoleId>AROACHAINED:tollgate</AssumedRoleId></AssumedRoleUser>${credentialsXml("ASIACHAINED")}`;
      return reply(200, `<AssumeRoleResponse ${ns}><AssumeRoleResult>${result}</AssumeRoleResult><ResponseMetadata><RequestId>r2</RequestId></ResponseMetadata></AssumeRoleResponse>`);
    }
    fault("InvalidAction");
  });
});
await new Promise<void>((resolve) => sts.listen(0, "127.0.0.1", resolve));

const dir = mkdtempSync(join(tmpdir(), "tollgate-irsa-"));
const tokenFile = join(dir, "token");
writeFileSync(tokenFile, SA_TOKEN);
for (const name of Object.keys(process.env)) if (/^AWS_/.test(name)) delete process.env[name];
// What the EKS pod identity webhook injects for a service account annotated with eks.amazonaws.com/role-arn.
process.env.AWS_WEB_IDENTITY_TOKEN_FILE = tokenFile;
process.env.AWS_ROLE_ARN = ROLE_ARN;
process.env.AWS_ROLE_SESSION_NAME = "tollgate-pod";
process.env.AWS_REGION = "us-east-1";
process.env.AWS_STS_REGIONAL_ENDPOINTS = "regional";
process.env.AWS_ENDPOINT_URL_STS = `http://127.0.0.1:${(sts.address() as AddressInfo).port}`;
process.env.AWS_CONFIG_FILE = "/nonexistent/tollgate-test/config";
process.env.AWS_SHARED_CREDENTIALS_FILE = "/nonexistent/tollgate-test/credentials";
process.env.AWS_EC2_METADATA_DISABLED = "true";

const bedrock = await startBedrockStandIn(lookup);
t.teardown(async () => {
  await bedrock.close();
  sts.closeAllConnections();
  await new Promise<void>((resolve) => sts.close(() => resolve()));
});

const logText: string[] = [];
const logger = createLogger(new Writable({ write: (c, _e, cb) => void (logText.push(String(c)), cb()) }) as never, "debug");
type SigV4Config = ConstructorParameters<typeof SigV4Credential>[0];
function credential(overrides: Record<string, unknown> = {}): SigV4Credential {
  const config = upstreamCredential.parse({ type: "sigv4", region: "us-east-1", ...overrides }) as SigV4Config;
  const c = new SigV4Credential(config, { upstream: "bedrock", clock: systemClock, metrics: new Metrics({ defaultMetrics: false }), logger });
  t.teardown(() => c.close());
  return c;
}

const PATH = "/model/anthropic.claude-3-5-sonnet-20240620-v1%3A0/invoke";
const BODY = Buffer.from('{"anthropic_version":"bedrock-2023-05-31","max_tokens":32,"messages":[{"role":"user","content":"hi"}]}');

async function signAndSend(c: SigV4Credential): Promise<{ headers: Record<string, string>; status: number }> {
  const headers: Record<string, string> = { "content-type": "application/json", "content-length": String(BODY.length) };
  await c.apply({ method: "POST", origin: bedrock.url, path: PATH, headers, body: BODY });
  const res = await fetch(bedrock.url + PATH, { method: "POST", headers, body: BODY, signal: AbortSignal.timeout(5000) });
  await res.arrayBuffer();
  return { headers, status: res.status };
}

t.test("IRSA: the projected token becomes web identity credentials that sign Bedrock requests", async (t) => {
  const { headers, status } = await signAndSend(credential());
  const webIdentity = calls.filter((c) => c.action === "AssumeRoleWithWebIdentity");
  t.equal(webIdentity.length, 1, "one AssumeRoleWithWebIdentity call");
  t.equal(webIdentity[0]!.params.get("RoleArn"), ROLE_ARN);
  t.equal(webIdentity[0]!.params.get("RoleSessionName"), "tollgate-pod");
  t.equal(webIdentity[0]!.params.get("WebIdentityToken"), SA_TOKEN, "the token file's content was presented");
  const creds = issued.at(-1)!;
  t.match(creds.accessKeyId, /^ASIAWEBIDENTITY/);
  t.match(headers.authorization, new RegExp(`^AWS4-HMAC-SHA256 Credential=${creds.accessKeyId}/\\d{8}/us-east-1/bedrock/aws4_request`));
  t.equal(headers["x-amz-security-token"], creds.sessionToken);
  t.equal(status, 200);
  t.same(bedrock.seen.at(-1)!.verdict.ok, true, "aws4 verifies the signature");
});

t.test("assumeRole chains from the web identity: AssumeRole is itself SigV4-signed and verified", async (t) => {
  const before = calls.length;
  const c = credential({ assumeRole: { roleArn: CHAINED_ROLE_ARN, externalId: "tollgate-ext-7", sessionName: "tollgate-bedrock", duration: "15m" } });
  const { headers, status } = await signAndSend(c);
  const made = calls.slice(before);
  t.same(made.map((m) => m.action), ["AssumeRoleWithWebIdentity", "AssumeRole"], "web identity first, then the chained role");
  const assume = made[1]!;
  t.equal(assume.params.get("RoleArn"), CHAINED_ROLE_ARN);
  t.equal(assume.params.get("ExternalId"), "tollgate-ext-7");
  t.equal(assume.params.get("RoleSessionName"), "tollgate-bedrock");
  t.equal(assume.params.get("DurationSeconds"), "900");
  t.match(assume.verdict, { ok: true, accessKeyId: issued.at(-2)!.accessKeyId }, "signed by the web identity credentials");
  const chained = issued.at(-1)!;
  t.match(chained.accessKeyId, /^ASIACHAINED/);
  t.ok(headers.authorization!.includes(`Credential=${chained.accessKeyId}/`), "Bedrock requests are signed with the chained role");
  t.equal(headers["x-amz-security-token"], chained.sessionToken);
  t.equal(status, 200);
  t.same(bedrock.seen.at(-1)!.verdict.ok, true);
});

t.test("a token STS refuses means 503 for the request, not unsigned traffic", async (t) => {
  writeFileSync(tokenFile, "revoked-token");
  t.teardown(() => writeFileSync(tokenFile, SA_TOKEN));
  const c = credential({ timeout: "3s" });
  const seenBefore = bedrock.seen.length;
  const err = await c.apply({ method: "POST", origin: bedrock.url, path: PATH, headers: {}, body: BODY }).catch((e: unknown) => e);
  t.match(err, { code: "upstream_credential_unavailable", status: 503 });
  t.equal(bedrock.seen.length, seenBefore, "nothing was sent");
  t.notOk(logText.join("").includes(SA_TOKEN), "the service-account token is never logged");
});
