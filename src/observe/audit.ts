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

/**
 * The process's log stream: stdout, with lines gathered into 4 KB writes, flushed every 250 ms and on exit
 * (process.exit, a signal that ends in exit, an uncaught error). Profiling showed one write(2) per audit line
 * costing several percent of the API-key path; gathering them costs at most 250 ms of delay. The writes stay
 * synchronous: sonic-boom's asynchronous mode cost more CPU here (its thread-pool hand-off outweighs the saved
 * syscall on a one-core sidecar). Only SIGKILL (or a kernel OOM kill) can lose the unflushed tail, at most
 * 4 KB. `TOLLGATE_LOG_SYNC=1` writes every line at once, for hosts that must never lose a line.
 */
let shared: DestinationStream | undefined;

/** One stdout stream per process, whichever loggers share it: two buffers on one fd would interleave halves of lines. */
export function stdoutDestination(): DestinationStream {
  if (shared) return shared;
  if (process.env.TOLLGATE_LOG_SYNC === "1") return (shared = pino.destination({ dest: 1, sync: true }));
  // periodicFlush writes without fsync (flushSync would fsync every time: measurable on the hot path).
  const destination = pino.destination({ dest: 1, sync: true, minLength: 4096, periodicFlush: 250 });
  process.once("exit", () => {
    try {
      destination.flushSync();
    } catch {
      // stdout closed (EPIPE): nothing more can be written from here
    }
  });
  return (shared = destination);
}

export function createLogger(destination: DestinationStream = stdoutDestination(), level = process.env.TOLLGATE_LOG_LEVEL ?? "info"): Logger {
  return pino(
    {
      level,
      base: { service: "tollgate" },
      // AuditLog writes its lines in this same shape itself (level label, ISO time): change both together
      // (test/core/audit.test.ts compares an audit line with an operational one).
      timestamp: pino.stdTimeFunctions.isoTime,
      formatters: { level: (label) => ({ level: label }) },
      // Belt and braces: even if a header object is ever logged, credential fields are censored.
      redact: { paths: ["headers.authorization", "headers[\"x-api-key\"]", "headers[\"api-key\"]", "headers.cookie", "*.authorization"], censor: "[redacted]" },
    },
    destination,
  );
}

/**
 * The audit stream: the process logger's destination, level and bindings, one line per request in the same shape
 * as the logger's own lines (`level`, `time`, `service`, `log: "audit"`, the record, `msg`).
 *
 * The line is serialized with one `JSON.stringify` rather than through `logger.info`: pino's serializer builds a
 * line field by field, and for this 22-field record that made ~9 KB of short-lived strings per request; one
 * `JSON.stringify` makes ~5 KB (V8's own count, `--trace-gc-nvp`, API-key path at 32 connections: 43 → 39.5 KB
 * allocated per request, 34 KB with no audit line at all). Less garbage means fewer scavenges, each of which copies
 * every request in flight. The record holds only strings, numbers and one flat object (no header object, nothing
 * to redact), so nothing pino would add is lost; the level check and the destination are pino's.
 */
export class AuditLog {
  readonly #logger: Logger;
  readonly #stream: DestinationStream;
  /** `","` + the logger's bindings as JSON members + `,`: what goes between the time and the record's members. */
  readonly #bindings: string;
  readonly #enabled: boolean;
  constructor(logger: Logger, enabled: boolean) {
    this.#logger = logger.child({ log: "audit" });
    // The bindings (`service`, `log`) never share a name with the record's fields, so their members can be joined
    // as text: the line is the one `JSON.stringify` of `{ level, time, ...bindings, ...record, msg }` would give,
    // without building that 25-field object per request (a quarter of the line's cost, in a micro-benchmark).
    const members = JSON.stringify(this.#logger.bindings()).slice(1, -1);
    this.#bindings = members === "" ? '",' : `",${members},`;
    this.#stream = (this.#logger as unknown as Record<symbol, DestinationStream>)[pino.symbols.streamSym]!;
    this.#enabled = enabled;
  }
  write(record: AuditRecord): void {
    if (!this.#enabled || !this.#logger.isLevelEnabled("info")) return;
    const fields = JSON.stringify(record); // `{"requestId":…}`: requestId is always there, so never `{}`
    this.#stream.write('{"level":"info","time":"' + new Date().toISOString() + this.#bindings + fields.slice(1, -1) + ',"msg":"request"}\n');
  }
}
