/** The build the bench runs (dist/) and the commit it measures. */
import { existsSync, statSync, readdirSync } from "node:fs";
import { join, relative } from "node:path";
import { execFileSync } from "node:child_process";

/** Throws when dist/ is missing; warns (through `log`) when it is older than src/. */
export function checkBuild(root: string, log: (line: string) => void): void {
  const dist = join(root, "dist");
  for (const f of ["server.js", "demo/stand-in-upstream.js", "auth/keys.js"]) {
    if (!existsSync(join(dist, f))) throw new Error(`dist/${f} is missing: run \`npm run build\` first (npm run bench does)`);
  }
  const stale: string[] = [];
  const walk = (dir: string) => {
    for (const entry of readdirSync(dir, { withFileTypes: true })) {
      const path = join(dir, entry.name);
      if (entry.isDirectory()) walk(path);
      else if (path.endsWith(".ts")) {
        const built = join(dist, relative(join(root, "src"), path)).replace(/\.ts$/, ".js");
        if (!existsSync(built) || statSync(built).mtimeMs < statSync(path).mtimeMs) stale.push(relative(root, path));
      }
    }
  };
  walk(join(root, "src"));
  if (stale.length > 0) log(`warning: dist/ is older than ${stale.slice(0, 3).join(", ")}${stale.length > 3 ? " …" : ""}; run \`npm run build\` to bench the current source`);
}

export function gitDescribe(root: string): string | undefined {
  try {
    const commit = execFileSync("git", ["rev-parse", "--short", "HEAD"], { cwd: root, encoding: "utf8" }).trim();
    const dirty = execFileSync("git", ["status", "--porcelain", "--", "src"], { cwd: root, encoding: "utf8" }).trim() !== "";
    return dirty ? `${commit}+dirty-src` : commit;
  } catch {
    return undefined;
  }
}

