/**
 * Where a proxy spent its CPU, from a .cpuprofile written by `node bench/run.ts --cpu-prof`: busy time by
 * category (Tollgate's own code, each dependency, Node's internals, GC, native), then the top functions by
 * self time in Tollgate's code and in dependencies, and the top functions of Tollgate's code by total time
 * (self + everything they call, recursion counted once). Percentages are of busy time (idle excluded).
 *
 *   node bench/profile-summary.ts bench/results/profiles/<date>/tollgate-full.cpuprofile [--top 20] [--callers writev]
 *
 * `--callers NAME`: for functions named NAME (often a native one, e.g. writeUtf8String), whose self time it is
 * on behalf of: the nearest caller outside Node's internals (a dist/ or node_modules/ function).
 */
import { readFileSync } from "node:fs";

interface ProfileNode {
  id: number;
  callFrame: { functionName: string; url: string; lineNumber: number };
  children?: number[];
}
interface Profile {
  nodes: ProfileNode[];
  samples: number[];
  timeDeltas: number[];
}

const file = process.argv[2];
if (!file) throw new Error("usage: node bench/profile-summary.ts FILE.cpuprofile [--top N]");
const topIndex = process.argv.indexOf("--top");
const top = topIndex > 0 ? Number(process.argv[topIndex + 1]) : 20;
const profile = JSON.parse(readFileSync(file, "utf8")) as Profile;

const byId = new Map(profile.nodes.map((n) => [n.id, n]));
const parent = new Map<number, number>();
for (const n of profile.nodes) for (const c of n.children ?? []) parent.set(c, n.id);

const shortUrl = (url: string) => url.replace(/^file:\/\/.*?\/(node_modules|dist|bench)\//, "$1/");
const category = (url: string, functionName: string): string => {
  if (!url) return functionName.startsWith("(") ? functionName : "(native)";
  const u = shortUrl(url);
  if (u.startsWith("dist/")) return "Tollgate (dist/)";
  if (u.startsWith("node_modules/")) return u.replace(/^(node_modules\/(@[^/]+\/)?[^/]+)\/.*$/, "$1");
  if (u.startsWith("node:")) return "Node internals (node:*)";
  return u;
};
const fnKey = (n: ProfileNode) => {
  const { functionName, url, lineNumber } = n.callFrame;
  return `${functionName || "(anonymous)"}  ${url ? `${shortUrl(url)}:${lineNumber + 1}` : "(native)"}`;
};

// Self time per node, then per function and category; total (inclusive) time per function.
const selfUs = new Map<number, number>();
profile.samples.forEach((id, i) => selfUs.set(id, (selfUs.get(id) ?? 0) + Math.max(0, profile.timeDeltas[i] ?? 0)));
let idle = 0;
let busy = 0;
const byCategory = new Map<string, number>();
const selfByFn = new Map<string, { us: number; cat: string }>();
const totalByFn = new Map<string, number>();
const add = (m: Map<string, number>, k: string, v: number) => m.set(k, (m.get(k) ?? 0) + v);
for (const [id, us] of selfUs) {
  const node = byId.get(id)!;
  if (node.callFrame.functionName === "(idle)") {
    idle += us;
    continue;
  }
  busy += us;
  const cat = category(node.callFrame.url, node.callFrame.functionName);
  add(byCategory, cat, us);
  const key = fnKey(node);
  const prior = selfByFn.get(key);
  selfByFn.set(key, { us: (prior?.us ?? 0) + us, cat });
  // Inclusive time: every distinct function on this node's stack gets the node's self time once.
  const seen = new Set<string>();
  for (let cur: number | undefined = id; cur !== undefined; cur = parent.get(cur)) {
    const n = byId.get(cur)!;
    if (!shortUrl(n.callFrame.url).startsWith("dist/")) continue;
    const k = fnKey(n);
    if (seen.has(k)) continue;
    seen.add(k);
    add(totalByFn, k, us);
  }
}

const pct = (us: number) => `${((100 * us) / busy).toFixed(1).padStart(5)}%`;
const print = (title: string, entries: [string, number][]) => {
  process.stdout.write(`\n${title}\n`);
  for (const [k, us] of entries.sort((a, b) => b[1] - a[1]).slice(0, top)) process.stdout.write(`${pct(us)}  ${k}\n`);
};
process.stdout.write(`${file}: ${((busy + idle) / 1e6).toFixed(2)} s sampled, ${(busy / 1e6).toFixed(2)} s busy (percentages below are of busy time)\n`);
print("busy time by category (self time)", [...byCategory]);
print("top self time, Tollgate's code (dist/)", [...selfByFn].filter(([, v]) => v.cat === "Tollgate (dist/)").map(([k, v]) => [k, v.us]));
print("top self time, dependencies (node_modules/)", [...selfByFn].filter(([, v]) => v.cat.startsWith("node_modules/")).map(([k, v]) => [k, v.us]));
print("top self time, Node internals, GC and native", [...selfByFn].filter(([, v]) => !v.cat.startsWith("node_modules/") && v.cat !== "Tollgate (dist/)").map(([k, v]) => [k, v.us]));
print("top total time (self + callees), Tollgate's functions", [...totalByFn]);

const callersIndex = process.argv.indexOf("--callers");
if (callersIndex > 0) {
  const name = process.argv[callersIndex + 1];
  const byCaller = new Map<string, number>();
  let sum = 0;
  for (const [id, us] of selfUs) {
    if (byId.get(id)!.callFrame.functionName !== name) continue;
    sum += us;
    let caller = "(none)";
    for (let cur = parent.get(id); cur !== undefined; cur = parent.get(cur)) {
      const url = byId.get(cur)!.callFrame.url;
      if (url && !url.startsWith("node:")) {
        caller = fnKey(byId.get(cur)!);
        break;
      }
    }
    add(byCaller, caller, us);
  }
  print(`callers of ${name} (${pct(sum).trim()} of busy time), nearest frame outside node:*`, [...byCaller]);
}
