/** OpenAI-style rate-limit headers and Retry-After for the sliding-window counter. */

/** `1s`, `6m0s`, `250ms`, `1h2m3s` — the duration format OpenAI uses in x-ratelimit-reset-*. */
export function formatReset(ms: number): string {
  if (ms < 1000) return `${Math.max(0, Math.ceil(ms))}ms`;
  let s = Math.ceil(ms / 1000);
  const h = Math.floor(s / 3600);
  s -= h * 3600;
  const m = Math.floor(s / 60);
  s -= m * 60;
  return `${h ? `${h}h` : ""}${h || m ? `${m}m` : ""}${s}s`;
}

/**
 * How long until `cost` more fits: the previous window's weight decays linearly over the current one, and
 * at the next boundary the current count becomes the previous. Infinity when `cost` alone exceeds `limit`.
 */
export function msUntilFits(previous: number, current: number, elapsed: number, window: number, limit: number, cost: number): number {
  if (cost > limit) return Number.POSITIVE_INFINITY;
  const room = limit - current - cost;
  if (room >= 0) {
    if (previous <= 0) return 0;
    return Math.max(0, Math.ceil(window * (1 - room / previous) - elapsed));
  }
  // The current window alone is too full: wait for it to become the previous one and decay.
  const after = current <= 0 ? 0 : Math.max(0, window * (1 - (limit - cost) / current));
  return Math.ceil(window - elapsed + after);
}

/** Time until the sliding window is empty again (both windows passed), for x-ratelimit-reset-*. */
export function msUntilReset(previous: number, current: number, elapsed: number, window: number): number {
  if (current > 0) return 2 * window - elapsed;
  return previous > 0 ? window - elapsed : 0;
}
