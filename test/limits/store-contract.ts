/** The Store contract, run against every implementation (memory, Redis standalone, Redis Cluster). */
import type { Test } from "tap";
import type { Store } from "../../src/limits/store/types.ts";

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
}
