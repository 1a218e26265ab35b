/**
 * Opaque bearer tokens, verified by asking their issuer: RFC 7662 introspection, OIDC UserInfo, or a token-info
 * endpoint (Google style). Answers are cached under a SHA-256 of the token — positive ones no longer than
 * `cacheTtl` nor past the token's `exp`, negative ones for `negativeCacheTtl` — and concurrent lookups of one
 * token share one call. An endpoint that is down, slow or answers nonsense denies with 503 and is never cached.
 * The token itself never reaches a log line, a metric label, an error message or a cache key.
 */
import { hash } from "node:crypto";
import { LRUCache } from "lru-cache";
import { request } from "undici";
import type { Dispatcher } from "undici";
// RFC 7662 goes through openid-client: it builds the form body, encodes client_secret_basic credentials the
// RFC 6749 §2.3.1 way (form-urlencoded id and secret, a classic source of interop bugs) and checks that the
// answer is a JSON object with a boolean `active`. UserInfo and token-info are a bearer GET whose status codes
// we must interpret ourselves (401/403 vs 400/401 = inactive), so those use undici's `request` directly.
import { Configuration, ClientSecretBasic, ClientSecretPost, ClientError, ResponseBodyError, allowInsecureRequests, tokenIntrospection } from "openid-client";
import type { Logger } from "pino";
import type { Authenticator, AuthRequest } from "./authenticator.ts";
import type { Principal } from "./principal.ts";
import type { IntrospectionAuthenticatorConfig } from "../config/authenticators.ts";
import type { Clock } from "../clock.ts";
import type { Metrics } from "../observe/metrics.ts";
import { compilePrincipalMapping, type Claims, type PrincipalFactory } from "./claims.ts";
import { isLoopbackUrl } from "./loopback.ts";
import { TollgateError } from "../proxy/errors.ts";

export interface IntrospectionDeps {
  clock: Clock;
  metrics: Metrics;
  logger: Logger;
}

