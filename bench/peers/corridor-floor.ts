/**
 * Reference peer (a row of every bench run): the least a Node proxy can do per request and still do what the issue asks of the API-key path,
 * written as one plain handler over the bare undici forwarder (undici-pool.ts, `--api dispatch`), with the design
 * card's libraries. It answers "can any Node implementation of this work reach the per-core target?": whatever it
 * leaves out, Tollgate must do too, so its req/CPU-s is an upper bound for Tollgate's API-key path on this rig.
 *
 * Per request, as Tollgate does it: a request id; the bearer key hashed (SHA-256) and looked up; the body read
 * whole and parsed for `model`, checked against an allow-list; the client's credential and hop-by-hop headers
 * dropped, the upstream's key and the caller's identity headers (user, team, principal, X-Forwarded-*) injected,
 * as the bench's policy has Tollgate do; the response streamed to the client as it comes, with the usage read
 * from the JSON body (or the SSE stream's usage chunk) and priced; the Prometheus series Tollgate records for such a
 * request (requests, duration, upstream time to first byte, in flight, tokens, spend); one JSON audit line through
 * pino's destination, gathered into 4 KB writes as Tollgate's is.
 *
 * Left out (Tollgate does them, so they only lower Tollgate's figure): route table and policy evaluation, the raw
 * request-header checks, path normalization, rate-limit headers, every error path but one, deprecation headers,
 * graceful shutdown, reload.
 *
 * With `--jwks` and `--redis` it is the floor of the full path instead (the bench's `corridor-floor-full`): the
 * bearer token is a JWT, verified with jose against the issuer's JWKS the first time it is seen and then taken from
 * a map until it expires; between the body and the upstream, one atomic admission in Redis takes the user's
 * requests-per-minute and tokens-per-minute windows and reserves the team's monthly budget (the estimate: body
 * bytes / 4 prompt tokens plus max_tokens, or 1,024, priced); after the response, one settlement replaces the
 * estimate with the usage. The Redis step is Tollgate's own store (dist/limits/store/redis.js: its scripts, and the
 * admissions and settlements of one event-loop turn gathered into one script call), the cheapest client path
 * measured here: Tollgate with that gathering cut to nearly one call per request spent ~40 % more CPU per request
 * (interleaved A/B, 2026-12-07), and this floor's first version, one ioredis command per admission and per
 * settlement, was no faster than Tollgate. So the floor differs from Tollgate only in what it leaves out: the
 * limits engine's rules and plans, rate-limit headers, failure modes.
 *
 *   node bench/peers/corridor-floor.ts --target http://127.0.0.1:PORT --hold-target http://127.0.0.1:PORT2 --key-hash sha256:HEX
 *   node bench/peers/corridor-floor.ts --target … --hold-target … --jwks URL --issuer ISS --audience AUD --redis URL --key-prefix P
 *   (audit lines on stdout; requests under /chat/completions go to --hold-target, as in the bench's Tollgate policy)
 */
import { createServer, type IncomingMessage, type ServerResponse, type OutgoingHttpHeaders } from "node:http";
import { hash, randomUUID } from "node:crypto";
import { once } from "node:events";
import { Pool } from "undici";
import { pino } from "pino";
import { Counter, Gauge, Histogram, Registry } from "prom-client";
import { announce, arg, distUrl } from "./announce.ts";

const DROP = new Set(["connection", "keep-alive", "proxy-connection", "te", "trailer", "transfer-encoding", "upgrade", "expect", "host", "authorization", "x-api-key", "api-key", "cookie", "content-length"]);
const RESPONSE_DROP = new Set(["connection", "keep-alive", "proxy-connection", "te", "trailer", "transfer-encoding", "upgrade"]);
/** USD per million tokens (input, output), as a price table would give them. */
const PRICES = new Map([["gpt-4o-mini", { input: 0.15, output: 0.6 }]]);
const MODELS = new Set(["gpt-4o-mini", "gpt-4o"]);
const UPSTREAM_AUTH = "Bearer upstream-static-key";

