/** One JSON line per request, written with pino. Holds ids and reason codes, never a credential. */
import { pino, type Logger, type DestinationStream } from "pino";

export interface AuditRecord {
  requestId: string;
  method: string;
  path: string;
  route: string | undefined;
  upstream: string | undefined;
  principal: string | undefined;
  user: string | undefined;
  team: string | undefined;
  authMethod: string;
  authenticator: string | undefined;
  model: string | undefined;
  decision: "allow" | "deny" | "error";
  reason: string;
  status: number;
  outcome: string | undefined;
  durationMs: number;
  upstreamTtfbMs: number | undefined;
  usage: { input: number; output: number; cachedInput: number; reasoning: number; source: string } | undefined;
  costUsd: number | undefined;
  remoteAddress: string | undefined;
}

export function createLogger(destination?: DestinationStream, level = process.env.TOLLGATE_LOG_LEVEL ?? "info"): Logger {
  return pino(
    {
      level,
      base: { service: "tollgate" },
      timestamp: pino.stdTimeFunctions.isoTime,
      formatters: { level: (label) => ({ level: label }) },
      // Belt and braces: even if a header object is ever logged, credential fields are censored.
      redact: { paths: ["headers.authorization", "headers[\"x-api-key\"]", "headers[\"api-key\"]", "headers.cookie", "*.authorization"], censor: "[redacted]" },
    },
    destination,
  );
}

export class AuditLog {
  readonly #logger: Logger;
  readonly #enabled: boolean;
  constructor(logger: Logger, enabled: boolean) {
    this.#logger = logger.child({ log: "audit" });
    this.#enabled = enabled;
  }
  write(record: AuditRecord): void {
    if (this.#enabled) this.#logger.info(record, "request");
  }
}
