/**
 * Test harness: a stand-in upstream plus an in-process Tollgate on a policy written for the test, on ephemeral
 * loopback ports, with the audit log captured. Every test gets its own and stops it in teardown.
 */
import { mkdtempSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Writable } from "node:stream";
import { TollgateServer } from "../../src/server.ts";
import { fileSource } from "../../src/config/source.ts";
import { createLogger } from "../../src/observe/audit.ts";
import { Metrics } from "../../src/observe/metrics.ts";
import { startStandInUpstream, type StandInOptions, type StandInUpstream } from "../../src/demo/stand-in-upstream.ts";
import { generateApiKey, hashApiKey } from "../../src/auth/keys.ts";

export interface Harness {
  upstream: StandInUpstream;
  server: TollgateServer;
  url: string;
  adminUrl: string;
  policyFile: string;
  /** Parsed JSON log lines (audit and operational) written so far. */
  logs: Record<string, unknown>[];
  audit(): Record<string, unknown>[];
  /** Raw log text, for asserting that no secret ever appears. */
  logText(): string;
  stop(): Promise<void>;
}

export interface TestKey {
  key: string;
  hash: string;
}

export function makeKey(): TestKey {
  const key = generateApiKey();
  return { key, hash: hashApiKey(key) };
}

export function tempDir(): string {
  return mkdtempSync(join(tmpdir(), "tollgate-test-"));
}

/** `policy` is YAML text; `${UPSTREAM_URL}` in it is set to the stand-in's URL. */
export async function startHarness(policy: string | ((upstreamUrl: string) => string), options: { upstream?: StandInOptions; env?: NodeJS.ProcessEnv } = {}): Promise<Harness> {
  const upstream = await startStandInUpstream(options.upstream ?? { events: 5, intervalMs: 10 });
  const dir = tempDir();
  const policyFile = join(dir, "policy.yaml");
  writeFileSync(policyFile, typeof policy === "function" ? policy(upstream.url) : policy);
  const chunks: string[] = [];
  const sink = new Writable({
    write(chunk, _enc, cb) {
      chunks.push(chunk.toString());
      cb();
    },
  });
  const logger = createLogger(sink as never, "info");
  const env = { ...process.env, UPSTREAM_URL: upstream.url, ...options.env };
  const server = new TollgateServer({ source: fileSource(policyFile, env), logger, metrics: new Metrics({ defaultMetrics: false }) });
  const { port, adminPort } = await server.start();
  const parse = () =>
    chunks
      .join("")
      .split("\n")
      .filter(Boolean)
      .map((l) => JSON.parse(l) as Record<string, unknown>);
  return {
    upstream,
    server,
    url: `http://127.0.0.1:${port}`,
    adminUrl: `http://127.0.0.1:${adminPort}`,
    policyFile,
    get logs() {
      return parse();
    },
    audit: () => parse().filter((l) => l.log === "audit"),
    logText: () => chunks.join(""),
    async stop() {
      if (!server.draining) await server.shutdown(1000);
      await upstream.close();
    },
  };
}

/** A policy with listeners on ephemeral ports: the usual start of a test policy. */
export const SERVER_BLOCK = `version: 1
server:
  listen: { host: 127.0.0.1, port: 0 }
  admin: { host: 127.0.0.1, port: 0 }
  shutdownGrace: 2s
`;

/** Waits until `predicate` holds, polling; fails after `timeoutMs`. */
export async function until(predicate: () => boolean | Promise<boolean>, timeoutMs = 5000, what = "condition"): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await predicate())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}
