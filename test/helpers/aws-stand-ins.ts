/**
 * AWS stand-ins on 127.0.0.1 for the SigV4 tests: a container-credentials endpoint (what EKS Pod Identity and
 * ECS serve), an independent SigV4 verifier built on `aws4` (Tollgate signs with @smithy/signature-v4), and a
 * Bedrock runtime that verifies every request and answers invoke / converse and their event streams.
 */
import { createServer, type IncomingHttpHeaders, type IncomingMessage, type Server, type ServerResponse } from "node:http";
import type { AddressInfo } from "node:net";
import { createHash, randomBytes, timingSafeEqual } from "node:crypto";
import aws4 from "aws4";
import { EventStreamCodec } from "@smithy/core/event-streams";

export interface AwsCredentials {
  accessKeyId: string;
  secretAccessKey: string;
  sessionToken?: string;
}

async function listen(server: Server): Promise<string> {
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  return `127.0.0.1:${(server.address() as AddressInfo).port}`;
}

async function close(server: Server): Promise<void> {
  server.closeAllConnections();
  await new Promise<void>((resolve) => server.close(() => resolve()));
}

function readAll(req: IncomingMessage): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    req.on("data", (c: Buffer) => chunks.push(c));
    req.on("end", () => resolve(Buffer.concat(chunks)));
    req.on("error", reject);
  });
}

// ---------------------------------------------------------------------------------------------------------------
// Container credentials (AWS_CONTAINER_CREDENTIALS_FULL_URI + AWS_CONTAINER_AUTHORIZATION_TOKEN)

export interface ContainerCredentialsEndpoint {
  readonly url: string;
  readonly token: string;
  /** Every credential set handed out, in order. */
  readonly issued: AwsCredentials[];
  /** Requests refused for a missing or wrong authorization token. */
  refused: number;
  /** Lifetime of the next credentials handed out. */
  lifetimeMs: number;
  /** Delay before answering, to let concurrent callers pile up. */
  delayMs: number;
  lookup(accessKeyId: string): AwsCredentials | undefined;
  close(): Promise<void>;
}

export async function startContainerCredentials(options: { lifetimeMs?: number; delayMs?: number } = {}): Promise<ContainerCredentialsEndpoint> {
  const token = "pod-identity-token-" + randomBytes(8).toString("hex");
  const issued: AwsCredentials[] = [];
  const server = createServer((req, res) => {
    if (req.headers.authorization !== token) {
      endpoint.refused++;
      res.writeHead(401, { "content-type": "application/json" }).end('{"message":"bad token"}');
      return;
    }
    const creds = {
      accessKeyId: `ASIACONTAINER${String(issued.length + 1).padStart(7, "0")}`,
      secretAccessKey: randomBytes(30).toString("base64"),
      sessionToken: "container-session-" + randomBytes(24).toString("base64url"),
    };
    issued.push(creds);
    const body = JSON.stringify({
      AccessKeyId: creds.accessKeyId,
      SecretAccessKey: creds.secretAccessKey,
      Token: creds.sessionToken,
      Expiration: new Date(Date.now() + endpoint.lifetimeMs).toISOString(),
    });
    setTimeout(() => res.writeHead(200, { "content-type": "application/json" }).end(body), endpoint.delayMs);
  });
  const host = await listen(server);
  const endpoint: ContainerCredentialsEndpoint = {
    url: `http://${host}/v1/credentials`,
    token,
    issued,
    refused: 0,
    lifetimeMs: options.lifetimeMs ?? 6 * 3600_000,
    delayMs: options.delayMs ?? 0,
    lookup: (id) => issued.find((c) => c.accessKeyId === id),
    close: () => close(server),
  };
  return endpoint;
}

// ---------------------------------------------------------------------------------------------------------------
// Independent SigV4 verification with aws4

export type Verdict = { ok: true; accessKeyId: string; signedHeaders: string[] } | { ok: false; reason: string };

const AUTH = /^AWS4-HMAC-SHA256 Credential=([^/]+)\/(\d{8})\/([^/]+)\/([^/]+)\/aws4_request, SignedHeaders=([a-z0-9;-]+), Signature=([0-9a-f]{64})$/;

/**
 * Recomputes the signature of a received request with aws4 (never trusting the request's own body hash) and
 * compares it with the Authorization header, as AWS would.
 */
