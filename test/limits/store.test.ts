/**
 * Every Store passes the same contract: memory, the real Redis on 127.0.0.1, a master found through a Sentinel,
 * and a Redis Cluster on loopback.
 */
import t, { type Test } from "tap";
import { Redis, ReplyError } from "ioredis";
import { MemoryStore } from "../../src/limits/store/memory.ts";
import { RedisStore, createRedisClient } from "../../src/limits/store/redis.ts";
import { StoreUnavailableError, type WindowState } from "../../src/limits/store/types.ts";
import { storeContract } from "./store-contract.ts";
import { ADMIT_ALL, SETTLE_ALL, SETTLE_THEN_ADMIT } from "../../src/limits/store/scripts.ts";
import { SHARED_REDIS_URL, deleteKeys, hasRedisServer, startCluster, startSentinel, testPrefix, yamlNodes } from "../helpers/redis.ts";
import { parsePolicy } from "../../src/config/load.ts";
import type { RedisStoreConfig } from "../../src/config/limits.ts";

function redisConfig(store: string): RedisStoreConfig {
  const policy = parsePolicy(`version: 1
upstreams: { llm: { url: "http://127.0.0.1:1" } }
routes: [{ name: r, paths: [/x], upstream: llm, allow: [{ public: true }] }]
limits:
  store: ${store}
`, "p.yaml", {});
  return policy.limits.store as RedisStoreConfig;
}

async function ready(store: RedisStore): Promise<RedisStore> {
  const deadline = Date.now() + 5000;
  while (!store.healthy()) {
    if (Date.now() > deadline) throw new Error("Redis did not become ready");
    await new Promise((r) => setTimeout(r, 20));
  }
  return store;
}

/** A store on the shared Redis under a key prefix of the test's own, closed and cleaned up at the test's end. */
async function sharedStore(t: Test, name: string): Promise<RedisStore> {
  const prefix = testPrefix(name);
  t.teardown(() => deleteKeys(SHARED_REDIS_URL, prefix));
  const store = await ready(new RedisStore(createRedisClient(redisConfig(`{ type: redis, url: "${SHARED_REDIS_URL}", keyPrefix: "${prefix}" }`))));
  t.teardown(() => store.close());
  return store;
}

/** Counts (and, when `fail` is set, fails) the script calls a Redis store makes. */
function scriptCalls(store: RedisStore): { calls: { tgAdmitAll: number; tgSettleAll: number; tgSettleThenAdmit: number }; fail: boolean } {
  const client = store.client as unknown as Record<string, (...args: unknown[]) => Promise<unknown>>;
  const spy = { calls: { tgAdmitAll: 0, tgSettleAll: 0, tgSettleThenAdmit: 0 }, fail: false };
  for (const name of Object.keys(spy.calls) as (keyof typeof spy.calls)[]) {
    const original = client[name]!;
    client[name] = (...args) => {
      spy.calls[name]++;
      return spy.fail ? Promise.reject(new Error("Command timed out")) : original.apply(client, args);
    };
  }
  return spy;
}

t.test("memory", async (t) => storeContract(t, async () => new MemoryStore()));

t.test("redis standalone", async (t) => {
  const prefix = testPrefix("store");
  t.teardown(() => deleteKeys(SHARED_REDIS_URL, prefix));
  storeContract(t, async () => ready(new RedisStore(createRedisClient(redisConfig(`{ type: redis, url: "${SHARED_REDIS_URL}", keyPrefix: "${prefix}" }`)))));
});

