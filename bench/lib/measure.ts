/**
 * One measured run: the closed-loop load plus the CPU bookkeeping around it — the proxy's CPU seconds, the
 * stand-in's, the load generator's own, and how much CPU the rest of the machine used meanwhile (a
 * neighbour's work on a shared machine skews figures; the row says so instead of hiding it).
 */
import { runLoad, type Target } from "./load.ts";
import { cpuSeconds, cpuTimes, busyFractions, busySeconds } from "./procs.ts";
import { toRow, type Mode, type Row } from "./report.ts";

export interface Pids {
  proxy: number | undefined;
  upstream: number;
}

export async function measure(config: string, mode: Mode, target: Target, reference: Buffer, connections: number, durationMs: number, pids: Pids): Promise<Row> {
  const selfBefore = process.cpuUsage();
  const proxyBefore = pids.proxy ? cpuSeconds(pids.proxy) : undefined;
  const upstreamBefore = cpuSeconds(pids.upstream);
  const cpuBefore = cpuTimes();
  const load = await runLoad(target, reference, connections, durationMs);
  const proxyAfter = pids.proxy ? cpuSeconds(pids.proxy) : undefined;
  const upstreamAfter = cpuSeconds(pids.upstream);
  const cpuAfter = cpuTimes();
  const self = process.cpuUsage(selfBefore);

  const proxy = proxyBefore !== undefined && proxyAfter !== undefined ? proxyAfter - proxyBefore : undefined;
  const upstream = upstreamBefore !== undefined && upstreamAfter !== undefined ? upstreamAfter - upstreamBefore : undefined;
  const busy = busyFractions(cpuBefore, cpuAfter);
  const allBusy = busySeconds(cpuBefore, cpuAfter);
  const ours = (self.user + self.system) / 1e6 + (upstream ?? 0) + (proxy ?? 0);
  return toRow(config, mode, load, {
    ...(proxy !== undefined ? { proxy } : {}),
    ...(upstream !== undefined ? { upstream } : {}),
    ...(busy ? { busy } : {}),
    ...(allBusy !== undefined && load.elapsedS > 0 ? { other: (allBusy - ours) / load.elapsedS } : {}),
  });
}
