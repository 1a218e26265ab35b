/**
 * A rotation-safe JWKS for one issuer. Keys are cached; a token with an unknown `kid` triggers at most one
 * refetch per cooldown (single-flight), so a flood of bogus kids neither storms the IdP nor evicts good
 * keys (a refetch replaces the set only when it succeeds). An old set is refreshed in the background; while
 * the endpoint fails, the last good set serves for `staleFor`. Only asymmetric public keys are ever used.
 */
import { createLocalJWKSet, errors as joseErrors, type JSONWebKeySet, type JWSHeaderParameters, type FlattenedJWSInput, type CryptoKey } from "jose";
import { request } from "undici";
import type { Logger } from "pino";
import type { JwksConfig } from "../config/authenticators.ts";
import type { Clock } from "../clock.ts";
import type { Metrics } from "../observe/metrics.ts";
import { TollgateError } from "../proxy/errors.ts";

const ASYMMETRIC_KTY = new Set(["RSA", "EC", "OKP"]);
const MAX_JWKS_BYTES = 512 * 1024;

export interface JwksDeps {
  clock: Clock;
  metrics: Metrics;
  logger: Logger;
}

export type JwksUrlResolver = () => Promise<string>;

export class JwksCache {
  readonly #resolveUrl: JwksUrlResolver;
  readonly #config: JwksConfig;
  readonly #deps: JwksDeps;
  readonly #label: string;
  #url: string | undefined;
  #keys: ReturnType<typeof createLocalJWKSet> | undefined;
  #fetchedAt = 0;
  #lastUnknownKidFetch = Number.NEGATIVE_INFINITY;
  #inflight: Promise<void> | undefined;
  #lastFailure = Number.NEGATIVE_INFINITY;

  /** `label` names this key set in metrics (the issuer, from the policy: bounded, never a token). */
  constructor(resolveUrl: JwksUrlResolver, config: JwksConfig, deps: JwksDeps, label: string) {
    this.#resolveUrl = resolveUrl;
    this.#config = config;
    this.#deps = deps;
    this.#label = label;
    deps.metrics.registerJwksAge(label, () => (this.#fetchedAt ? (deps.clock.now() - this.#fetchedAt) / 1000 : undefined));
  }

  /** Age of the current key set in ms, or undefined before the first successful fetch. */
  age(): number | undefined {
    return this.#fetchedAt ? this.#deps.clock.now() - this.#fetchedAt : undefined;
  }

  /** jose key resolver: `jwtVerify(token, (h, t) => cache.getKey(h, t), …)`. */
  async getKey(header: JWSHeaderParameters, token: FlattenedJWSInput): Promise<CryptoKey> {
    let now = this.#deps.clock.now();
    const age = now - this.#fetchedAt;
    if (!this.#keys) await this.#refresh("initial");
    // Past the stale window (say, after a quiet night) wait for fresh keys rather than refuse a valid token.
    else if (age > this.#config.maxAge + this.#config.staleFor) await this.#refresh("stale").catch(() => {});
    else if (age > this.#config.maxAge) void this.#refresh("expired").catch(() => {});
    now = this.#deps.clock.now();
    const keys = this.#usableKeys(now);
    try {
      return await keys(header, token);
    } catch (err) {
      if (!(err instanceof joseErrors.JWKSNoMatchingKey)) throw err;
      // Unknown kid: perhaps a rotation. One refetch per cooldown, shared by every request that asks.
      if (now - this.#lastUnknownKidFetch < this.#config.cooldown) throw new TollgateError("invalid_token", "The token was signed by an unknown key.", undefined, "unknown_kid");
      this.#lastUnknownKidFetch = now;
      await this.#refresh("unknown_kid").catch(() => {});
      try {
        return await this.#usableKeys(this.#deps.clock.now())(header, token);
      } catch (retry) {
        if (retry instanceof joseErrors.JWKSNoMatchingKey) throw new TollgateError("invalid_token", "The token was signed by an unknown key.", undefined, "unknown_kid");
        throw retry;
      }
    }
  }

  #usableKeys(now: number): ReturnType<typeof createLocalJWKSet> {
    if (!this.#keys) throw new TollgateError("auth_unavailable", undefined, { "retry-after": "5" }, "jwks_unavailable");
    if (now - this.#fetchedAt > this.#config.maxAge + this.#config.staleFor) {
      throw new TollgateError("auth_unavailable", undefined, { "retry-after": "5" }, "jwks_stale");
    }
    return this.#keys;
  }

  /**
   * Single-flight fetch; a failure keeps the previous keys and rejects only when there were none to keep.
   * After a failure the endpoint is left alone for one cooldown, so an IdP outage is not met with a storm.
   */
  #refresh(reason: string): Promise<void> {
    if (this.#inflight) return this.#inflight;
    if (this.#deps.clock.now() - this.#lastFailure < this.#config.cooldown) {
      return this.#keys ? Promise.resolve() : Promise.reject(new TollgateError("auth_unavailable", undefined, { "retry-after": "5" }, "jwks_unavailable"));
    }
    this.#inflight = this.#fetch(reason).finally(() => (this.#inflight = undefined));
    return this.#inflight;
  }

  async #fetch(reason: string): Promise<void> {
    try {
      this.#url ??= await this.#resolveUrl();
      const res = await request(this.#url, {
        method: "GET",
        headers: { accept: "application/jwk-set+json, application/json" },
        headersTimeout: this.#config.timeout,
        bodyTimeout: this.#config.timeout,
        signal: AbortSignal.timeout(this.#config.timeout),
      });
      if (res.statusCode !== 200) {
        await res.body.dump();
        throw new Error(`JWKS endpoint answered ${res.statusCode}`);
      }
      const text = await res.body.text();
      if (text.length > MAX_JWKS_BYTES) throw new Error("JWKS document too large");
      const set = JSON.parse(text) as JSONWebKeySet;
      if (!set || !Array.isArray(set.keys)) throw new Error("not a JWK Set");
      // Symmetric (oct) keys in a public key set are never a verification key.
      const keys = set.keys.filter((k) => typeof k.kty === "string" && ASYMMETRIC_KTY.has(k.kty) && (k.use === undefined || k.use === "sig"));
      if (keys.length === 0) throw new Error("JWK Set has no asymmetric signing keys");
      this.#keys = createLocalJWKSet({ keys });
      this.#fetchedAt = this.#deps.clock.now();
      this.#deps.metrics.jwksFetches.inc({ issuer: this.#label, result: "success" });
    } catch (err) {
      this.#lastFailure = this.#deps.clock.now();
      this.#deps.metrics.jwksFetches.inc({ issuer: this.#label, result: "failure" });
      this.#deps.logger.warn({ issuer: this.#label, reason, err: (err as Error).message }, "JWKS fetch failed; keeping the last good keys");
      if (!this.#keys) throw new TollgateError("auth_unavailable", undefined, { "retry-after": "5" }, "jwks_unavailable");
    }
  }
}
