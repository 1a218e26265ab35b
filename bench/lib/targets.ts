/**
 * The configurations the bench compares. Each starts its proxy as a child process pinned to the proxy CPU
 * (nothing to start for `direct`), says where to send requests and which credential each request carries.
 */
import { closeSync, mkdirSync, openSync, readFileSync, writeFileSync } from "node:fs";
import { stripTypeScriptTypes } from "node:module";
import { execFileSync } from "node:child_process";
import { isAbsolute, join } from "node:path";
import { fileURLToPath } from "node:url";
import { spawnPinned, readyMessage, waitForPort, freePort, stop, onPath, type Child } from "./procs.ts";
import { tollgatePolicy, nginxConfig, haproxyConfig, type PolicyOptions, type TollgateAuth } from "./configs.ts";
import { AUDIENCE, type BenchIssuer } from "./issuer.ts";
import type { BenchRedis } from "./redis.ts";

const PEERS = fileURLToPath(new URL("../peers/", import.meta.url));
/** Where peers run from as JavaScript (see `asJavaScript`): in dist/, so their `../../dist/` and package imports resolve. */
const STRIPPED = fileURLToPath(new URL("../../dist/bench-peers/", import.meta.url));

export interface Context {
  upstreamUrl: string;
  upstreamPort: number;
  holdUrl: string;
  keyHash: string;
  issuer: BenchIssuer;
  redis: BenchRedis | undefined;
  tmp: string;
  proxyCpu: number | undefined;
  /** Where Node proxies write a CPU profile (--cpu-prof), if asked. */
  profileDir: string | undefined;
  /** Node flags Tollgate runs with: the shipped ones (TOLLGATE_NODE_FLAGS) unless --tollgate-node-flags says otherwise. */
  tollgateNodeFlags: string[];
  /** Environment variables Tollgate runs with, over the bench's own: the shipped ones (TOLLGATE_ENV) unless --tollgate-env says otherwise. */
  tollgateEnv: Readonly<Record<string, string>>;
}

/**
 * The Node flags Tollgate ships with (deploy/Dockerfile's ENTRYPOINT and `npm start`; test/deploy checks that the
 * three agree). On a machine with a lot of memory V8 sizes the young generation's semi-spaces at up to 64 MB,
 * which the proxy's short-lived garbage fills before it is collected: 2 MB semi-spaces took idle RSS after load
 * from ~260 to ~170 MB and each held-open stream from ~33 to ~24 KB, for a few percent of CPU (bench/README.md).
 */
export const TOLLGATE_NODE_FLAGS = ["--max-semi-space-size=2"];

/**
 * The environment Tollgate ships with (deploy/Dockerfile's ENV and `npm start`; test/deploy checks that the three
 * agree). MALLOC_ARENA_MAX=2: glibc gives each thread that allocates (the main thread, V8's GC and compiler workers,
 * libuv's pool) an arena of its own, up to 8 per core; the native memory of sockets and parsers then spreads over
 * arenas whose free space no other thread reuses. Two arenas took the RSS per held-open stream on the full path
 * from a median of 29.2 to 26.3 KB (7–8 fresh-process runs each; the API-key path 26.7 → 23.2 KB; the spread between
 * runs stayed as wide), and CPU per request showed no direction in three interleaved pairs (bench/README.md, row 14).
 */
export const TOLLGATE_ENV: Readonly<Record<string, string>> = { MALLOC_ARENA_MAX: "2" };

export interface Running {
  origin: string;
  /** The proxy's pid, for its CPU time; undefined for direct. */
  pid: number | undefined;
  child: Child | undefined;
  /** Tollgate's admin listener (metrics). */
  adminOrigin?: string;
  /** Tollgate's stdout (audit and operational log lines). */
  logFile?: string;
  stop(): Promise<void>;
}

/** What each request carries: nothing, the API key, the one reused JWT, or the next token of the pool. */
export type CredentialKind = "none" | "key" | "jwt" | "jwt-fresh";

