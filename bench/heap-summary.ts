/**
 * Top allocation sites of a sampling heap profile (bench/peers/alloc-probe.mjs writes one), by bytes allocated in
 * the function itself.
 *
 *   node bench/heap-summary.ts /tmp/alloc-<pid>.heapprofile [--top 40]
 */
import { readFileSync } from "node:fs";

interface HeapNode {
  callFrame: { functionName: string; url: string; lineNumber: number };
  selfSize: number;
  children: HeapNode[];
}

const file = process.argv[2];
if (!file) throw new Error("usage: node bench/heap-summary.ts FILE.heapprofile [--top N]");
const at = process.argv.indexOf("--top");
const top = at >= 0 ? Number(process.argv[at + 1]) : 40;
const { head } = JSON.parse(readFileSync(file, "utf8")) as { head: HeapNode };

const bySite = new Map<string, number>();
let total = 0;
const stack = [head];
for (let node = stack.pop(); node; node = stack.pop()) {
  const f = node.callFrame;
  const site = `${f.functionName || "(anonymous)"}  ${f.url.replace(/^.*\/(node_modules|dist)\//, "$1/") || "(native)"}:${f.lineNumber + 1}`;
  bySite.set(site, (bySite.get(site) ?? 0) + node.selfSize);
  total += node.selfSize;
  stack.push(...node.children);
}
process.stdout.write(`${file}: ${(total / 1e6).toFixed(1)} MB sampled\n`);
for (const [site, bytes] of [...bySite].sort((a, b) => b[1] - a[1]).slice(0, top)) {
  process.stdout.write(`${((100 * bytes) / total).toFixed(1).padStart(5)}%  ${site}\n`);
}
