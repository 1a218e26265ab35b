/**
 * Redis for tests: the machine's shared server on 127.0.0.1:6379 (tests use their own key prefix and delete
 * only their own keys), a private redis-server on an ephemeral port that a test may stop and restart, a master
 * watched by a Sentinel, and a three-master Cluster on loopback ports.
 */
import { spawn, spawnSync, type ChildProcess } from "node:child_process";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { createServer } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { randomBytes } from "node:crypto";
import { Redis } from "ioredis";

export const SHARED_REDIS_URL = process.env.TOLLGATE_TEST_REDIS_URL ?? "redis://127.0.0.1:6379";

export function hasRedisServer(): boolean {
  return spawnSync("redis-server", ["--version"]).status === 0;
}

/** A prefix no other test run uses; `cleanup` deletes exactly the keys under it. */
export function testPrefix(name: string): string {
  return `tollgate-test:${name}:${randomBytes(4).toString("hex")}:`;
}

/** Host/port pairs as a YAML flow sequence, for a policy's `nodes:` or `sentinels:`. */
export function yamlNodes(nodes: readonly { host: string; port: number }[]): string {
  return `[${nodes.map((n) => `{ host: ${n.host}, port: ${n.port} }`).join(", ")}]`;
}

export async function deleteKeys(url: string, prefix: string): Promise<void> {
  const client = new Redis(url, { lazyConnect: true, maxRetriesPerRequest: 1 });
  try {
    await client.connect();
    let cursor = "0";
    do {
      const [next, keys] = await client.scan(cursor, "MATCH", `${prefix}*`, "COUNT", 500);
      cursor = next;
      if (keys.length > 0) await client.del(...keys);
    } while (cursor !== "0");
  } finally {
    client.disconnect();
  }
}

export async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.once("error", reject);
    server.listen(0, "127.0.0.1", () => {
      const port = (server.address() as { port: number }).port;
      server.close(() => resolve(port));
    });
  });
}

async function waitForPing(port: number, timeoutMs = 5000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    if (spawnSync("redis-cli", ["-p", String(port), "ping"], { encoding: "utf8" }).stdout.trim() === "PONG") return;
    await new Promise((r) => setTimeout(r, 50));
  }
  throw new Error(`redis-server on ${port} did not answer`);
}

export interface PrivateRedis {
  port: number;
  url: string;
  stop(): Promise<void>;
  start(): Promise<void>;
  close(): Promise<void>;
}

