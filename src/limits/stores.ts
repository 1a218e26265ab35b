/**
 * Stores outlive policy reloads: the same store configuration keeps the same Store (and its counters and
 * Redis connection); a reload that changes it opens a new one and closes the old when no gateway uses it.
 */
import type { StoreConfig } from "../config/limits.ts";
import type { Store } from "./store/types.ts";
import { MemoryStore } from "./store/memory.ts";
import { RedisStore, createRedisClient } from "./store/redis.ts";

export class StoreRegistry {
  readonly #stores = new Map<string, { store: Store; users: number }>();

  acquire(config: StoreConfig): { store: Store; release: () => Promise<void> } {
    const id = JSON.stringify(config);
    let entry = this.#stores.get(id);
    if (!entry) {
      entry = { store: config.type === "redis" ? new RedisStore(createRedisClient(config), Math.max(1000, config.commandTimeout * 4)) : new MemoryStore(), users: 0 };
      this.#stores.set(id, entry);
    }
    entry.users++;
    const held = entry;
    let released = false;
    return {
      store: entry.store,
      release: async () => {
        if (released) return;
        released = true;
        if (--held.users > 0) return;
        this.#stores.delete(id);
        await held.store.close();
      },
    };
  }
}