t.test("redis standalone: requests that arrive together share one script call; a failed call fails each of them", async (t) => {
  const store = await sharedStore(t, "gather");
  const spy = scriptCalls(store);
  const calls = spy.calls;
  const W = 60_000;
  const now = 1000 * W;
  const take = (i: number) => store.takeAll([{ kind: "window", key: `g-${i}`, windowMs: W, limit: 10, cost: 1 }, { kind: "lease", key: `l-${i}`, limit: 5, id: `x${i}`, ttlMs: 60_000 }], now);
  const results = await Promise.all(Array.from({ length: 100 }, (_, i) => take(i)));
  t.ok(results.every((r) => r.refused === -1 && (r.states[0] as WindowState).current === 1), "each request admitted on its own counters");
  t.equal(calls.tgAdmitAll, 2, "100 admissions in one turn of the event loop: two calls (at most 64 requests each)");
  const given = await Promise.all(Array.from({ length: 100 }, (_, i) => store.giveAll([{ kind: "lease", key: `l-${i}`, id: `x${i}` }, { kind: "window", key: `g-${i}`, windowMs: W, windowStart: now, delta: 2 }], now)));
  t.ok(given.every((o) => o.length === 2 && o.every((x) => x === undefined)));
  t.equal(calls.tgSettleAll, 2, "100 settlements: two calls");
  t.equal(await store.leaseCount("l-7", now), 0, "settled: the lease released");

  calls.tgAdmitAll = 0;
  spy.fail = true;
  const failed = await Promise.allSettled([take(0), take(1), take(2)]);
  t.equal(calls.tgAdmitAll, 1, "three admissions, one call");
  t.ok(failed.every((r) => r.status === "rejected" && r.reason instanceof StoreUnavailableError), "each request of the failed call sees the store unavailable (and follows its limits' failure modes)");
  const settleFailed = await store.giveAll([{ kind: "lease", key: "l-0", id: "x0" }], now);
  t.ok(settleFailed[0] instanceof Error, "a failed settlement call: an error outcome per op");
  spy.fail = false;
  const after = await take(0);
  t.equal((after.states[0] as WindowState).current, 4, "the next call goes through (1 taken, +2 settled, +1 now)");
});

t.test("redis standalone: a request whose commands fail inside a shared call fails alone", async (t) => {
  const store = await sharedStore(t, "gather-isolation");
  const W = 60_000;
  const now = 2000 * W;
  const take = (i: number, cost: number) =>
    store.takeAll(
      [
        { kind: "lease", key: `iso-l-${i}`, limit: 5, id: `x${i}`, ttlMs: 60_000 },
        { kind: "budget", key: `iso-b-${i}`, limit: 1_000_000, amount: 1_000, id: `x${i}`, ttlMs: 60_000, expireAt: undefined },
        // Redis counts in integers: a fractional cost makes this request's INCRBY fail.
        { kind: "window", key: `iso-w-${i}`, windowMs: W, limit: 100, cost },
      ],
      now,
    );
  const taken = await Promise.allSettled([take(0, 1), take(1, 1.5), take(2, 1)]);
  t.equal(taken[0]!.status, "fulfilled", "the request before it is admitted");
  t.equal(taken[2]!.status, "fulfilled", "the request after it is admitted");
  t.ok(taken[1]!.status === "rejected" && taken[1].reason instanceof StoreUnavailableError && /integer/.test(String(taken[1].reason.message)), "only the bad request fails, with Redis's reason");
  t.equal(await store.leaseCount("iso-l-2", now), 1, "the request after it holds its lease");

  const settle = (i: number, delta: number) => store.giveAll([{ kind: "lease", key: `iso-l-${i}`, id: `x${i}` }, { kind: "budget", key: `iso-b-${i}`, id: `x${i}`, actual: 400, expireAt: undefined }, { kind: "window", key: `iso-w-${i}`, windowMs: W, windowStart: now, delta }], now);
  const [first, bad, last] = await Promise.all([settle(0, 3), settle(1, 0.5), settle(2, 3)]);
  t.same(first, [undefined, { allowed: true, spent: 400, reserved: 0 }, undefined], "the settlement before it: its own outcomes");
  t.same(last, [undefined, { allowed: true, spent: 400, reserved: 0 }, undefined], "the settlement after it: applied and reported");
  t.ok(bad!.every((o) => o instanceof Error), "the bad settlement: an error for each of its ops");
  t.equal(await store.leaseCount("iso-l-2", now), 0, "the request after it released its lease");
  t.equal((await store.windowTake("iso-w-2", W, 100, 0, now)).current, 4, "and reconciled its window (1 + 3)");
});

