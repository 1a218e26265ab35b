/** The one clock. Tests substitute their own; nothing else calls Date.now() for decisions. */
export interface Clock {
  now(): number;
}

export const systemClock: Clock = { now: () => Date.now() };
