/**
 * The Redis Store (ioredis): standalone, Sentinel or Cluster. Atomic Lua scripts via defineCommand (they
 * survive SCRIPT FLUSH and pipeline); a command timeout and no offline queue, so a dead Redis is noticed in
 * `commandTimeout`, not after a minute, and the limits engine can apply each limit's failure mode.
 */
import { Redis, Cluster, type RedisOptions } from "ioredis";
import type { RedisStoreConfig } from "../../config/limits.ts";
import { StoreUnavailableError, type BudgetState, type GiveOp, type GiveOutcome, type LeaseState, type Store, type TakeAllResult, type TakeOp, type WindowState } from "./types.ts";
import { ADMIT_ALL, BUDGET_READ, BUDGET_RESERVE, BUDGET_SETTLE, LEASE_ACQUIRE, LEASE_COUNT, SETTLE_ALL, SETTLE_THEN_ADMIT, WINDOW_ADJUST, WINDOW_TAKE } from "./scripts.ts";
import { giveOneByOne, takeOneByOne } from "./one-by-one.ts";

type Client = Redis | Cluster;
type Reply = (number | string)[];

interface Scripted {
  tgWindowTake(k1: string, k2: string, ...args: (string | number)[]): Promise<Reply>;
  tgWindowAdjust(k1: string, ...args: (string | number)[]): Promise<number>;
  tgLeaseAcquire(k1: string, ...args: (string | number)[]): Promise<Reply>;
  tgLeaseCount(k1: string, ...args: (string | number)[]): Promise<number>;
  tgBudgetReserve(k1: string, k2: string, k3: string, ...args: (string | number)[]): Promise<Reply>;
  tgBudgetSettle(k1: string, k2: string, k3: string, ...args: (string | number)[]): Promise<Reply>;
  tgBudgetRead(k1: string, k2: string, k3: string, ...args: (string | number)[]): Promise<Reply>;
  /** Variable key count: the number of keys, the keys, then the arguments. */
  tgAdmitAll(numberOfKeys: number, ...keysAndArgs: (string | number)[]): Promise<Reply>;
  tgSettleAll(numberOfKeys: number, ...keysAndArgs: (string | number)[]): Promise<Reply>;
  tgSettleThenAdmit(numberOfKeys: number, ...keysAndArgs: (string | number)[]): Promise<Reply>;
}

export function createRedisClient(config: RedisStoreConfig): Client {
  const options: RedisOptions = {
    keyPrefix: config.keyPrefix,
    commandTimeout: config.commandTimeout,
    connectTimeout: Math.max(1000, config.commandTimeout * 4),
    maxRetriesPerRequest: 1,
    enableOfflineQueue: false,
    // Standalone and Sentinel: admissions and settlements are gathered into shared script calls by the store
    // itself (`Gather` below); ioredis's own gathering would hold an admission back one more turn. The rarer
    // per-request commands (a browser session's revocation check, budget reads when `clampMaxTokens` is on) go
    // out on their own.
    enableAutoPipelining: false,
    retryStrategy: (times) => Math.min(times * 200, 2000),
    ...(config.password ? { password: config.password } : {}),
    ...(config.tls ? { tls: {} } : {}),
  };
  switch (config.mode) {
    case "cluster":
      // A Cluster takes a request's instances one by one (their keys hash to different slots); commands issued in
      // the same tick share one socket write per node: the profile of the full path showed one write(2) per
      // command costing ~12% of the process's CPU at 32 connections.
      return new Cluster(config.nodes!, { redisOptions: options, enableOfflineQueue: false, enableAutoPipelining: true, keyPrefix: config.keyPrefix, clusterRetryStrategy: (times) => Math.min(times * 200, 2000) });
    case "sentinel":
      // failoverDetector: follow the Sentinels' +switch-master at once. Without it the client stayed on the old
      // master until that one was demoted (~10 s in test/limits/sentinel-failover.test.ts), and every count taken
      // there in between was lost when it resynchronised from the new master.
      return new Redis({ ...options, sentinels: config.sentinels!, name: config.masterName!, failoverDetector: true });
    default:
      return new Redis(config.url!, options);
  }
}

/** One request's part of a gathered call: its keys and arguments, how many reply values are its, and its promise. */
interface Part {
  keys: string[];
  args: (string | number)[];
  replyLength: number;
  resolve: (reply: Reply) => void;
  reject: (err: unknown) => void;
}

