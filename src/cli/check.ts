import { loadPolicyFile, ConfigError, formatProblem, type ConfigProblem } from "../config/load.ts";
import { Gateway } from "../gateway.ts";
import { Metrics } from "../observe/metrics.ts";
import { createLogger } from "../observe/audit.ts";
import { systemClock } from "../clock.ts";

/**
 * Validates and compiles each policy file; returns the number of invalid files. Variables and secret files
 * that only exist where Tollgate runs (a pod's env, a mounted Secret) are listed as notes, not failures,
 * unless `strict` — then the check is exactly what `serve` would do here.
 */
export async function check(files: string[], print: (line: string) => void, strict = false): Promise<number> {
  let failed = 0;
  for (const file of files) {
    try {
      const unresolved: ConfigProblem[] = [];
      const policy = loadPolicyFile(file, process.env, strict ? {} : { unresolved });
      for (const note of unresolved) print(`note: ${formatProblem(note)} (needed at runtime)`);
      // Compiling catches what the schema cannot (bad path patterns); the gateway is closed at once.
      const gateway = new Gateway(policy, { metrics: new Metrics({ defaultMetrics: false }), logger: createLogger(undefined, "silent"), clock: systemClock, offline: true });
      await gateway.close();
      print(`${file}: ok (${policy.routes.length} routes, ${Object.keys(policy.upstreams).length} upstreams, ${policy.authenticators.length} authenticators)`);
    } catch (err) {
      failed++;
      print(err instanceof ConfigError ? err.message : `${file}: ${(err as Error).message}`);
    }
  }
  return failed;
}
