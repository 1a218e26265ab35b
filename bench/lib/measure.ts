/**
 * One measured run: a load (closed or open loop) plus the CPU bookkeeping around it — the proxy's CPU seconds,
 * the stand-in's, Redis's (when the configuration uses it), the load generator's own, and how much CPU the rest
 * of the machine used meanwhile (a neighbour's work on a shared machine skews figures; the row says so
 * instead of hiding it).
 */
import type { LoadResult } from "./load.ts";
import { cpuSeconds, cpuSplit, cpuTimes, busyFractions, busySeconds } from "./procs.ts";
import { toRow, type Mode, type Row } from "./report.ts";

export interface Pids {
  proxy: number | undefined;
  upstream: number;
  /** The machine's Redis, for configurations that use it (its CPU is theirs, not a neighbour's). */
  redis?: number | undefined;
}

export async function measure(config: string, mode: Mode, load: () => Promise<LoadResult>, pids: Pids): Promise<Row> {
  const selfBefore = process.cpuUsage();
  const proxyBefore = pids.proxy ? cpuSplit(pids.proxy) : undefined;
  const upstreamBefore = cpuSeconds(pids.upstream, false);
  const redisBefore = pids.redis ? cpuSeconds(pids.redis, false) : undefined;
  const cpuBefore = cpuTimes();
  const result = await load();
  const proxyAfter = pids.proxy ? cpuSplit(pids.proxy) : undefined;
  const upstreamAfter = cpuSeconds(pids.upstream, false);
  const redisAfter = pids.redis ? cpuSeconds(pids.redis, false) : undefined;
  const cpuAfter = cpuTimes();
  const self = process.cpuUsage(selfBefore);

  const spent = (before: number | undefined, after: number | undefined) => (before !== undefined && after !== undefined ? after - before : undefined);
  const proxySystem = spent(proxyBefore?.system, proxyAfter?.system);
  const proxy = proxySystem === undefined ? undefined : spent(proxyBefore!.user, proxyAfter!.user)! + proxySystem;
  const upstream = spent(upstreamBefore, upstreamAfter);
  const redis = spent(redisBefore, redisAfter);
  const busy = busyFractions(cpuBefore, cpuAfter);
  const allBusy = busySeconds(cpuBefore, cpuAfter);
  const ours = (self.user + self.system) / 1e6 + (upstream ?? 0) + (proxy ?? 0) + (redis ?? 0);
  return toRow(config, mode, result, {
    ...(proxy !== undefined ? { proxy, proxySystem } : {}),
    ...(upstream !== undefined ? { upstream } : {}),
    ...(redis !== undefined ? { redis } : {}),
    ...(busy ? { busy } : {}),
    ...(allBusy !== undefined && result.elapsedS > 0 ? { other: (allBusy - ours) / result.elapsedS } : {}),
  });
}
