import { z } from "zod";

const UNITS: Record<string, number> = { ms: 1, s: 1000, m: 60_000, h: 3_600_000, d: 86_400_000 };

/** A duration as seconds (number) or a string such as `250ms`, `30s`, `5m`, `1h`; parsed to milliseconds. */
export const duration = z
  .union([z.number().nonnegative(), z.string().regex(/^\d+(\.\d+)?(ms|s|m|h|d)$/, "expected a duration such as 250ms, 30s, 5m or 1h")])
  .transform((value) => {
    if (typeof value === "number") return Math.round(value * 1000);
    const match = /^(\d+(?:\.\d+)?)(ms|s|m|h|d)$/.exec(value)!;
    return Math.round(Number(match[1]) * UNITS[match[2]!]!);
  });
