/**
 * `takeAll` and `giveAll` built from a store's single-instance methods, for a store that cannot take several
 * limit instances in one atomic step (a Redis Cluster: each instance's keys hash to their own slot). Instances are
 * taken concurrently; when one refuses or fails, what the others took is given back, so the result is still all
 * or nothing once the call returns.
 */
import type { BudgetState, GiveOp, GiveOutcome, LeaseState, Store, TakeAllResult, TakeOp, WindowState } from "./types.ts";

type State = WindowState | LeaseState | BudgetState;

export async function takeOneByOne(store: Store, ops: TakeOp[], now: number): Promise<TakeAllResult> {
  const settled = await Promise.allSettled(ops.map((op) => takeOne(store, op, now)));
  const states: State[] = [];
  let refused = -1;
  let failure: { reason: unknown } | undefined;
  settled.forEach((s, i) => {
    if (s.status === "rejected") failure ??= { reason: s.reason };
    else {
      states[i] = s.value;
      if (!s.value.allowed && refused < 0) refused = i;
    }
  });
  if (failure || refused >= 0) {
    const back: GiveOp[] = [];
    settled.forEach((s, i) => {
      if (s.status === "fulfilled" && s.value.allowed) back.push(giveBack(ops[i]!, s.value));
    });
    // A give-back that fails leaves a reservation that expires by itself (leaseTtl), or a window that decays.
    await giveOneByOne(store, back, now);
    if (failure) throw failure.reason;
  }
  return { refused, states };
}

export async function giveOneByOne(store: Store, ops: GiveOp[], now: number): Promise<GiveOutcome[]> {
  const settled = await Promise.allSettled(ops.map((op) => giveOne(store, op, now)));
  return settled.map((s) => (s.status === "fulfilled" ? s.value : s.reason instanceof Error ? s.reason : new Error(String(s.reason))));
}

/** The op that undoes a taken op (a window's cost, a lease, a budget reservation settled at zero). */
function giveBack(op: TakeOp, state: State): GiveOp {
  switch (op.kind) {
    case "window":
      return { kind: "window", key: op.key, windowMs: op.windowMs, windowStart: (state as WindowState).windowStart, delta: -op.cost };
    case "lease":
      return { kind: "lease", key: op.key, id: op.id };
    case "budget":
      return { kind: "budget", key: op.key, id: op.id, actual: 0, expireAt: op.expireAt };
  }
}

function takeOne(store: Store, op: TakeOp, now: number): Promise<State> {
  switch (op.kind) {
    case "window":
      return store.windowTake(op.key, op.windowMs, op.limit, op.cost, now);
    case "lease":
      return store.leaseAcquire(op.key, op.limit, op.id, op.ttlMs, now);
    case "budget":
      return store.budgetReserve(op.key, op.limit, op.amount, op.id, op.ttlMs, now, op.expireAt);
  }
}

async function giveOne(store: Store, op: GiveOp, now: number): Promise<GiveOutcome> {
  switch (op.kind) {
    case "window":
      return void (await store.windowAdjust(op.key, op.windowMs, op.windowStart, op.delta));
    case "lease":
      return void (await store.leaseRelease(op.key, op.id));
    case "budget":
      return store.budgetSettle(op.key, op.id, op.actual, now, op.expireAt);
  }
}
