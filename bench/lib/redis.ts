/**
 * The machine's Redis (127.0.0.1:6379), used by the rate-limit and full-path configurations. The bench gives
 * Tollgate a key prefix of its own for this run and, at the end (on error too), deletes only the keys under
 * that prefix. It also learns Redis's pid, so the CPU Redis spends serving Tollgate is counted as the bench's,
 * not as a neighbour's disturbance.
 */
import { randomBytes } from "node:crypto";
import { Redis } from "ioredis";

export const REDIS_URL = "redis://127.0.0.1:6379";

export interface BenchRedis {
  readonly url: string;
  /** No glob characters: safe in SCAN MATCH. */
  readonly keyPrefix: string;
  readonly pid: number | undefined;
  /** Deletes every key under the prefix (bounded in time); resolves with how many. */
  cleanup(): Promise<number>;
  close(): Promise<void>;
}

/** Connects (bounded); resolves with the handle, or with the reason Redis cannot be used. */
export async function openRedis(url = REDIS_URL): Promise<BenchRedis | string> {
  const client = new Redis(url, { lazyConnect: true, connectTimeout: 2000, commandTimeout: 5000, maxRetriesPerRequest: 1, enableOfflineQueue: false, retryStrategy: () => null });
  client.on("error", () => {});
  try {
    await client.connect();
    const info = await client.info("server");
    const pid = Number(/^process_id:(\d+)/m.exec(info)?.[1]) || undefined;
    const keyPrefix = `tollgate-bench-${process.pid}-${randomBytes(4).toString("hex")}:`;
    return {
      url,
      keyPrefix,
      pid,
      async cleanup() {
        let deleted = 0;
        let cursor = "0";
        const deadline = Date.now() + 15_000;
        do {
          const [next, keys] = await client.scan(cursor, "MATCH", `${keyPrefix}*`, "COUNT", 1000);
          cursor = next;
          if (keys.length > 0) deleted += await client.unlink(...keys);
        } while (cursor !== "0" && Date.now() < deadline);
        return deleted;
      },
      async close() {
        await client.quit().catch(() => client.disconnect());
      },
    };
  } catch (err) {
    client.disconnect();
    return `Redis at ${url} is not reachable (${(err as Error).message})`;
  }
}
