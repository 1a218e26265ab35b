import type { IncomingHttpHeaders } from "node:http";
import type { Principal } from "./principal.ts";
import type { Credential } from "./credential.ts";

export interface AuthRequest {
  readonly credential: Credential | undefined;
  readonly headers: IncomingHttpHeaders;
  /** The TCP peer, never a forwarded-for header. */
  readonly remoteAddress: string;
}

/**
 * One authentication method, built once from its policy entry. `authenticate` returns undefined when the
 * request carries no credential of its kind ("try the next"), a Principal on success, and throws a
 * TollgateError when a credential of its kind fails — never a fall-through to another method.
 */
export interface Authenticator {
  readonly name: string;
  readonly type: string;
  authenticate(req: AuthRequest): Principal | undefined | Promise<Principal | undefined>;
  /** Releases timers, caches or connections when the gateway holding it is retired. */
  close?(): void | Promise<void>;
}
