/**
 * A Sentinel failover under a running store: the replica is promoted, and the store follows the Sentinels' switch
 * at once — before the old master has been demoted, so that counts do not keep landing on a node that is about to
 * throw them away — and what was taken before the failover is still counted (replicated).
 */
import t from "tap";
import { spawnSync } from "node:child_process";
import { RedisStore, createRedisClient } from "../../src/limits/store/redis.ts";
import { StoreUnavailableError, type TakeOp } from "../../src/limits/store/types.ts";
import { parsePolicy } from "../../src/config/load.ts";
import type { RedisStoreConfig } from "../../src/config/limits.ts";
import { hasRedisServer, startSentinel, yamlNodes } from "../helpers/redis.ts";

const W = 60_000;
const NOW = 100 * W;
const redisCli = (port: number, ...args: string[]) => spawnSync("redis-cli", ["-p", String(port), ...args], { encoding: "utf8" }).stdout.trim();

t.test("the store follows a Sentinel failover before the old master is demoted", { skip: !hasRedisServer() && !process.env.CI ? "redis-server is not installed" : false }, async (t) => {
  const sentinel = await startSentinel({ replica: true });
  t.teardown(() => sentinel.close());
  const config = parsePolicy(`version: 1
upstreams: { llm: { url: "http://127.0.0.1:1" } }
routes: [{ name: r, paths: [/x], upstream: llm, allow: [{ public: true }] }]
limits:
  store: { type: redis, mode: sentinel, sentinels: ${yamlNodes(sentinel.sentinels)}, masterName: ${sentinel.masterName}, keyPrefix: "tg:" }
`, "p.yaml", {}).limits.store as RedisStoreConfig;
  const store = new RedisStore(createRedisClient(config));
  t.teardown(() => store.close());
  const windowKey = `tg:{rpm}:${NOW}`;
  const ops = (id: string): TakeOp[] => [
    { kind: "window", key: "rpm", windowMs: W, limit: 1_000, cost: 1 },
    { kind: "budget", key: "usd", limit: 1_000_000, amount: 300, id, ttlMs: 600_000, expireAt: undefined },
  ];

  t.equal((await store.takeAll(ops("before"), NOW)).refused, -1);
  await (store.client as unknown as { wait(replicas: number, timeoutMs: number): Promise<number> }).wait(1, 2000);

  const oldMaster = sentinel.masterPort();
  await sentinel.failover();
  const newMaster = sentinel.masterPort();
  t.not(newMaster, oldMaster, "the Sentinel promoted the replica");

  // Keep taking until a count lands on the promoted master; note what the old master was at that moment.
  const deadline = Date.now() + 15_000;
  let oldRoleAtSwitch = "";
  let landed = 0;
  for (let i = 0; Date.now() < deadline; i++) {
    try {
      await store.takeAll(ops(`after-${i}`), NOW);
    } catch (err) {
      if (!(err instanceof StoreUnavailableError)) throw err;
    }
    const role = redisCli(oldMaster, "role").split("\n")[0]!;
    landed = Number(redisCli(newMaster, "get", windowKey) || "0");
    if (landed > 1) {
      oldRoleAtSwitch = role;
      break;
    }
    await new Promise((r) => setTimeout(r, 50));
  }
  t.ok(landed > 1, "counts land on the promoted master");
  t.equal(oldRoleAtSwitch, "master", "the store switched on the Sentinels' word, while the old master had not yet been demoted");
  const budget = await store.budgetRead("usd", NOW);
  t.ok(budget.reserved >= 600, `the reservation taken before the failover is still held on the new master (${budget.reserved} micro-dollars reserved)`);
});
