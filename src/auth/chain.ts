/** Runs a route's authenticators in policy order; the first that recognises the credential decides. */
import type { Authenticator, AuthRequest } from "./authenticator.ts";
import { ANONYMOUS, type Principal } from "./principal.ts";
import { TollgateError } from "../proxy/errors.ts";

export class AuthChain {
  readonly #authenticators: readonly Authenticator[];
  constructor(authenticators: readonly Authenticator[]) {
    this.#authenticators = authenticators;
  }

  get authenticators(): readonly Authenticator[] {
    return this.#authenticators;
  }

  /**
   * Returns the caller's Principal, ANONYMOUS when no credential was sent at all, and throws a TollgateError
   * (tagged with the method that refused it) when a credential fails or no method recognises it.
   */
  async authenticate(req: AuthRequest): Promise<Principal> {
    for (const authenticator of this.#authenticators) {
      let principal: Principal | undefined;
      try {
        principal = await authenticator.authenticate(req);
      } catch (err) {
        throw tagMethod(err, authenticator.type);
      }
      if (principal) return principal;
    }
    if (req.credential) throw tagMethod(new TollgateError("unrecognized_credential"), "none");
    return ANONYMOUS;
  }
}

/** The authentication method that refused a request, for the failure metric and audit line. */
export const refusedBy = new WeakMap<object, string>();

function tagMethod(err: unknown, method: string): unknown {
  if (err && typeof err === "object") refusedBy.set(err, method);
  return err;
}
