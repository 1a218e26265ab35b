/**
 * Tollgate's benchmark: the same closed-loop load straight to a stand-in upstream and through each proxy
 * configuration, JSON and SSE, at 1 and 32 connections. Prints req/s, p50/p99, the latency added and the
 * ratio to the direct call, the proxy's CPU time (requests per CPU-second), and whether every SSE event
 * arrived intact; writes the same to bench/results/.
 *
 *   npm run bench                      # builds, then: node bench/run.ts
 *   node bench/run.ts --quick          # ~1 s per run
 *   node bench/run.ts --duration 10 --only tollgate,http-proxy-3 --connections 1,32,64
 *
 * Tollgate, the stand-in and the reference proxies run from Tollgate's build (dist/): run `npm run build` first.
 */
import { parseArgs } from "node:util";
import { existsSync, mkdirSync, mkdtempSync, rmSync, writeFileSync, statSync, readdirSync } from "node:fs";
import { tmpdir, cpus } from "node:os";
import { join, relative } from "node:path";
import { fileURLToPath } from "node:url";
import { execFileSync } from "node:child_process";
import { runLoad, fetchOnce, type Target } from "./lib/load.ts";
import { measure, type Pids } from "./lib/measure.ts";
import { spawnPinned, readyMessage, stopAll, killAllNow, pinSelf, waitForQuiet, HAS_TASKSET, type Child } from "./lib/procs.ts";
import { configurations, type Context, type Running } from "./lib/targets.ts";
import { compareToDirect, markdownTable, ordered, NOISY, type Mode, type Row } from "./lib/report.ts";
import { summarizeLog, type LogSummary } from "./lib/logs.ts";

const ROOT = fileURLToPath(new URL("../", import.meta.url));
const RESULTS = join(ROOT, "bench", "results");
const SSE_EVENTS = 20;
const SSE_INTERVAL_MS = 20;
const JSON_BYTES = 1024;

const { values: opts } = parseArgs({
  options: {
    duration: { type: "string" },
    warmup: { type: "string" },
    quick: { type: "boolean", default: false },
    connections: { type: "string", default: "1,32" },
    only: { type: "string" },
    "no-pin": { type: "boolean", default: false },
    "no-write": { type: "boolean", default: false },
    "cpu-prof": { type: "boolean", default: false },
    help: { type: "boolean", short: "h", default: false },
  },
});
if (opts.help) {
  process.stdout.write(`node bench/run.ts [--quick] [--duration S] [--warmup S] [--connections 1,32] [--only a,b] [--no-pin] [--no-write] [--cpu-prof]\n`);
  process.exit(0);
}
const durationS = Number(opts.duration ?? (opts.quick ? 1 : 5));
const warmupS = Number(opts.warmup ?? (opts.quick ? 0.3 : 1));
const connectionCounts = opts.connections.split(",").map(Number).filter((n) => n > 0);
if (!(durationS > 0) || !(warmupS >= 0) || connectionCounts.length === 0) throw new Error("bad --duration, --warmup or --connections");

/** How long each measurement waits at most for the machine to be quiet first. */
const quietWaitMs = opts.quick ? 1000 : 1500;
/** Seconds the bench may spend measuring again the runs that other processes disturbed. */
let retryBudgetS = opts.quick ? 5 : 30;

async function measureQuietly(config: string, mode: Mode, target: Target, reference: Buffer, connections: number, pids: Pids, waitMs = quietWaitMs) {
  const quiet = await waitForQuiet(waitMs);
  if (quiet !== undefined && quiet >= NOISY) log(`  (the machine is busy: ${Math.round(quiet * 100)}% of its CPUs used by other work; measuring anyway)`);
  return measure(config, mode, target, reference, connections, durationS * 1000, pids);
}

const log = (line: string) => process.stderr.write(line + "\n");

