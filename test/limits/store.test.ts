/**
 * Every Store passes the same contract: memory, the real Redis on 127.0.0.1, a master found through a Sentinel,
 * and a Redis Cluster on loopback.
 */
import t from "tap";
import { MemoryStore } from "../../src/limits/store/memory.ts";
import { RedisStore, createRedisClient } from "../../src/limits/store/redis.ts";
import { storeContract } from "./store-contract.ts";
import { SHARED_REDIS_URL, deleteKeys, hasRedisServer, startCluster, startSentinel, testPrefix, type TestCluster, type TestSentinel } from "../helpers/redis.ts";
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

t.test("memory", async (t) => storeContract(t, async () => new MemoryStore()));

t.test("redis standalone", async (t) => {
  const prefix = testPrefix("store");
  t.teardown(() => deleteKeys(SHARED_REDIS_URL, prefix));
  storeContract(t, async () => ready(new RedisStore(createRedisClient(redisConfig(`{ type: redis, url: "${SHARED_REDIS_URL}", keyPrefix: "${prefix}" }`)))));
});

t.test("redis through a sentinel", { skip: !hasRedisServer() && !process.env.CI ? "redis-server is not installed" : false }, async (t) => {
  let sentinel: TestSentinel;
  t.before(async () => {
    sentinel = await startSentinel();
  });
  t.teardown(() => sentinel?.close());
  storeContract(t, async () => {
    const sentinels = sentinel.sentinels.map((n) => `{ host: ${n.host}, port: ${n.port} }`).join(", ");
    const store = await ready(new RedisStore(createRedisClient(redisConfig(`{ type: redis, mode: sentinel, sentinels: [${sentinels}], masterName: ${sentinel.masterName}, keyPrefix: "tg:" }`))));
    // The master's address came from the Sentinel, not from the configuration.
    if ((store.client as { options?: { sentinels?: unknown } }).options?.sentinels === undefined) throw new Error("not a Sentinel client");
    return store;
  });
});

t.test("redis cluster", { skip: !hasRedisServer() && !process.env.CI ? "redis-server is not installed" : false }, async (t) => {
  let cluster: TestCluster;
  t.before(async () => {
    cluster = await startCluster();
  });
  t.teardown(() => cluster?.close());
  storeContract(t, async () => {
    const nodes = cluster.nodes.map((n) => `{ host: ${n.host}, port: ${n.port} }`).join(", ");
    return ready(new RedisStore(createRedisClient(redisConfig(`{ type: redis, mode: cluster, nodes: [${nodes}], keyPrefix: "tg:" }`))));
  });
});
