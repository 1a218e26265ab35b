import type { Logger } from "pino";
import type { AuthenticatorConfig } from "../config/schema.ts";
import type { Clock } from "../clock.ts";
import type { Metrics } from "../observe/metrics.ts";
import type { Authenticator } from "./authenticator.ts";
import { ApiKeyAuthenticator } from "./api-key.ts";
import { JwtAuthenticator } from "./jwt.ts";
import { IntrospectionAuthenticator } from "./introspection.ts";
import { TrustedHeadersAuthenticator } from "./trusted-headers.ts";
import { SessionAuthenticator } from "./session/session.ts";
import type { Store } from "../limits/store/types.ts";
import type { NameMatcher } from "../policy/patterns.ts";

export interface AuthenticatorDeps {
  clock: Clock;
  metrics: Metrics;
  logger: Logger;
}

/** What browser sessions need beyond the rest: a shared store (sign-out) and the groups the policy names. */
export interface AuthenticatorContext extends AuthenticatorDeps {
  store: Store;
  groupFilter: NameMatcher;
}

export function createAuthenticator(config: AuthenticatorConfig, deps: AuthenticatorContext): Authenticator {
  switch (config.type) {
    case "api_key":
      return new ApiKeyAuthenticator(config, deps.clock);
    case "jwt":
      return new JwtAuthenticator(config, deps);
    case "introspection":
      return new IntrospectionAuthenticator(config, deps);
    case "trusted_headers":
      return new TrustedHeadersAuthenticator(config, deps);
    case "session":
      return new SessionAuthenticator(config, deps);
  }
}
