import type { AuthenticatorConfig } from "../config/schema.ts";
import type { Clock } from "../clock.ts";
import type { Authenticator } from "./authenticator.ts";
import { ApiKeyAuthenticator } from "./api-key.ts";

export interface AuthenticatorDeps {
  clock: Clock;
}

export function createAuthenticator(config: AuthenticatorConfig, deps: AuthenticatorDeps): Authenticator {
  switch (config.type) {
    case "api_key":
      return new ApiKeyAuthenticator(config, deps.clock);
  }
}
