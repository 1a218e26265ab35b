/**
 * Reads what Tollgate wrote on stdout during a configuration's runs: one audit line per request plus its
 * operational log. The summary says whether every request was allowed and completed, and keeps the first
 * few warnings and errors, so a forwarder problem shows up in the bench's report rather than in /dev/null.
 */
import { createReadStream, existsSync } from "node:fs";
import { createInterface } from "node:readline";

export interface LogSummary {
  auditLines: number;
  /** status → count, from the audit lines. */
  statuses: Record<string, number>;
  /** reason (allowed, client_aborted, upstream_error, a refusal code…) → count. */
  reasons: Record<string, number>;
  /** Non-audit lines at warn level or above, first few. */
  problems: string[];
  problemCount: number;
  unparsable: number;
}

export async function summarizeLog(file: string | undefined): Promise<LogSummary | undefined> {
  if (!file || !existsSync(file)) return undefined;
  const summary: LogSummary = { auditLines: 0, statuses: {}, reasons: {}, problems: [], problemCount: 0, unparsable: 0 };
  const lines = createInterface({ input: createReadStream(file, "utf8"), crlfDelay: Infinity });
  for await (const line of lines) {
    if (!line) continue;
    let entry: Record<string, unknown>;
    try {
      entry = JSON.parse(line) as Record<string, unknown>;
    } catch {
      summary.unparsable++;
      continue;
    }
    if (entry.log === "audit") {
      summary.auditLines++;
      bump(summary.statuses, String(entry.status));
      bump(summary.reasons, String(entry.reason));
    } else if (entry.level === "warn" || entry.level === "error" || entry.level === "fatal") {
      summary.problemCount++;
      if (summary.problems.length < 5) summary.problems.push(line.slice(0, 400));
    }
  }
  return summary;
}

function bump(counts: Record<string, number>, key: string): void {
  counts[key] = (counts[key] ?? 0) + 1;
}
