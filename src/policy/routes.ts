/** The route table: method + normalized path → the first matching route, in policy order. */
import type { RouteConfig } from "../config/schema.ts";
import { compilePath, compileNames, type PathMatcher, type NameMatcher } from "./patterns.ts";
import { compileAllowRule, type AllowRule } from "./authorize.ts";

export interface Route {
  readonly name: string;
  readonly upstream: string;
  readonly authenticators: readonly string[] | undefined;
  readonly rules: readonly AllowRule[];
  readonly models: NameMatcher | undefined;
  /** True when some rule or the route itself restricts models, so the body must be read. */
  readonly restrictsModels: boolean;
  readonly isPublic: boolean;
  readonly maxBodyBytes: number;
  /** Set when the model is a path parameter (Azure deployment, Bedrock model id): params → model name. */
  readonly modelFromPath: ((params: Record<string, string>) => string) | undefined;
  /** A `session` authenticator that sends unauthenticated browsers to sign in. */
  readonly signIn: string | undefined;
  /** Deployment names → model names (`model.aliases`), for a body's `model` (Azure's v1 API names deployments there). */
  readonly modelAlias: (name: string) => string;
}

interface CompiledRoute {
  route: Route;
  anyMethod: boolean;
  methods: ReadonlySet<string>;
  paths: readonly PathMatcher[];
}

export interface RouteMatch {
  route: Route;
  params: Record<string, string>;
}

export class RouteTable {
  readonly #routes: CompiledRoute[];

  constructor(configs: readonly RouteConfig[], defaultMaxBodyBytes: number) {
    this.#routes = configs.map((c) => {
      const rules = c.allow.map(compileAllowRule);
      return {
        route: Object.freeze({
          name: c.name,
          upstream: c.upstream,
          authenticators: c.authenticators,
          rules,
          models: c.models ? compileNames(c.models) : undefined,
          restrictsModels: c.models !== undefined || rules.some((r) => r.models !== undefined),
          isPublic: rules.some((r) => r.isPublic),
          maxBodyBytes: c.maxBodyBytes ?? defaultMaxBodyBytes,
          modelFromPath: c.model?.from === "path" ? compileModelFromPath(c.model.param!, compileAliases(c.model.aliases)) : undefined,
          modelAlias: compileAliases(c.model?.aliases),
          signIn: c.signIn,
        }),
        anyMethod: c.methods.includes("*"),
        methods: new Set(c.methods),
        paths: c.paths.map(compilePath),
      };
    });
  }

  get routes(): Route[] {
    return this.#routes.map((r) => r.route);
  }

  match(method: string, path: string): RouteMatch | undefined {
    for (const compiled of this.#routes) {
      if (!compiled.anyMethod && !compiled.methods.has(method)) continue;
      for (const matcher of compiled.paths) {
        const params = matcher.match(path);
        if (params) return { route: compiled.route, params };
      }
    }
    return undefined;
  }
}

function compileAliases(aliases: Record<string, string> | undefined): (name: string) => string {
  if (!aliases) return (name) => name;
  const byName = new Map(Object.entries(aliases));
  return (name) => byName.get(name) ?? name;
}

function compileModelFromPath(param: string, alias: (name: string) => string): (params: Record<string, string>) => string {
  return (params) => {
    // Path parameters keep their percent-encoding (a Bedrock id's `:` arrives as %3A); names are compared decoded.
    const raw = params[param] ?? "";
    let decoded: string;
    try {
      decoded = decodeURIComponent(raw);
    } catch {
      decoded = raw;
    }
    return alias(decoded);
  };
}
