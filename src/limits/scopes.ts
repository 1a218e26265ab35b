/**
 * Which instances of a limit a request counts against: one per combination of the limit's dimensions
 * (`by: [user, model]` → one counter per user and model). Store keys carry a hash of the values, never the
 * values themselves (no emails in Redis keys) and never a character that could break a Cluster hash tag.
 */
import { hash } from "node:crypto";
import { LRUCache } from "lru-cache";
import type { Dimension } from "../config/limits.ts";
import type { Principal } from "../auth/principal.ts";

export interface ScopeInput {
  principal: Principal;
  route: string;
  model: string | undefined;
}

/** The values of one dimension for this request; empty = the limit does not apply to this caller. */
export function dimensionValues(dimension: Dimension, input: ScopeInput): readonly string[] {
  const p = input.principal;
  switch (dimension) {
    case "key":
      return p.kind === "key" ? [p.id] : [];
    case "user": {
      const user = p.user ?? (p.kind === "anonymous" ? undefined : p.id);
      return user ? [user] : [];
    }
    case "team":
      return p.team ? [p.team] : [];
    case "group":
      return p.groups;
    case "model":
      return input.model ? [input.model] : [];
    case "route":
      return [input.route];
    case "global":
      return ["*"];
  }
}

/** Every combination of the dimensions' values, as `dim=value` lists (the cartesian product). */
export function scopeInstances(by: readonly Dimension[], input: ScopeInput): string[][] {
  let combos: string[][] = [[]];
  for (const dimension of by) {
    const values = dimensionValues(dimension, input);
    if (values.length === 0) return [];
    combos = combos.flatMap((c) => values.map((v) => [...c, `${dimension}=${v}`]));
  }
  return combos;
}

/**
 * The same callers come back request after request: their instances' digests are remembered (a SHA-256 per
 * limit instance was ~0.5% of the full path's CPU). Bounded, so that many distinct callers cost no more than
 * hashing again.
 */
const digests = new LRUCache<string, string>({ max: 10_000 });

export function scopeKey(limitName: string, instance: readonly string[]): string {
  return digestKey(limitName, instance.join("\u0000"));
}

/**
 * The store keys of every instance of a limit this request counts against: `scopeKey` of each of
 * `scopeInstances`. When every dimension has one value (all but `group`), the one instance's text is built
 * directly: the general product allocated a few arrays and closures per limit per request (profiled).
 */
export function instanceKeys(limitName: string, by: readonly Dimension[], input: ScopeInput): string[] {
  let joined = "";
  for (let i = 0; i < by.length; i++) {
    const values = dimensionValues(by[i]!, input);
    if (values.length === 0) return [];
    if (values.length > 1) return scopeInstances(by, input).map((instance) => scopeKey(limitName, instance));
    joined = i === 0 ? `${by[i]}=${values[0]}` : `${joined}\u0000${by[i]}=${values[0]}`;
  }
  return [digestKey(limitName, joined)];
}

function digestKey(limitName: string, values: string): string {
  let digest = digests.get(values);
  if (digest === undefined) {
    digest = hash("sha256", values, "base64url").slice(0, 22);
    digests.set(values, digest);
  }
  return `${limitName}:${digest}`;
}