function checkBuild(): void {
  const dist = join(ROOT, "dist");
  for (const f of ["server.js", "demo/stand-in-upstream.js", "auth/keys.js"]) {
    if (!existsSync(join(dist, f))) throw new Error(`dist/${f} is missing: run \`npm run build\` first (npm run bench does)`);
  }
  const stale: string[] = [];
  const walk = (dir: string) => {
    for (const entry of readdirSync(dir, { withFileTypes: true })) {
      const path = join(dir, entry.name);
      if (entry.isDirectory()) walk(path);
      else if (path.endsWith(".ts")) {
        const built = join(dist, relative(join(ROOT, "src"), path)).replace(/\.ts$/, ".js");
        if (!existsSync(built) || statSync(built).mtimeMs < statSync(path).mtimeMs) stale.push(relative(ROOT, path));
      }
    }
  };
  walk(join(ROOT, "src"));
  if (stale.length > 0) log(`warning: dist/ is older than ${stale.slice(0, 3).join(", ")}${stale.length > 3 ? " …" : ""}; run \`npm run build\` to bench the current source`);
}

/** The stand-in's own answers are the reference every proxied body is compared with, byte for byte. */
async function references(upstreamUrl: string, key: string): Promise<Record<Mode, { target: (origin: string) => Target; body: Buffer }>> {
  const headers = { "content-type": "application/json", authorization: `Bearer ${key}` };
  const messages = [{ role: "user", content: "Say hello." }];
  const bodies: Record<Mode, Buffer> = {
    json: Buffer.from(JSON.stringify({ model: "gpt-4o-mini", messages })),
    sse: Buffer.from(JSON.stringify({ model: "gpt-4o-mini", messages, stream: true, stream_options: { include_usage: true } })),
  };
  const target = (mode: Mode) => (origin: string): Target => ({ origin, path: "/v1/chat/completions", headers, body: bodies[mode] });
  const json = await fetchOnce(target("json")(upstreamUrl));
  const parsed = JSON.parse(json.body.toString("utf8")) as { usage?: unknown };
  if (json.status !== 200 || !parsed.usage) throw new Error(`the stand-in's JSON answer is not a completion with usage (HTTP ${json.status})`);
  const sse = await fetchOnce(target("sse")(upstreamUrl));
  const events = sse.body.toString("utf8").split("\n\n").filter(Boolean);
  const tokens = events.filter((e) => e.includes('"content":"tok')).length;
  if (sse.status !== 200 || events.length !== SSE_EVENTS + 3 || tokens !== SSE_EVENTS || !events.some((e) => e.includes('"usage"')) || events.at(-1) !== "data: [DONE]") {
    throw new Error(`the stand-in's SSE answer is not ${SSE_EVENTS} events + finish + usage + [DONE] (got ${events.length} events)`);
  }
  log(`reference answers: JSON ${json.body.length} B; SSE ${events.length} events (${SSE_EVENTS} content, finish, usage, [DONE]), ${sse.body.length} B`);
  return { json: { target: target("json"), body: json.body }, sse: { target: target("sse"), body: sse.body } };
}

function gitDescribe(): string | undefined {
  try {
    const commit = execFileSync("git", ["rev-parse", "--short", "HEAD"], { cwd: ROOT, encoding: "utf8" }).trim();
    const dirty = execFileSync("git", ["status", "--porcelain", "--", "src"], { cwd: ROOT, encoding: "utf8" }).trim() !== "";
    return dirty ? `${commit}+dirty-src` : commit;
  } catch {
    return undefined;
  }
}

