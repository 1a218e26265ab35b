/** The one type every authenticator returns; nothing after `authenticate` knows which method produced it. */
export type PrincipalKind = "user" | "key" | "service" | "anonymous";

export interface Principal {
  /** Stable id for audit and limits: a key id, a token subject, … Never a secret. */
  readonly id: string;
  readonly kind: PrincipalKind;
  /** The person behind the call, when known (a key's owner, a token's user). */
  readonly user?: string | undefined;
  readonly email?: string | undefined;
  readonly team?: string | undefined;
  readonly groups: readonly string[];
  readonly roles: readonly string[];
  readonly scopes: readonly string[];
  /** Models this principal may use, on top of what the route allows; undefined = no principal-level restriction. */
  readonly models?: readonly string[] | undefined;
  /** Name of the authenticator (from the policy) that proved this identity. */
  readonly authenticator: string;
  /** Method type of that authenticator, e.g. `api_key`, `jwt`. Safe as a metric label. */
  readonly method: string;
  /** The raw claims or attributes; never logged whole. */
  readonly claims: Readonly<Record<string, unknown>>;
}

export const ANONYMOUS: Principal = Object.freeze({
  id: "anonymous",
  kind: "anonymous",
  groups: [],
  roles: [],
  scopes: [],
  authenticator: "none",
  method: "none",
  claims: {},
});
