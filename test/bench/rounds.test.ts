/**
 * bench/lib/rounds.ts: the targets judged round by round over results files, for Tollgate and the floor of the
 * same work, over the same rounds. Fixed inputs: rows of three runs, rows at another connection count, readings
 * that are not numbers, held-stream readings at the limit, incomplete and missing.
 */
import t from "tap";
import { tallyRounds, tallyTable, ROUND_TARGETS, type ResultsFile } from "../../bench/lib/rounds.ts";
import type { Row } from "../../bench/lib/report.ts";
import type { HeldFigures } from "../../bench/lib/streams.ts";

/** A row with only the fields a target reads; the rest of Row does not matter here. */
const row = (config: string, mode: Row["mode"], connections: number, fields: Partial<Row>): Row => ({ config, mode, connections, ...fields }) as Row;
/** JSON writes NaN as null: a reading that was not a number comes back as null. */
const held = (opened: number, perStreamGcKiB: number | null | undefined, perStreamKiB: number | null = 50): HeldFigures =>
  ({ streams: 1000, opened, rssIdleKiB: 1, rssOpenKiB: 2, rssAfterKiB: 2, perStreamKiB, perStreamGcKiB }) as unknown as HeldFigures;

const apiKey = ROUND_TARGETS.find((x) => x.target.startsWith("per-core ≥ 0.30× nginx, API key"))!;
const unloadedP99 = ROUND_TARGETS.find((x) => x.target.startsWith("unloaded p99"))!;
const openP50 = ROUND_TARGETS.find((x) => x.target.startsWith("open loop p50"))!;
const firstSeen = ROUND_TARGETS.find((x) => x.target.startsWith("first-seen"))!;

const files: ResultsFile[] = [
  {
    date: "2026-12-07T10:00:00.000Z",
    roundRows: [
      [
        // The same configuration at 1 connection comes first: a 32-connection target must not read it.
        row("tollgate-key", "json", 1, { cpuVsNginx: 0.9 }),
        row("corridor-floor", "json", 1, { cpuVsNginx: 0.9 }),
        row("tollgate-key", "json", 32, { cpuVsNginx: 0.31 }),
        row("corridor-floor", "json", 32, { cpuVsNginx: 0.35 }),
        row("tollgate-full", "json", 1, { addedP99Ms: 2 }),
        row("corridor-floor-full", "json", 1, { addedP99Ms: 1.5 }),
        row("tollgate-full", "open", 101, { addedP50Ms: 10.1 }),
        row("corridor-floor-full", "open", 40, { addedP50Ms: 0.4 }),
        row("tollgate-jwt-fresh", "json", 32, { cpuVsHaproxy: 0.2 }),
      ],
      [
        row("tollgate-key", "json", 32, { cpuVsNginx: 0.2 }),
        row("corridor-floor", "json", 32, { cpuVsNginx: 0.3 }),
        row("tollgate-full", "json", 1, { addedP99Ms: 10.1 }),
        // Not a number, here and (JSON's null) in the next run: the round does not count for this target.
        row("corridor-floor-full", "json", 1, { addedP99Ms: Number.NaN }),
        row("tollgate-full", "open", 16, { addedP50Ms: 0.5 }),
        row("corridor-floor-full", "open", 16, { addedP50Ms: 9.6 }),
      ],
    ],
    streams: { perConfig: [{ config: "tollgate-full", held: held(1000, 25) }, { config: "corridor-floor-full", held: held(1000, undefined, 20) }] },
  },
  {
    date: "2026-12-07T11:00:00.000Z",
    roundRows: [
      [
        row("tollgate-key", "json", 32, { cpuVsNginx: 0.25 }),
        // The floor did not run in this round: Tollgate's figure is not compared with anything, so not counted.
        row("tollgate-full", "json", 1, { addedP99Ms: 1 }),
        row("corridor-floor-full", "json", 1, { addedP99Ms: null as unknown as number }),
        row("tollgate-full", "open", 16, { addedP50Ms: 9.6 }),
        row("corridor-floor-full", "open", 16, { addedP50Ms: 0.5 }),
      ],
    ],
    // Exactly 24 KB meets the target; the floor's reading was not a number.
    streams: { perConfig: [{ config: "tollgate-full", held: held(1000, 24 / 1.024) }, { config: "corridor-floor-full", held: held(1000, null, null) }] },
  },
  {
    date: "2026-12-07T12:00:00.000Z",
    roundRows: [],
    // Not every stream opened in Tollgate: no pair from this run.
    streams: { perConfig: [{ config: "tollgate-full", held: held(999, 10) }, { config: "corridor-floor-full", held: held(1000, 10) }] },
  },
  {
    date: "2026-12-07T13:00:00.000Z",
    streams: { perConfig: [{ config: "tollgate-full", held: held(1000, 30) }, { config: "corridor-floor-full", held: held(1000, 23) }] },
  },
];

