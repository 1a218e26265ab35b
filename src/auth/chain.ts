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
   *
   * Synchronous while the authenticators answer synchronously (API keys do): the answer is then the Principal
   * itself, not a promise, so the hot API-key path makes no promise and no extra microtask hop here. A refusal
   * is a throw then, or a rejection once an authenticator has answered with a promise; callers `await` it either way.
   */
  authenticate(req: AuthRequest): Principal | Promise<Principal> {
    return this.#from(0, req);
  }

  #from(from: number, req: AuthRequest): Principal | Promise<Principal> {
    for (let i = from; i < this.#authenticators.length; i++) {
      const authenticator = this.#authenticators[i]!;
      let answer: Principal | undefined | Promise<Principal | undefined>;
      try {
        answer = authenticator.authenticate(req);
      } catch (err) {
        throw tagMethod(err, authenticator.type);
      }
      if (answer instanceof Promise) {
        return answer.then(
          (principal) => principal ?? this.#from(i + 1, req),
          (err: unknown) => {
            throw tagMethod(err, authenticator.type);
          },
        );
      }
      if (answer) return answer;
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
