/** The in-memory Store: the embedded default, the `local` fallback, and the reference for the contract tests. */
import type { BudgetState, GiveOp, GiveOutcome, LeaseState, Store, TakeAllResult, TakeOp, WindowState } from "./types.ts";
import { giveOneByOne } from "./one-by-one.ts";

interface Window {
  start: number;
  count: number;
  expiresAt: number;
}

interface Budget {
  spent: number;
  reserved: number;
  reservations: Map<string, { amount: number; expiresAt: number }>;
  expireAt: number | undefined;
}

export class MemoryStore implements Store {
  readonly kind = "memory";
  readonly #windows = new Map<string, Window>();
  readonly #leases = new Map<string, Map<string, number>>();
  readonly #budgets = new Map<string, Budget>();
  readonly #revoked = new Map<string, number>();
  #sweepAt = 0;

  async windowTake(key: string, windowMs: number, limit: number, cost: number, now: number): Promise<WindowState> {
    this.#sweep(now);
    return this.#window(key, windowMs, limit, cost, now, true);
  }

  /** Synchronous, so that `takeAll` checks and takes every op without another request in between. */
  #window(key: string, windowMs: number, limit: number, cost: number, now: number, take: boolean): WindowState {
    const start = Math.floor(now / windowMs) * windowMs;
    const current = this.#windowCount(`${key}:${start}`, now);
    const previous = this.#windowCount(`${key}:${start - windowMs}`, now);
    const weighted = previous * (1 - (now - start) / windowMs) + current;
    if (cost > 0 && weighted + cost > limit) return { allowed: false, previous, current, windowStart: start };
    if (!take) return { allowed: true, previous, current, windowStart: start };
    if (cost > 0) this.#windowAdd(`${key}:${start}`, start, cost, start + 2 * windowMs);
    return { allowed: true, previous, current: current + cost, windowStart: start };
  }

  async windowAdjust(key: string, windowMs: number, windowStart: number, delta: number): Promise<void> {
    const w = this.#windows.get(`${key}:${windowStart}`);
    if (w) w.count = Math.max(0, w.count + delta);
    else if (delta > 0) this.#windowAdd(`${key}:${windowStart}`, windowStart, delta, windowStart + 2 * windowMs);
  }

  async leaseAcquire(key: string, limit: number, id: string, ttlMs: number, now: number): Promise<LeaseState> {
    return this.#lease(key, limit, id, ttlMs, now, true);
  }

  #lease(key: string, limit: number, id: string, ttlMs: number, now: number, take: boolean): LeaseState {
    const leases = this.#liveLeases(key, now);
    if (leases.size >= limit) return { allowed: false, inFlight: leases.size };
    if (!take) return { allowed: true, inFlight: leases.size };
    leases.set(id, now + ttlMs);
    this.#leases.set(key, leases);
    return { allowed: true, inFlight: leases.size };
  }

  async leaseRelease(key: string, id: string): Promise<void> {
    this.#leases.get(key)?.delete(id);
  }

  async leaseCount(key: string, now: number): Promise<number> {
    return this.#liveLeases(key, now).size;
  }

  async budgetReserve(key: string, limit: number, amount: number, id: string, ttlMs: number, now: number, expireAt: number | undefined): Promise<BudgetState> {
    return this.#reserve(key, limit, amount, id, ttlMs, now, expireAt, true);
  }

  #reserve(key: string, limit: number, amount: number, id: string, ttlMs: number, now: number, expireAt: number | undefined, take: boolean): BudgetState {
    const b = this.#budget(key, now, expireAt);
    if (b.spent + b.reserved + amount > limit) return { allowed: false, spent: b.spent, reserved: b.reserved };
    if (!take) return { allowed: true, spent: b.spent, reserved: b.reserved };
    b.reserved += amount;
    b.reservations.set(id, { amount, expiresAt: now + ttlMs });
    return { allowed: true, spent: b.spent, reserved: b.reserved };
  }

  async budgetSettle(key: string, id: string, actual: number, now: number, expireAt: number | undefined): Promise<BudgetState> {
    const b = this.#budget(key, now, expireAt);
    const r = b.reservations.get(id);
    if (r) {
      b.reserved -= r.amount;
      b.reservations.delete(id);
    }
    b.spent += actual;
    return { allowed: true, spent: b.spent, reserved: b.reserved };
  }

  async budgetRead(key: string, now: number): Promise<BudgetState> {
    const b = this.#budgets.get(key);
    if (!b || (b.expireAt !== undefined && b.expireAt <= now)) return { allowed: true, spent: 0, reserved: 0 };
    this.#expireReservations(b, now);
    return { allowed: true, spent: b.spent, reserved: b.reserved };
  }

  async takeAll(ops: TakeOp[], now: number): Promise<TakeAllResult> {
    this.#sweep(now);
    const checked = ops.map((op) => this.#takeOne(op, now, false));
    const refused = checked.findIndex((state) => !state.allowed);
    if (refused >= 0) return { refused, states: checked };
    return { refused: -1, states: ops.map((op) => this.#takeOne(op, now, true)) };
  }

  giveAll(ops: GiveOp[], now: number): Promise<GiveOutcome[]> {
    return giveOneByOne(this, ops, now);
  }

  #takeOne(op: TakeOp, now: number, take: boolean): WindowState | LeaseState | BudgetState {
    switch (op.kind) {
      case "window":
        return this.#window(op.key, op.windowMs, op.limit, op.cost, now, take);
      case "lease":
        return this.#lease(op.key, op.limit, op.id, op.ttlMs, now, take);
      case "budget":
        return this.#reserve(op.key, op.limit, op.amount, op.id, op.ttlMs, now, op.expireAt, take);
    }
  }

  async revoke(key: string, ttlMs: number, now: number): Promise<void> {
    this.#revoked.set(key, now + ttlMs);
  }

  async isRevoked(key: string, now: number): Promise<boolean> {
    const until = this.#revoked.get(key);
    if (until === undefined) return false;
    if (until > now) return true;
    this.#revoked.delete(key);
    return false;
  }

  healthy(): boolean {
    return true;
  }

  onReconnect(): () => void {
    return () => {};
  }

  async ping(): Promise<void> {}

  async close(): Promise<void> {
    this.#windows.clear();
    this.#leases.clear();
    this.#budgets.clear();
    this.#revoked.clear();
  }

  #windowCount(key: string, now: number): number {
    const w = this.#windows.get(key);
    return w && w.expiresAt > now ? w.count : 0;
  }

  #windowAdd(key: string, start: number, cost: number, expiresAt: number): void {
    const w = this.#windows.get(key);
    if (w) w.count += cost;
    else this.#windows.set(key, { start, count: cost, expiresAt });
  }

  #liveLeases(key: string, now: number): Map<string, number> {
    const leases = this.#leases.get(key) ?? new Map<string, number>();
    for (const [id, expiresAt] of leases) if (expiresAt <= now) leases.delete(id);
    return leases;
  }

  #budget(key: string, now: number, expireAt: number | undefined): Budget {
    let b = this.#budgets.get(key);
    if (!b || (b.expireAt !== undefined && b.expireAt <= now)) {
      b = { spent: 0, reserved: 0, reservations: new Map(), expireAt };
      this.#budgets.set(key, b);
    }
    this.#expireReservations(b, now);
    return b;
  }

  #expireReservations(b: Budget, now: number): void {
    for (const [id, r] of b.reservations) {
      if (r.expiresAt <= now) {
        b.reserved -= r.amount;
        b.reservations.delete(id);
      }
    }
  }

  /** Drops expired windows now and then, so memory stays bounded by what is live. */
  #sweep(now: number): void {
    if (now < this.#sweepAt) return;
    this.#sweepAt = now + 10_000;
    for (const [key, w] of this.#windows) if (w.expiresAt <= now) this.#windows.delete(key);
    for (const [key, leases] of this.#leases) if (this.#liveLeases(key, now).size === 0) this.#leases.delete(key);
    for (const [key, until] of this.#revoked) if (until <= now) this.#revoked.delete(key);
    for (const [key, b] of this.#budgets) if (b.expireAt !== undefined && b.expireAt <= now) this.#budgets.delete(key);
  }
}