const pool = new Pool(arg("target"), { connections: 128, pipelining: 1, keepAliveTimeout: 30_000 });
// The bench's second route, as in Tollgate's bench policy: `/chat/completions` to the stand-in that holds streams open.
const holdPool = new Pool(arg("hold-target"), { connections: 2048, pipelining: 1, keepAliveTimeout: 30_000 });
const HOLD_PATH = "/chat/completions";
const keys = new Map([[arg("key-hash", ""), { id: "key-bench", user: "bench-user", team: "bench-team" }]]);

interface Principal {
  id: string;
  user: string;
  team: string;
}

/** Full-path mode: JWTs instead of API keys, Redis admission and settlement. */
const JWKS_URI = arg("jwks", "");
const FULL = JWKS_URI !== "";
const AUTH_METHOD = FULL ? "jwt" : "api_key";
const AUTHENTICATOR = FULL ? "idp" : "keys";
// Loaded in full mode only, so the API-key floor's process holds no more than that path needs.
const jose = FULL ? await import("jose") : undefined;
const jwks = jose?.createRemoteJWKSet(new URL(JWKS_URI));
const verifyOptions = { issuer: arg("issuer", ""), audience: arg("audience", ""), algorithms: ["RS256"], requiredClaims: ["exp"] };
/** Verified tokens → their principal and expiry (ms); bounded, as Tollgate's token cache is. */
const verified = new Map<string, { principal: Principal | undefined; expiresAt: number }>();

/** The principal of a JWT: from the map when seen before and unexpired (no promise), else verified by jose. */
function jwtPrincipal(token: string): Principal | undefined | Promise<Principal | undefined> {
  const hit = verified.get(token);
  if (hit && hit.expiresAt > Date.now()) return hit.principal;
  return jose!.jwtVerify(token, jwks!, verifyOptions).then(
    ({ payload }) => {
      const groups = Array.isArray(payload.groups) ? payload.groups : [];
      const principal = groups.includes("llm-users") && typeof payload.sub === "string" ? { id: payload.sub, user: payload.sub, team: String(payload.team ?? "") } : undefined;
      if (verified.size >= 10_000) verified.clear();
      verified.set(token, { principal, expiresAt: (payload.exp ?? 0) * 1000 });
      return principal;
    },
    () => undefined,
  );
}

function authenticate(auth: string | undefined): Principal | undefined | Promise<Principal | undefined> {
  if (!auth?.startsWith("Bearer ")) return undefined;
  if (FULL) return jwtPrincipal(auth.slice(7));
  return keys.get("sha256:" + hash("sha256", auth.slice(7), "hex"));
}

type RedisModule = typeof import("../../src/limits/store/redis.ts");
const store = FULL
  ? await (async () => {
      const { createRedisClient, RedisStore } = (await import(distUrl("limits/store/redis.js"))) as RedisModule;
      return new RedisStore(createRedisClient({ mode: "standalone", url: arg("redis"), keyPrefix: arg("key-prefix"), commandTimeout: 500 } as Parameters<RedisModule["createRedisClient"]>[0]));
    })()
  : undefined;
const MINUTE = 60_000;
const DAY = 86_400_000;
const RESERVATION_TTL = 15 * MINUTE;
/** Limit instances are named by a digest of who and what (hash-tagged, fixed length, nothing a client sends is spliced in). */
const digests = new Map<string, string>();
function digest(value: string): string {
  let d = digests.get(value);
  if (d === undefined) {
    d = hash("sha256", value, "base64url").slice(0, 22);
    if (digests.size >= 10_000) digests.clear();
    digests.set(value, d);
  }
  return d;
}

interface Admission {
  tokensKey: string;
  windowStart: number;
  estimateTokens: number;
  budgetKey: string;
  reservation: string;
  expireAt: number;
}

/** Whole, non-negative counts: Redis counts in integers (Tollgate's engine rounds and clamps the same way). */
const count = (n: number) => (Number.isFinite(n) && n > 0 ? Math.round(n) : 0);

