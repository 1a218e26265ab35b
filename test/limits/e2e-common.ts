/** Shared pieces of the limits end-to-end suites: calling a Tollgate, reading its admin port, timing windows. */
import { request, Agent, type Dispatcher } from "undici";
import { SHARED_REDIS_URL } from "../helpers/redis.ts";
import { estimatePromptTokens } from "../../src/metering/estimate.ts";

export interface Reply {
  status: number;
  headers: Dispatcher.ResponseData["headers"];
  text: string;
  json: Record<string, any> | undefined;
}

/** Many sockets at once for the concurrency tests; the default dispatcher is fine elsewhere. */
export const wideAgent = new Agent({ connections: null, pipelining: 1, keepAliveTimeout: 10_000 });

/** POSTs a chat completion with an API key; resolves with the whole response read. */
export async function chat(baseUrl: string, key: string, body: Record<string, unknown>, headers: Record<string, string> = {}, path = "/v1/chat/completions"): Promise<Reply> {
  const res = await request(`${baseUrl}${path}`, {
    method: "POST",
    headers: { authorization: `Bearer ${key}`, "content-type": "application/json", ...headers },
    body: JSON.stringify(body),
    dispatcher: wideAgent,
    headersTimeout: 20_000,
    bodyTimeout: 20_000,
  });
  const text = await res.body.text();
  let json: Record<string, any> | undefined;
  try {
    json = JSON.parse(text) as Record<string, any>;
  } catch {
    json = undefined;
  }
  return { status: res.statusCode, headers: res.headers, text, json };
}

export const HI = [{ role: "user", content: "hi" }];
/** Tollgate's prompt estimate for `HI` (what admission reserves for the prompt). */
export const HI_TOKENS = estimatePromptTokens({ messages: HI });

export interface UsageReportJson {
  limit: string;
  kind: string;
  scope: string[];
  max?: number;
  used?: number;
  remaining?: number;
  period?: string;
  resetsAt?: string | null;
  budgetUsd?: number;
  spentUsd?: number;
  reservedUsd?: number;
  remainingUsd?: number;
  error?: string;
}

/** GET /usage on the admin port; `query` like { user: "alice@example.com", model: "gpt-4o" }. */
export async function usage(adminUrl: string, query: Record<string, string>): Promise<UsageReportJson[]> {
  const res = await request(`${adminUrl}/usage?${new URLSearchParams(query)}`);
  if (res.statusCode !== 200) throw new Error(`/usage answered ${res.statusCode}: ${await res.body.text()}`);
  return ((await res.body.json()) as { limits: UsageReportJson[] }).limits;
}

export async function usageOf(adminUrl: string, query: Record<string, string>, limit: string): Promise<UsageReportJson> {
  const found = (await usage(adminUrl, query)).find((r) => r.limit === limit);
  if (!found) throw new Error(`no ${limit} in /usage for ${JSON.stringify(query)}`);
  return found;
}

export async function metricsText(adminUrl: string): Promise<string> {
  return (await request(`${adminUrl}/metrics`)).body.text();
}

/** The value of one series, e.g. metric(text, 'tollgate_tokens_total{model="gpt-4o-mini",type="input",source="provider"}'); 0 when absent. */
export function metric(text: string, series: string): number {
  const line = text.split("\n").find((l) => l.startsWith(`${series} `));
  return line ? Number(line.slice(series.length + 1)) : 0;
}

export async function readyz(adminUrl: string): Promise<{ status: number; body: Record<string, any> }> {
  const res = await request(`${adminUrl}/readyz`);
  return { status: res.statusCode, body: (await res.body.json()) as Record<string, any> };
}

/**
 * Sliding windows are fixed buckets weighted together: a run that crosses a bucket edge sees the earlier count
 * decay. Waits, when needed, so the next `needMs` fall inside one bucket of `windowMs`.
 */
export async function awayFromWindowEdge(windowMs: number, needMs = 6000): Promise<void> {
  const left = windowMs - (Date.now() % windowMs);
  if (left < needMs) await new Promise((r) => setTimeout(r, left + 50));
}

/** Seconds the engine should ask a caller to wait after filling a fresh window of `windowMs` (no previous bucket). */
export function secondsUntilFits(windowMs: number, limit: number, cost: number, current: number, at = Date.now()): number {
  const elapsed = at % windowMs;
  const after = current <= 0 ? 0 : Math.max(0, windowMs * (1 - (limit - cost) / current));
  return (windowMs - elapsed + after) / 1000;
}

/** `1m23s`, `250ms`, `1h2m3s` → milliseconds. */
export function parseReset(value: string): number {
  const m = /^(?:(\d+)h)?(?:(\d+)m(?!s))?(?:(\d+)s)?(?:(\d+)ms)?$/.exec(value);
  if (!m || value === "") throw new Error(`not a reset duration: ${value}`);
  return Number(m[1] ?? 0) * 3_600_000 + Number(m[2] ?? 0) * 60_000 + Number(m[3] ?? 0) * 1000 + Number(m[4] ?? 0);
}

export function redisStore(prefix: string, url = SHARED_REDIS_URL, extra = ""): string {
  return `{ type: redis, url: "${url}", keyPrefix: "${prefix}"${extra ? `, ${extra}` : ""} }`;
}

/** The OpenAI error body every refusal carries. */
export function errorOf(reply: Reply): { type?: string; code?: string; message?: string; param?: unknown } {
  return (reply.json?.error ?? {}) as { type?: string; code?: string; message?: string; param?: unknown };
}

/** Micro-dollars of a USD figure, rounded (floating sums of costs drift in the last digits). */
export function micros(usd: number | undefined): number {
  return Math.round((usd ?? 0) * 1e6);
}
