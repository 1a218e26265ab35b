/**
 * What grew between two V8 heap snapshots, per unit (e.g. per held stream), by constructor: objects and closures
 * by name, strings, arrays, code and the rest by V8's node type. bench/peers/snapshot-probe.mjs writes the pair.
 * UNITS is a number, or a constructor whose growth counts them (ServerResponse: one per open request).
 *
 *   node bench/heap-diff.ts /tmp/snapshot-idle-<pid>.heapsnapshot /tmp/snapshot-held-<pid>.heapsnapshot ServerResponse [--top 40]
 */
import { readFileSync } from "node:fs";

interface Snapshot {
  snapshot: { meta: { node_fields: string[]; node_types: [string[], ...unknown[]] } };
  nodes: number[];
  strings: string[];
}

function bySite(file: string): { sizes: Map<string, { bytes: number; count: number }>; total: number } {
  const s = JSON.parse(readFileSync(file, "utf8")) as Snapshot;
  const fields = s.snapshot.meta.node_fields;
  const types = s.snapshot.meta.node_types[0];
  const [type, name, size] = [fields.indexOf("type"), fields.indexOf("name"), fields.indexOf("self_size")];
  const sizes = new Map<string, { bytes: number; count: number }>();
  let total = 0;
  for (let i = 0; i < s.nodes.length; i += fields.length) {
    const t = types[s.nodes[i + type]!]!;
    const key = t === "object" || t === "closure" ? `${t} ${s.strings[s.nodes[i + name]!]}` : t.endsWith("string") ? "string" : t;
    const bytes = s.nodes[i + size]!;
    const entry = sizes.get(key) ?? { bytes: 0, count: 0 };
    entry.bytes += bytes;
    entry.count++;
    sizes.set(key, entry);
    total += bytes;
  }
  return { sizes, total };
}

const [before, after, unitsArg] = process.argv.slice(2);
if (!before || !after) throw new Error("usage: node bench/heap-diff.ts BEFORE.heapsnapshot AFTER.heapsnapshot [UNITS] [--top N]");
const at = process.argv.indexOf("--top");
const top = at >= 0 ? Number(process.argv[at + 1]) : 40;
const a = bySite(before);
const b = bySite(after);
const grown = (key: string) => (b.sizes.get(key)?.count ?? 0) - (a.sizes.get(key)?.count ?? 0);
const units = unitsArg === undefined ? 1 : Number.isFinite(Number(unitsArg)) ? Number(unitsArg) : grown(`object ${unitsArg}`);
if (!(units > 0)) throw new Error(`no growth to divide by (${unitsArg})`);
process.stdout.write(`per unit: ${units} units\n`);
process.stdout.write(`${((a.total / 1e6).toFixed(1))} → ${(b.total / 1e6).toFixed(1)} MB of heap: ${((b.total - a.total) / units / 1024).toFixed(1)} KB per unit\n`);
const rows = [...b.sizes].map(([key, v]) => {
  const old = a.sizes.get(key) ?? { bytes: 0, count: 0 };
  return { key, bytes: (v.bytes - old.bytes) / units, count: (v.count - old.count) / units };
});
for (const r of rows.sort((x, y) => y.bytes - x.bytes).slice(0, top)) {
  process.stdout.write(`${r.bytes.toFixed(0).padStart(7)} B ${r.count.toFixed(2).padStart(7)} objects  ${r.key}\n`);
}
