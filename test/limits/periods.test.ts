import t from "tap";
import { periodAt, zonedTime } from "../../src/limits/periods.ts";
import { formatReset, msUntilFits, msUntilReset } from "../../src/limits/ratelimit-headers.ts";

t.test("calendar periods in a time zone", async (t) => {
  const at = Date.parse("2026-11-30T23:30:00Z"); // already December 1st in Berlin
  t.same(periodAt("monthly", "UTC", at), { id: "2026-11", end: Date.parse("2026-12-01T00:00:00Z") });
  t.same(periodAt("monthly", "Europe/Berlin", at), { id: "2026-12", end: Date.parse("2026-12-31T23:00:00Z") });
  t.same(periodAt("daily", "America/New_York", at), { id: "2026-11-30", end: Date.parse("2026-12-01T05:00:00Z") });
  t.same(periodAt("monthly", "UTC", Date.parse("2026-12-15T00:00:00Z")).end, Date.parse("2027-01-01T00:00:00Z"), "December rolls into January");
  t.same(periodAt("weekly", "UTC", Date.parse("2026-11-26T10:00:00Z")), { id: "W2026-11-23", end: Date.parse("2026-11-30T00:00:00Z") }, "ISO weeks start on Monday");
  t.same(periodAt("total", "UTC", at), { id: "total", end: undefined });
});

t.test("the remembered period is used only while it holds: later periods, and clocks that step back", async (t) => {
  const nov = Date.parse("2026-11-20T12:00:00Z");
  t.equal(periodAt("monthly", "Asia/Tokyo", nov).id, "2026-11");
  t.equal(periodAt("monthly", "Asia/Tokyo", Date.parse("2026-11-30T14:59:59Z")).id, "2026-11", "the last second of November in Tokyo");
  t.equal(periodAt("monthly", "Asia/Tokyo", Date.parse("2026-11-30T15:00:00Z")).id, "2026-12", "its end starts December");
  t.same(periodAt("monthly", "Asia/Tokyo", nov), { id: "2026-11", end: Date.parse("2026-11-30T15:00:00Z") }, "a clock stepped back gets its own period again");
  t.equal(periodAt("monthly", "Asia/Tokyo", Date.parse("2026-10-31T14:59:59Z")).id, "2026-10", "and an earlier one too");
  t.equal(periodAt("daily", "Asia/Tokyo", nov).id, "2026-11-20", "kinds and zones are remembered apart");
  t.equal(periodAt("daily", "UTC", Date.parse("2026-11-20T23:59:59Z")).id, "2026-11-20");
  t.equal(periodAt("daily", "UTC", Date.parse("2026-11-21T00:00:00Z")).id, "2026-11-21");
});

t.test("DST: a day can be 23 or 25 hours; local midnight is found either way", async (t) => {
  t.equal(zonedTime("Europe/Berlin", 2026, 3, 29), Date.parse("2026-03-28T23:00:00Z"));
  t.equal(zonedTime("Europe/Berlin", 2026, 3, 30), Date.parse("2026-03-29T22:00:00Z"));
  const day = periodAt("daily", "Europe/Berlin", Date.parse("2026-03-29T12:00:00Z"));
  t.equal(day.end! - Date.parse("2026-03-28T23:00:00Z"), 23 * 3_600_000, "the spring-forward day has 23 hours");
});

t.test("OpenAI-style reset durations", async (t) => {
  t.equal(formatReset(250), "250ms");
  t.equal(formatReset(1000), "1s");
  t.equal(formatReset(360_000), "6m0s");
  t.equal(formatReset(3_723_000), "1h2m3s");
});

t.test("how long until a request fits the sliding window", async (t) => {
  const W = 60_000;
  t.equal(msUntilFits(0, 5, 10_000, W, 10, 1), 0, "room now");
  // previous 10, current 0, limit 10: at elapsed e the previous weighs 10·(1 − e/W); one more fits at e = 6 s.
  t.equal(msUntilFits(10, 0, 0, W, 10, 1), 6_000);
  t.equal(msUntilFits(10, 0, 6_000, W, 10, 1), 0);
  // current already full: wait for the next window, then for the old current to decay enough.
  t.equal(msUntilFits(0, 10, 30_000, W, 10, 1), 30_000 + 6_000);
  t.equal(msUntilFits(0, 0, 0, W, 10, 11), Number.POSITIVE_INFINITY, "a request larger than the limit never fits");
  t.equal(msUntilReset(3, 2, 10_000, W), 110_000);
  t.equal(msUntilReset(3, 0, 10_000, W), 50_000);
  t.equal(msUntilReset(0, 0, 10_000, W), 0);
});