/** Takes the request's windows and reserves its budget, all or nothing; undefined when refused. Rejects when Redis fails. */
async function admit(principal: Principal, model: string, json: { max_tokens?: unknown }, bodyBytes: number, requestId: string): Promise<Admission | undefined> {
  const now = Date.now();
  const who = digest(`${principal.user}\u0000${model}`);
  const prompt = Math.ceil(bodyBytes / 4);
  const estimateTokens = prompt + (typeof json.max_tokens === "number" ? count(json.max_tokens) : 1024);
  const price = PRICES.get(model) ?? { input: 0, output: 0 };
  const amount = Math.ceil(prompt * price.input + (estimateTokens - prompt) * price.output); // micro-dollars
  const month = new Date(now);
  const period = `${month.getUTCFullYear()}-${String(month.getUTCMonth() + 1).padStart(2, "0")}`;
  const expireAt = Date.UTC(month.getUTCFullYear(), month.getUTCMonth() + 1, 1) + DAY; // the period's end + a day, as Tollgate
  const budgetKey = `team-monthly:${digest(principal.team)}:${period}`;
  const tokensKey = `user-tpm:${who}`;
  const result = await store!.takeAll(
    [
      { kind: "window", key: `user-rpm:${who}`, windowMs: MINUTE, limit: 1e9, cost: 1 },
      { kind: "window", key: tokensKey, windowMs: MINUTE, limit: 1e12, cost: estimateTokens },
      { kind: "budget", key: budgetKey, limit: 1e12, amount, id: requestId, ttlMs: RESERVATION_TTL, expireAt },
    ],
    now,
  );
  if (result.refused >= 0) return undefined;
  return { tokensKey, windowStart: (result.states[1] as { windowStart: number }).windowStart, estimateTokens, budgetKey, reservation: requestId, expireAt };
}

/** Replaces the estimate with what was used (not awaited: the response has gone). */
function settle(a: Admission, model: string, usage: Usage | undefined): void {
  const input = count(usage?.prompt_tokens ?? 0);
  const output = count(usage?.completion_tokens ?? 0);
  const price = PRICES.get(model) ?? { input: 0, output: 0 };
  const actual = Math.ceil(input * price.input + output * price.output);
  void store!.giveAll(
    [
      { kind: "window", key: a.tokensKey, windowMs: MINUTE, windowStart: a.windowStart, delta: input + output - a.estimateTokens },
      { kind: "budget", key: a.budgetKey, id: a.reservation, actual, expireAt: a.expireAt },
    ],
    Date.now(),
  );
}

const registry = new Registry();
const requests = new Counter({ name: "floor_requests_total", help: "requests", labelNames: ["route", "status", "auth_method", "decision"] as const, registers: [registry] });
const duration = new Histogram({ name: "floor_request_duration_seconds", help: "duration", labelNames: ["route"] as const, buckets: [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120], registers: [registry] });
const ttfb = new Histogram({ name: "floor_upstream_ttfb_seconds", help: "ttfb", labelNames: ["upstream"] as const, buckets: [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30], registers: [registry] });
const inflight = new Gauge({ name: "floor_inflight_requests", help: "in flight", registers: [registry] });
const tokens = new Counter({ name: "floor_tokens_total", help: "tokens", labelNames: ["model", "type", "source"] as const, registers: [registry] });
const spend = new Counter({ name: "floor_spend_usd_total", help: "spend", labelNames: ["model"] as const, registers: [registry] });

const destination = pino.destination({ dest: 1, sync: true, minLength: 4096, periodicFlush: 250 });
process.once("exit", () => destination.flushSync());

interface Usage {
  prompt_tokens?: number;
  completion_tokens?: number;
}

function refuse(res: ServerResponse, status: number, code: string, message: string): void {
  res.writeHead(status, { "content-type": "application/json", ...(status === 401 ? { "www-authenticate": 'Bearer realm="tollgate"' } : {}) });
  res.end(JSON.stringify({ error: { message, type: "invalid_request_error", code } }));
}

/** The usage of an SSE stream: the `data:` line that carries a `usage` object (the chunk before [DONE]). */
function sseUsage(text: string): Usage | undefined {
  const at = text.lastIndexOf('"usage":{');
  if (at < 0) return undefined;
  const start = text.lastIndexOf("data: ", at);
  const end = text.indexOf("\n", at);
  try {
    return (JSON.parse(text.slice(start + 6, end < 0 ? undefined : end)) as { usage?: Usage }).usage;
  } catch {
    return undefined;
  }
}

