import type { IncomingHttpHeaders } from "node:http";
import type { Principal } from "./principal.ts";
import type { Credential } from "./credential.ts";
import type { DeprecationConfig } from "../config/authenticators.ts";

export interface AuthRequest {
  readonly credential: Credential | undefined;
  /** The HTTP method (browser sessions refuse cross-site state-changing requests). */
  readonly method?: string | undefined;
  readonly headers: IncomingHttpHeaders;
  /** The TCP peer, never a forwarded-for header. */
  readonly remoteAddress: string;
  /** Adds a Set-Cookie to the client's response (a refreshed browser session). */
  readonly setCookie?: ((cookie: string) => void) | undefined;
}

/**
 * One authentication method, built once from its policy entry. `authenticate` returns undefined when the
 * request carries no credential of its kind ("try the next"), a Principal on success, and throws a
 * TollgateError when a credential of its kind fails — never a fall-through to another method.
 */
export interface Authenticator {
  readonly name: string;
  readonly type: string;
  /** Inbound headers this method reads identity from; Tollgate strips them before forwarding. */
  readonly ownedHeaders?: readonly string[];
  /** Set when the policy marks this method for retirement. */
  readonly deprecation?: DeprecationConfig | undefined;
  authenticate(req: AuthRequest): Principal | undefined | Promise<Principal | undefined>;
  /** Claims-based methods: the Principal these claims would yield, with no signature check (`tollgate explain`). */
  principalFromClaims?(claims: Readonly<Record<string, unknown>>): Principal;
  /** Whether a credential looks like this method's kind, without verifying it (`tollgate explain --offline`). */
  claimsOf?(token: string): Readonly<Record<string, unknown>> | undefined;
  /** Releases timers, caches or connections when the gateway holding it is retired. */
  close?(): void | Promise<void>;
}
