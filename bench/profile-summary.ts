/**
 * Where a proxy spent its CPU: self time by function and by file from a .cpuprofile written by
 * `node bench/run.ts --cpu-prof`.
 *
 *   node bench/profile-summary.ts bench/results/profiles/<date>/tollgate.cpuprofile [--top 25]
 */
import { readFileSync } from "node:fs";

interface ProfileNode {
  id: number;
  callFrame: { functionName: string; url: string; lineNumber: number };
  hitCount?: number;
}
interface Profile {
  nodes: ProfileNode[];
  samples: number[];
  timeDeltas: number[];
}

const file = process.argv[2];
if (!file) throw new Error("usage: node bench/profile-summary.ts FILE.cpuprofile [--top N]");
const topIndex = process.argv.indexOf("--top");
const top = topIndex > 0 ? Number(process.argv[topIndex + 1]) : 25;
const profile = JSON.parse(readFileSync(file, "utf8")) as Profile;

const byId = new Map(profile.nodes.map((n) => [n.id, n]));
const selfUs = new Map<number, number>();
profile.samples.forEach((id, i) => selfUs.set(id, (selfUs.get(id) ?? 0) + (profile.timeDeltas[i] ?? 0)));
const total = [...selfUs.values()].reduce((a, b) => a + b, 0);

const shortUrl = (url: string) => url.replace(/^file:\/\/.*?\/(node_modules|dist|bench)\//, "$1/").replace(/^node:/, "node:");
const byFunction = new Map<string, number>();
const byFile = new Map<string, number>();
for (const [id, us] of selfUs) {
  const { functionName, url, lineNumber } = byId.get(id)!.callFrame;
  const where = url ? `${shortUrl(url)}:${lineNumber + 1}` : "(native)";
  const fn = `${functionName || "(anonymous)"}  ${where}`;
  byFunction.set(fn, (byFunction.get(fn) ?? 0) + us);
  const f = url ? shortUrl(url).replace(/^(node_modules\/(@[^/]+\/)?[^/]+)\/.*$/, "$1") : functionName.startsWith("(") ? functionName : "(native)";
  byFile.set(f, (byFile.get(f) ?? 0) + us);
}
const print = (title: string, m: Map<string, number>) => {
  process.stdout.write(`\n${title}\n`);
  for (const [k, us] of [...m].sort((a, b) => b[1] - a[1]).slice(0, top)) process.stdout.write(`${((100 * us) / total).toFixed(1).padStart(5)}%  ${k}\n`);
};
process.stdout.write(`${file}: ${(total / 1e6).toFixed(2)} s sampled\n`);
print("self time by file / package", byFile);
print("self time by function", byFunction);