const of = (list: ReturnType<typeof tallyRounds>, target: string, config: string) => list.find((x) => x.target.startsWith(target) && x.config === config)!;

t.test("counts the rounds that met a target, with median and range, for Tollgate and its floor over the same rounds", async (t) => {
  const out = tallyRounds(files, [apiKey, unloadedP99, openP50, firstSeen]);
  // At least 0.30: 0.31 meets, 0.20 does not; the 1-connection rows and the round without the floor are not read.
  t.match(of(out, "per-core", "tollgate-key"), { measured: 2, met: 1, median: (0.31 + 0.2) / 2, min: 0.2, max: 0.31 });
  // Exactly on the limit meets it (0.30).
  t.match(of(out, "per-core", "corridor-floor"), { measured: 2, met: 2, median: (0.35 + 0.3) / 2, min: 0.3, max: 0.35 });
  // At most 2 ms: 2 meets; the rounds whose floor figure is NaN or null do not count for either.
  t.match(of(out, "unloaded p99", "tollgate-full"), { measured: 1, met: 1, median: 2 });
  t.match(of(out, "unloaded p99", "corridor-floor-full"), { measured: 1, met: 1, median: 1.5 });
  // The open loop is read whatever connection count it needed; sorted as numbers, not as text (10.1 > 9.6 > 0.5).
  t.match(of(out, "open loop p50", "tollgate-full"), { measured: 3, met: 1, median: 9.6, min: 0.5, max: 10.1 });
  t.match(of(out, "open loop p50", "corridor-floor-full"), { measured: 3, met: 2, median: 0.5, min: 0.4, max: 9.6 });
  // A target without a floor counts Tollgate's rounds alone.
  t.match(of(out, "first-seen", "tollgate-jwt-fresh"), { measured: 1, met: 0, median: 0.2 });
  // Nothing measured: no median, no range.
  t.match(tallyRounds([], [apiKey])[0], { measured: 0, met: 0, median: undefined, min: undefined, max: undefined });
});

t.test("memory per held stream: one figure per run, in KB, after GC where read, paired, only when every stream opened", async (t) => {
  const out = tallyRounds(files, []);
  const full = out.find((x) => x.config === "tollgate-full")!;
  const floor = out.find((x) => x.config === "corridor-floor-full")!;
  // Runs 1 and 4 pair up; run 2's floor reading is null, run 3's Tollgate did not open every stream.
  t.match(full, { measured: 2, met: 0 });
  t.equal(full.min, 25 * 1.024);
  t.equal(full.max, 30 * 1.024);
  // No after-GC reading (run 1): the figure as found, 20 KiB.
  t.match(floor, { measured: 2, met: 2 });
  t.equal(floor.max, 23 * 1.024);
  t.equal(floor.min, 20 * 1.024);
  // 24 KB exactly meets the target, once paired with a floor reading.
  const atLimit: ResultsFile = { date: "2026-12-07T14:00:00.000Z", streams: { perConfig: [{ config: "tollgate-full", held: held(1000, 24 / 1.024) }, { config: "corridor-floor-full", held: held(1000, 30) }] } };
  t.match(tallyRounds([atLimit], []).find((x) => x.config === "tollgate-full"), { measured: 1, met: 1 });
});

t.test("the table names each target once and prints what was not measured as a dash", async (t) => {
  const table = tallyTable([...tallyRounds(files, [openP50]).slice(0, 1), ...tallyRounds([], [openP50]).slice(1)]);
  const lines = table.split("\n");
  t.equal(lines[0], "| target | configuration | measured | met | median | range |");
  t.match(lines[2]!, /^\| open loop p50 ≤ 0\.5 ms added \(full path\) \| tollgate-full \| 3 \| 1 \| 9\.60 \| 0\.50 – 10\.1 \|$/);
  t.equal(lines[3], "|  | corridor-floor-full | 0 | 0 | - | - – - |");
});
