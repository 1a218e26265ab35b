/** Checks that need the whole policy: names that must exist, names that must be unique. */
import type { Policy } from "./schema.ts";
import { compilePath } from "../policy/patterns.ts";

export interface ReferenceProblem {
  path: (string | number)[];
  message: string;
}

export function checkReferences(policy: Policy): ReferenceProblem[] {
  const problems: ReferenceProblem[] = [];
  const authNames = new Set<string>();
  const keyIds = new Set<string>();
  const keyHashes = new Set<string>();
  policy.authenticators.forEach((a, i) => {
    if (authNames.has(a.name)) problems.push({ path: ["authenticators", i, "name"], message: `authenticator "${a.name}" is defined twice` });
    authNames.add(a.name);
    if (a.type === "api_key") {
      a.keys.forEach((k, j) => {
        if (keyIds.has(k.id)) problems.push({ path: ["authenticators", i, "keys", j, "id"], message: `key id "${k.id}" is used twice` });
        if (keyHashes.has(k.hash)) problems.push({ path: ["authenticators", i, "keys", j, "hash"], message: `key "${k.id}" has the same hash as another key` });
        keyIds.add(k.id);
        keyHashes.add(k.hash);
      });
    }
  });
  const basePaths = new Map<string, string>();
  policy.authenticators.forEach((a, i) => {
    if (a.type !== "session") return;
    const other = basePaths.get(a.basePath);
    if (other) problems.push({ path: ["authenticators", i, "basePath"], message: `basePath ${a.basePath} is already used by "${other}"` });
    basePaths.set(a.basePath, a.name);
  });
  const routeNames = new Set<string>();
  policy.routes.forEach((r, i) => {
    if (routeNames.has(r.name)) problems.push({ path: ["routes", i, "name"], message: `route "${r.name}" is defined twice` });
    routeNames.add(r.name);
    if (!(r.upstream in policy.upstreams)) {
      problems.push({ path: ["routes", i, "upstream"], message: `upstream "${r.upstream}" is not defined (known: ${Object.keys(policy.upstreams).join(", ")})` });
    }
    r.paths.forEach((pattern, j) => {
      try {
        compilePath(pattern);
      } catch (err) {
        problems.push({ path: ["routes", i, "paths", j], message: (err as Error).message });
      }
    });
    if (r.model?.from === "path") {
      r.paths.forEach((pattern, j) => {
        if (!pattern.includes(`{${r.model!.param}}`)) problems.push({ path: ["routes", i, "paths", j], message: `model.param "${r.model!.param}" is not a parameter of this path (write it as {${r.model!.param}})` });
      });
    }
    if (r.signIn !== undefined) {
      const target = policy.authenticators.find((a) => a.name === r.signIn);
      if (!target || target.type !== "session") problems.push({ path: ["routes", i, "signIn"], message: `signIn names "${r.signIn}", which is not a session authenticator` });
      else if (r.authenticators && !r.authenticators.includes(r.signIn)) problems.push({ path: ["routes", i, "signIn"], message: `the route's authenticators do not include "${r.signIn}"` });
    }
    r.authenticators?.forEach((a, j) => {
      if (!authNames.has(a)) problems.push({ path: ["routes", i, "authenticators", j], message: `authenticator "${a}" is not defined` });
    });
    const needsAuth = r.allow.some((rule) => !rule.public);
    if (needsAuth && authNames.size === 0) {
      problems.push({ path: ["routes", i, "allow"], message: "this route needs an authenticated caller but no authenticator is defined" });
    }
  });
  return problems;
}
