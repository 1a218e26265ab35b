/**
 * Identity asserted in headers by an oauth2-proxy / identity-aware proxy in front of Tollgate. Only a TCP peer
 * inside `trustedProxies` may assert (X-Forwarded-For is never consulted); from anyone else the headers are
 * ignored here and stripped by the gateway. When the proxy also signs an assertion (Google IAP, Pomerium, …),
 * it is verified against the proxy's JWKS and must agree with the plain headers.
 */
import { BlockList, isIP } from "node:net";
import { errors as joseErrors, jwtVerify, type JWTPayload } from "jose";
import type { Authenticator, AuthRequest } from "./authenticator.ts";
import type { Principal } from "./principal.ts";
import type { JwksConfig, TrustedHeadersAuthenticatorConfig } from "../config/authenticators.ts";
import type { Clock } from "../clock.ts";
import type { Metrics } from "../observe/metrics.ts";
import type { Logger } from "pino";
import { compilePrincipalMapping, type PrincipalFactory } from "./claims.ts";
import { JwksCache } from "./jwks.ts";
import { TollgateError } from "../proxy/errors.ts";

export interface TrustedHeadersDeps {
  clock: Clock;
  metrics: Metrics;
  logger: Logger;
}

/** The policy has no JWKS block for assertions; these match the JWT authenticator's defaults. */
const ASSERTION_JWKS: JwksConfig = { maxAge: 600_000, cooldown: 30_000, staleFor: 3_600_000, timeout: 5_000 };
const ASSERTION_LEEWAY_SECONDS = 30;

type AssertionConfig = NonNullable<TrustedHeadersAuthenticatorConfig["assertion"]>;

export class TrustedHeadersAuthenticator implements Authenticator {
  readonly name: string;
  readonly type = "trusted_headers";
  readonly ownedHeaders: readonly string[];
  readonly deprecation: TrustedHeadersAuthenticatorConfig["deprecated"];
  readonly #headers: TrustedHeadersAuthenticatorConfig["headers"];
  readonly #separator: string;
  readonly #trusted: BlockList;
  readonly #principals: PrincipalFactory;
  readonly #assertion: AssertionConfig | undefined;
  readonly #jwks: JwksCache | undefined;
  readonly #clock: Clock;

  constructor(config: TrustedHeadersAuthenticatorConfig, deps: TrustedHeadersDeps) {
    this.name = config.name;
    this.deprecation = config.deprecated;
    this.#headers = config.headers;
    this.#separator = config.groupsSeparator;
    this.#trusted = compileTrustedProxies(config.name, config.trustedProxies);
    this.#principals = compilePrincipalMapping(config.principal, config.name, "trusted_headers");
    this.#assertion = config.assertion;
    this.#clock = deps.clock;
    const { user, email, groups, preferredUsername } = config.headers;
    this.ownedHeaders = Object.freeze([...new Set([user, email, groups, preferredUsername, ...(config.assertion ? [config.assertion.header] : [])])]);
    if (config.assertion) {
      const jwksUri = config.assertion.jwksUri;
      this.#jwks = new JwksCache(async () => jwksUri, ASSERTION_JWKS, deps, config.assertion.issuer);
    }
  }