export function verifySigV4(
  req: { method: string; url: string; headers: IncomingHttpHeaders; body: Buffer },
  lookup: (accessKeyId: string) => AwsCredentials | undefined,
  scope: { service: string; region: string },
  now = Date.now(),
): Verdict {
  const m = AUTH.exec(String(req.headers.authorization ?? ""));
  if (!m) return { ok: false, reason: "not_sigv4" };
  const [, accessKeyId, day, region, service, signedList] = m as unknown as [string, string, string, string, string, string];
  const creds = lookup(accessKeyId);
  if (!creds) return { ok: false, reason: "unknown_access_key" };
  if (region !== scope.region || service !== scope.service) return { ok: false, reason: "wrong_scope" };
  const amzDate = req.headers["x-amz-date"];
  if (typeof amzDate !== "string" || !amzDate.startsWith(day)) return { ok: false, reason: "bad_date" };
  const at = Date.parse(amzDate.replace(/^(\d{4})(\d{2})(\d{2})T(\d{2})(\d{2})(\d{2})Z$/, "$1-$2-$3T$4:$5:$6Z"));
  if (!(Math.abs(now - at) < 15 * 60_000)) return { ok: false, reason: "stale_date" };
  const signed = signedList.split(";");
  if (!signed.includes("host") || !signed.includes("x-amz-date")) return { ok: false, reason: "host_or_date_unsigned" };
  if (creds.sessionToken !== undefined && (req.headers["x-amz-security-token"] !== creds.sessionToken || !signed.includes("x-amz-security-token"))) {
    return { ok: false, reason: "bad_security_token" };
  }
  const headers: Record<string, string> = {};
  for (const name of signed) {
    const value = req.headers[name];
    if (value === undefined) return { ok: false, reason: `missing_signed_header:${name}` };
    headers[name] = Array.isArray(value) ? value.join(", ") : value;
  }
  // The payload hash is always recomputed from the bytes received: a claimed hash proves nothing.
  if (headers["x-amz-content-sha256"] !== undefined) headers["x-amz-content-sha256"] = createHash("sha256").update(req.body).digest("hex");
  const signer = new aws4.RequestSigner(
    { method: req.method, host: headers.host, path: req.url, headers, body: req.body, service, region, doNotModifyHeaders: true },
    { accessKeyId: creds.accessKeyId, secretAccessKey: creds.secretAccessKey },
  );
  signer.datetime = amzDate;
  const expected = Buffer.from(signer.authHeader());
  const received = Buffer.from(String(req.headers.authorization));
  if (expected.length !== received.length || !timingSafeEqual(expected, received)) return { ok: false, reason: "signature_mismatch" };
  return { ok: true, accessKeyId, signedHeaders: signed };
}

// ---------------------------------------------------------------------------------------------------------------
// Bedrock runtime

const codec = new EventStreamCodec(
  (bytes) => Buffer.from(bytes).toString("utf8"),
  (text) => new Uint8Array(Buffer.from(text, "utf8")),
);

/** One AWS event-stream frame, as Bedrock sends it. */
export function eventFrame(eventType: string, payload: unknown): Buffer {
  return Buffer.from(
    codec.encode({
      headers: {
        ":event-type": { type: "string", value: eventType },
        ":content-type": { type: "string", value: "application/json" },
        ":message-type": { type: "string", value: "event" },
      },
      body: new Uint8Array(Buffer.from(JSON.stringify(payload))),
    }),
  );
}

/** Decodes a whole event-stream body into [event type, JSON payload] pairs. */
export function decodeFrames(bytes: Buffer): [string, unknown][] {
  const out: [string, unknown][] = [];
  let at = 0;
  while (at < bytes.length) {
    const length = bytes.readUInt32BE(at);
    const message = codec.decode(bytes.subarray(at, at + length));
    out.push([String(message.headers[":event-type"]?.value), JSON.parse(Buffer.from(message.body).toString("utf8"))]);
    at += length;
  }
  return out;
}

export const TEXT_DELTAS = ["Hello", " from", " the", " Bedrock", " stand-in."];

function converseStreamFrames(): Buffer[] {
  return [
    eventFrame("messageStart", { role: "assistant" }),
    ...TEXT_DELTAS.map((text) => eventFrame("contentBlockDelta", { contentBlockIndex: 0, delta: { text } })),
    eventFrame("contentBlockStop", { contentBlockIndex: 0 }),
    eventFrame("messageStop", { stopReason: "end_turn" }),
    eventFrame("metadata", { usage: { inputTokens: 12, outputTokens: 5, totalTokens: 17 }, metrics: { latencyMs: 42 } }),
  ];
}

