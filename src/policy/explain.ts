/**
 * `tollgate explain`: what the corridor would decide for a request, and why — path normalization, route,
 * caller, each rule, the model check — without calling any upstream.
 */
import type { Gateway } from "../gateway.ts";
import type { Principal } from "../auth/principal.ts";
import { ANONYMOUS } from "../auth/principal.ts";
import { AuthChain } from "../auth/chain.ts";
import { extractCredential } from "../auth/credential.ts";
import { normalizeTarget } from "../proxy/normalize.ts";
import { toTollgateError } from "../proxy/errors.ts";
import { authorize } from "./authorize.ts";

export interface ExplainRequest {
  method: string;
  path: string;
  model?: string | undefined;
  /** A bearer token or API key, verified as a request would be (JWKS and introspection endpoints are called). */
  credential?: string | undefined;
  /** With `credential`: decode a JWT's claims without verifying its signature (no network). */
  offline?: boolean | undefined;
  /** Claims to map as if a token carried them (offline); `authenticator` picks the mapping. */
  claims?: Readonly<Record<string, unknown>> | undefined;
  authenticator?: string | undefined;
}

export interface Explanation {
  allowed: boolean;
  /** `allowed` or the error code a client would receive. */
  code: string;
  status: number;
  lines: string[];
}

export async function explain(gateway: Gateway, request: ExplainRequest): Promise<Explanation> {
  const lines: string[] = [`request   ${request.method} ${request.path}${request.model ? `  model=${request.model}` : ""}`];
  const deny = (code: string, status: number, why: string): Explanation => {
    lines.push(`decision  DENY ${status} ${code}: ${why}`);
    return { allowed: false, code, status, lines };
  };
  let path: string;
  try {
    path = normalizeTarget(request.path, undefined).path;
  } catch (err) {
    return deny("bad_path", 400, toTollgateError(err).message);
  }
  lines.push(`path      ${path}${path !== request.path ? " (normalized)" : ""}`);
  const match = gateway.routes.match(request.method.toUpperCase(), path);
  if (!match) return deny("no_route", 404, "no route matches this method and path");
  const { route } = match;
  lines.push(`route     ${route.name} → upstream ${route.upstream}${Object.keys(match.params).length ? ` ${JSON.stringify(match.params)}` : ""}`);

  const authenticators = gateway.authenticatorsFor(route.name);
  let principal: Principal;
  try {
    principal = await resolveCaller(request, authenticators, lines);
  } catch (err) {
    const e = toTollgateError(err);
    return deny(e.code, e.status, `${e.message}${e.detail ? ` (${e.detail})` : ""}`);
  }
  if (principal.kind !== "anonymous") {
    lines.push(`          roles [${principal.roles.join(", ")}]  groups [${principal.groups.join(", ")}]  scopes [${principal.scopes.join(", ")}]${principal.team ? `  team ${principal.team}` : ""}`);
    if (principal.models) lines.push(`          this caller may only use models [${principal.models.join(", ")}]`);
  }
  const model = request.model ?? route.modelFromPath?.(match.params);
  if (model !== undefined && request.model === undefined) lines.push(`model     ${model} (from the path)`);
  const trace: string[] = [];
  const decision = authorize(route, principal, model, trace);
  trace.forEach((line, i) => lines.push(`${i === 0 ? "rules     " : "          "}${line}`));
  if (!decision.allowed) {
    const status = decision.code === "missing_credential" ? 401 : 403;
    return deny(decision.code, status, decision.code === "missing_credential" ? "this route needs a caller" : "see the rules above");
  }
  if (route.restrictsModels && model === undefined) lines.push("note      this route checks the JSON body's `model`; pass --model to include that check");
  lines.push(`decision  ALLOW${decision.rule ? ` by rule #${decision.rule.index + 1}` : ""}`);
  return { allowed: true, code: "allowed", status: 200, lines };
}

async function resolveCaller(request: ExplainRequest, authenticators: readonly import("../auth/authenticator.ts").Authenticator[], lines: string[]): Promise<Principal> {
  if (request.claims) {
    const mapper = authenticators.find((a) => a.principalFromClaims && (!request.authenticator || a.name === request.authenticator));
    if (!mapper?.principalFromClaims) throw new Error(`no claims-based authenticator${request.authenticator ? ` named "${request.authenticator}"` : ""} applies on this route`);
    const p = mapper.principalFromClaims(request.claims);
    lines.push(`caller    ${describe(p)} via ${mapper.name} (${mapper.type}) — from a claims file, signature not checked`);
    return p;
  }
  if (!request.credential) {
    lines.push("caller    anonymous (no credential given)");
    return ANONYMOUS;
  }
  if (request.offline) {
    for (const a of authenticators) {
      const claims = a.claimsOf?.(request.credential);
      if (claims && a.principalFromClaims) {
        const p = a.principalFromClaims(claims);
        lines.push(`caller    ${describe(p)} via ${a.name} (${a.type}) — OFFLINE: signature, expiry and audience NOT verified`);
        return p;
      }
    }
  }
  const header = request.credential.includes(".") || !request.credential.startsWith("tg_") ? { authorization: `Bearer ${request.credential}` } : { "x-api-key": request.credential };
  const p = await new AuthChain(authenticators).authenticate({ credential: extractCredential(header), headers: header, remoteAddress: "127.0.0.1" });
  lines.push(`caller    ${describe(p)} via ${p.authenticator} (${p.method}) — verified`);
  return p;
}

function describe(p: Principal): string {
  if (p.kind === "anonymous") return "anonymous";
  const who = p.email ?? p.user;
  return `${p.kind} ${p.id}${who && who !== p.id ? ` (${who})` : ""}`;
}
