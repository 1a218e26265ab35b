/**
 * Authorization: may this principal use this route, and this model? Rules are any-of; the conditions inside
 * one rule are all-of. The decision carries a reason code and the rule that decided, for the audit line and
 * `tollgate explain`.
 */
import type { AllowRuleConfig } from "../config/schema.ts";
import type { Principal } from "../auth/principal.ts";
import { compileNames, type NameMatcher } from "./patterns.ts";
import type { Route } from "./routes.ts";

export interface AllowRule {
  readonly index: number;
  readonly isPublic: boolean;
  readonly description: string;
  readonly models: NameMatcher | undefined;
  admits(principal: Principal): boolean;
}

export function compileAllowRule(config: AllowRuleConfig, index: number): AllowRule {
  const roles = config.roles ? new Set(config.roles) : undefined;
  // Group names or ids with `*` wildcards, as in role mappings (roles and principals are exact).
  const groups = config.groups ? compileNames(config.groups) : undefined;
  const principals = config.principals ? new Set(config.principals) : undefined;
  const isPublic = config.public === true;
  const parts: string[] = [];
  if (isPublic) parts.push("public");
  if (config.authenticated) parts.push("authenticated");
  if (roles) parts.push(`roles any of [${[...roles].join(", ")}]`);
  if (groups) parts.push(`groups any of [${config.groups!.join(", ")}]`);
  if (principals) parts.push(`principal one of [${[...principals].join(", ")}]`);
  if (config.models) parts.push(`models [${config.models.join(", ")}]`);
  return {
    index,
    isPublic,
    description: parts.join(" and "),
    models: config.models ? compileNames(config.models) : undefined,
    admits(p) {
      if (isPublic && !roles && !groups && !principals) return true;
      if (p.kind === "anonymous") return false;
      if (roles && !p.roles.some((r) => roles.has(r))) return false;
      if (groups && !p.groups.some((g) => groups.matches(g))) return false;
      if (principals && !principals.has(p.id) && !(p.user !== undefined && principals.has(p.user))) return false;
      return true;
    },
  };
}

export type DecisionCode = "allowed" | "missing_credential" | "forbidden" | "model_not_allowed";

export interface Decision {
  readonly allowed: boolean;
  readonly code: DecisionCode;
  readonly rule?: AllowRule | undefined;
}

/** The rules of a route that admit this caller, in policy order (empty: the caller may not use the route). */
export function callerRules(route: Route, principal: Principal, trace?: string[]): AllowRule[] {
  return route.rules.filter((rule) => {
    const ok = rule.admits(principal);
    trace?.push(`rule #${rule.index + 1} (${rule.description}): ${ok ? "matches the caller" : "does not match the caller"}`);
    return ok;
  });
}

/**
 * Decides a request. `rules` are the caller's rules from `callerRules`; `model` is undefined when the request
 * carries none (e.g. a GET), and model rules then do not apply. Pass `trace` to collect the human-readable
 * chain of checks (explain, debugging); the hot path passes none.
 */
export function decide(route: Route, principal: Principal, rules: readonly AllowRule[], model: string | undefined, trace?: string[]): Decision {
  if (rules.length === 0) {
    return { allowed: false, code: principal.kind === "anonymous" ? "missing_credential" : "forbidden" };
  }
  if (model === undefined) return { allowed: true, code: "allowed", rule: rules[0] };

  if (route.models && !route.models.matches(model)) {
    trace?.push(`route "${route.name}" does not list model "${model}"`);
    return { allowed: false, code: "model_not_allowed" };
  }
  if (principal.models && !compileOnce(principal.models).matches(model)) {
    trace?.push(`principal "${principal.id}" may not use model "${model}"`);
    return { allowed: false, code: "model_not_allowed" };
  }
  const rule = rules.find((r) => !r.models || r.models.matches(model));
  if (!rule) {
    trace?.push(`no rule that matches the caller allows model "${model}"`);
    return { allowed: false, code: "model_not_allowed" };
  }
  trace?.push(`model "${model}" allowed by rule #${rule.index + 1}`);
  return { allowed: true, code: "allowed", rule };
}

export function authorize(route: Route, principal: Principal, model: string | undefined, trace?: string[]): Decision {
  return decide(route, principal, callerRules(route, principal, trace), model, trace);
}

// Principals are frozen and long-lived (API keys) or cached (tokens): compile their model list once per list.
const compiledPrincipalModels = new WeakMap<readonly string[], NameMatcher>();
function compileOnce(models: readonly string[]): NameMatcher {
  let matcher = compiledPrincipalModels.get(models);
  if (!matcher) {
    matcher = compileNames(models);
    compiledPrincipalModels.set(models, matcher);
  }
  return matcher;
}
