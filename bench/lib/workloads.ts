/**
 * What the bench sends: the request bodies, the stand-in's own answers (the reference every proxied body is
 * compared with, byte for byte), the workloads of a round, and each configuration's request target with the
 * credential it carries.
 */
import { fetchOnce, type Spacing, type Target } from "./load.ts";
import { rotatingHeaders, type BenchIssuer } from "./issuer.ts";
import type { Mode } from "./report.ts";
import type { CredentialKind } from "./targets.ts";
import type { StreamRequest } from "./streams.ts";

export const PATH = "/v1/chat/completions";
/** The route to the stand-in that holds streams open. */
export const HOLD_PATH = "/chat/completions";

export type Body = "json" | "sse";

export interface Workload {
  mode: Mode;
  /** Closed loop: connections. */
  connections: number;
  /** Open loop: requests per second. */
  rate?: number;
}

export function workloads(connectionCounts: number[], openRate: number): Workload[] {
  return [
    ...connectionCounts.map((connections) => ({ mode: "json" as const, connections })),
    ...(openRate > 0 ? [{ mode: "open" as const, connections: 0, rate: openRate }] : []),
    ...connectionCounts.map((connections) => ({ mode: "sse" as const, connections })),
  ];
}

const messages = [{ role: "user", content: "Say hello." }];
export const BODIES: Record<Body, Buffer> = {
  json: Buffer.from(JSON.stringify({ model: "gpt-4o-mini", messages })),
  sse: Buffer.from(JSON.stringify({ model: "gpt-4o-mini", messages, stream: true, stream_options: { include_usage: true } })),
};

export class Credentials {
  readonly #key: string;
  readonly #issuer: BenchIssuer;
  constructor(key: string, issuer: BenchIssuer) {
    this.#key = key;
    this.#issuer = issuer;
  }

  /** Fixed headers for a credential kind (jwt-fresh: the reused token; use `supplier` for the pool). */
  headers(kind: CredentialKind): Record<string, string> {
    const base = { "content-type": "application/json" };
    if (kind === "none") return base;
    return { ...base, authorization: `Bearer ${kind === "key" ? this.#key : this.#issuer.token}` };
  }

  /** What a configuration's requests carry: for jwt-fresh a supplier walking the token pool (one walk per configuration). */
  supplier(kind: CredentialKind): Target["headers"] {
    return kind === "jwt-fresh" ? rotatingHeaders(this.headers("none"), this.#issuer.pool) : this.headers(kind);
  }
}

export function target(origin: string, body: Body, headers: Target["headers"]): Target {
  return { origin, path: PATH, headers, body: BODIES[body] };
}

export function streamRequest(origin: string, headers: Record<string, string>): StreamRequest {
  return { port: Number(new URL(origin).port), path: HOLD_PATH, headers, body: BODIES.sse };
}

/** The stand-in's answers, checked for shape: a JSON completion with usage; N events + finish + usage + [DONE]. */
export async function references(upstreamUrl: string, headers: Record<string, string>, spacing: Spacing): Promise<Record<Body, Buffer>> {
  const json = await fetchOnce(target(upstreamUrl, "json", headers));
  const parsed = JSON.parse(json.body.toString("utf8")) as { usage?: unknown };
  if (json.status !== 200 || !parsed.usage) throw new Error(`the stand-in's JSON answer is not a completion with usage (HTTP ${json.status})`);
  const sse = await fetchOnce(target(upstreamUrl, "sse", headers));
  const events = sse.body.toString("utf8").split("\n\n").filter(Boolean);
  const tokens = events.filter((e) => e.includes('"content":"tok')).length;
  if (sse.status !== 200 || events.length !== spacing.count + 3 || tokens !== spacing.count || !events.some((e) => e.includes('"usage"')) || events.at(-1) !== "data: [DONE]") {
    throw new Error(`the stand-in's SSE answer is not ${spacing.count} events + finish + usage + [DONE] (got ${events.length} events)`);
  }
  return { json: json.body, sse: sse.body };
}
