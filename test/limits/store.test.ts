/**
 * Every Store passes the same contract: memory, the real Redis on 127.0.0.1, a master found through a Sentinel,
 * and a Redis Cluster on loopback.
 */
import t from "tap";
import { MemoryStore } from "../../src/limits/store/memory.ts";
import { RedisStore, createRedisClient } from "../../src/limits/store/redis.ts";
import { storeContract } from "./store-contract.ts";
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

t.test("memory", async (t) => storeContract(t, async () => new MemoryStore()));

t.test("redis standalone", async (t) => {
  const prefix = testPrefix("store");
  t.teardown(() => deleteKeys(SHARED_REDIS_URL, prefix));
  storeContract(t, async () => ready(new RedisStore(createRedisClient(redisConfig(`{ type: redis, url: "${SHARED_REDIS_URL}", keyPrefix: "${prefix}" }`)))));
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
