/** The Store contract, run against every implementation (memory, Redis standalone, Redis Cluster). */
import type { Test } from "tap";
import type { BudgetState, Store, TakeOp, WindowState } from "../../src/limits/store/types.ts";

const W = 60_000;

export function storeContract(t: Test, make: () => Promise<Store>): void {
  let store: Store;
  t.before(async () => {
    store = await make();
  });
  t.teardown(() => store.close());

  t.test("sliding window: admits up to the limit, weighs the previous window, refuses without counting", async (t) => {
    const base = 10 * W; // a window boundary
    for (let i = 0; i < 5; i++) t.ok((await store.windowTake("rpm", W, 5, 1, base + 1000)).allowed);
    const refused = await store.windowTake("rpm", W, 5, 1, base + 2000);
    t.match(refused, { allowed: false, previous: 0, current: 5, windowStart: base });
    t.equal((await store.windowTake("rpm", W, 5, 0, base + 2000)).current, 5, "a refusal counts nothing");
    // Halfway through the next window the previous 5 weigh 2.5: 2 more fit (2.5 + 2 ≤ 5), a third does not.
    t.ok((await store.windowTake("rpm", W, 5, 1, base + W + W / 2)).allowed);
    t.ok((await store.windowTake("rpm", W, 5, 1, base + W + W / 2)).allowed);
    t.notOk((await store.windowTake("rpm", W, 5, 1, base + W + W / 2)).allowed);
    t.ok((await store.windowTake("rpm", W, 5, 1, base + 3 * W)).allowed, "two windows later everything has decayed");
  });

  t.test("window costs larger than one and reconciliation never below zero", async (t) => {
    const at = 20 * W + 10;
    const r = await store.windowTake("tpm", W, 1000, 800, at);
    t.ok(r.allowed);
    t.notOk((await store.windowTake("tpm", W, 1000, 300, at)).allowed);
    await store.windowAdjust("tpm", W, r.windowStart, -500); // the real usage was 300
    t.ok((await store.windowTake("tpm", W, 1000, 300, at)).allowed);
    await store.windowAdjust("tpm", W, r.windowStart, -5000);
    t.equal((await store.windowTake("tpm", W, 1000, 0, at)).current, 0);
    await store.windowAdjust("tpm", W, r.windowStart, 120);
    t.equal((await store.windowTake("tpm", W, 1000, 0, at)).current, 120, "an underestimate adds the difference");
  });

  t.test("leases: limit, release, expiry of a crashed holder's leases", async (t) => {
    t.ok((await store.leaseAcquire("conc", 2, "a", 1000, 0)).allowed);
    t.match(await store.leaseAcquire("conc", 2, "b", 1000, 0), { allowed: true, inFlight: 2 });
    t.match(await store.leaseAcquire("conc", 2, "c", 1000, 10), { allowed: false, inFlight: 2 });
    await store.leaseRelease("conc", "a");
    t.ok((await store.leaseAcquire("conc", 2, "c", 1000, 20)).allowed);
    t.equal(await store.leaseCount("conc", 500), 2);
    t.equal(await store.leaseCount("conc", 1500), 0, "leases expire when their holder never releases them");
  });

  t.test("budgets: reserve against spent + reserved, settle to the real cost, reservations expire", async (t) => {
    const limit = 1_000_000; // $1
    t.match(await store.budgetReserve("team", limit, 600_000, "r1", 10_000, 0, undefined), { allowed: true, spent: 0, reserved: 600_000 });
    t.match(await store.budgetReserve("team", limit, 500_000, "r2", 10_000, 0, undefined), { allowed: false, spent: 0, reserved: 600_000 });
    t.match(await store.budgetSettle("team", "r1", 150_000, 1, undefined), { spent: 150_000, reserved: 0 });
    t.ok((await store.budgetReserve("team", limit, 500_000, "r2", 10_000, 2, undefined)).allowed);
    t.match(await store.budgetRead("team", 3), { spent: 150_000, reserved: 500_000 });
    t.match(await store.budgetRead("team", 20_000), { spent: 150_000, reserved: 0 }, "a crashed request's reservation expires");
    t.match(await store.budgetSettle("team", "r2", 70_000, 20_001, undefined), { spent: 220_000, reserved: 0 }, "a late settle still records spend");
    t.match(await store.budgetSettle("team", "unknown", 0, 20_002, undefined), { spent: 220_000 });
  });

  t.test("budget key groups expire at the period end", async (t) => {
    await store.budgetSettle("daily", "x", 5, 0, Date.now() + 300);
    t.equal((await store.budgetRead("daily", 0)).spent, 5);
    await new Promise((r) => setTimeout(r, 700));
    t.equal((await store.budgetRead("daily", Date.now())).spent, 0);
  });

  t.test("revocations hold until their ttl", async (t) => {
    const now = Date.now();
    t.notOk(await store.isRevoked("sid-1", now));
    await store.revoke("sid-1", 400, now);
    t.ok(await store.isRevoked("sid-1", now + 10));
    await new Promise((r) => setTimeout(r, 600));
    t.notOk(await store.isRevoked("sid-1", Date.now()), "a revocation expires");
  });

  t.test("concurrent reservations never overspend", async (t) => {
    const results = await Promise.all(Array.from({ length: 200 }, (_, i) => store.budgetReserve("race", 1_000, 10, `r${i}`, 60_000, 0, undefined)));
    t.equal(results.filter((r) => r.allowed).length, 100, "exactly limit / cost reservations succeed");
    t.equal((await store.budgetRead("race", 1)).reserved, 1_000);
    const takes = await Promise.all(Array.from({ length: 300 }, () => store.windowTake("race-rpm", W, 100, 1, 30 * W)));
    t.equal(takes.filter((r) => r.allowed).length, 100);
  });

  t.test("takeAll: every instance taken, or none when one refuses; the first refusal is reported", async (t) => {
    const at = 40 * W + 5;
    const ops = (cost: number, amount: number, id: string): TakeOp[] => [
      { kind: "lease", key: "all-conc", limit: 2, id, ttlMs: 60_000 },
      { kind: "window", key: "all-rpm", windowMs: W, limit: 3, cost: 1 },
      { kind: "window", key: "all-tpm", windowMs: W, limit: 1000, cost },
      { kind: "budget", key: "all-usd", limit: 1_000, amount, id, ttlMs: 60_000, expireAt: undefined },
    ];
    const standing = async () => ({
      leases: await store.leaseCount("all-conc", at),
      requests: (await store.windowTake("all-rpm", W, 3, 0, at)).current,
      tokens: (await store.windowTake("all-tpm", W, 1000, 0, at)).current,
      reserved: (await store.budgetRead("all-usd", at)).reserved,
    });

    const first = await store.takeAll(ops(400, 300, "a"), at);
    t.equal(first.refused, -1);
    t.match(first.states, [{ allowed: true, inFlight: 1 }, { allowed: true, previous: 0, current: 1, windowStart: 40 * W }, { allowed: true, current: 400 }, { allowed: true, spent: 0, reserved: 300 }], "the states after taking");
    t.same(await standing(), { leases: 1, requests: 1, tokens: 400, reserved: 300 });

    // The token window (400 + 700 > 1000) and the budget (300 + 800 > 1000) both refuse: the window comes first.
    const refused = await store.takeAll(ops(700, 800, "b"), at);
    t.equal(refused.refused, 2, "the position of the first op that refused");
    t.match(refused.states[2], { allowed: false, previous: 0, current: 400, windowStart: 40 * W });
    t.match(refused.states[3], { allowed: false, spent: 0, reserved: 300 });
    t.same(await standing(), { leases: 1, requests: 1, tokens: 400, reserved: 300 }, "a refused batch takes nothing, not even the request window it passed");

    t.equal((await store.takeAll(ops(100, 100, "c"), at)).refused, -1);
    const full = await store.takeAll(ops(1, 1, "d"), at);
    t.equal(full.refused, 0, "the concurrency lease refuses first");
    t.match(full.states[0], { allowed: false, inFlight: 2 });
    t.same(await standing(), { leases: 2, requests: 2, tokens: 500, reserved: 400 });
    t.same(await store.takeAll([], at), { refused: -1, states: [] });
  });

  t.test("giveAll: windows reconciled, leases released, budgets settled, one outcome per op", async (t) => {
    const at = 50 * W + 5;
    const taken = await store.takeAll(
      [
        { kind: "lease", key: "give-conc", limit: 5, id: "g1", ttlMs: 60_000 },
        { kind: "window", key: "give-tpm", windowMs: W, limit: 1000, cost: 500 },
        { kind: "budget", key: "give-usd", limit: 10_000, amount: 4_000, id: "g1", ttlMs: 60_000, expireAt: undefined },
      ],
      at,
    );
    t.equal(taken.refused, -1);
    const outcomes = await store.giveAll(
      [
        { kind: "lease", key: "give-conc", id: "g1" },
        { kind: "window", key: "give-tpm", windowMs: W, windowStart: (taken.states[1] as WindowState).windowStart, delta: -380 },
        { kind: "budget", key: "give-usd", id: "g1", actual: 1_234, expireAt: undefined },
      ],
      at + 1,
    );
    t.same(outcomes, [undefined, undefined, { allowed: true, spent: 1_234, reserved: 0 }]);
    t.equal(await store.leaseCount("give-conc", at + 2), 0);
    t.equal((await store.windowTake("give-tpm", W, 1000, 0, at + 2)).current, 120);
    t.same(await store.giveAll([], at), []);
  });

  t.test("takeAll under contention: exactly the limit admitted, refused batches leave nothing behind", async (t) => {
    const at = 60 * W + 5;
    const results = await Promise.all(
      Array.from({ length: 60 }, (_, i) =>
        store.takeAll(
          [
            { kind: "lease", key: "race-all-conc", limit: 10, id: `r${i}`, ttlMs: 60_000 },
            { kind: "window", key: "race-all-tpm", windowMs: W, limit: 100_000, cost: 7 },
            { kind: "budget", key: "race-all-usd", limit: 1_000_000, amount: 1_000, id: `r${i}`, ttlMs: 60_000, expireAt: undefined },
          ],
          at,
        ),
      ),
    );
    t.equal(results.filter((r) => r.refused < 0).length, 10, "ten leases, ten admitted");
    t.equal(await store.leaseCount("race-all-conc", at), 10);
    t.equal((await store.windowTake("race-all-tpm", W, 100_000, 0, at)).current, 70, "only the admitted batches count tokens");
    t.equal((await store.budgetRead("race-all-usd", at)).reserved, 10_000);
  });

  t.test("many requests at once (more than one gathered call holds): each gets its own states and outcomes", async (t) => {
    const at = 80 * W + 5;
    const n = 150;
    const taken = await Promise.all(
      Array.from({ length: n }, (_, i) =>
        store.takeAll(
          [
            { kind: "window", key: `many-own-${i}`, windowMs: W, limit: 1_000, cost: i + 1 },
            { kind: "budget", key: "many-shared-usd", limit: 100 * 1_000, amount: 1_000, id: `m${i}`, ttlMs: 60_000, expireAt: undefined },
          ],
          at,
        ),
      ),
    );
    t.ok(
      taken.every((r, i) => r.refused >= 0 || (r.states[0] as WindowState).current === i + 1),
      "every admitted request's own window shows its own cost",
    );
    const admitted = taken.map((r, i) => (r.refused < 0 ? i : -1)).filter((i) => i >= 0);
    const refused = taken.map((r, i) => (r.refused >= 0 ? i : -1)).filter((i) => i >= 0);
    const left = await Promise.all(refused.map((i) => store.windowTake(`many-own-${i}`, W, 1_000, 0, at)));
    t.ok(left.every((w) => w.current === 0), "a refused request left nothing in its own window");
    t.equal(admitted.length, 100, "the shared budget admitted exactly 100 reservations of 1,000");
    t.ok(taken.every((r) => r.refused < 0 || r.refused === 1), "a refusal names the budget");
    const settled = await Promise.all(admitted.map((i) => store.giveAll([{ kind: "window", key: `many-own-${i}`, windowMs: W, windowStart: 80 * W, delta: -(i + 1) }, { kind: "budget", key: "many-shared-usd", id: `m${i}`, actual: 10, expireAt: undefined }], at + 1)));
    t.ok(settled.every((outcomes) => outcomes.length === 2 && outcomes[0] === undefined && (outcomes[1] as BudgetState).spent > 0), "one outcome per op, per request");
    const final = await store.budgetRead("many-shared-usd", at + 2);
    t.same([final.spent, final.reserved], [1_000, 0], "every settlement counted once: 100 × 10 spent, nothing reserved");
    const own = await Promise.all(admitted.map((i) => store.windowTake(`many-own-${i}`, W, 1_000, 0, at + 2)));
    t.ok(own.every((w) => w.current === 0), "every request's own window reconciled to zero");
  });

  t.test("takeAll and giveAll keep large amounts exact", async (t) => {
    const big = 123_456_789_012_345; // micro-dollars: ~$123M, 15 digits
    const r = await store.takeAll([{ kind: "budget", key: "big-usd", limit: 2 * big, amount: big, id: "x", ttlMs: 60_000, expireAt: undefined }, { kind: "window", key: "big-tpm", windowMs: W, limit: 2 * big, cost: big }], 70 * W);
    t.equal(r.refused, -1);
    t.equal((r.states[0] as BudgetState).reserved, big);
    t.equal((r.states[1] as WindowState).current, big);
    const [settled] = await store.giveAll([{ kind: "budget", key: "big-usd", id: "x", actual: big + 1, expireAt: undefined }], 70 * W + 1);
    t.same(settled, { allowed: true, spent: big + 1, reserved: 0 });
  });
}
