import { readFileSync } from "node:fs";
import { loadPolicyFile, type ConfigProblem } from "../config/load.ts";
import { Gateway } from "../gateway.ts";
import { Metrics } from "../observe/metrics.ts";
import { createLogger } from "../observe/audit.ts";
import { systemClock } from "../clock.ts";
import { explain, type ExplainRequest } from "../policy/explain.ts";

export interface ExplainOptions extends Omit<ExplainRequest, "claims"> {
  config: string;
  claimsFile?: string | undefined;
}

/** Prints the decision and the rules that led to it; resolves with the exit code (0 allow, 1 deny). */
export async function explainCommand(options: ExplainOptions, print: (line: string) => void): Promise<number> {
  const unresolved: ConfigProblem[] = [];
  const policy = loadPolicyFile(options.config, process.env, { unresolved });
  const gateway = new Gateway(policy, { metrics: new Metrics({ defaultMetrics: false }), logger: createLogger(undefined, "silent"), clock: systemClock, offline: true });
  try {
    const claims = options.claimsFile ? (JSON.parse(readFileSync(options.claimsFile, "utf8")) as Record<string, unknown>) : undefined;
    const result = await explain(gateway, { ...options, claims });
    for (const line of result.lines) print(line);
    return result.allowed ? 0 : 1;
  } finally {
    await gateway.close();
  }
}