export interface Configuration {
  name: string;
  description: string;
  credential: CredentialKind;
  /** Tollgate configurations (audit log, metrics, held streams). */
  tollgate: boolean;
  /** Uses the machine's Redis. */
  redis?: boolean;
  /** Why it is left out on this machine, if it is. */
  unavailable?: string;
  /** Diagnostic configurations run only when named in --only. */
  optional?: boolean;
  /** `instance` names a second, separate process of the same configuration (its own policy, log and profile). */
  start(ctx: Context, instance?: string): Promise<Running>;
  /** Tollgate configurations: the same configuration run from another checkout's build (`dist` directory), for --ab. */
  fromBuild?(dist: string): Configuration;
}

/** `tollgateRuntime`: Tollgate's Node flags and environment (Tollgate and the corridor floors; other peers run plain). */
async function startNodePeer(name: string, script: string, args: string[], ctx: Context, stdout?: number, tollgateRuntime?: { extraFlags: string[] }): Promise<Running> {
  const profile = ctx.profileDir ? ["--cpu-prof", "--cpu-prof-dir", ctx.profileDir, "--cpu-prof-name", `${name}.cpuprofile`] : [];
  const nodeFlags = tollgateRuntime ? [...ctx.tollgateNodeFlags, ...tollgateRuntime.extraFlags] : [];
  const env = tollgateRuntime ? { ...process.env, ...ctx.tollgateEnv } : undefined;
  const child = spawnPinned(name, process.execPath, [...profile, ...nodeFlags, isAbsolute(script) ? script : join(PEERS, script), ...args], { cpu: ctx.proxyCpu, ipc: true, ...(stdout !== undefined ? { stdout } : {}), ...(env ? { env } : {}) });
  try {
    const { port, adminPort } = await readyMessage<{ port: number; adminPort?: number }>(child);
    return { origin: `http://127.0.0.1:${port}`, pid: child.pid, child, ...(adminPort ? { adminOrigin: `http://127.0.0.1:${adminPort}` } : {}), stop: () => stop(child) };
  } catch (err) {
    await stop(child);
    throw err;
  }
}

interface TollgateVariant {
  name: string;
  description: string;
  auth: TollgateAuth;
  credential: CredentialKind;
  limits?: "rates" | "full";
  models?: boolean;
  audit?: boolean;
  optional?: boolean;
}

function tollgate(v: TollgateVariant, redisProblem: string | undefined, dist?: string): Configuration {
  return {
    name: dist ? `${v.name}@b` : v.name,
    description: v.description,
    credential: v.credential,
    tollgate: true,
    ...(v.limits ? { redis: true } : {}),
    ...(v.limits && redisProblem ? { unavailable: redisProblem } : {}),
    ...(v.optional ? { optional: true } : {}),
    ...(dist ? {} : { fromBuild: (other: string) => tollgate(v, redisProblem, other) }),
    async start(ctx, instance) {
      const name = (instance ? `${v.name}-${instance}` : v.name) + (dist ? "-b" : "");
      const policy = join(ctx.tmp, `${name}.yaml`);
      const options: PolicyOptions = {
        upstreamUrl: ctx.upstreamUrl,
        holdUrl: ctx.holdUrl,
        auth: v.auth,
        keyHash: ctx.keyHash,
        jwt: { issuer: ctx.issuer.issuer, jwksUri: ctx.issuer.jwksUri, audience: AUDIENCE },
        ...(v.models ? { models: true } : {}),
        ...(v.audit === false ? { audit: false } : {}),
        ...(v.limits && ctx.redis ? { limits: { redisUrl: ctx.redis.url, keyPrefix: ctx.redis.keyPrefix, budget: v.limits === "full" } } : {}),
      };
      writeFileSync(policy, tollgatePolicy(options));
      const logFile = join(ctx.tmp, `${name}.log`);
      const fd = openSync(logFile, "w");
      try {
        // The held-streams instance may be asked over IPC to collect garbage (RSS of what the streams retain).
        const running = await startNodePeer(name, "tollgate.mjs", ["--policy", policy, ...(dist ? ["--dist", dist] : [])], ctx, fd, { extraFlags: instance === "streams" ? ["--expose-gc"] : [] });
        return { ...running, logFile };
      } finally {
        closeSync(fd); // the child holds its own copy
      }
    },
  };
}

