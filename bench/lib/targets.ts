/**
 * The configurations the bench compares. Each starts its proxy as a child process pinned to the proxy CPU
 * (nothing to start for `direct`) and says where to send requests.
 */
import { closeSync, mkdirSync, openSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { spawnPinned, readyMessage, waitForPort, freePort, stop, onPath, type Child } from "./procs.ts";
import { tollgatePolicy, nginxConfig } from "./configs.ts";

const PEERS = fileURLToPath(new URL("../peers/", import.meta.url));

export interface Context {
  upstreamUrl: string;
  upstreamPort: number;
  keyHash: string;
  tmp: string;
  proxyCpu: number | undefined;
  /** Where Node proxies write a CPU profile (--cpu-prof), if asked. */
  profileDir: string | undefined;
}

export interface Running {
  origin: string;
  /** The proxy's pid, for its CPU time; undefined for direct. */
  pid: number | undefined;
  child: Child | undefined;
  /** Tollgate's stdout (audit and operational log lines). */
  logFile?: string;
  stop(): Promise<void>;
}

export interface Configuration {
  name: string;
  description: string;
  /** Why it is left out on this machine, if it is. */
  unavailable?: string;
  /** Diagnostic configurations run only when named in --only. */
  optional?: boolean;
  start(ctx: Context): Promise<Running>;
}

async function startNodePeer(name: string, script: string, args: string[], ctx: Context, stdout?: number): Promise<Running> {
  const profile = ctx.profileDir ? ["--cpu-prof", "--cpu-prof-dir", ctx.profileDir, "--cpu-prof-name", `${name}.cpuprofile`] : [];
  const child = spawnPinned(name, process.execPath, [...profile, join(PEERS, script), ...args], { cpu: ctx.proxyCpu, ipc: true, ...(stdout !== undefined ? { stdout } : {}) });
  try {
    const { port } = await readyMessage<{ port: number }>(child);
    return { origin: `http://127.0.0.1:${port}`, pid: child.pid, child, stop: () => stop(child) };
  } catch (err) {
    await stop(child);
    throw err;
  }
}

function tollgate(name: string, models: boolean, audit = true): Configuration {
  return {
    name,
    description:
      (models
        ? "Tollgate, API-key path, route with a models allow-list (body buffered, parsed and checked)"
        : "Tollgate, API-key path, no model restriction (body streamed through untouched)") + (audit ? "" : ", audit log off (diagnostic)"),
    ...(audit ? {} : { optional: true }),
    async start(ctx) {
      const policy = join(ctx.tmp, `${name}.yaml`);
      writeFileSync(policy, tollgatePolicy({ upstreamUrl: ctx.upstreamUrl, keyHash: ctx.keyHash, models, audit }));
      const logFile = join(ctx.tmp, `${name}.log`);
      const fd = openSync(logFile, "w");
      try {
        const running = await startNodePeer(name, "tollgate.ts", ["--policy", policy], ctx, fd);
        return { ...running, logFile };
      } finally {
        closeSync(fd); // the child holds its own copy
      }
    },
  };
}

export function configurations(): Configuration[] {
  const hasNginx = onPath("nginx");
  return [
    {
      name: "direct",
      description: "the load generator straight to the stand-in upstream (the baseline)",
      async start(ctx) {
        return { origin: ctx.upstreamUrl, pid: undefined, child: undefined, stop: async () => undefined };
      },
    },
    tollgate("tollgate", false),
    tollgate("tollgate-models", true),
    tollgate("tollgate-no-audit", false, false),
    {
      name: "undici-dispatch",
      description: "bare undici Pool.dispatch forwarder (what Tollgate's forwarder is built on), no auth",
      start: (ctx) => startNodePeer("undici-dispatch", "undici-pool.ts", ["--target", ctx.upstreamUrl, "--api", "dispatch"], ctx),
    },
    {
      name: "undici-stream",
      description: "bare undici Pool.stream forwarder (the one measured in the issue), no auth",
      start: (ctx) => startNodePeer("undici-stream", "undici-pool.ts", ["--target", ctx.upstreamUrl, "--api", "stream"], ctx),
    },
    {
      name: "http-proxy-3",
      description: "bare http-proxy-3 with a keep-alive http.Agent, no auth",
      start: (ctx) => startNodePeer("http-proxy-3", "http-proxy-3.ts", ["--target", ctx.upstreamUrl], ctx),
    },
    {
      name: "nginx",
      description: "nginx, one worker, upstream keepalive, proxy_buffering off, no access log",
      ...(hasNginx ? {} : { unavailable: "nginx is not on PATH; skipped (install it to add the reference row)" }),
      async start(ctx) {
        const dir = join(ctx.tmp, "nginx");
        mkdirSync(dir, { recursive: true });
        const port = await freePort();
        writeFileSync(join(dir, "nginx.conf"), nginxConfig(dir, port, ctx.upstreamPort));
        const child = spawnPinned("nginx", "nginx", ["-p", dir, "-c", join(dir, "nginx.conf"), "-g", "daemon off; master_process on;"], { cpu: ctx.proxyCpu });
        try {
          await waitForPort(child, port);
        } catch (err) {
          await stop(child);
          throw err;
        }
        return { origin: `http://127.0.0.1:${port}`, pid: child.pid, child, stop: () => stop(child) };
      },
    },
  ];
}
