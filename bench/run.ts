/**
 * Tollgate's benchmark. The same load straight to a stand-in upstream, through nginx, HAProxy (jwt_verify), a
 * bare undici forwarder and Tollgate in six configurations (public route, API key, JWT cached and first-seen,
 * JWT + Redis rate limits, the full path with a budget): JSON and SSE closed loops at 1 and 32 connections
 * and a JSON open loop at 2,000 req/s, in interleaved rounds (medians reported). Then Tollgate's RSS idle and
 * with 1,000 held-open streams, and how fast a client disconnect aborts the upstream request. Prints one
 * table with ratios to direct, nginx, HAProxy and the bare forwarder, and the issue's targets as PASS/FAIL;
 * writes the same to bench/results/.
 *
 *   npm run bench                      # builds, then: node bench/run.ts   (~8 min)
 *   node bench/run.ts --quick          # one short round (~2 min): a smoke test, not figures to quote
 *   node bench/run.ts --only tollgate-full --cpu-prof
 *
 * Tollgate, the stand-in and the Node peers run from Tollgate's build (dist/): run `npm run build` first.
 */
import { parseArgs } from "node:util";
import { existsSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir, cpus } from "node:os";
import { join, relative, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { runLoad, runOpenLoop, OPEN_LOOP_WARM, type LoadResult, type Spacing } from "./lib/load.ts";
import { measure, type Pids } from "./lib/measure.ts";
import { spawnPinned, readyMessage, stopAll, killAllNow, pinSelf, waitForQuiet, rssKiB, gdbCanCall, HAS_GDB, HAS_TASKSET, type Child } from "./lib/procs.ts";
import { configurations, tokenCache, collectGarbage, TOLLGATE_NODE_FLAGS, TOLLGATE_ENV, type Configuration, type Context, type Running } from "./lib/targets.ts";
import { compare, medianRows, markdownTable, ordered, workloadLabel, NOISY, type Row } from "./lib/report.ts";
import { summarizeLog, type LogSummary } from "./lib/logs.ts";
import { startIssuer, TOKEN_CACHE_ENTRIES, type BenchIssuer } from "./lib/issuer.ts";
import { openRedis, type BenchRedis } from "./lib/redis.ts";
import { StandInChannel, abortProbes, heldStreams, streamLines, type AbortFigures, type StreamFigures } from "./lib/streams.ts";
import { Credentials, references, target, streamRequest, workloads, type Workload } from "./lib/workloads.ts";
import { verdicts, verdictLines } from "./lib/verdicts.ts";
import { checkBuild, gitDescribe } from "./lib/build.ts";

const ROOT = fileURLToPath(new URL("../", import.meta.url));
const RESULTS = join(ROOT, "bench", "results");
const SPACING: Spacing = { count: 20, spacingMs: 20 };
const JSON_BYTES = 1024;
/** Configurations whose RSS with held-open streams and client-disconnect abort time are measured. */
const STREAM_CONFIGS = ["tollgate-full", "tollgate-key", "corridor-floor", "corridor-floor-full"];
const BASELINES = { direct: "direct", nginx: "nginx", haproxy: "haproxy-jwt", undici: "undici-dispatch" };

const { values: opts } = parseArgs({
  options: {
    duration: { type: "string" },
    warmup: { type: "string" },
    rounds: { type: "string" },
    quick: { type: "boolean", default: false },
    connections: { type: "string", default: "1,32" },
    rate: { type: "string", default: "2000" },
    streams: { type: "string" },
    aborts: { type: "string" },
    only: { type: "string" },
    "no-pin": { type: "boolean", default: false },
    "no-write": { type: "boolean", default: false },
    "cpu-prof": { type: "boolean", default: false },
    "tollgate-node-flags": { type: "string" },
    "tollgate-env": { type: "string" },
    "sse-stagger": { type: "boolean", default: false },
    "trace-open": { type: "string" },
    ab: { type: "string" },
    help: { type: "boolean", short: "h", default: false },
  },
});
if (opts.help) {
  process.stdout.write(
    "node bench/run.ts [--quick] [--duration S] [--warmup S] [--rounds N] [--connections 1,32] [--rate 2000] [--streams 1000] [--aborts 20] [--only a,b] [--no-pin] [--no-write] [--cpu-prof] [--tollgate-node-flags='FLAGS'] [--tollgate-env='NAME=VALUE ...'] [--sse-stagger] [--trace-open DIR] [--ab OTHER_CHECKOUT]\n",
  );
  process.exit(0);
}
const quick = opts.quick;
const durationS = Number(opts.duration ?? (quick ? 1 : 3));
const warmupS = Number(opts.warmup ?? (quick ? 0.3 : 1));
const rounds = Number(opts.rounds ?? (quick ? 1 : 2));
const openRate = Number(opts.rate);
const streamCount = Number(opts.streams ?? (quick ? 200 : 1000));
const abortTries = Number(opts.aborts ?? (quick ? 5 : 20));
/** Node flags for Tollgate's processes: the shipped ones by default; "" for V8's defaults. */
const tollgateNodeFlags = opts["tollgate-node-flags"] === undefined ? TOLLGATE_NODE_FLAGS : opts["tollgate-node-flags"].split(/\s+/).filter(Boolean);
/** Environment for Tollgate's processes (and the floors'): the shipped one by default; "" for none beyond the bench's own. */
const tollgateEnv = opts["tollgate-env"] === undefined ? TOLLGATE_ENV : parseEnv(opts["tollgate-env"]);

function parseEnv(text: string): Record<string, string> {
  const env: Record<string, string> = {};
  for (const pair of text.split(/\s+/).filter(Boolean)) {
    const m = /^([A-Za-z_][A-Za-z0-9_]*)=(.*)$/.exec(pair);
    if (!m) throw new Error(`bad --tollgate-env entry ${JSON.stringify(pair)}: NAME=VALUE expected`);
    env[m[1]!] = m[2]!;
  }
  return env;
}
const connectionCounts = opts.connections.split(",").map(Number).filter((n) => n > 0);
const traceDir = opts["trace-open"];
if (traceDir !== undefined) mkdirSync(traceDir, { recursive: true });
if (!(durationS > 0) || !(warmupS >= 0) || !(rounds >= 1) || !(openRate >= 0) || !(streamCount >= 0) || !(abortTries >= 0) || connectionCounts.length === 0) {
  throw new Error("bad --duration, --warmup, --rounds, --rate, --streams, --aborts or --connections");
}

/** How long each measurement waits at most for the machine to be quiet first. */
const quietWaitMs = quick ? 600 : 1000;
/** Seconds the bench may spend measuring again the runs that other processes disturbed. */
let retryBudgetS = quick ? 3 : 30;

const log = (line: string) => process.stderr.write(line + "\n");

/** Children, temp files, Redis keys and the JWKS server of this run; released at the end, on error and on Ctrl-C. */
let tempDir: string | undefined;
let redisHandle: BenchRedis | undefined;
let issuerHandle: BenchIssuer | undefined;

async function release(notes: string[]): Promise<void> {
  await stopAll();
  if (redisHandle) {
    const r = redisHandle;
    redisHandle = undefined;
    try {
      const deleted = await r.cleanup();
      if (deleted > 0) log(`redis: deleted this run's ${deleted} key(s) under ${r.keyPrefix}`);
    } catch (err) {
      notes.push(`redis: could not delete the keys under ${r.keyPrefix}: ${(err as Error).message}`);
    }
    await r.close();
  }
  await issuerHandle?.close();
  issuerHandle = undefined;
  if (tempDir) rmSync(tempDir, { recursive: true, force: true });
  tempDir = undefined;
}

async function main(): Promise<void> {
  checkBuild(ROOT, log);
  const keys = (await import(new URL("../dist/auth/keys.js", import.meta.url).href)) as typeof import("../src/auth/keys.ts");
  const notes: string[] = [];
  // --ab DIR: each chosen Tollgate configuration also runs from DIR's build (DIR/dist, built there first) as
  // `<name>@b`, in the same interleaved rounds: an A/B of two builds under the same disturbances.
  const abDist = opts.ab === undefined ? undefined : resolve(opts.ab, "dist");
  if (abDist && !existsSync(join(abDist, "server.js"))) throw new Error(`--ab: no build at ${abDist} (run tsc -p tsconfig.json there)`);
  const only = opts.only?.split(",").map((s) => s.trim());
  const wanted = only ? new Set(["direct", ...only, ...(abDist ? only.map((n) => `${n}@b`) : [])]) : undefined;
  const pick = (list: Configuration[]) => list.filter((c) => (wanted ? wanted.has(c.name) : !c.optional));
  const needsRedis = pick(configurations(undefined, abDist)).some((c) => c.redis);
  const needsPool = pick(configurations(undefined)).some((c) => c.credential === "jwt-fresh");

  // Tokens are signed before this process is pinned: the signing threads may use every core while nothing runs.
  const signStart = performance.now();
  const issuer = await startIssuer(needsPool ? TOKEN_CACHE_ENTRIES + 2000 : 0);
  issuerHandle = issuer;
  if (needsPool) log(`signed ${issuer.pool.length} RS256 tokens for the first-seen path in ${((performance.now() - signStart) / 1000).toFixed(1)} s (not measured)`);

  const multiCore = cpus().length >= 2;
  const pin = !opts["no-pin"] && HAS_TASKSET && multiCore;
  const loadCpu = pin ? 0 : undefined;
  const proxyCpu = pin ? 1 : undefined;
  if (pin) pinSelf(0);
  if (!pin) log(`note: not pinning to CPUs (${opts["no-pin"] ? "--no-pin" : !HAS_TASKSET ? "taskset not found" : "fewer than 2 CPUs"}); figures are noisier`);
  // Asked once, before anything is measured: whether the held-stream readings can include malloc's figures.
  if (streamCount > 0 && !gdbCanCall()) log(`note: malloc's figures will read n/a: ${HAS_GDB ? "gdb cannot call a function in a process on this machine (seen: gdb 13 on an Intel AMX CPU)" : "gdb not found"}`);

  const redis = needsRedis ? await openRedis() : undefined;
  if (typeof redis === "object") redisHandle = redis;
  const all = configurations(typeof redis === "string" ? redis : undefined, abDist);
  const chosen = pick(all);
  for (const c of chosen.filter((c) => c.unavailable)) notes.push(`${c.name}: ${c.unavailable}`);
  const runnable = chosen.filter((c) => !c.unavailable);
  const plan = workloads(connectionCounts, openRate);
  const runS = (w: Workload) => durationS + 0.4 + (w.mode === "sse" ? 0.45 : 0);
  const streamS = (STREAM_CONFIGS.filter((n) => runnable.some((c) => c.name === n)).length + 1) * (abortTries * 0.05 + streamCount / 50 * 0.06 + 4);
  const estimateS = rounds * runnable.length * plan.reduce((s, w) => s + runS(w), 0) + runnable.length * (2 * warmupS + 1.5) + streamS + 10;
  log(`tollgate bench: ${runnable.map((c) => c.name).join(", ")}`);
  log(`  ${plan.map((w) => `${w.mode} ${workloadLabel(w)}`).join(", ")}; ${durationS} s each, ${rounds} interleaved round(s); about ${Math.ceil(estimateS / 60)} min`);
  for (const n of notes) log(`note: ${n}`);
  // Every loop below is bounded; this is the backstop should one not be.
  const watchdogS = Math.ceil(estimateS * 2 + 120);
  const watchdog = setTimeout(() => {
    log(`bench: still running after ${watchdogS} s; stopping everything`);
    killAllNow();
    process.exit(1);
  }, watchdogS * 1000);
  watchdog.unref();

  const tmp = mkdtempSync(join(tmpdir(), "tollgate-bench-"));
  tempDir = tmp;
  const roundRows: Row[][] = [];
  const logs: Record<string, LogSummary | undefined> = {};
  const caches: Record<string, { hit: number; miss: number } | undefined> = {};
  const rss: Record<string, { startKiB: number | undefined; afterRoundsKiB?: number | undefined }> = {};
  const streamFigures: StreamFigures[] = [];
  let directAbort: AbortFigures | undefined;
  const referenceBytes = { json: 0, sse: 0 };
  const started = new Date();
  const sent = new Map<string, number>();
  const count = (name: string, n: number) => sent.set(name, (sent.get(name) ?? 0) + n);
  const live: { config: Configuration; running: Running }[] = [];
  try {
    const upstream: Child = spawnPinned("stand-in", process.execPath, [join(ROOT, "bench/peers/stand-in.ts"), "--events", String(SPACING.count), "--interval", String(SPACING.spacingMs), "--bytes", String(JSON_BYTES)], { cpu: loadCpu, ipc: true });
    const ready = await readyMessage<{ port: number; url: string; holdUrl: string }>(upstream);
    const channel = new StandInChannel(upstream.process);
    const key = keys.generateApiKey();
    const credentials = new Credentials(key, issuer);
    log(`Tollgate runs with Node flags: ${tollgateNodeFlags.join(" ") || "(none: V8's defaults)"}; environment: ${Object.entries(tollgateEnv).map(([k, v]) => `${k}=${v}`).join(" ") || "(the bench's own)"}`);
    const profileDir = opts["cpu-prof"] ? join(RESULTS, "profiles", started.toISOString().replace(/:/g, "-")) : undefined;
    if (profileDir) log(`CPU profiles of the Node proxies (profiling slows them: figures not comparable): ${relative(ROOT, profileDir)}`);
    const ctx: Context = { upstreamUrl: ready.url, upstreamPort: ready.port, holdUrl: ready.holdUrl, keyHash: keys.hashApiKey(key), issuer, redis: typeof redis === "object" ? redis : undefined, tmp, proxyCpu, profileDir, tollgateNodeFlags, tollgateEnv };
    const refs = await references(ready.url, credentials.headers("key"), SPACING);
    referenceBytes.json = refs.json.length;
    referenceBytes.sse = refs.sse.length;
    log(`reference answers: JSON ${refs.json.length} B; SSE ${SPACING.count + 3} events (${SPACING.count} content ${SPACING.spacingMs} ms apart, finish, usage, [DONE]), ${refs.sse.length} B`);

    for (const config of runnable) {
      try {
        const running = await config.start(ctx);
        live.push({ config, running });
        if (config.tollgate && running.pid) rss[config.name] = { startKiB: rssKiB(running.pid) };
      } catch (err) {
        notes.push(`${config.name}: could not start: ${(err as Error).message.split("\n")[0]}`);
        log(`${config.name}: could not start: ${(err as Error).message}`);
      }
    }
    const headersOf = new Map(live.map(({ config }) => [config.name, credentials.supplier(config.credential)]));
    const pids = (l: (typeof live)[number]): Pids => ({ proxy: l.running.pid, upstream: upstream.pid, ...(l.config.redis && typeof redis === "object" ? { redis: redis.pid } : {}) });
    const failed = new Set<string>();

    // Warm-up (not counted): JIT, connection pools, the JWKS fetch, Redis scripts.
    for (const l of live) {
      const headers = headersOf.get(l.config.name)!;
      for (const body of ["json", "sse"] as const) {
        const r = await runLoad(target(l.running.origin, body, headers), refs[body], Math.max(...connectionCounts), Math.max(warmupS, body === "sse" ? 0.5 : 0) * 1000, body === "sse" ? SPACING : undefined);
        count(l.config.name, r.requests);
        if (r.intact < r.requests) log(`  ${l.config.name} warm-up ${body}: ${r.requests - r.intact} of ${r.requests} not intact (${r.firstError})`);
      }
    }

    const runOne = async (l: (typeof live)[number], w: Workload, round: number): Promise<Row> => {
      const body = w.mode === "sse" ? "sse" : "json";
      const t = target(l.running.origin, body, headersOf.get(l.config.name)!);
      const trace = traceDir === undefined ? undefined : join(traceDir, `${l.config.name}-r${round + 1}.json`);
      const staggerMs = w.mode === "sse" && opts["sse-stagger"] ? SPACING.count * SPACING.spacingMs : 0;
      const load = (): Promise<LoadResult> =>
        w.mode === "open" ? runOpenLoop(t, refs.json, w.rate!, durationS * 1000, undefined, undefined, trace) : runLoad(t, refs[body], w.connections, durationS * 1000, w.mode === "sse" ? SPACING : undefined, undefined, staggerMs);
      const measured = async (waitMs: number) => {
        const quiet = await waitForQuiet(waitMs);
        if (quiet !== undefined && quiet >= NOISY) log(`  (the machine is busy: ${Math.round(quiet * 100)}% of its CPUs used by other work; measuring anyway)`);
        const row = await measure(l.config.name, w.mode, load, pids(l));
        count(l.config.name, row.requests + (w.mode === "open" ? OPEN_LOOP_WARM : 0));
        return row;
      };
      let row = await measured(quietWaitMs);
      // A neighbour's burst of work skews a run: measure it again while the retry budget lasts.
      if ((row.otherCpu ?? 0) > NOISY && retryBudgetS >= durationS) {
        retryBudgetS -= durationS;
        log(`  (other processes used ${Math.round((row.otherCpu ?? 0) * 100)}% of a core during that run; measuring it again)`);
        const again = await measured(quietWaitMs * 2);
        if ((again.otherCpu ?? 0) < (row.otherCpu ?? 0)) row = again;
      }
      const problems = row.requests - row.intact;
      const f = (v: number | undefined) => (v === undefined ? "-" : v.toFixed(2));
      log(
        `  r${round + 1} ${l.config.name.padEnd(18)} ${w.mode.padEnd(4)} ${workloadLabel(w).padStart(6)}: ${row.rps.toFixed(1).padStart(8)} req/s  p50 ${f(row.p50Ms)}  p99 ${f(row.p99Ms)}  p99.9 ${f(row.p999Ms)} ms` +
          `${row.requestsPerProxyCpuS ? `  ${Math.round(row.requestsPerProxyCpuS)} req/CPU-s` : ""}${problems ? `  ${problems} NOT INTACT (${row.firstError})` : ""}`,
      );
      return row;
    };

    for (let round = 0; round < rounds; round++) {
      // Interleaved: every configuration runs each workload before the next workload starts; odd rounds go backwards.
      const order = round % 2 === 0 ? live : [...live].reverse();
      const rows: Row[] = [];
      for (const w of plan) {
        for (const l of order) {
          if (failed.has(l.config.name)) continue;
          try {
            rows.push(await runOne(l, w, round));
            if (l.running.child && l.running.child.process.exitCode !== null) throw new Error(`exited during the run\n${l.running.child.stderr()}`);
          } catch (err) {
            failed.add(l.config.name);
            notes.push(`${l.config.name}: ${(err as Error).message.split("\n")[0]}`);
            log(`${l.config.name}: ${(err as Error).message}`);
          }
        }
      }
      roundRows.push(rows);
    }

    // The JWT cache's own count of hits and misses: the first-seen path must miss, the reused token hit.
    for (const l of live.filter((x) => x.config.credential.startsWith("jwt") && x.config.tollgate)) caches[l.config.name] = await tokenCache(l.running.adminOrigin);
    // What the round instances hold once the load is over (heap grown under load, garbage not yet collected).
    await new Promise((r) => setTimeout(r, 1000));
    for (const l of live) if (l.config.tollgate && l.running.pid && rss[l.config.name]) rss[l.config.name]!.afterRoundsKiB = rssKiB(l.running.pid);

    // Long-lived streams, on a fresh process of each configuration (a heap that served minutes of load would
    // hide the streams' memory in its garbage): RSS at start, idle after a short warm-up, with N streams held
    // open; then the client-disconnect abort time.
    if (abortTries > 0 && live.length > 0) {
      directAbort = await abortProbes(streamRequest(ready.holdUrl, credentials.headers("key")), channel, abortTries, "direct");
      log(`  direct: client disconnect seen upstream after p50 ${directAbort.p50Ms?.toFixed(2)} ms, max ${directAbort.maxMs?.toFixed(2)} ms`);
    }
    for (const config of runnable.filter((c) => STREAM_CONFIGS.includes(c.name) && live.some((l) => l.config === c && !failed.has(c.name)))) {
      let fresh: Running | undefined;
      const name = `${config.name}-streams`;
      try {
        fresh = await config.start(ctx, "streams");
        const figures: StreamFigures = { config: config.name, rssAtStartKiB: rssKiB(fresh.pid!), rssAfterRoundsKiB: rss[config.name]?.afterRoundsKiB };
        const headers = credentials.headers(config.credential);
        for (const body of ["json", "sse"] as const) count(name, (await runLoad(target(fresh.origin, body, headers), refs[body], 4, body === "json" ? 300 : 1, body === "sse" ? SPACING : undefined)).requests);
        const req = streamRequest(fresh.origin, headers);
        if (streamCount > 0) {
          figures.held = await heldStreams(req, fresh.pid!, channel, streamCount, collectGarbage(fresh));
          count(name, figures.held.opened);
          const h = figures.held;
          log(
            `  ${config.name} (fresh process): RSS ${figures.rssAtStartKiB} KiB at start, ${h.rssIdleKiB} KiB idle (${h.rssIdleGcKiB} after GC) → ${h.rssOpenKiB} KiB with ${h.opened}/${h.streams} streams open (${h.rssOpenGcKiB} after GC; ` +
              `${h.perStreamKiB?.toFixed(1)} KiB each, ${h.perStreamGcKiB?.toFixed(1)} after GC; upstream saw ${h.upstreamOpen}) → ${h.rssAfterKiB} KiB after; all upstream streams closed ${h.allClosedMs?.toFixed(0)} ms after the clients left`,
          );
        }
        if (abortTries > 0) {
          figures.abort = await abortProbes(req, channel, abortTries, config.name);
          count(name, abortTries - figures.abort.failed);
          log(`  ${config.name}: client disconnect aborted upstream after p50 ${figures.abort.p50Ms?.toFixed(2)} ms, max ${figures.abort.maxMs?.toFixed(2)} ms (${figures.abort.notAborted} not aborted, ${figures.abort.failed} failed)`);
        }
        streamFigures.push(figures);
      } catch (err) {
        notes.push(`${name}: ${(err as Error).message.split("\n")[0]}`);
        log(`${name}: ${(err as Error).message}`);
      } finally {
        if (fresh) {
          await fresh.stop();
          live.push({ config: { ...config, name }, running: { ...fresh, stop: async () => undefined } });
        }
      }
    }
  } finally {
    await Promise.all(live.map((l) => l.running.stop()));
    for (const l of live) {
      if (!l.running.logFile) continue;
      const summary = await summarizeLog(l.running.logFile);
      logs[l.config.name] = summary;
      if (!summary) continue;
      const expected = sent.get(l.config.name) ?? 0;
      if (summary.auditLines !== expected) notes.push(`${l.config.name}: ${expected} requests sent but ${summary.auditLines} audit lines written`);
      const unexpected = Object.entries(summary.reasons).filter(([reason]) => reason !== "allowed" && reason !== "client_aborted");
      if (unexpected.length > 0 || summary.problemCount > 0) notes.push(`${l.config.name}: audit: ${JSON.stringify(summary.reasons)}; statuses ${JSON.stringify(summary.statuses)}; ${summary.problemCount} warning/error log line(s)${summary.problems[0] ? `, first: ${summary.problems[0]}` : ""}`);
    }
    await release(notes);
  }

  for (const rows of roundRows) compare(rows, BASELINES);
  const order = all.map((c) => c.name);
  const table = ordered(medianRows(roundRows.flat()), order);
  const judged = verdicts(table, streamFigures);
  process.stdout.write("\n" + markdownTable(table) + "\n\n");
  process.stdout.write(streamLines(streamFigures, directAbort) + "\n\n");
  process.stdout.write(verdictLines(judged) + "\n\n");
  for (const row of table) {
    if (row.requests !== row.intact) process.stdout.write(`! ${row.config} ${row.mode} ${workloadLabel(row)}: ${row.requests - row.intact} of ${row.requests} responses not intact (${row.non200} non-200, ${row.mismatched} differing bodies, ${row.transportErrors} transport errors; first: ${row.firstError})\n`);
  }
  const noisy = table.filter((r) => (r.otherCpu ?? 0) > NOISY);
  if (noisy.length > 0) process.stdout.write(`! ${noisy.length} row(s) marked "!" ran while other processes used more than ${NOISY * 100}% of a core in at least one round: rerun when the machine is quiet\n`);
  for (const [name, c] of Object.entries(caches)) if (c) notes.push(`${name}: JWT cache ${c.hit} hits, ${c.miss} misses (warm-up and stream tests included)`);
  if (opts["sse-stagger"]) notes.push("SSE streams staggered (--sse-stagger): a diagnostic, not the issue's method; the streaming targets are judged on streams started together");
  if (traceDir !== undefined) notes.push(`open-loop traces in ${traceDir} (node bench/open-trace.ts FILE)`);
  for (const n of notes) process.stdout.write(`note: ${n}\n`);

  const report = {
    date: started.toISOString(),
    tollgateNodeFlags,
    tollgateEnv,
    tollgate: gitDescribe(ROOT),
    node: process.version,
    cpus: cpus().length,
    cpuModel: cpus()[0]?.model,
    pinning: pin ? { loadGeneratorStandInAndJwks: loadCpu, proxy: proxyCpu } : null,
    durationS,
    warmupS,
    rounds,
    connections: connectionCounts,
    openLoopRate: openRate,
    workload: { json: { responseBytes: referenceBytes.json }, sse: { events: SPACING.count, intervalMs: SPACING.spacingMs, usageChunk: true, done: true, responseBytes: referenceBytes.sse } },
    loadGenerator: "bench/lib/load.ts: closed loop (one undici Client per connection, pipelining 1) and open loop (latency from the intended send time)",
    configurations: all.map((c) => ({ name: c.name, description: c.description, credential: c.credential, ...(c.unavailable ? { skipped: c.unavailable } : {}) })),
    rows: table,
    roundRows,
    targets: judged,
    streams: { perConfig: streamFigures, directAbort },
    rssKiB: rss,
    jwtCache: caches,
    tollgateLogs: logs,
    notes,
  };
  if (opts["cpu-prof"]) process.stdout.write(`not written to bench/results: figures taken under --cpu-prof are not comparable\n`);
  else if (opts.ab !== undefined) process.stdout.write(`not written to bench/results: an --ab run compares two builds (rows named @b ran from ${opts.ab})\n`);
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

process.once("exit", () => {
  killAllNow();
  if (tempDir) rmSync(tempDir, { recursive: true, force: true });
});
for (const signal of ["SIGINT", "SIGTERM"] as const) {
  process.once(signal, () => {
    log(`bench: ${signal}; stopping children`);
    void release([]).finally(() => process.exit(130));
  });
}

main().catch(async (err: unknown) => {
  log(`bench failed: ${err instanceof Error ? err.stack : String(err)}`);
  await release([]);
  process.exitCode = 1;
});
