/** Virtual API keys stored in the policy as SHA-256 hashes; a lookup is one hash and one map read. */
import type { Authenticator, AuthRequest } from "./authenticator.ts";
import type { Principal } from "./principal.ts";
import type { ApiKeyConfig, AuthenticatorConfig } from "../config/schema.ts";
import { hashApiKey } from "./keys.ts";
import { TollgateError } from "../proxy/errors.ts";
import type { Clock } from "../clock.ts";

type ApiKeyAuthenticatorConfig = Extract<AuthenticatorConfig, { type: "api_key" }>;

interface KeyEntry {
  principal: Principal;
  expiresAt: number | undefined;
  disabled: boolean;
}

export class ApiKeyAuthenticator implements Authenticator {
  readonly name: string;
  readonly type = "api_key";
  readonly deprecation: ApiKeyAuthenticatorConfig["deprecated"];
  readonly #prefix: string;
  readonly #byHash = new Map<string, KeyEntry>();
  readonly #clock: Clock;

  constructor(config: ApiKeyAuthenticatorConfig, clock: Clock) {
    this.name = config.name;
    this.deprecation = config.deprecated;
    this.#prefix = config.prefix;
    this.#clock = clock;
    for (const key of config.keys) this.#byHash.set(key.hash, { principal: this.#principalOf(key), expiresAt: key.expires ? Date.parse(key.expires) : undefined, disabled: key.disabled });
  }

  authenticate(req: AuthRequest): Principal | undefined {
    const credential = req.credential;
    if (!credential) return undefined;
    // x-api-key / api-key always carry API keys; a bearer token is ours only when it has our prefix.
    const ours = credential.scheme === "key" || (credential.scheme === "bearer" && this.#prefix !== "" && credential.value.startsWith(this.#prefix));
    if (!ours) return undefined;
    const entry = this.#byHash.get(hashApiKey(credential.value));
    if (!entry || entry.disabled) throw new TollgateError("invalid_api_key");
    if (entry.expiresAt !== undefined && this.#clock.now() >= entry.expiresAt) throw new TollgateError("key_expired");
    return entry.principal;
  }

  #principalOf(key: ApiKeyConfig): Principal {
    return Object.freeze({
      id: key.id,
      kind: "key" as const,
      user: key.user,
      email: key.email,
      team: key.team,
      groups: Object.freeze([...key.groups]),
      roles: Object.freeze([...key.roles]),
      scopes: Object.freeze([]),
      models: key.models ? Object.freeze([...key.models]) : undefined,
      authenticator: this.name,
      method: this.type,
      claims: Object.freeze({ keyId: key.id }),
    });
  }
}
