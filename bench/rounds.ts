/**
 * The targets round by round over results files: how often Tollgate met each one, and how often the floor of the
 * same work did, over the same rounds (bench/lib/rounds.ts). Reads every file in bench/results/ (not latest.json,
 * a copy) unless files are named; `--since 2026-12-07T13:00` keeps the runs that started then or later (UTC unless
 * the date names a zone); `--skip 17-26-03,…` leaves out files whose name contains one of the strings (a run of a
 * build that was reverted, say).
 *
 *   node bench/rounds.ts [--since ISO] [--skip PART,…] [FILE.json ...]
 */
import { readFileSync, readdirSync } from "node:fs";
import { basename, join } from "node:path";
import { parseArgs } from "node:util";
import { tallyRounds, tallyTable, type ResultsFile } from "./lib/rounds.ts";

const { values: opts, positionals } = parseArgs({ options: { since: { type: "string" }, skip: { type: "string" } }, allowPositionals: true });
const dir = join(import.meta.dirname, "results");
const skip = (opts.skip ?? "").split(",").filter((x) => x !== "");
const paths = (positionals.length > 0 ? positionals : readdirSync(dir).filter((f) => f.endsWith(".json") && f !== "latest.json").map((f) => join(dir, f))).filter((p) => !skip.some((part) => basename(p).includes(part)));
const since = opts.since === undefined ? undefined : Date.parse(/(?:z|[+-]\d\d:?\d\d)$/i.test(opts.since) ? opts.since : `${opts.since}Z`);
if (since !== undefined && Number.isNaN(since)) throw new Error(`--since: not a date: ${opts.since}`);
const read = paths.map((p) => ({ path: p, file: JSON.parse(readFileSync(p, "utf8")) as ResultsFile }));
for (const { path } of read.filter(({ file }) => Number.isNaN(Date.parse(file.date)))) process.stderr.write(`${path}: no date; left out\n`);
const files = read
  .map(({ file }) => file)
  .filter((f) => !Number.isNaN(Date.parse(f.date)) && (since === undefined || Date.parse(f.date) >= since))
  .sort((a, b) => Date.parse(a.date) - Date.parse(b.date));
const rounds = files.reduce((n, f) => n + (f.roundRows?.length ?? 0), 0);
process.stdout.write(
  `${files.length} runs, ${rounds} rounds${files.length ? ` (${files[0]!.date} to ${files[files.length - 1]!.date})` : ""}; "measured" counts the rounds (for memory, the runs) in which every configuration of the target was measured\n\n`,
);
process.stdout.write(tallyTable(tallyRounds(files)) + "\n");
