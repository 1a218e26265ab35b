/**
 * Entra ID group overage: a user in more groups than fit in a token (200 for JWT) gets `_claim_names.groups`
 * / `hasgroups` instead of `groups`. Membership is then read from Microsoft Graph with Tollgate's own Entra
 * credential, cached per user, so such users keep their groups instead of silently losing them.
 */
import { LRUCache } from "lru-cache";
import { request } from "undici";
import type { Logger } from "pino";
import type { TokenCredential } from "@azure/identity";
import type { GroupOverageConfig } from "../config/authenticators.ts";
import type { Metrics } from "../observe/metrics.ts";
import { createAzureCredential, getTokenWithin } from "../azure/credential.ts";
import { TollgateError } from "../proxy/errors.ts";

const MAX_PAGES = 50;

export function hasGroupOverage(claims: Readonly<Record<string, unknown>>): boolean {
  if (claims.hasgroups === true || claims.hasgroups === "true") return true;
  const names = claims._claim_names;
  return typeof names === "object" && names !== null && "groups" in names;
}

export class GraphGroupResolver {
  readonly #config: GroupOverageConfig;
  #credential: TokenCredential | undefined;
  readonly #metrics: Metrics;
  readonly #logger: Logger;
  readonly #cache: LRUCache<string, readonly string[]>;
  readonly #inflight = new Map<string, Promise<readonly string[]>>();

  constructor(config: GroupOverageConfig, deps: { metrics: Metrics; logger: Logger }, credential?: TokenCredential) {
    this.#config = config;
    this.#credential = credential;
    this.#metrics = deps.metrics;
    this.#logger = deps.logger;
    this.#cache = new LRUCache({ max: 10_000, ttl: config.cacheTtl });
  }

  /** The user's security-group object ids; `userId` is the token's `oid`. */
  async groups(userId: string, tenantId: string | undefined): Promise<readonly string[]> {
    const key = `${tenantId ?? ""}/${userId}`;
    const cached = this.#cache.get(key);
    if (cached) {
      this.#metrics.groupOverage.inc({ result: "cache_hit" });
      return cached;
    }
    let pending = this.#inflight.get(key);
    if (!pending) {
      pending = this.#fetch(userId, tenantId).finally(() => this.#inflight.delete(key));
      this.#inflight.set(key, pending);
    }
    return pending;
  }

  async #fetch(userId: string, tenantId: string | undefined): Promise<readonly string[]> {
    try {
      this.#credential ??= createAzureCredential(this.#config.credential);
      const token = await getTokenWithin(this.#credential, this.#config.scope, this.#config.timeout, tenantId);
      const ids: string[] = [];
      let url: string | undefined = `${this.#config.graphUrl.replace(/\/$/, "")}/v1.0/users/${encodeURIComponent(userId)}/getMemberObjects`;
      for (let page = 0; url && page < MAX_PAGES; page++) {
        const res = await request(url, {
          method: "POST",
          headers: { authorization: `Bearer ${token.token}`, "content-type": "application/json" },
          body: JSON.stringify({ securityEnabledOnly: true }),
          headersTimeout: this.#config.timeout,
          bodyTimeout: this.#config.timeout,
          signal: AbortSignal.timeout(this.#config.timeout),
        });
        if (res.statusCode !== 200) {
          await res.body.dump();
          throw new Error(`Graph answered ${res.statusCode}`);
        }
        const body = (await res.body.json()) as { value?: unknown; "@odata.nextLink"?: unknown };
        if (!Array.isArray(body.value)) throw new Error("Graph returned no value array");
        for (const id of body.value) if (typeof id === "string") ids.push(id);
        url = typeof body["@odata.nextLink"] === "string" ? body["@odata.nextLink"] : undefined;
      }
      const groups = Object.freeze(ids);
      this.#cache.set(`${tenantId ?? ""}/${userId}`, groups);
      this.#metrics.groupOverage.inc({ result: "resolved" });
      return groups;
    } catch (err) {
      this.#metrics.groupOverage.inc({ result: "failure" });
      this.#logger.warn({ err: (err as Error).message }, "Entra group overage: Graph lookup failed");
      // Deny on doubt: without the groups a decision could be wrong either way.
      throw new TollgateError("auth_unavailable", "Tollgate could not resolve your group membership; retry shortly.", { "retry-after": "5" }, "group_overage");
    }
  }
}