t.test("redis standalone: a script refused with NOSCRIPT (it did not run) is sent once more; other errors, or a second NOSCRIPT, are not", async (t) => {
  const store = await sharedStore(t, "noscript");
  const client = store.client as unknown as Record<string, (...args: unknown[]) => Promise<unknown>>;
  const original = client.tgWindowTake!;
  let calls = 0;
  let refusals: Error[] = [];
  client.tgWindowTake = (...args) => {
    calls++;
    const refusal = refusals.shift();
    return refusal ? Promise.reject(refusal) : original.apply(client, args);
  };
  const noScript = () => new ReplyError("NOSCRIPT No matching script. Please use EVAL.");
  const now = Date.now();

  refusals = [noScript()];
  const first = await store.windowTake("noscript-w", 60_000, 10, 1, now);
  t.equal(calls, 2, "sent again after NOSCRIPT");
  t.match(first, { allowed: true, current: 1 }, "and counted once");

  calls = 0;
  refusals = [noScript(), noScript()];
  await t.rejects(store.windowTake("noscript-w", 60_000, 10, 1, now), StoreUnavailableError, "NOSCRIPT twice: the store is unavailable");
  t.equal(calls, 2, "no third try");

  calls = 0;
  refusals = [new Error("Command timed out")];
  await t.rejects(store.windowTake("noscript-w", 60_000, 10, 1, now), StoreUnavailableError);
  t.equal(calls, 1, "a timeout is not sent again (the script may have run)");

  t.match(await store.windowTake("noscript-w", 60_000, 10, 1, now), { current: 2 }, "only the first try counted: the refused ones took nothing");
});

t.test("redis scripts: a malformed group (a layout bug, nothing a client sends) fails the call, naming the kind of group", async (t) => {
  const client = new Redis(SHARED_REDIS_URL);
  t.teardown(() => client.disconnect());
  // No keys: the scripts fail while reading the group, before any write.
  await t.rejects(client.eval(ADMIT_ALL, 0, "1", "1", "x"), /admission group: unknown entry x/);
  await t.rejects(client.eval(SETTLE_ALL, 0, "1", "1", "x"), /settlement group: unknown entry x/);
  await t.rejects(client.eval(SETTLE_THEN_ADMIT, 0, "1", "1", "1", "x"), /settlement group: unknown entry x/, "SETTLE_THEN_ADMIT names the group that was malformed");
  await t.rejects(client.eval(SETTLE_THEN_ADMIT, 0, "0", "1", "1", "x"), /admission group: unknown entry x/);
});