function invokeStreamFrames(modelId: string): Buffer[] {
  const chunk = (event: unknown) => eventFrame("chunk", { bytes: Buffer.from(JSON.stringify(event)).toString("base64") });
  return [
    chunk({ type: "message_start", message: { id: "msg_1", model: modelId, role: "assistant", usage: { input_tokens: 12, output_tokens: 1 } } }),
    ...TEXT_DELTAS.map((text) => chunk({ type: "content_block_delta", index: 0, delta: { type: "text_delta", text } })),
    chunk({ type: "message_delta", delta: { stop_reason: "end_turn" }, usage: { output_tokens: 5 } }),
    chunk({ type: "message_stop", "amazon-bedrock-invocationMetrics": { inputTokenCount: 12, outputTokenCount: 5 } }),
  ];
}

export interface SeenBedrockRequest {
  method: string;
  url: string;
  headers: IncomingHttpHeaders;
  body: Buffer;
  verdict: Verdict;
  /** Exactly the response body bytes the stand-in wrote. */
  written: Buffer;
}

export interface BedrockStandIn {
  readonly url: string;
  readonly host: string;
  readonly seen: SeenBedrockRequest[];
  /** When set, a stream waits for it before writing its last frames (to prove events flow before the end). */
  holdStream: Promise<void> | undefined;
  close(): Promise<void>;
}

const BEDROCK_PATH = /^\/model\/([^/]+)\/(invoke|invoke-with-response-stream|converse|converse-stream)$/;

export async function startBedrockStandIn(lookup: (accessKeyId: string) => AwsCredentials | undefined, region = "us-east-1"): Promise<BedrockStandIn> {
  const seen: SeenBedrockRequest[] = [];
  const server = createServer((req, res) => void handle(req, res));
  async function handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const body = await readAll(req);
    const verdict = verifySigV4({ method: req.method!, url: req.url!, headers: req.headers, body }, lookup, { service: "bedrock", region });
    const record: SeenBedrockRequest = { method: req.method!, url: req.url!, headers: req.headers, body, verdict, written: Buffer.alloc(0) };
    seen.push(record);
    const send = (status: number, headers: Record<string, string>, bytes: Buffer) => {
      record.written = bytes;
      res.writeHead(status, { ...headers, "content-length": String(bytes.length) }).end(bytes);
    };
    if (!verdict.ok) {
      send(403, { "content-type": "application/json", "x-amzn-errortype": "InvalidSignatureException" }, Buffer.from(JSON.stringify({ message: `signature rejected: ${verdict.reason}` })));
      return;
    }
    const m = BEDROCK_PATH.exec(req.url!);
    if (!m || req.method !== "POST") {
      send(404, { "content-type": "application/json", "x-amzn-errortype": "UnknownOperationException" }, Buffer.from('{"message":"no such operation"}'));
      return;
    }
    const modelId = decodeURIComponent(m[1]!);
    const json = { "content-type": "application/json", "x-amzn-requestid": "req-" + seen.length };
    switch (m[2]) {
      case "invoke":
        send(200, { ...json, "x-amzn-bedrock-input-token-count": "12", "x-amzn-bedrock-output-token-count": "5" }, Buffer.from(JSON.stringify({
          id: "msg_1", type: "message", role: "assistant", model: modelId,
          content: [{ type: "text", text: TEXT_DELTAS.join("") }], stop_reason: "end_turn", usage: { input_tokens: 12, output_tokens: 5 },
        })));
        return;
      case "converse":
        send(200, json, Buffer.from(JSON.stringify({
          output: { message: { role: "assistant", content: [{ text: `${TEXT_DELTAS.join("")} (${modelId})` }] } },
          stopReason: "end_turn", usage: { inputTokens: 12, outputTokens: 5, totalTokens: 17 }, metrics: { latencyMs: 42 },
        })));
        return;
      default: {
        const frames = m[2] === "converse-stream" ? converseStreamFrames() : invokeStreamFrames(modelId);
        res.writeHead(200, { "content-type": "application/vnd.amazon.eventstream", "x-amzn-requestid": "req-" + seen.length, "x-amzn-bedrock-content-type": "application/json" });
        const written: Buffer[] = [];
        const write = async (bytes: Buffer) => {
          written.push(bytes);
          record.written = Buffer.concat(written);
          res.write(bytes);
          await new Promise((r) => setTimeout(r, 5));
        };
        for (const [i, frame] of frames.entries()) {
          if (i === frames.length - 2 && standIn.holdStream) await standIn.holdStream;
          // Split some frames across writes so chunk boundaries never line up with frame boundaries.
          if (i % 2 === 1) {
            await write(frame.subarray(0, 7));
            await write(frame.subarray(7));
          } else await write(frame);
        }
        res.end();
      }
    }
  }
  const host = await listen(server);
  const standIn: BedrockStandIn = { url: `http://${host}`, host, seen, holdStream: undefined, close: () => close(server) };
  return standIn;
}