function handle(req: IncomingMessage, res: ServerResponse): void {
  const started = performance.now();
  const requestId = randomUUID();
  inflight.inc();
  const found = authenticate(req.headers.authorization);
  if (found instanceof Promise) {
    // A first-seen JWT: the body waits in the socket until the token is verified.
    req.pause();
    found
      .then((principal) => {
        serve(req, res, started, requestId, principal);
        req.resume();
      })
      .catch(() => res.destroy());
  } else serve(req, res, started, requestId, found);
}

function serve(req: IncomingMessage, res: ServerResponse, started: number, requestId: string, principal: Principal | undefined): void {
  let admission: Admission | undefined;
  let finished = false;
  const finish = (status: number, decision: string, model: string | undefined, usage: Usage | undefined, outcome: string, upstreamMs: number | undefined) => {
    if (finished) return;
    finished = true;
    inflight.dec();
    const seconds = (performance.now() - started) / 1000;
    requests.inc({ route: "chat", status: String(status), auth_method: AUTH_METHOD, decision });
    duration.observe({ route: "chat" }, seconds);
    let costUsd: number | undefined;
    if (usage && model) {
      const input = usage.prompt_tokens ?? 0;
      const output = usage.completion_tokens ?? 0;
      tokens.inc({ model, type: "input", source: "provider" }, input);
      tokens.inc({ model, type: "output", source: "provider" }, output);
      const price = PRICES.get(model);
      if (price) {
        costUsd = (input * price.input + output * price.output) / 1e6;
        spend.inc({ model }, costUsd);
      }
    }
    const record = {
      requestId, method: req.method, path: req.url, route: "chat", upstream: "llm", principal: principal?.id, user: principal?.user, team: principal?.team,
      authMethod: AUTH_METHOD, authenticator: AUTHENTICATOR, model, decision, reason: decision === "allow" ? (outcome === "complete" ? "allowed" : outcome) : "denied", status, outcome,
      durationMs: Math.round(seconds * 1e6) / 1e3, upstreamTtfbMs: upstreamMs === undefined ? undefined : Math.round(upstreamMs * 1e3) / 1e3,
      usage: usage && { input: usage.prompt_tokens ?? 0, output: usage.completion_tokens ?? 0, cachedInput: 0, reasoning: 0, source: "provider" }, costUsd,
      remoteAddress: req.socket.remoteAddress,
    };
    destination.write(JSON.stringify({ level: "info", time: new Date().toISOString(), service: "tollgate", log: "audit", ...record, msg: "request" }) + "\n");
    if (admission) settle(admission, model!, usage);
  };
  if (!principal) {
    refuse(res, 401, "invalid_api_key", FULL ? "a valid token is required" : "a valid API key is required");
    finish(401, "deny", undefined, undefined, "refused", undefined);
    return;
  }
  // A client that leaves: before its request went upstream, that ends it here; after, the upstream request is aborted
  // (listened for before the dispatch, so a request still queued in the pool is aborted when it starts).
  let controller: { abort(reason: Error): void } | undefined;
  let gone = false;
  let dispatched = false;
  res.once("close", () => {
    if (res.writableFinished) return;
    gone = true;
    if (controller) controller.abort(new Error("client went away"));
    else if (!dispatched) finish(499, "deny", undefined, undefined, "client_aborted", undefined);
  });
  const chunks: Buffer[] = [];
  req.on("data", (chunk: Buffer) => chunks.push(chunk));
  req.on("end", () => {
    const body = chunks.length === 1 ? chunks[0]! : Buffer.concat(chunks);
    let json: { model?: unknown; max_tokens?: unknown } = {};
    try {
      json = (JSON.parse(body.toString("utf8")) as typeof json | null) ?? {};
    } catch {
      json = {};
    }
    const model = json.model;
    if (typeof model !== "string" || !MODELS.has(model)) {
      refuse(res, 403, "model_not_allowed", "this model is not allowed");
      finish(403, "deny", undefined, undefined, "refused", undefined);
      return;
    }
    if (!store) return forward(body, model);
    admit(principal, model, json, body.length, requestId).then(
      (admitted) => {
        if (admitted) {
          admission = admitted;
          // Gone while the admission was in Redis: its audit line is written; give the reservation back.
          if (gone) settle(admitted, model, undefined);
          else forward(body, model);
        } else {
          refuse(res, 429, "rate_limit_exceeded", "a limit of this caller is reached");
          finish(429, "deny", model, undefined, "refused", undefined);
        }
      },
      () => {
        refuse(res, 503, "limits_unavailable", "the limits store is unavailable");
        finish(503, "deny", model, undefined, "refused", undefined);
      },
    );
  });

  const forward = (body: Buffer, model: string): void => {
    if (gone) return;
    dispatched = true;
    const headers: Record<string, string | string[]> = {};
    for (const name in req.headers) if (!DROP.has(name) && !name.startsWith("x-tollgate-")) headers[name] = req.headers[name]!;
    headers.authorization = UPSTREAM_AUTH;
    headers["x-tollgate-user"] = principal.user;
    headers["x-tollgate-team"] = principal.team;
    headers["x-tollgate-principal"] = principal.id;
    headers["x-forwarded-for"] = req.socket.remoteAddress ?? "";
    headers["x-forwarded-proto"] = "http";
    if (req.headers.host) headers["x-forwarded-host"] = req.headers.host;
    headers["content-length"] = String(body.length);
    headers["x-request-id"] = requestId;
    let upstreamMs: number | undefined;
    let status = 0;
    let sse = false;
    const seen: Buffer[] = [];
    (req.url!.startsWith(HOLD_PATH) ? holdPool : pool).dispatch(
      { method: req.method!, path: req.url!, headers, body },
      {
        onRequestStart(ctrl) {
          controller = ctrl;
          if (gone) ctrl.abort(new Error("client went away"));
        },
        onResponseStart(_ctrl, statusCode, upstreamHeaders) {
          upstreamMs = performance.now() - started;
          status = statusCode;
          ttfb.observe({ upstream: "llm" }, upstreamMs / 1000);
          const out: OutgoingHttpHeaders = { "x-request-id": requestId };
          for (const name in upstreamHeaders) if (!RESPONSE_DROP.has(name)) out[name] = upstreamHeaders[name];
          res.writeHead(statusCode, out);
          sse = String(upstreamHeaders["content-type"]).startsWith("text/event-stream");
          if (sse) res.flushHeaders();
        },
        onResponseData(ctrl, chunk) {
          // Usage is read when the body ends; an SSE stream keeps only its last chunks (the usage chunk is near the end).
          if (sse && seen.length === 4) seen.shift();
          seen.push(chunk);
          if (!res.write(chunk)) {
            ctrl.pause();
            res.once("drain", () => ctrl.resume());
          }
        },
        onResponseEnd() {
          res.end();
          const text = (seen.length === 1 ? seen[0]! : Buffer.concat(seen)).toString("utf8");
          let usage: Usage | undefined;
          if (sse) usage = sseUsage(text);
          else {
            try {
              usage = (JSON.parse(text) as { usage?: Usage }).usage;
            } catch {
              usage = undefined;
            }
          }
          finish(status, "allow", model, usage, "complete", upstreamMs);
        },
        onResponseError() {
          // The client left (its close aborted this request), or the upstream failed.
          const outcome = res.destroyed ? "client_aborted" : "upstream_error";
          if (!res.headersSent && !res.destroyed) refuse(res, 502, "upstream_unavailable", "the upstream could not be reached");
          else res.destroy();
          finish(res.headersSent ? status : 502, "allow", model, undefined, outcome, upstreamMs);
        },
      },
    );
  };
}

// As peers/tollgate.mjs: started with --expose-gc (the bench's held-streams instance), it answers an IPC `{ gc: id }`
// with a full collection and the heap figures.
const gc = (globalThis as { gc?: () => void }).gc;
if (gc) {
  process.on("message", (message: unknown) => {
    if (!message || typeof message !== "object" || !("gc" in message)) return;
    gc();
    gc();
    const { heapUsed, heapTotal, external, arrayBuffers } = process.memoryUsage();
    process.send?.({ gc: (message as { gc: unknown }).gc, heapUsed, heapTotal, external, arrayBuffers });
  });
}

const server = createServer({ keepAliveTimeout: 65_000 }, handle);
server.listen(0, "127.0.0.1");
await once(server, "listening");
announce({ port: (server.address() as { port: number }).port });
