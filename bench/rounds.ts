/**
 * The targets round by round over results files: how often Tollgate met each one, and how often the floor of the
 * same work did (bench/lib/rounds.ts). Reads every file in bench/results/ (not latest.json, a copy) unless files
 * are named; `--since 2026-12-07T12:00` keeps the runs that started then or later.
 *
 *   node bench/rounds.ts [--since ISO] [FILE.json ...]
 */
import { readFileSync, readdirSync } from "node:fs";
import { join } from "node:path";
import { parseArgs } from "node:util";
import { tallyRounds, tallyTable, type ResultsFile } from "./lib/rounds.ts";

const { values: opts, positionals } = parseArgs({ options: { since: { type: "string" } }, allowPositionals: true });
const dir = join(import.meta.dirname, "results");
const paths = positionals.length > 0 ? positionals : readdirSync(dir).filter((f) => f.endsWith(".json") && f !== "latest.json").sort().map((f) => join(dir, f));
const since = opts.since === undefined ? undefined : Date.parse(opts.since.endsWith("Z") ? opts.since : `${opts.since}Z`);
if (since !== undefined && Number.isNaN(since)) throw new Error(`--since: not a date: ${opts.since}`);
const files = paths.map((p) => JSON.parse(readFileSync(p, "utf8")) as ResultsFile).filter((f) => since === undefined || Date.parse(f.date) >= since);
const rounds = files.reduce((n, f) => n + (f.roundRows?.length ?? 0), 0);
process.stdout.write(`${files.length} runs, ${rounds} rounds${files.length ? ` (${files[0]!.date} to ${files[files.length - 1]!.date})` : ""}; "measured" counts rounds (runs for memory)\n\n`);
process.stdout.write(tallyTable(tallyRounds(files)) + "\n");