/** A redis-server of the test's own, which the test may stop and start again on the same port. */
export async function startPrivateRedis(): Promise<PrivateRedis> {
  const port = await freePort();
  const dir = mkdtempSync(join(tmpdir(), "tollgate-redis-"));
  let child: ChildProcess | undefined;
  const start = async () => {
    child = spawn("redis-server", ["--port", String(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--dir", dir], { stdio: "ignore" });
    await waitForPing(port);
  };
  const stop = async () => {
    if (!child || child.exitCode !== null) return;
    const exited = new Promise((r) => child!.once("exit", r));
    child.kill("SIGKILL");
    await exited;
  };
  await start();
  return {
    port,
    url: `redis://127.0.0.1:${port}`,
    start,
    stop,
    async close() {
      await stop();
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

export interface TestCluster {
  nodes: { host: string; port: number }[];
  close(): Promise<void>;
}

/** Three masters with cluster mode on loopback ports, joined with `redis-cli --cluster create`. */
export async function startCluster(): Promise<TestCluster> {
  const dir = mkdtempSync(join(tmpdir(), "tollgate-cluster-"));
  const ports = [await freePort(), await freePort(), await freePort()];
  const children = ports.map((port) =>
    spawn("redis-server", ["--port", String(port), "--bind", "127.0.0.1", "--cluster-enabled", "yes", "--cluster-config-file", join(dir, `nodes-${port}.conf`), "--save", "", "--appendonly", "no", "--dir", dir], { stdio: "ignore" }),
  );
  const close = async () => {
    await Promise.all(children.map((c) => (c.exitCode !== null ? undefined : new Promise((r) => (c.once("exit", r), c.kill("SIGKILL"))))));
    rmSync(dir, { recursive: true, force: true });
  };
  try {
    for (const port of ports) await waitForPing(port);
    const create = spawnSync("redis-cli", ["--cluster", "create", ...ports.map((p) => `127.0.0.1:${p}`), "--cluster-replicas", "0", "--cluster-yes"], { encoding: "utf8", timeout: 20_000 });
    if (create.status !== 0) throw new Error(`cluster create failed: ${create.stdout}${create.stderr}`);
    const deadline = Date.now() + 10_000;
    while (Date.now() < deadline) {
      const info = spawnSync("redis-cli", ["-p", String(ports[0]), "cluster", "info"], { encoding: "utf8" }).stdout;
      if (info.includes("cluster_state:ok")) return { nodes: ports.map((port) => ({ host: "127.0.0.1", port })), close };
      await new Promise((r) => setTimeout(r, 100));
    }
    throw new Error("the cluster did not reach cluster_state:ok");
  } catch (err) {
    await close();
    throw err;
  }
}

export interface TestSentinel {
  sentinels: { host: string; port: number }[];
  masterName: string;
  /** With a replica: promotes it through the Sentinel and resolves once the Sentinel reports it as the master. */
  failover(): Promise<void>;
  /** The port of the master as the Sentinel reports it now. */
  masterPort(): number;
  close(): Promise<void>;
}

/**
 * A private master and one Sentinel monitoring it (redis-server in sentinel mode: the same Debian package), and
 * with `replica` a replica of the master that a failover promotes.
 */
export async function startSentinel(opts: { replica?: boolean } = {}): Promise<TestSentinel> {
  const master = await startPrivateRedis();
  const dir = mkdtempSync(join(tmpdir(), "tollgate-sentinel-"));
  let replica: ChildProcess | undefined;
  let replicaPort = 0;
  if (opts.replica) {
    replicaPort = await freePort();
    // --dir: a replica writes the RDB of its full resync there, not in the test's working directory.
    replica = spawn("redis-server", ["--port", String(replicaPort), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--dir", dir, "--replicaof", "127.0.0.1", String(master.port)], { stdio: "ignore" });
    await waitForPing(replicaPort);
    const synced = Date.now() + 10_000;
    while (!spawnSync("redis-cli", ["-p", String(replicaPort), "info", "replication"], { encoding: "utf8" }).stdout.includes("master_link_status:up")) {
      if (Date.now() > synced) {
        replica.kill("SIGKILL");
        await master.close();
        rmSync(dir, { recursive: true, force: true });
        throw new Error("the replica did not sync");
      }
      await new Promise((r) => setTimeout(r, 50));
    }
  }
  const port = await freePort();
  const masterName = "tollgate-test-master";
  const config = join(dir, "sentinel.conf");
  // Sentinel rewrites its configuration file as it learns the topology, so it gets a file of its own.
  writeFileSync(config, `port ${port}\nbind 127.0.0.1\nsentinel monitor ${masterName} 127.0.0.1 ${master.port} 1\n`);
  const child = spawn("redis-server", [config, "--sentinel"], { stdio: "ignore" });
  const close = async () => {
    for (const c of [child, replica]) if (c && c.exitCode === null) await new Promise((r) => (c.once("exit", r), c.kill("SIGKILL")));
    await master.close();
    rmSync(dir, { recursive: true, force: true });
  };
  const masterAddress = () => spawnSync("redis-cli", ["-p", String(port), "sentinel", "get-master-addr-by-name", masterName], { encoding: "utf8" }).stdout;
  const failover = async () => {
    if (!replica) throw new Error("no replica to fail over to");
    // The Sentinel must have discovered the replica (INFO from the master, every 10 s at first) before it can promote it.
    const deadline = Date.now() + 30_000;
    while (Date.now() < deadline) {
      const answer = spawnSync("redis-cli", ["-p", String(port), "sentinel", "failover", masterName], { encoding: "utf8" }).stdout;
      if (answer.trim() === "OK") break;
      await new Promise((r) => setTimeout(r, 200));
    }
    while (Date.now() < deadline) {
      if (masterAddress().includes(String(replicaPort))) return;
      await new Promise((r) => setTimeout(r, 50));
    }
    throw new Error("the Sentinel did not promote the replica");
  };
  try {
    const deadline = Date.now() + 10_000;
    while (Date.now() < deadline) {
      if (masterAddress().includes(String(master.port))) {
        return { sentinels: [{ host: "127.0.0.1", port }], masterName, failover, masterPort: () => Number(masterAddress().trim().split(/\s+/)[1]), close };
      }
      await new Promise((r) => setTimeout(r, 50));
    }
    throw new Error("the Sentinel did not report its master");
  } catch (err) {
    await close();
    throw err;
  }
}
