/** Compile-once matchers for the two pattern languages in a policy: URL paths and model names. */

/**
 * Path patterns: literal segments, `{name}` or `*` for exactly one segment, and a trailing `**` for any rest
 * (including nothing). `/v1/**` matches `/v1` and everything below it.
 */
export interface PathMatcher {
  readonly pattern: string;
  match(path: string): Record<string, string> | undefined;
}

export function compilePath(pattern: string): PathMatcher {
  const names: string[] = [];
  let source = "^";
  const segments = pattern.split("/").slice(1);
  segments.forEach((segment, i) => {
    if (segment === "**") {
      if (i !== segments.length - 1) throw new Error(`"**" must be the last segment in ${pattern}`);
      source += "(?:/.*)?";
      return;
    }
    source += "/";
    if (segment === "*") source += "[^/]+";
    else if (/^\{[A-Za-z_][A-Za-z0-9_]*\}$/.test(segment)) {
      names.push(segment.slice(1, -1));
      source += "([^/]+)";
    } else if (/[{}*]/.test(segment)) throw new Error(`segment "${segment}" mixes a wildcard with text in ${pattern}`);
    else source += escapeRegExp(segment);
  });
  source += "$";
  if (names.length === 0 && !source.includes("[^/]") && !source.includes("(?:")) {
    const literal = pattern;
    return { pattern, match: (path) => (path === literal ? EMPTY : undefined) };
  }
  const regex = new RegExp(source);
  return {
    pattern,
    match(path) {
      const m = regex.exec(path);
      if (!m) return undefined;
      if (names.length === 0) return EMPTY;
      const params: Record<string, string> = {};
      names.forEach((n, i) => (params[n] = m[i + 1]!));
      return params;
    },
  };
}

const EMPTY: Record<string, string> = Object.freeze({}) as Record<string, string>;

/** Model name lists: exact names, or `*` wildcards that match any run of characters (`gpt-4o*`, `bedrock/*`). */
export interface NameMatcher {
  matches(name: string): boolean;
}

export function compileNames(patterns: readonly string[]): NameMatcher {
  const exact = new Set<string>();
  const wildcards: RegExp[] = [];
  for (const p of patterns) {
    if (p === "*") return { matches: () => true };
    if (p.includes("*")) wildcards.push(new RegExp("^" + p.split("*").map(escapeRegExp).join(".*") + "$"));
    else exact.add(p);
  }
  return { matches: (name) => exact.has(name) || wildcards.some((w) => w.test(name)) };
}

function escapeRegExp(text: string): string {
  return text.replace(/[.*+?^${}()|[\]\\]/g, "\\$&");
}