async function main(): Promise<void> {
  checkBuild();
  const keys = (await import(new URL("../dist/auth/keys.js", import.meta.url).href)) as typeof import("../src/auth/keys.ts");
  const multiCore = cpus().length >= 2;
  const pin = !opts["no-pin"] && HAS_TASKSET && multiCore;
  const loadCpu = pin ? 0 : undefined;
  const proxyCpu = pin ? 1 : undefined;
  if (pin) pinSelf(0);
  if (!pin) log(`note: not pinning to CPUs (${opts["no-pin"] ? "--no-pin" : !HAS_TASKSET ? "taskset not found" : "fewer than 2 CPUs"}); figures are noisier`);

  const all = configurations();
  const wanted = opts.only ? new Set(["direct", ...opts.only.split(",").map((s) => s.trim())]) : undefined;
  const chosen = all.filter((c) => (wanted ? wanted.has(c.name) : !c.optional));
  const notes: string[] = [];
  for (const c of chosen.filter((c) => c.unavailable)) notes.push(`${c.name}: ${c.unavailable}`);
  const runnable = chosen.filter((c) => !c.unavailable);
  const modes: Mode[] = ["json", "sse"];
  const perConfigS = modes.length * (warmupS + connectionCounts.length * (durationS + 0.6)) + 1;
  const estimateS = runnable.length * perConfigS + 3;
  log(`tollgate bench: ${runnable.map((c) => c.name).join(", ")}; JSON and SSE at ${connectionCounts.join(", ")} connection(s), ${durationS} s each (+${warmupS} s warm-up); about ${Math.ceil(estimateS)} s`);
  for (const n of notes) log(`note: ${n}`);
  // Every loop below is bounded; this is the backstop should one not be.
  const watchdog = setTimeout(() => {
    log(`bench: still running after ${Math.ceil(estimateS * 2 + 60)} s; stopping everything`);
    killAllNow();
    process.exit(1);
  }, (estimateS * 2 + 60) * 1000);
  watchdog.unref();

  const tmp = mkdtempSync(join(tmpdir(), "tollgate-bench-"));
  tempDir = tmp;
  let upstream: Child | undefined;
  const rows: Row[] = [];
  const logs: Record<string, LogSummary | undefined> = {};
  const referenceBytes: Record<Mode, number> = { json: 0, sse: 0 };
  const started = new Date();
  try {
    upstream = spawnPinned("stand-in", process.execPath, [join(ROOT, "bench/peers/stand-in.ts"), "--events", String(SSE_EVENTS), "--interval", String(SSE_INTERVAL_MS), "--bytes", String(JSON_BYTES)], { cpu: loadCpu, ipc: true });
    const { port: upstreamPort, url: upstreamUrl } = await readyMessage<{ port: number; url: string }>(upstream);
    const key = keys.generateApiKey();
    const profileDir = opts["cpu-prof"] ? join(RESULTS, "profiles", started.toISOString().replace(/:/g, "-")) : undefined;
    if (profileDir) log(`CPU profiles of the proxies (profiling slows them: figures not comparable): ${relative(ROOT, profileDir)}`);
    const ctx: Context = { upstreamUrl, upstreamPort, keyHash: keys.hashApiKey(key), tmp, proxyCpu, profileDir };
    const refs = await references(upstreamUrl, key);
    referenceBytes.json = refs.json.body.length;
    referenceBytes.sse = refs.sse.body.length;

    const pids = (running: Running): Pids => ({ proxy: running.pid, upstream: upstream!.pid });
    for (const config of runnable) {
      let running: Running;
      try {
        running = await config.start(ctx);
      } catch (err) {
        notes.push(`${config.name}: could not start: ${(err as Error).message.split("\n")[0]}`);
        log(`${config.name}: could not start: ${(err as Error).message}`);
        continue;
      }
      let sent = 0;
      try {
        for (const mode of modes) {
          const ref = refs[mode];
          const target = ref.target(running.origin);
          if (warmupS > 0) sent += (await runLoad(target, ref.body, Math.max(...connectionCounts), warmupS * 1000)).requests;
          for (const connections of connectionCounts) {
            let row = await measureQuietly(config.name, mode, target, ref.body, connections, pids(running));
            sent += row.requests;
            // A neighbour's burst of work skews a run: measure it again while the retry budget lasts.
            if ((row.otherCpu ?? 0) > NOISY && retryBudgetS >= durationS) {
              retryBudgetS -= durationS;
              log(`  (other processes used ${Math.round((row.otherCpu ?? 0) * 100)}% of a core during that run; measuring it again)`);
              const again = await measureQuietly(config.name, mode, target, ref.body, connections, pids(running), quietWaitMs * 2);
              sent += again.requests;
              if ((again.otherCpu ?? 0) < (row.otherCpu ?? 0)) row = again;
            }
            rows.push(row);
            const problems = row.requests - row.intact;
            log(`  ${config.name.padEnd(16)} ${mode.padEnd(4)} ${String(connections).padStart(3)} conn: ${row.rps.toFixed(1).padStart(8)} req/s  p50 ${row.p50Ms?.toFixed(2)} ms  p99 ${row.p99Ms?.toFixed(2)} ms${problems ? `  ${problems} NOT INTACT (${row.firstError})` : ""}`);
            if (running.child && running.child.process.exitCode !== null) throw new Error(`${config.name} exited during the run\n${running.child.stderr()}`);
          }
        }
      } catch (err) {
        notes.push(`${config.name}: ${(err as Error).message.split("\n")[0]}`);
        log(`${config.name}: ${(err as Error).message}`);
      } finally {
        await running.stop();
      }
      if (running.logFile) {
        const summary = await summarizeLog(running.logFile);
        logs[config.name] = summary;
        if (summary) {
          if (summary.auditLines !== sent) notes.push(`${config.name}: ${sent} requests sent but ${summary.auditLines} audit lines written`);
          const notAllowed = summary.auditLines - (summary.reasons.allowed ?? 0);
          if (notAllowed > 0 || summary.problemCount > 0) notes.push(`${config.name}: audit: ${JSON.stringify(summary.reasons)}; statuses ${JSON.stringify(summary.statuses)}; ${summary.problemCount} warning/error log line(s)${summary.problems[0] ? `, first: ${summary.problems[0]}` : ""}`);
        }
      }
    }
  } finally {
    await stopAll();
    rmSync(tmp, { recursive: true, force: true });
  }

  compareToDirect(rows, "direct");
  const table = ordered(rows, all.map((c) => c.name));
  process.stdout.write("\n" + markdownTable(table) + "\n\n");
  for (const row of table) {
    if (row.requests !== row.intact) process.stdout.write(`! ${row.config} ${row.mode} ${row.connections} conn: ${row.requests - row.intact} of ${row.requests} responses not intact (${row.non200} non-200, ${row.mismatched} differing bodies, ${row.transportErrors} transport errors; first: ${row.firstError})\n`);
  }
  const noisy = table.filter((r) => (r.otherCpu ?? 0) > NOISY);
  if (noisy.length > 0) process.stdout.write(`! ${noisy.length} row(s) marked "!" ran while other processes used more than ${NOISY * 100}% of a core: rerun when the machine is quiet\n`);
  for (const n of notes) process.stdout.write(`note: ${n}\n`);

  const report = {
    date: started.toISOString(),
    tollgate: gitDescribe(),
    node: process.version,
    cpus: cpus().length,
    cpuModel: cpus()[0]?.model,
    pinning: pin ? { loadGeneratorAndStandIn: loadCpu, proxy: proxyCpu } : null,
    durationS,
    warmupS,
    connections: connectionCounts,
    workload: { json: { responseBytes: referenceBytes.json }, sse: { events: SSE_EVENTS, intervalMs: SSE_INTERVAL_MS, usageChunk: true, done: true, responseBytes: referenceBytes.sse } },
    loadGenerator: "bench/lib/load.ts: closed loop, one undici Client per connection, pipelining 1",
    configurations: all.map((c) => ({ name: c.name, description: c.description, ...(c.unavailable ? { skipped: c.unavailable } : {}) })),
    rows: table,
    tollgateLogs: logs,
    notes,
  };
  if (opts["cpu-prof"]) process.stdout.write(`not written to bench/results: figures taken under --cpu-prof are not comparable\n`);
  else if (!opts["no-write"]) {
    mkdirSync(RESULTS, { recursive: true });
    const text = JSON.stringify(report, null, 2) + "\n";
    const file = join(RESULTS, `${started.toISOString().replace(/:/g, "-")}.json`);
    writeFileSync(file, text);
    writeFileSync(join(RESULTS, "latest.json"), text);
    process.stdout.write(`written: ${relative(ROOT, file)} and bench/results/latest.json\n`);
  }
  clearTimeout(watchdog);
}

/** Policies, nginx config and Tollgate's log for this run; removed at the end, on error and on Ctrl-C too. */
let tempDir: string | undefined;

process.once("exit", () => {
  killAllNow();
  if (tempDir) rmSync(tempDir, { recursive: true, force: true });
});
for (const signal of ["SIGINT", "SIGTERM"] as const) {
  process.once(signal, () => {
    log(`bench: ${signal}; stopping children`);
    void stopAll().finally(() => process.exit(130));
  });
}

main().catch(async (err: unknown) => {
  log(`bench failed: ${err instanceof Error ? err.stack : String(err)}`);
  await stopAll();
  process.exitCode = 1;
});
