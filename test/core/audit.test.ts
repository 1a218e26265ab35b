import t from "tap";
import { Writable } from "node:stream";
import { AuditLog, createLogger, type AuditRecord } from "../../src/observe/audit.ts";

function sink() {
  const chunks: string[] = [];
  const stream = new Writable({
    write(chunk, _enc, cb) {
      chunks.push(chunk.toString());
      cb();
    },
  });
  return { stream, lines: () => chunks.join("").split("\n").filter(Boolean) };
}

const record = (over: Partial<AuditRecord> = {}): AuditRecord => ({
  requestId: "r-1",
  method: "POST",
  path: "/v1/chat/completions",
  route: "inference",
  upstream: "llm",
  principal: "alice-laptop",
  user: "alice",
  team: "research",
  authMethod: "api_key",
  authenticator: "keys",
  model: "gpt-4o-mini",
  decision: "allow",
  reason: "allowed",
  status: 200,
  outcome: "complete",
  durationMs: 41.2,
  upstreamTtfbMs: 3.1,
  usage: { input: 12, output: 7, cachedInput: 0, reasoning: 0, source: "provider" },
  costUsd: 0.000006,
  remoteAddress: "10.0.3.7",
  ...over,
});

t.test("an audit line has the logger's shape: level, time, bindings, the record's fields in order, msg", async (t) => {
  const out = sink();
  const logger = createLogger(out.stream as never, "info");
  new AuditLog(logger, true).write(record());
  logger.info({ other: 1 }, "operational");
  const [audit, operational] = out.lines();
  const parsed = JSON.parse(audit!) as Record<string, unknown>;
  t.same(Object.keys(parsed).slice(0, 5), ["level", "time", "service", "log", "requestId"], "the same leading fields as pino's own lines");
  t.equal(Object.keys(parsed).at(-1), "msg");
  t.match(parsed, { level: "info", service: "tollgate", log: "audit", msg: "request", status: 200, usage: { input: 12, source: "provider" }, costUsd: 0.000006 });
  t.equal(new Date(parsed.time as string).toISOString(), parsed.time, "an ISO 8601 time, as pino's isoTime writes it");
  const op = JSON.parse(operational!) as Record<string, unknown>;
  t.same(Object.keys(op).slice(0, 3), ["level", "time", "service"], "the operational line it sits beside starts the same way");
  t.notOk("log" in op, "the audit binding stays on the audit line");
});

t.test("fields that are undefined are left out; strings are escaped, one line per record", async (t) => {
  const out = sink();
  new AuditLog(createLogger(out.stream as never, "info"), true).write(
    record({ route: undefined, upstream: undefined, principal: undefined, usage: undefined, costUsd: undefined, upstreamTtfbMs: undefined, path: '/a"b\\c\nd\u2028e', user: "émile 🚀" }),
  );
  const lines = out.lines();
  t.equal(lines.length, 1, "a newline in a field cannot split the line");
  const parsed = JSON.parse(lines[0]!) as Record<string, unknown>;
  for (const key of ["route", "upstream", "principal", "usage", "costUsd", "upstreamTtfbMs"]) t.notOk(key in parsed, `${key} left out`);
  t.equal(parsed.path, '/a"b\\c\nd\u2028e');
  t.equal(parsed.user, "émile 🚀");
});

t.test("nothing is written when the audit log is off, or when the level is above info", async (t) => {
  const off = sink();
  new AuditLog(createLogger(off.stream as never, "info"), false).write(record());
  t.same(off.lines(), [], "audit: { enabled: false }");
  const quiet = sink();
  const logger = createLogger(quiet.stream as never, "warn");
  const audit = new AuditLog(logger, true);
  audit.write(record());
  t.same(quiet.lines(), [], "TOLLGATE_LOG_LEVEL=warn");
  logger.level = "info";
  audit.write(record());
  t.equal(quiet.lines().length, 1, "the level is read at each write, as pino's own methods do");
});
