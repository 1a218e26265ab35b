/**
 * The Store contract: atomic counters and reservations shared by every replica. The in-memory and the Redis
 * implementations pass the same contract tests. Times are epoch ms passed in by the caller (one clock).
 * Keys are opaque strings chosen by the limits engine; each operation touches one key group only, so on a
 * Redis Cluster every atomic script runs on one slot.
 */
export interface WindowState {
  allowed: boolean;
  /** Count in the previous and current fixed windows (the sliding estimate weighs `previous`). */
  previous: number;
  current: number;
  /** Start of the current window (epoch ms): identifies the bucket to reconcile later. */
  windowStart: number;
}

export interface LeaseState {
  allowed: boolean;
  inFlight: number;
}

export interface BudgetState {
  allowed: boolean;
  /** Micro-dollars settled in this period. */
  spent: number;
  /** Micro-dollars reserved by requests in flight. */
  reserved: number;
}

/** One limit instance to take at admission (see the single-instance methods for each kind's rule). */
export type TakeOp =
  | { kind: "window"; key: string; windowMs: number; limit: number; cost: number }
  | { kind: "lease"; key: string; limit: number; id: string; ttlMs: number }
  | { kind: "budget"; key: string; limit: number; amount: number; id: string; ttlMs: number; expireAt: number | undefined };

/** What each instance answered, in the order of the ops: WindowState, LeaseState or BudgetState by kind. */
export interface TakeAllResult {
  /** Position of the first op that refused, or -1 when all admitted (and were taken). */
  refused: number;
  states: (WindowState | LeaseState | BudgetState)[];
}

/** One limit instance to settle: a window reconciled by `delta`, a lease released, a budget reservation settled. */
export type GiveOp =
  | { kind: "window"; key: string; windowMs: number; windowStart: number; delta: number }
  | { kind: "lease"; key: string; id: string }
  | { kind: "budget"; key: string; id: string; actual: number; expireAt: number | undefined };

/** Per settled op: the budget's state after a budget settlement, undefined for the others, or the error it met. */
export type GiveOutcome = BudgetState | undefined | Error;

export interface Store {
  readonly kind: "memory" | "redis";
  /**
   * Sliding-window counter: admits `cost` when previous·(1 − elapsed/window) + current + cost ≤ limit and adds
   * it to the current window; otherwise changes nothing. `cost` 0 only reads.
   */
  windowTake(key: string, windowMs: number, limit: number, cost: number, now: number): Promise<WindowState>;
  /** Reconciles a reservation made in the window starting at `windowStart` by `delta` (never below zero). */
  windowAdjust(key: string, windowMs: number, windowStart: number, delta: number): Promise<void>;
  /** A concurrency lease that expires by itself at now + ttl (so a crashed replica's leases free up). */
  leaseAcquire(key: string, limit: number, id: string, ttlMs: number, now: number): Promise<LeaseState>;
  leaseRelease(key: string, id: string): Promise<void>;
  leaseCount(key: string, now: number): Promise<number>;
  /**
   * Reserves `amount` against `limit` when spent + reserved + amount ≤ limit. Reservations expire at now + ttl
   * (a crash never leaks budget for long); the whole key group expires at `expireAt` (period end), if given.
   */
  budgetReserve(key: string, limit: number, amount: number, id: string, ttlMs: number, now: number, expireAt: number | undefined): Promise<BudgetState>;
  /** Replaces the reservation `id` (if still there) by the real `actual` spend; returns the new state. */
  budgetSettle(key: string, id: string, actual: number, now: number, expireAt: number | undefined): Promise<BudgetState>;
  budgetRead(key: string, now: number): Promise<BudgetState>;
  /**
   * Takes every op or none: each is checked, and only when all admit is anything taken. Memory and a standalone
   * or Sentinel Redis do it in one atomic step (one script, one round trip). On a Redis Cluster the instances
   * live on different slots, so they are taken one by one, concurrently, and what was taken is given back when
   * one refuses or fails (for a round trip, a refused request may hold the others' reservations there).
   */
  takeAll(ops: TakeOp[], now: number): Promise<TakeAllResult>;
  /** Settles independent ops together; one outcome per op (an op that failed does not stop the others). */
  giveAll(ops: GiveOp[], now: number): Promise<GiveOutcome[]>;
  /** Marks `key` revoked (e.g. a signed-out session id) until now + ttl. */
  revoke(key: string, ttlMs: number, now: number): Promise<void>;
  isRevoked(key: string, now: number): Promise<boolean>;
  /** True while the store answers (or is still making its first connection); failure modes apply otherwise. */
  healthy(): boolean;
  /** Calls `listener` whenever the store becomes reachable again; returns the unsubscribe function. */
  onReconnect(listener: () => void): () => void;
  ping(): Promise<void>;
  close(): Promise<void>;
}

export class StoreUnavailableError extends Error {
  override name = "StoreUnavailableError";
}