const MAX_CACHE_ENTRIES = 10_000;
const MAX_TOKEN_LENGTH = 16_384;
const MAX_RESPONSE_BYTES = 64 * 1024;
/** Three base64url segments: a JWS compact serialization, left to the JWT authenticators in `opaque` mode. */
const JWT_SHAPE = /^[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*$/;
/** HTTP statuses that mean "this token is not (or no longer) good", per mode; anything else but 200 is an outage. */
const INACTIVE_STATUSES: Record<"userinfo" | "tokeninfo", ReadonlySet<number>> = { userinfo: new Set([401, 403]), tokeninfo: new Set([400, 401]) };

type Verdict = { readonly principal: Principal } | { readonly error: TollgateError };
interface CacheEntry {
  readonly verdict: Verdict;
  /** On deps.clock; lru-cache's own ttl (real time) only bounds memory. */
  readonly expiresAt: number;
}

export class IntrospectionAuthenticator implements Authenticator {
  readonly name: string;
  readonly type = "introspection";
  readonly deprecation: IntrospectionAuthenticatorConfig["deprecated"];
  readonly #config: IntrospectionAuthenticatorConfig;
  readonly #deps: IntrospectionDeps;
  readonly #principals: PrincipalFactory;
  readonly #audiences: ReadonlySet<string> | undefined;
  readonly #oidc: Configuration | undefined;
  readonly #cache = new LRUCache<string, CacheEntry>({ max: MAX_CACHE_ENTRIES });
  readonly #inflight = new Map<string, Promise<Verdict>>();

  constructor(config: IntrospectionAuthenticatorConfig, deps: IntrospectionDeps) {
    this.name = config.name;
    this.deprecation = config.deprecated;
    this.#config = config;
    this.#deps = deps;
    this.#principals = compilePrincipalMapping(config.principal, config.name, "introspection");
    this.#audiences = config.audiences ? new Set(config.audiences) : undefined;
    const url = new URL(config.endpoint);
    const loopback = url.protocol === "http:" && isLoopbackUrl(url);
    // Every mode sends the caller's bearer token (and introspection our client secret) to this endpoint.
    if (url.protocol !== "https:" && !loopback) throw new Error(`authenticator ${config.name}: endpoint must use https (plain http only on a loopback host)`);
    if (config.mode === "introspection") {
      if (!config.clientId || !config.clientSecret) throw new Error(`authenticator ${config.name}: introspection needs clientId and clientSecret`);
      const clientAuth = config.clientAuth === "client_secret_post" ? ClientSecretPost(config.clientSecret) : ClientSecretBasic(config.clientSecret);
      const server = { issuer: config.issuer ?? url.origin, introspection_endpoint: config.endpoint };
      this.#oidc = new Configuration(server, config.clientId, config.clientSecret, clientAuth);
      this.#oidc.timeout = config.timeout / 1000;
      if (loopback) allowInsecureRequests(this.#oidc);
    }
  }

  async authenticate(req: AuthRequest): Promise<Principal | undefined> {
    const credential = req.credential;
    if (!credential || credential.header !== "authorization" || credential.scheme !== "bearer") return undefined;
    const token = credential.value;
    if (this.#config.tokens === "opaque" && JWT_SHAPE.test(token)) return undefined;
    if (token.length > MAX_TOKEN_LENGTH) throw new TollgateError("invalid_token", "The bearer token is too large.", undefined, "too_large");

    const key = hash("sha256", token, "base64url");
    const cached = this.#cache.get(key);
    let verdict: Verdict;
    if (cached && cached.expiresAt > this.#deps.clock.now()) {
      this.#count("cache_hit");
      verdict = cached.verdict;
    } else {
      const shared = this.#inflight.get(key);
      if (shared) this.#count("cache_hit"); // answered by another request's call, not one of its own
      const pending = shared ?? this.#lookup(token, key).finally(() => this.#inflight.delete(key));
      if (!shared) this.#inflight.set(key, pending);
      verdict = await pending;
    }
    if ("principal" in verdict) return verdict.principal;
    const e = verdict.error;
    throw new TollgateError(e.code, e.message, e.headers, e.detail);
  }

  close(): void {
    this.#cache.clear();
  }

  /** One endpoint call, judged and cached. Rejects (uncached) with auth_unavailable when the endpoint fails. */
  async #lookup(token: string, key: string): Promise<Verdict> {
    let claims: Claims | undefined;
    try {
      claims = this.#oidc ? await this.#introspect(this.#oidc, token) : await this.#get(token);
      if (claims) claims = normalizeExp(claims, this.#config.mode, this.#deps.clock.now());
    } catch (err) {
      const error = err instanceof TollgateError ? err : unavailable("unreachable");
      this.#count("error");
      // The reason code only: error messages can quote response bodies, which might echo the token.
      this.#deps.logger.warn({ authenticator: this.name, mode: this.#config.mode, reason: error.detail }, "token verification endpoint failed; denying");
      throw error;
    }
    this.#count(claims ? "active" : "inactive");
    const now = this.#deps.clock.now();
    const { verdict, ttl } = claims ? this.#judge(claims, now) : { verdict: { error: new TollgateError("token_inactive", undefined, undefined, "inactive") }, ttl: this.#config.negativeCacheTtl };
    if (ttl > 0) this.#cache.set(key, { verdict, expiresAt: now + ttl }, { ttl: Math.ceil(ttl) });
    return verdict;
  }

  /** An endpoint's "active" answer → a Principal or a rejection, with how long that verdict may be cached. */
  #judge(claims: Claims, now: number): { verdict: Verdict; ttl: number } {
    try {
      const exp = claims.exp as number | undefined;
      if (exp !== undefined && exp * 1000 <= now) throw new TollgateError("token_inactive", "The bearer token has expired.", undefined, "expired");
      const iss = this.#config.issuer;
      if (iss !== undefined && claims.iss !== undefined && claims.iss !== iss) {
        throw new TollgateError("invalid_token", "The bearer token was issued by an unexpected issuer.", undefined, "issuer");
      }
      if (this.#audiences && !audiencesOf(claims).some((a) => this.#audiences!.has(a))) {
        throw new TollgateError("invalid_token", "The bearer token is not meant for this service.", undefined, "audience");
      }
      const principal = this.#principals.fromClaims(claims);
      return { verdict: { principal }, ttl: Math.min(this.#config.cacheTtl, exp === undefined ? Infinity : exp * 1000 - now) };
    } catch (err) {
      if (!(err instanceof TollgateError)) throw err;
      return { verdict: { error: err }, ttl: this.#config.negativeCacheTtl };
    }
  }

  /** RFC 7662; undefined when the token is not active. */
  async #introspect(oidc: Configuration, token: string): Promise<Claims | undefined> {
    try {
      const answer = await tokenIntrospection(oidc, token, { token_type_hint: "access_token" });
      return answer.active === true ? answer : undefined;
    } catch (err) {
      throw unavailable(introspectionFailure(err));
    }
  }

  /** UserInfo / token-info: a GET with the bearer token; undefined when the endpoint calls it inactive. */
  async #get(token: string): Promise<Claims | undefined> {
    const timeout = this.#config.timeout;
    let res: Dispatcher.ResponseData;
    try {
      res = await request(this.#config.endpoint, {
        method: "GET",
        headers: { authorization: `Bearer ${token}`, accept: "application/json" },
        headersTimeout: timeout,
        bodyTimeout: timeout,
        signal: AbortSignal.timeout(timeout),
      });
    } catch (err) {
      throw unavailable(isTimeout(err) ? "timeout" : "unreachable");
    }
    const mode = this.#config.mode === "tokeninfo" ? "tokeninfo" : "userinfo";
    if (res.statusCode !== 200) {
      await res.body.dump().catch(() => {});
      if (INACTIVE_STATUSES[mode].has(res.statusCode)) return undefined;
      throw unavailable("endpoint_status");
    }
    let text: string;
    try {
      text = await readCapped(res.body, MAX_RESPONSE_BYTES);
    } catch (err) {
      throw unavailable(isTimeout(err) ? "timeout" : "malformed_response");
    }
    let body: unknown;
    try {
      body = JSON.parse(text);
    } catch {
      throw unavailable("malformed_response");
    }
    if (body === null || typeof body !== "object" || Array.isArray(body)) throw unavailable("malformed_response");
    return mode === "tokeninfo" ? fromTokenInfo(body as Record<string, unknown>) : (body as Claims);
  }

  #count(result: "active" | "inactive" | "error" | "cache_hit"): void {
    this.#deps.metrics.introspections.inc({ authenticator: this.name, result });
  }
}

function unavailable(detail: string): TollgateError {
  return new TollgateError("auth_unavailable", undefined, { "retry-after": "5" }, detail);
}

/** Token-info answers (Google's among them) name things differently and send numbers as strings. */
function fromTokenInfo(raw: Record<string, unknown>): Claims {
  const claims: Record<string, unknown> = { ...raw };
  if (claims.sub === undefined && raw.user_id !== undefined) claims.sub = raw.user_id;
  if (claims.aud === undefined && raw.azp !== undefined) claims.aud = raw.azp;
  return claims;
}

/** `exp` as a number of seconds (from `exp`, or `expires_in` for token-info); a garbled one is a bad answer. */
function normalizeExp(claims: Claims, mode: string, now: number): Claims {
  const exp = seconds(claims.exp);
  const expiresIn = mode === "tokeninfo" ? seconds(claims.expires_in) : undefined;
  const value = exp ?? (expiresIn === undefined ? undefined : Math.floor(now / 1000) + expiresIn);
  return value === claims.exp ? claims : { ...claims, exp: value };
}

function seconds(value: unknown): number | undefined {
  if (value === undefined) return undefined;
  if (typeof value === "number" && Number.isFinite(value)) return value;
  if (typeof value === "string" && /^\d{1,12}$/.test(value)) return Number(value);
  throw unavailable("malformed_response");
}

function audiencesOf(claims: Claims): string[] {
  const aud = claims.aud;
  if (typeof aud === "string") return [aud];
  return Array.isArray(aud) ? aud.filter((a): a is string => typeof a === "string") : [];
}

function introspectionFailure(err: unknown): string {
  if (isTimeout(err)) return "timeout";
  if (err instanceof ResponseBodyError) return "endpoint_status";
  if (err instanceof ClientError) return err.code === "OAUTH_RESPONSE_IS_NOT_CONFORM" ? "endpoint_status" : "malformed_response";
  return "unreachable";
}

function isTimeout(err: unknown): boolean {
  for (let e = err, depth = 0; e && typeof e === "object" && depth < 5; e = (e as { cause?: unknown }).cause, depth++) {
    const { name, code } = e as { name?: string; code?: string };
    if (name === "TimeoutError" || code === "OAUTH_TIMEOUT" || code === "UND_ERR_HEADERS_TIMEOUT" || code === "UND_ERR_BODY_TIMEOUT") return true;
  }
  return false;
}

async function readCapped(body: AsyncIterable<Buffer>, limit: number): Promise<string> {
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const chunk of body) {
    size += chunk.length;
    if (size > limit) throw new Error("response too large");
    chunks.push(chunk);
  }
  return Buffer.concat(chunks).toString("utf8");
}