  async authenticate(req: AuthRequest): Promise<Principal | undefined> {
    if (!this.#isTrustedPeer(req.remoteAddress)) return undefined;
    const h = this.#headers;
    const user = single(req, h.user);
    const email = single(req, h.email);
    const preferredUsername = single(req, h.preferredUsername);
    const rawGroups = req.headers[h.groups];
    const assertion = this.#assertion ? single(req, this.#assertion.header) : undefined;
    if (user === undefined && email === undefined && preferredUsername === undefined && rawGroups === undefined && assertion === undefined) return undefined;

    let asserted: JWTPayload | undefined;
    if (this.#assertion) {
      if (assertion !== undefined) asserted = await this.#verify(assertion, this.#assertion);
      else if (this.#assertion.required) throw new TollgateError("invalid_assertion", "The identity assertion from the proxy is missing.", undefined, "missing");
    }
    // Google IAP prefixes its email header with the account namespace ("accounts.google.com:alice@…").
    const plainEmail = email === undefined ? undefined : email.slice(email.lastIndexOf(":") + 1);
    if (asserted) {
      if (user !== undefined && asserted.sub !== undefined && asserted.sub !== user) {
        throw new TollgateError("invalid_assertion", "The identity assertion does not match the identity headers.", undefined, "subject_mismatch");
      }
      const assertedEmail = asserted.email;
      if (plainEmail !== undefined && assertedEmail !== undefined && (typeof assertedEmail !== "string" || assertedEmail.toLowerCase() !== plainEmail.toLowerCase())) {
        throw new TollgateError("invalid_assertion", "The identity assertion does not match the identity headers.", undefined, "email_mismatch");
      }
    }

    const sub = user ?? (typeof asserted?.sub === "string" ? asserted.sub : undefined);
    if (sub === undefined) throw new TollgateError("invalid_assertion", "The proxy sent identity headers without a user.", undefined, "no_user");
    const claims: Record<string, unknown> = { ...asserted, sub };
    if (plainEmail !== undefined) claims.email = plainEmail;
    if (preferredUsername !== undefined) claims.preferred_username = preferredUsername;
    if (rawGroups !== undefined) claims.groups = this.#splitGroups(rawGroups);
    return this.#principals.fromClaims(Object.freeze(claims), { kind: "user" });
  }

  #isTrustedPeer(address: string | undefined): boolean {
    if (!address) return false;
    const family = isIP(address);
    if (family === 0) return false;
    try {
      // BlockList matches IPv4-mapped IPv6 peers (::ffff:10.0.0.1) against IPv4 ranges and vice versa.
      return this.#trusted.check(address, family === 4 ? "ipv4" : "ipv6");
    } catch {
      return false;
    }
  }

  #splitGroups(raw: string | string[]): string[] {
    const joined = Array.isArray(raw) ? raw.join(this.#separator) : raw;
    return [...new Set(joined.split(this.#separator).map((g) => g.trim()).filter((g) => g !== ""))];
  }

  async #verify(token: string, config: AssertionConfig): Promise<JWTPayload> {
    const jwks = this.#jwks!;
    try {
      const { payload } = await jwtVerify(token, (header, t) => jwks.getKey(header, t), {
        issuer: config.issuer,
        audience: config.audiences,
        algorithms: config.algorithms,
        clockTolerance: ASSERTION_LEEWAY_SECONDS,
        currentDate: new Date(this.#clock.now()),
      });
      return payload;
    } catch (err) {
      if (err instanceof TollgateError && err.code === "auth_unavailable") throw err;
      throw new TollgateError("invalid_assertion", undefined, undefined, assertionFailure(err));
    }
  }
}

/** One value for a single-valued header; a repeated or comma-joined value is ambiguous and refused. */
function single(req: AuthRequest, header: string): string | undefined {
  const raw = req.headers[header];
  if (raw === undefined) return undefined;
  // Node joins a repeated header into "a, b"; an identity is never a list.
  if (Array.isArray(raw) || raw.includes(",")) throw new TollgateError("bad_header", `The ${header} header must carry exactly one value.`, undefined, "repeated_identity_header");
  const value = raw.trim();
  return value === "" ? undefined : value;
}

function compileTrustedProxies(name: string, cidrs: readonly string[]): BlockList {
  const list = new BlockList();
  for (const cidr of cidrs) {
    const slash = cidr.lastIndexOf("/");
    const address = cidr.slice(0, slash);
    const prefix = Number(cidr.slice(slash + 1));
    const family = isIP(address);
    if (family === 0 || !Number.isInteger(prefix) || prefix < 0 || prefix > (family === 4 ? 32 : 128)) {
      throw new Error(`authenticator ${name}: trustedProxies entry ${cidr} is not a valid CIDR`);
    }
    list.addSubnet(address, prefix, family === 4 ? "ipv4" : "ipv6");
  }
  return list;
}

function assertionFailure(err: unknown): string {
  if (err instanceof TollgateError) return err.detail ?? "key";
  // JWTExpired is a JWTClaimValidationFailed: test it first.
  if (err instanceof joseErrors.JWTExpired) return "expired";
  if (err instanceof joseErrors.JWTClaimValidationFailed) return err.claim === "aud" ? "audience" : err.claim === "iss" ? "issuer" : err.claim === "nbf" ? "not_yet_valid" : "claims";
  if (err instanceof joseErrors.JWSSignatureVerificationFailed) return "signature";
  if (err instanceof joseErrors.JOSEAlgNotAllowed) return "algorithm";
  return "malformed";
}