t.test("redis standalone: settlements and admissions of the same turn share one call, settlements first; a read sends what is waiting", async (t) => {
  const store = await sharedStore(t, "settle-then-admit");
  const spy = scriptCalls(store);
  const calls = spy.calls;
  const reset = () => Object.assign(calls, { tgAdmitAll: 0, tgSettleAll: 0, tgSettleThenAdmit: 0 });
  const W = 60_000;
  const now = 3000 * W;
  // One concurrent request allowed: the second can only be admitted once the first's lease is given back.
  const take = (id: string) => store.takeAll([{ kind: "lease", key: "one-at-a-time", limit: 1, id, ttlMs: 60_000 }, { kind: "window", key: "sta-w", windowMs: W, limit: 100, cost: 1 }], now);
  const give = (id: string, delta = 0) => store.giveAll([{ kind: "lease", key: "one-at-a-time", id }, { kind: "window", key: "sta-w", windowMs: W, windowStart: now, delta }], now);

  t.equal((await take("a")).refused, -1, "the first request is admitted");
  t.equal((await take("b")).refused, 0, "a second one is refused while the first holds the lease");
  reset();
  // The first request ends and, in the same turn, a third arrives: one call, the lease back before the check.
  const [settled, third] = await Promise.all([give("a"), take("c")]);
  t.same(calls, { tgAdmitAll: 0, tgSettleAll: 0, tgSettleThenAdmit: 1 }, "one script call for the settlement and the admission");
  t.same(settled, [undefined, undefined], "the settlement's outcomes");
  t.equal(third.refused, -1, "the third request is admitted: the settlement was applied first");
  t.equal((third.states[1] as WindowState).current, 2, "the window counts a and c (the refused b took nothing)");

  // A settlement with no admission in its turn goes out on its own at the end of that turn, not held back.
  reset();
  const lone = give("c");
  await new Promise((resolve) => setImmediate(resolve));
  t.same(calls, { tgAdmitAll: 0, tgSettleAll: 1, tgSettleThenAdmit: 0 }, "its own settlement call, sent in the turn it was issued");
  t.same(await lone, [undefined, undefined]);
  t.equal(await store.leaseCount("one-at-a-time", now), 0, "the lease is back");

  // A read issued after a settlement sees it: the waiting settlement goes out first, on the same connection.
  t.equal((await take("g")).refused, -1);
  reset();
  const pending = give("g");
  t.equal(await store.leaseCount("one-at-a-time", now), 0, "read right after the settlement was issued: the lease is back");
  t.same(calls, { tgAdmitAll: 0, tgSettleAll: 1, tgSettleThenAdmit: 0 }, "the read sent the waiting settlement first");
  t.same(await pending, [undefined, undefined]);

  // A settlement whose commands fail (a fractional count) fails alone inside the shared call.
  t.equal((await take("d")).refused, -1);
  reset();
  const [bad, fifth] = await Promise.allSettled([give("d", 0.5), take("e")]);
  t.equal(calls.tgSettleThenAdmit, 1, "shared call");
  t.ok(bad.status === "fulfilled" && bad.value.every((o) => o instanceof Error), "the bad settlement: an error for each of its ops");
  // What the failed group did before its error stays (as in a call of its own): d's lease was released first.
  t.ok(fifth.status === "fulfilled" && fifth.value.refused === -1, "the admission after it in the same call ran, and found d's lease released");

  // A failed shared call fails both sides; each follows its own path.
  spy.fail = true;
  reset();
  const [lostSettle, lostTake] = await Promise.allSettled([give("e"), take("f")]);
  t.equal(calls.tgSettleThenAdmit, 1);
  t.ok(lostSettle.status === "fulfilled" && lostSettle.value.every((o) => o instanceof Error), "the settlement: an error outcome per op");
  t.ok(lostTake.status === "rejected" && lostTake.reason instanceof StoreUnavailableError, "the admission: the store is unavailable");
});

/** The contract on Redis servers of the test's own: started before, stopped after. */
function onPrivateServers<T extends { close(): Promise<void> }>(name: string, start: () => Promise<T>, store: (servers: T) => string, check?: (store: RedisStore) => void): void {
  t.test(name, { skip: !hasRedisServer() && !process.env.CI ? "redis-server is not installed" : false }, async (t) => {
    let servers: T | undefined;
    t.before(async () => {
      servers = await start();
    });
    t.teardown(() => servers?.close());
    storeContract(t, async () => {
      const s = await ready(new RedisStore(createRedisClient(redisConfig(store(servers!)))));
      check?.(s);
      return s;
    });
  });
}

onPrivateServers(
  "redis through a sentinel",
  startSentinel,
  (sentinel) => `{ type: redis, mode: sentinel, sentinels: ${yamlNodes(sentinel.sentinels)}, masterName: ${sentinel.masterName}, keyPrefix: "tg:" }`,
  // The master's address comes from the Sentinel, not from the configuration.
  (store) => {
    if ((store.client as { options?: { sentinels?: unknown } }).options?.sentinels === undefined) throw new Error("not a Sentinel client");
  },
);

onPrivateServers("redis cluster", startCluster, (cluster) => `{ type: redis, mode: cluster, nodes: ${yamlNodes(cluster.nodes)}, keyPrefix: "tg:" }`);
