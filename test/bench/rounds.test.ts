/**
 * bench/lib/rounds.ts: the targets judged round by round over results files, for Tollgate and the floor of the
 * same work. Fixed inputs: rows of two runs, a missing row, a broken held-stream reading.
 */
import t from "tap";
import { tallyRounds, tallyTable, ROUND_TARGETS, type ResultsFile } from "../../bench/lib/rounds.ts";
import type { Row } from "../../bench/lib/report.ts";
import type { HeldFigures } from "../../bench/lib/streams.ts";

/** A row with only the fields a target reads; the rest of Row does not matter here. */
const row = (config: string, mode: Row["mode"], connections: number, fields: Partial<Row>): Row => ({ config, mode, connections, ...fields }) as Row;
const held = (opened: number, perStreamGcKiB: number | undefined, perStreamKiB = 50): HeldFigures => ({ streams: 1000, opened, rssIdleKiB: 1, rssOpenKiB: 2, rssAfterKiB: 2, perStreamKiB, perStreamGcKiB }) as HeldFigures;

const apiKey = ROUND_TARGETS.find((x) => x.target.startsWith("per-core ≥ 0.30× nginx, API key"))!;
const unloadedP99 = ROUND_TARGETS.find((x) => x.target.startsWith("unloaded p99"))!;
const openP50 = ROUND_TARGETS.find((x) => x.target.startsWith("open loop p50"))!;

const files: ResultsFile[] = [
  {
    date: "2026-12-07T10:00:00.000Z",
    roundRows: [
      [
        row("tollgate-key", "json", 32, { cpuVsNginx: 0.31 }),
        row("corridor-floor", "json", 32, { cpuVsNginx: 0.35 }),
        // The same configuration at 1 connection must not be read for a 32-connection target.
        row("tollgate-key", "json", 1, { cpuVsNginx: 0.9 }),
        row("tollgate-full", "json", 1, { addedP99Ms: 2 }),
        row("corridor-floor-full", "json", 1, { addedP99Ms: 1.5 }),
        row("tollgate-full", "open", 101, { addedP50Ms: 0.7 }),
      ],
      [
        row("tollgate-key", "json", 32, { cpuVsNginx: 0.2 }),
        row("corridor-floor", "json", 32, { cpuVsNginx: 0.3 }),
        row("tollgate-full", "json", 1, { addedP99Ms: 2.01 }),
        row("corridor-floor-full", "json", 1, { addedP99Ms: Number.NaN }),
        row("tollgate-full", "open", 16, { addedP50Ms: 0.5 }),
      ],
    ],
    streams: { perConfig: [{ config: "tollgate-full", held: held(1000, 25) }, { config: "corridor-floor-full", held: held(1000, undefined, 20) }] },
  },
  {
    date: "2026-12-07T11:00:00.000Z",
    roundRows: [[row("tollgate-key", "json", 32, { cpuVsNginx: 0.25 })]],
    // Not every stream opened: no figure from this run.
    streams: { perConfig: [{ config: "tollgate-full", held: held(999, 10) }] },
  },
];

t.test("counts the rounds that met a target, with median and range, for Tollgate and its floor", async (t) => {
  const out = tallyRounds(files, [apiKey, unloadedP99, openP50]);
  const of = (target: string, config: string) => out.find((x) => x.target.startsWith(target) && x.config === config)!;
  // At least 0.30: 0.31 meets, 0.20 and 0.25 do not; the 1-connection row is not read.
  t.match(of("per-core", "tollgate-key"), { measured: 3, met: 1, median: 0.25, min: 0.2, max: 0.31 });
  // Exactly on the limit meets it (0.30).
  t.match(of("per-core", "corridor-floor"), { measured: 2, met: 2, median: (0.35 + 0.3) / 2 });
  // At most 2 ms: 2 meets, 2.01 does not.
  t.match(of("unloaded p99", "tollgate-full"), { measured: 2, met: 1 });
  // A figure that is not a number is not a round that measured it.
  t.match(of("unloaded p99", "corridor-floor-full"), { measured: 1, met: 1, median: 1.5 });
  // The open loop is read whatever connection count it needed.
  t.match(of("open loop p50", "tollgate-full"), { measured: 2, met: 1 });
  t.match(of("open loop p50", "corridor-floor-full"), { measured: 0, met: 0, median: undefined });
});

t.test("memory per held stream is one figure per run, in KB, after GC when read, and only when every stream opened", async (t) => {
  const out = tallyRounds(files, []);
  const full = out.find((x) => x.config === "tollgate-full")!;
  const floor = out.find((x) => x.config === "corridor-floor-full")!;
  t.match(full, { measured: 1, met: 0 });
  t.equal(full.median, 25 * 1.024);
  // No after-GC reading: the figure as found.
  t.match(floor, { measured: 1, met: 1 });
  t.equal(floor.median, 20 * 1.024);
});

t.test("the table names each target once and prints what was not measured as a dash", async (t) => {
  const table = tallyTable(tallyRounds(files, [openP50]));
  const lines = table.split("\n");
  t.equal(lines[0], "| target | configuration | measured | met | median | range |");
  t.match(lines[2]!, /^\| open loop p50 ≤ 0\.5 ms added \(full path\) \| tollgate-full \| 2 \| 1 \| 0\.60 \| 0\.50 – 0\.70 \|$/);
  t.equal(lines[3], "|  | corridor-floor-full | 0 | 0 | - | - – - |");
});
