import { loadPolicyFile, ConfigError } from "../config/load.ts";
import { Gateway } from "../gateway.ts";
import { Metrics } from "../observe/metrics.ts";
import { createLogger } from "../observe/audit.ts";
import { systemClock } from "../clock.ts";

/** Validates and compiles each policy file; returns the number of invalid files. */
export async function check(files: string[], print: (line: string) => void): Promise<number> {
  let failed = 0;
  for (const file of files) {
    try {
      const policy = loadPolicyFile(file);
      // Compiling catches what the schema cannot (bad path patterns); the gateway is closed at once.
      const gateway = new Gateway(policy, { metrics: new Metrics({ defaultMetrics: false }), logger: createLogger(undefined, "silent"), clock: systemClock });
      await gateway.close();
      print(`${file}: ok (${policy.routes.length} routes, ${Object.keys(policy.upstreams).length} upstreams, ${policy.authenticators.length} authenticators)`);
    } catch (err) {
      failed++;
      print(err instanceof ConfigError ? err.message : `${file}: ${(err as Error).message}`);
    }
  }
  return failed;
}