/**
 * Gathers the admissions and settlements that concurrent requests issue in the same turn of the event loop into one
 * script call: ioredis's per-command work (a Command, its promise and timer, RESP encoding, a reply array) was ~9 KB
 * of garbage and a few µs of CPU per command, and each call is a socket write and read on both sides. When a turn
 * has both, the call settles the finished requests first (their leases and reservations are back before anything
 * is checked), then admits the new ones. Nothing waits beyond the turn: holding a settlement back for the next
 * admission (tried, 1 ms) halved the calls but put the settlement's script time on that admission's path, +0.1 to
 * +0.2 ms unloaded. The batch scripts keep each request's group all or nothing on its own. A call that fails
 * (timeout, connection) fails every request in it, each of which then follows its limits' failure modes, as when
 * it had its own command.
 */
class Gather {
  static readonly MAX_PARTS = 64;
  #admits: Part[] = [];
  #settles: Part[] = [];
  #soon = false;
  readonly #send: (kind: "admit" | "settle" | "both", numberOfKeys: number, keysAndArgs: (string | number)[]) => Promise<Reply>;

  constructor(send: (kind: "admit" | "settle" | "both", numberOfKeys: number, keysAndArgs: (string | number)[]) => Promise<Reply>) {
    this.#send = send;
  }

  admit(keys: string[], args: (string | number)[], replyLength: number): Promise<Reply> {
    return this.#add(this.#admits, keys, args, replyLength);
  }

  settle(keys: string[], args: (string | number)[], replyLength: number): Promise<Reply> {
    return this.#add(this.#settles, keys, args, replyLength);
  }

  #add(list: Part[], keys: string[], args: (string | number)[], replyLength: number): Promise<Reply> {
    return new Promise<Reply>((resolve, reject) => {
      list.push({ keys, args, replyLength, resolve, reject });
      if (!this.#soon) {
        this.#soon = true;
        setImmediate(() => this.flush());
      }
      // Bounds one script's run on the server (and its argument list); the rest goes in the next call.
      if (this.#admits.length + this.#settles.length >= Gather.MAX_PARTS) this.flush();
    });
  }

  /** Sends what is waiting now (also before a command of its own, and at close). */
  flush(): void {
    this.#soon = false;
    const settles = this.#settles;
    const admits = this.#admits;
    if (settles.length === 0 && admits.length === 0) return;
    this.#settles = [];
    this.#admits = [];
    const parts = settles.length === 0 ? admits : admits.length === 0 ? settles : [...settles, ...admits];
    // KEYS of every part, in order, then ARGV of every part, in the same order (after the settlement count when both).
    const keysAndArgs: (string | number)[] = [];
    for (const part of parts) for (const key of part.keys) keysAndArgs.push(key);
    const numberOfKeys = keysAndArgs.length;
    const kind = settles.length === 0 ? "admit" : admits.length === 0 ? "settle" : "both";
    if (kind === "both") keysAndArgs.push(settles.length);
    for (const part of parts) for (const arg of part.args) keysAndArgs.push(arg);
    this.#send(kind, numberOfKeys, keysAndArgs).then(
      (reply) => {
        let at = 0;
        for (const part of parts) {
          part.resolve(reply.slice(at, at + part.replyLength));
          at += part.replyLength;
        }
      },
      (err: unknown) => {
        for (const part of parts) part.reject(err);
      },
    );
  }
}

export class RedisStore implements Store {
  readonly kind = "redis";
  readonly #client: Client;
  readonly #s: Scripted;
  readonly #connectTimeout: number;
  #everReady = false;
  /** Standalone and Sentinel only: a Cluster spreads a request's instances over slots (see `takeAll`). */
  readonly #gather: Gather;

