/**
 * Claims → Principal, the same way for every claims-based method (JWT, introspection, userinfo, trusted
 * headers, browser sessions): dot-path claim mapping, role mappings from groups or claim values, and the
 * email-domain allow-list. Compiled once per authenticator.
 */
import type { PrincipalMappingConfig } from "../config/authenticators.ts";
import type { Principal, PrincipalKind } from "./principal.ts";
import { compileNames, type NameMatcher } from "../policy/patterns.ts";
import { TollgateError } from "../proxy/errors.ts";

export type Claims = Readonly<Record<string, unknown>>;

export interface PrincipalFactory {
  /** Builds the Principal; throws `email_domain_not_allowed` when the email is outside the allow-list. */
  fromClaims(claims: Claims, extra?: { groups?: readonly string[]; kind?: PrincipalKind }): Principal;
}

/** Reads a claim by name, or by dot path into nested objects when no claim has the literal name. */
export function readClaim(claims: Claims, path: string): unknown {
  if (path in claims) return claims[path];
  if (!path.includes(".")) return undefined;
  let value: unknown = claims;
  for (const part of path.split(".")) {
    if (value === null || typeof value !== "object") return undefined;
    value = (value as Record<string, unknown>)[part];
  }
  return value;
}

function firstString(claims: Claims, paths: readonly string[]): string | undefined {
  for (const path of paths) {
    const v = readClaim(claims, path);
    if (typeof v === "string" && v !== "") return v;
    if (typeof v === "number") return String(v);
  }
  return undefined;
}

/** Arrays of strings, or space-separated strings (`scope`), from every path, de-duplicated. */
function stringList(claims: Claims, paths: readonly string[], splitSpaces: boolean): string[] {
  const out = new Set<string>();
  for (const path of paths) {
    const v = readClaim(claims, path);
    if (Array.isArray(v)) for (const item of v) if (typeof item === "string" && item !== "") out.add(item);
    if (typeof v === "string" && v !== "") for (const item of splitSpaces ? v.split(/\s+/) : [v]) if (item) out.add(item);
  }
  return [...out];
}

interface CompiledRoleMapping {
  groups: NameMatcher | undefined;
  claim: string | undefined;
  values: NameMatcher | undefined;
  roles: readonly string[];
}

export function compilePrincipalMapping(config: PrincipalMappingConfig, authenticator: string, method: string): PrincipalFactory {
  const mappings: CompiledRoleMapping[] = config.roleMappings.map((m) => ({
    groups: m.groups ? compileNames(m.groups) : undefined,
    claim: m.claim,
    values: m.values ? compileNames(m.values) : undefined,
    roles: m.roles,
  }));
  const domains = config.emailDomains ? new Set(config.emailDomains.map((d) => d.toLowerCase())) : undefined;

  return {
    fromClaims(claims, extra) {
      const id = firstString(claims, config.id);
      if (!id) throw new TollgateError("invalid_token", "The token has no subject.");
      const email = firstString(claims, config.email);
      if (domains) {
        const at = email?.lastIndexOf("@") ?? -1;
        if (!email || at < 0 || !domains.has(email.slice(at + 1).toLowerCase())) throw new TollgateError("email_domain_not_allowed");
      }
      const groups = extra?.groups ?? stringList(claims, config.groups, false);
      const roles = new Set(stringList(claims, config.roles, false));
      for (const m of mappings) {
        const byGroup = m.groups !== undefined && groups.some((g) => m.groups!.matches(g));
        const byClaim = m.claim !== undefined && m.values !== undefined && stringList(claims, [m.claim], false).some((v) => m.values!.matches(v));
        if (byGroup || byClaim) for (const r of m.roles) roles.add(r);
      }
      return Object.freeze({
        id,
        kind: extra?.kind ?? inferKind(claims, email),
        user: firstString(claims, config.user),
        email,
        team: config.team ? firstString(claims, config.team) : undefined,
        groups: Object.freeze([...groups]),
        roles: Object.freeze([...roles]),
        scopes: Object.freeze(stringList(claims, config.scopes, true)),
        authenticator,
        method,
        claims,
      });
    },
  };
}

/** App-only tokens (client credentials) are services; tokens that speak for a person are users. */
function inferKind(claims: Claims, email: string | undefined): PrincipalKind {
  if (claims.idtyp === "app") return "service";
  const client = claims.azp ?? claims.appid ?? claims.client_id ?? claims.cid;
  if (!email && client !== undefined && client === claims.sub) return "service";
  return "user";
}