/**
 * A peer and the peers' modules it imports, stripped of their types with Node's own stripper (the code `node x.ts`
 * would run) into dist/bench-peers/ as .mjs; returns the peer's path there. Run as .ts, a peer has Node load its
 * type stripper into the process: 14–19 MB more RSS at start, and more memory that malloc keeps free after the
 * warm-up, which 1,000 held streams then fill, so the RSS per stream reads lower than the streams hold (2026-12-07:
 * the full-path floor's malloc kept 17.5–19.2 MB free at the idle reading as .ts, 11.5–13.2 MB as JavaScript,
 * Tollgate's 11.3–14.5 MB). Tollgate runs as JavaScript (dist/), so the floors do too. Node prints an
 * ExperimentalWarning for `stripTypeScriptTypes`.
 */
function asJavaScript(script: string, imports: string[]): string {
  mkdirSync(STRIPPED, { recursive: true });
  for (const file of [script, ...imports]) {
    const js = stripTypeScriptTypes(readFileSync(join(PEERS, file), "utf8")).replace(/(["'])\.\/([\w-]+)\.ts\1/g, "$1./$2.mjs$1");
    writeFileSync(join(STRIPPED, file.replace(/\.ts$/, ".mjs")), js);
  }
  return join(STRIPPED, script.replace(/\.ts$/, ".mjs"));
}

/**
 * The corridor floors (peers/corridor-floor.ts, run as JavaScript: see `asJavaScript`): a path's required work in
 * one plain handler, with Tollgate's Node flags and environment so the memory figures compare; the held-streams
 * instance may be asked to collect garbage. `redis`: given when
 * the floor uses Redis, with why Redis cannot be used here (undefined when it can).
 */
function corridorFloor(name: string, description: string, credential: CredentialKind, args: (ctx: Context) => string[], redis?: { problem: string | undefined }): Configuration {
  return {
    name,
    description,
    credential,
    tollgate: false,
    ...(redis ? { redis: true, ...(redis.problem ? { unavailable: redis.problem } : {}) } : {}),
    async start(ctx, instance) {
      const full = instance ? `${name}-${instance}` : name;
      const logFile = join(ctx.tmp, `${full}.log`);
      const fd = openSync(logFile, "w");
      try {
        const base = ["--target", ctx.upstreamUrl, "--hold-target", ctx.holdUrl, ...args(ctx)];
        const running = await startNodePeer(full, asJavaScript("corridor-floor.ts", ["announce.ts"]), base, ctx, fd, { extraFlags: instance === "streams" ? ["--expose-gc"] : [] });
        return { ...running, logFile };
      } finally {
        closeSync(fd); // the child holds its own copy
      }
    },
  };
}

/** HAProxy with jwt_verify needs 2.5 or later; undefined when usable, else why not. */
function haproxyProblem(): string | undefined {
  if (!onPath("haproxy")) return "haproxy is not on PATH; skipped (apt-get install haproxy adds the JWT reference row)";
  try {
    const m = /version (\d+)\.(\d+)/.exec(execFileSync("haproxy", ["-v"], { encoding: "utf8" }));
    if (!m || Number(m[1]) * 100 + Number(m[2]) < 205) return `haproxy ${m ? `${m[1]}.${m[2]}` : "(unknown version)"} has no jwt_verify (2.5 or later needed); skipped`;
  } catch (err) {
    return `haproxy -v failed (${(err as Error).message}); skipped`;
  }
  return undefined;
}

async function startNative(name: string, command: string, args: string[], port: number, ctx: Context): Promise<Running> {
  const child = spawnPinned(name, command, args, { cpu: ctx.proxyCpu });
  try {
    await waitForPort(child, port);
  } catch (err) {
    await stop(child);
    throw err;
  }
  return { origin: `http://127.0.0.1:${port}`, pid: child.pid, child, stop: () => stop(child) };
}

/**
 * Every configuration, in table order. `redisProblem`: why Redis cannot be used here (undefined when it can).
 * The references come first (direct, nginx, HAProxy, the bare undici forwarder, the corridor floor), then Tollgate from the
 * cheapest corridor to the full one, then diagnostics that run only with --only.
 */
export function configurations(redisProblem: string | undefined, abDist?: string): Configuration[] {
  const list = allConfigurations(redisProblem);
  if (!abDist) return list;
  // --ab: every Tollgate configuration again, from another checkout's build, right after its own row.
  return list.flatMap((c) => (c.fromBuild ? [c, c.fromBuild(abDist)] : [c]));
}

function allConfigurations(redisProblem: string | undefined): Configuration[] {
  const noNginx = onPath("nginx") ? undefined : "nginx is not on PATH; skipped (apt-get install nginx-light adds the reference row)";
  const noHaproxy = haproxyProblem();
  return [
    {
      name: "direct",
      description: "the load generator straight to the stand-in upstream (the baseline)",
      credential: "key",
      tollgate: false,
      async start(ctx) {
        return { origin: ctx.upstreamUrl, pid: undefined, child: undefined, stop: async () => undefined };
      },
    },
    {
      name: "nginx",
      description: "nginx as a plain reverse proxy: one worker, upstream keepalive, proxy_buffering off, no access log, no auth",
      credential: "key",
      tollgate: false,
      ...(noNginx ? { unavailable: noNginx } : {}),
      async start(ctx) {
        const dir = join(ctx.tmp, "nginx");
        mkdirSync(dir, { recursive: true });
        const port = await freePort();
        writeFileSync(join(dir, "nginx.conf"), nginxConfig(dir, port, ctx.upstreamPort));
        return startNative("nginx", "nginx", ["-p", dir, "-c", join(dir, "nginx.conf"), "-g", "daemon off; master_process on;"], port, ctx);
      },
    },
    {
      name: "haproxy-jwt",
      description: "HAProxy, one thread, jwt_verify RS256 + iss/aud/exp checks on every request (no token cache), upstream keep-alive; a new token per request",
      credential: "jwt-fresh",
      tollgate: false,
      ...(noHaproxy ? { unavailable: noHaproxy } : {}),
      async start(ctx) {
        const dir = join(ctx.tmp, "haproxy");
        mkdirSync(dir, { recursive: true });
        const publicKeyFile = join(dir, "jwt-public.pem");
        writeFileSync(publicKeyFile, ctx.issuer.publicKeyPem);
        const port = await freePort();
        writeFileSync(join(dir, "haproxy.cfg"), haproxyConfig(port, ctx.upstreamPort, { issuer: ctx.issuer.issuer, audience: AUDIENCE, publicKeyFile }));
        return startNative("haproxy", "haproxy", ["-db", "-f", join(dir, "haproxy.cfg")], port, ctx);
      },
    },
    {
      name: "undici-dispatch",
      description: "bare undici Pool.dispatch forwarder (what Tollgate's forwarder is built on), no auth",
      credential: "key",
      tollgate: false,
      start: (ctx) => startNodePeer("undici-dispatch", "undici-pool.ts", ["--target", ctx.upstreamUrl, "--api", "dispatch"], ctx),
    },
    corridorFloor(
      "corridor-floor",
      "the API-key path's required work (key hash, body read for model, usage read, metrics, audit line) in one plain handler over the bare undici forwarder: an upper bound for any Node implementation of it",
      "key",
      (ctx) => ["--key-hash", ctx.keyHash],
    ),
    corridorFloor(
      "corridor-floor-full",
      "the full path's required work: the corridor floor with a JWT (verified once, then from a map) instead of the key, and a Redis admission and settlement per request through Tollgate's own store (its scripts, calls gathered per loop turn), without the limits engine: an upper bound for a Node implementation of it with that store",
      "jwt",
      (ctx) => ["--jwks", ctx.issuer.jwksUri, "--issuer", ctx.issuer.issuer, "--audience", AUDIENCE, "--redis", ctx.redis!.url, "--key-prefix", `${ctx.redis!.keyPrefix}floor:`],
      { problem: redisProblem },
    ),
    tollgate({ name: "tollgate-public", description: "Tollgate, public route (no credential, no auth), metering, audit, metrics", auth: "public", credential: "none" }, redisProblem),
    tollgate({ name: "tollgate-key", description: "Tollgate, API-key path (key hash lookup), no limits", auth: "key", credential: "key" }, redisProblem),
    tollgate({ name: "tollgate-jwt", description: "Tollgate, JWT (RS256, JWKS), one token reused: the token cache hits", auth: "jwt", credential: "jwt" }, redisProblem),
    tollgate({ name: "tollgate-jwt-fresh", description: "Tollgate, JWT, a token not in the cache on every request: full verification", auth: "jwt", credential: "jwt-fresh" }, redisProblem),
    tollgate({ name: "tollgate-jwt-rate", description: "Tollgate, JWT (reused) + Redis rate limits (requests and tokens per user and model)", auth: "jwt", credential: "jwt", limits: "rates" }, redisProblem),
    tollgate({ name: "tollgate-full", description: "Tollgate, the full path: JWT (reused) + Redis rate limits + a monthly team budget (reserve, settle)", auth: "jwt", credential: "jwt", limits: "full" }, redisProblem),
    tollgate({ name: "tollgate-models", description: "Tollgate, API-key path with a models allow-list on the route (diagnostic)", auth: "key", credential: "key", models: true, optional: true }, redisProblem),
    tollgate({ name: "tollgate-no-audit", description: "Tollgate, API-key path with the audit log off (diagnostic)", auth: "key", credential: "key", audit: false, optional: true }, redisProblem),
    {
      name: "undici-stream",
      description: "bare undici Pool.stream forwarder, no auth (diagnostic)",
      credential: "key",
      tollgate: false,
      optional: true,
      start: (ctx) => startNodePeer("undici-stream", "undici-pool.ts", ["--target", ctx.upstreamUrl, "--api", "stream"], ctx),
    },
    {
      name: "http-proxy-3",
      description: "bare http-proxy-3 with a keep-alive http.Agent, no auth (diagnostic)",
      credential: "key",
      tollgate: false,
      optional: true,
      start: (ctx) => startNodePeer("http-proxy-3", "http-proxy-3.ts", ["--target", ctx.upstreamUrl], ctx),
    },
  ];
}

/** Tollgate's JWT cache counters, from its admin /metrics. */
export async function tokenCache(adminOrigin: string | undefined): Promise<{ hit: number; miss: number } | undefined> {
  if (!adminOrigin) return undefined;
  try {
    const text = await (await fetch(`${adminOrigin}/metrics`, { signal: AbortSignal.timeout(3000) })).text();
    const value = (result: string) => Number(new RegExp(`^tollgate_token_cache_total\\{[^}]*result="${result}"[^}]*\\} (\\d+)`, "m").exec(text)?.[1] ?? 0);
    const out = { hit: value("hit"), miss: value("miss") };
    return out.hit + out.miss > 0 ? out : undefined;
  } catch {
    return undefined;
  }
}

/**
 * A peer's V8 heap right after a full collection (bytes): in use, committed (pages V8 holds), external memory V8
 * is told of (ArrayBuffer backing stores among it), and the ArrayBuffers' (Node's Buffers') own.
 */
export interface GcFigures {
  heapUsed: number;
  heapTotal: number;
  external: number;
  arrayBuffers: number;
}

/** Asks a Tollgate peer started with --expose-gc for a full garbage collection (bounded: 5 s). */
export function collectGarbage(running: Running): () => Promise<GcFigures | undefined> {
  let seq = 0;
  return () => {
    const proc = running.child?.process;
    if (!proc?.connected) return Promise.resolve(undefined);
    const id = ++seq;
    return new Promise((resolve) => {
      const done = (memory: GcFigures | undefined) => {
        clearTimeout(timer);
        proc.off("message", onMessage);
        resolve(memory);
      };
      const onMessage = (m: unknown) => {
        const msg = m as { gc?: unknown; heapUsed?: unknown; heapTotal?: unknown; external?: unknown; arrayBuffers?: unknown } | null;
        if (msg && typeof msg === "object" && msg.gc === id) {
          const figures = {
            heapUsed: Number(msg.heapUsed),
            heapTotal: Number(msg.heapTotal),
            external: Number(msg.external),
            arrayBuffers: Number(msg.arrayBuffers),
          };
          // A peer that leaves a figure out answers nothing usable rather than NaN figures.
          done(Object.values(figures).every(Number.isFinite) ? figures : undefined);
        }
      };
      const timer = setTimeout(() => done(undefined), 5000);
      proc.on("message", onMessage);
      proc.send({ gc: id });
    });
  };
}

