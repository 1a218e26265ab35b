/** Calendar budget periods in a time zone: daily, weekly (ISO, from Monday), monthly, or total. */

export interface Period {
  /** Stable id used in store keys, e.g. 2026-11, 2026-11-23, 2026-W48, total. */
  id: string;
  /** Epoch ms when the next period starts (undefined for `total`). */
  end: number | undefined;
}

export type PeriodKind = "daily" | "weekly" | "monthly" | "total";

const formatters = new Map<string, Intl.DateTimeFormat>();

function partsIn(timeZone: string, at: number): { y: number; m: number; d: number; h: number; mi: number; s: number } {
  let f = formatters.get(timeZone);
  if (!f) {
    f = new Intl.DateTimeFormat("en-US", { timeZone, hourCycle: "h23", year: "numeric", month: "numeric", day: "numeric", hour: "numeric", minute: "numeric", second: "numeric" });
    formatters.set(timeZone, f);
  }
  const p: Record<string, number> = {};
  for (const part of f.formatToParts(at)) if (part.type !== "literal") p[part.type] = Number(part.value);
  return { y: p.year!, m: p.month!, d: p.day!, h: p.hour!, mi: p.minute!, s: p.second! };
}

/** Epoch ms of a wall-clock time in `timeZone` (DST-safe: corrects the UTC guess by the zone's offset). */
export function zonedTime(timeZone: string, y: number, m: number, d: number): number {
  const guess = Date.UTC(y, m - 1, d);
  let t = guess;
  for (let i = 0; i < 3; i++) {
    const p = partsIn(timeZone, t);
    const offset = Date.UTC(p.y, p.m - 1, p.d, p.h, p.mi, p.s) - t;
    const next = guess - offset;
    if (next === t) break;
    t = next;
  }
  return t;
}

/**
 * The last period computed per kind and zone, valid from the time it was computed until its end: every later
 * instant before the end lies in the same period. Computing it takes Intl formatting (~2% of the full path's
 * CPU when done per request); this makes it once per period and process.
 */
const current = new Map<string, { period: Period; from: number }>();

export function periodAt(kind: PeriodKind, timeZone: string, now: number): Period {
  if (kind === "total") return { id: "total", end: undefined };
  const cacheKey = `${kind} ${timeZone}`;
  const cached = current.get(cacheKey);
  if (cached && now >= cached.from && now < cached.period.end!) return cached.period;
  const period = computePeriod(kind, timeZone, now);
  current.set(cacheKey, { period, from: now });
  return period;
}

function computePeriod(kind: Exclude<PeriodKind, "total">, timeZone: string, now: number): Period {
  const { y, m, d } = partsIn(timeZone, now);
  const pad = (n: number) => String(n).padStart(2, "0");
  if (kind === "monthly") return { id: `${y}-${pad(m)}`, end: zonedTime(timeZone, m === 12 ? y + 1 : y, m === 12 ? 1 : m + 1, 1) };
  if (kind === "daily") {
    const next = new Date(Date.UTC(y, m - 1, d + 1));
    return { id: `${y}-${pad(m)}-${pad(d)}`, end: zonedTime(timeZone, next.getUTCFullYear(), next.getUTCMonth() + 1, next.getUTCDate()) };
  }
  // ISO week: Monday to Sunday; the id names the week's Monday, which is unambiguous across years.
  const weekday = (new Date(Date.UTC(y, m - 1, d)).getUTCDay() + 6) % 7;
  const monday = new Date(Date.UTC(y, m - 1, d - weekday));
  const nextMonday = new Date(Date.UTC(y, m - 1, d - weekday + 7));
  return {
    id: `W${monday.getUTCFullYear()}-${pad(monday.getUTCMonth() + 1)}-${pad(monday.getUTCDate())}`,
    end: zonedTime(timeZone, nextMonday.getUTCFullYear(), nextMonday.getUTCMonth() + 1, nextMonday.getUTCDate()),
  };
}