  constructor(client: Client, connectTimeoutMs = 1000) {
    this.#client = client;
    this.#connectTimeout = connectTimeoutMs;
    client.on("ready", () => (this.#everReady = true));
    client.defineCommand("tgWindowTake", { numberOfKeys: 2, lua: WINDOW_TAKE });
    client.defineCommand("tgWindowAdjust", { numberOfKeys: 1, lua: WINDOW_ADJUST });
    client.defineCommand("tgLeaseAcquire", { numberOfKeys: 1, lua: LEASE_ACQUIRE });
    client.defineCommand("tgLeaseCount", { numberOfKeys: 1, lua: LEASE_COUNT });
    client.defineCommand("tgBudgetReserve", { numberOfKeys: 3, lua: BUDGET_RESERVE });
    client.defineCommand("tgBudgetSettle", { numberOfKeys: 3, lua: BUDGET_SETTLE });
    client.defineCommand("tgBudgetRead", { numberOfKeys: 3, lua: BUDGET_READ });
    client.defineCommand("tgAdmitAll", { lua: ADMIT_ALL });
    client.defineCommand("tgSettleAll", { lua: SETTLE_ALL });
    client.defineCommand("tgSettleThenAdmit", { lua: SETTLE_THEN_ADMIT });
    // Errors surface on commands; an unhandled 'error' event would crash the process.
    client.on("error", () => {});
    this.#s = client as unknown as Scripted;
    this.#gather = new Gather((kind, n, keysAndArgs) =>
      this.#call(() => (kind === "admit" ? this.#s.tgAdmitAll(n, ...keysAndArgs) : kind === "settle" ? this.#s.tgSettleAll(n, ...keysAndArgs) : this.#s.tgSettleThenAdmit(n, ...keysAndArgs))),
    );
  }

  get client(): Client {
    return this.#client;
  }

  async windowTake(key: string, windowMs: number, limit: number, cost: number, now: number): Promise<WindowState> {
    const start = Math.floor(now / windowMs) * windowMs;
    const [allowed, previous, current] = await this.#run(() => this.#s.tgWindowTake(`{${key}}:${start}`, `{${key}}:${start - windowMs}`, windowMs, limit, cost, now, start));
    return { allowed: Number(allowed) === 1, previous: Number(previous), current: Number(current), windowStart: start };
  }

  async windowAdjust(key: string, windowMs: number, windowStart: number, delta: number): Promise<void> {
    if (delta === 0) return;
    await this.#run(() => this.#s.tgWindowAdjust(`{${key}}:${windowStart}`, delta, windowMs * 2));
  }

  async leaseAcquire(key: string, limit: number, id: string, ttlMs: number, now: number): Promise<LeaseState> {
    const [allowed, inFlight] = await this.#run(() => this.#s.tgLeaseAcquire(`{${key}}:leases`, limit, id, now + ttlMs, now, ttlMs));
    return { allowed: Number(allowed) === 1, inFlight: Number(inFlight) };
  }

  async leaseRelease(key: string, id: string): Promise<void> {
    await this.#run(() => this.#client.zrem(`{${key}}:leases`, id));
  }

  async leaseCount(key: string, now: number): Promise<number> {
    return Number(await this.#run(() => this.#s.tgLeaseCount(`{${key}}:leases`, now)));
  }

  async budgetReserve(key: string, limit: number, amount: number, id: string, ttlMs: number, now: number, expireAt: number | undefined): Promise<BudgetState> {
    return budgetState(await this.#run(() => this.#s.tgBudgetReserve(...budgetKeys(key), limit, amount, id, now + ttlMs, now, expireAt ?? 0)));
  }

  async budgetSettle(key: string, id: string, actual: number, now: number, expireAt: number | undefined): Promise<BudgetState> {
    return budgetState(await this.#run(() => this.#s.tgBudgetSettle(...budgetKeys(key), id, actual, now, expireAt ?? 0)));
  }

  async budgetRead(key: string, now: number): Promise<BudgetState> {
    return budgetState(await this.#run(() => this.#s.tgBudgetRead(...budgetKeys(key), now)));
  }

  /**
   * Every limit instance of a request in one script (standalone and Sentinel): atomic across the instances, and
   * gathered with the other requests of the same loop turn into one command for Redis and ioredis to handle (and
   * time out). A Cluster spreads the instances over slots, so there they are taken one by one and given back on
   * refusal.
   */
  async takeAll(ops: TakeOp[], now: number): Promise<TakeAllResult> {
    if (ops.length === 0) return { refused: -1, states: [] };
    if (this.#client instanceof Cluster) return takeOneByOne(this, ops, now);
    const keys: string[] = [];
    const args: (string | number)[] = [now, ops.length];
    const starts: number[] = [];
    for (const op of ops) {
      if (op.kind === "window") {
        const start = Math.floor(now / op.windowMs) * op.windowMs;
        starts.push(start);
        keys.push(`{${op.key}}:${start}`, `{${op.key}}:${start - op.windowMs}`);
        args.push("w", op.windowMs, op.limit, op.cost, start);
      } else if (op.kind === "lease") {
        starts.push(0);
        keys.push(`{${op.key}}:leases`);
        args.push("l", op.limit, op.id, now + op.ttlMs, op.ttlMs);
      } else {
        starts.push(0);
        keys.push(...budgetKeys(op.key));
        args.push("b", op.limit, op.amount, op.id, now + op.ttlMs, op.expireAt ?? 0);
      }
    }
    const reply = await this.#gather.admit(keys, args, 1 + ops.length * 3);
    // This request's commands failed inside the shared call (the others in it are unaffected).
    if (typeof reply[0] === "string") throw new StoreUnavailableError(`Redis: ${reply[0]}`);
    const states = ops.map((op, i) => {
      const allowed = Number(reply[1 + i * 3]) === 1;
      const x = Number(reply[2 + i * 3]);
      const y = Number(reply[3 + i * 3]);
      if (op.kind === "window") return { allowed, previous: x, current: y, windowStart: starts[i]! };
      if (op.kind === "lease") return { allowed, inFlight: x };
      return { allowed, spent: x, reserved: y };
    });
    return { refused: Number(reply[0]) - 1, states };
  }

  async giveAll(ops: GiveOp[], now: number): Promise<GiveOutcome[]> {
    if (this.#client instanceof Cluster) return giveOneByOne(this, ops, now);
    if (ops.length === 0) return [];
    const keys: string[] = [];
    const args: (string | number)[] = [now, ops.length];
    for (const op of ops) {
      if (op.kind === "window") {
        keys.push(`{${op.key}}:${op.windowStart}`);
        args.push("a", op.delta, op.windowMs * 2);
      } else if (op.kind === "lease") {
        keys.push(`{${op.key}}:leases`);
        args.push("r", op.id);
      } else {
        keys.push(...budgetKeys(op.key));
        args.push("s", op.id, op.actual, op.expireAt ?? 0);
      }
    }
    try {
      const reply = await this.#gather.settle(keys, args, 1 + ops.length * 2);
      if (typeof reply[0] === "string") throw new StoreUnavailableError(`Redis: ${reply[0]}`);
      return ops.map((op, i) => (op.kind === "budget" ? { allowed: true, spent: Number(reply[1 + i * 2]), reserved: Number(reply[2 + i * 2]) } : undefined));
    } catch (err) {
      return ops.map(() => err as Error);
    }
  }

  async revoke(key: string, ttlMs: number): Promise<void> {
    await this.#run(() => this.#client.set(`{${key}}:revoked`, "1", "PX", Math.max(1, Math.ceil(ttlMs))));
  }

  async isRevoked(key: string): Promise<boolean> {
    return (await this.#run(() => this.#client.exists(`{${key}}:revoked`))) === 1;
  }

  healthy(): boolean {
    return this.#client.status === "ready" || this.#connecting();
  }

  onReconnect(listener: () => void): () => void {
    this.#client.on("ready", listener);
    return () => void this.#client.off("ready", listener);
  }

  /** Still making the first connection (start-up): worth waiting for rather than counting as an outage. */
  #connecting(): boolean {
    return !this.#everReady && ["wait", "connecting", "connect"].includes(this.#client.status);
  }

  async ping(): Promise<void> {
    await this.#run(() => (this.#client as Redis).ping());
  }

  async close(): Promise<void> {
    this.#gather.flush();
    this.#client.disconnect();
  }

  #firstConnection(): Promise<void> {
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.#client.off("ready", onReady);
        reject(new Error("no connection to Redis yet"));
      }, this.#connectTimeout);
      const onReady = () => {
        clearTimeout(timer);
        resolve();
      };
      this.#client.once("ready", onReady);
    });
  }

  /**
   * Every command of its own: what the gatherer holds goes out first, on the same connection, so a read (the usage
   * endpoint, a budget read) sees every settlement issued before it.
   */
  #run<T>(command: () => Promise<T>): Promise<T> {
    this.#gather.flush();
    return this.#call(command);
  }

  async #call<T>(command: () => Promise<T>): Promise<T> {
    try {
      if (this.#connecting()) await this.#firstConnection();
      try {
        return await command();
      } catch (err) {
        // NOSCRIPT: the server did not have the script, so it did not run and sending it again cannot count twice.
        // ioredis sends a script with EVAL the first time on a connection and EVALSHA after, and retries once on
        // NOSCRIPT; on a Cluster that retry can meet NOSCRIPT again and surface it (seen in CI on a freshly
        // started cluster; one way, from reading ioredis: a connection counts as loaded after an EVAL that a node
        // answered with MOVED). By then ioredis has forgotten that connection's script, so one more call sends EVAL.
        if (!(err instanceof Error) || !err.message.startsWith("NOSCRIPT")) throw err;
        return await command();
      }
    } catch (err) {
      throw new StoreUnavailableError(`Redis: ${(err as Error).message}`);
    }
  }
}

function budgetKeys(key: string): [string, string, string] {
  return [`{${key}}:budget`, `{${key}}:reservations`, `{${key}}:amounts`];
}

function budgetState([allowed, spent, reserved]: Reply): BudgetState {
  return { allowed: Number(allowed) === 1, spent: Number(spent), reserved: Number(reserved) };
}
