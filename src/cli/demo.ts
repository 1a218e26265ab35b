/**
 * `tollgate demo`: the newcomer's thirty-second tour. Starts a stand-in OpenAI-compatible upstream and Tollgate
 * on the quickstart policy in front of it, then drives them with the real `openai` SDK.
 */
import OpenAI from "openai";
import type { Logger } from "pino";
import { startStandInUpstream } from "../demo/stand-in-upstream.ts";
import { TollgateServer } from "../server.ts";
import { quickstartSource } from "../config/source.ts";
import { generateApiKey, hashApiKey } from "../auth/keys.ts";

export interface DemoOptions {
  logger: Logger;
  print: (line: string) => void;
  /** Keep Tollgate and the stand-in running after the tour (interactive use). */
  keepRunning: boolean;
  port?: number;
}

export interface DemoOutcome {
  name: string;
  ok: boolean;
  detail: string;
}

export async function demo(options: DemoOptions): Promise<{ outcomes: DemoOutcome[]; server: TollgateServer; stop: () => Promise<void> }> {
  const { print } = options;
  const upstream = await startStandInUpstream({ events: 6, intervalMs: 120 });
  const key = generateApiKey();
  const env = {
    ...process.env,
    UPSTREAM_URL: upstream.url,
    UPSTREAM_API_KEY: "stand-in-upstream-secret",
    TOLLGATE_PORT: String(options.port ?? 0),
    TOLLGATE_ADMIN_PORT: "0",
  };
  const server = new TollgateServer({ source: quickstartSource(hashApiKey(key), env), logger: options.logger });
  const { port, adminPort } = await server.start();
  const baseURL = `http://127.0.0.1:${port}/v1`;
  print(`Stand-in upstream on ${upstream.url}; Tollgate on http://127.0.0.1:${port} (admin :${adminPort}).`);
  print("");

  const client = new OpenAI({ apiKey: key, baseURL, maxRetries: 0 });
  const outcomes: DemoOutcome[] = [];
  const step = async (name: string, expect: string, run: () => Promise<string>) => {
    let outcome: DemoOutcome;
    try {
      outcome = { name, ok: true, detail: await run() };
    } catch (err) {
      const status = (err as { status?: number }).status;
      const code = (err as { code?: string }).code;
      outcome = { name, ok: expect === `${status} ${code}`, detail: `${status ?? ""} ${code ?? (err as Error).message}`.trim() };
    }
    outcomes.push(outcome);
    print(`${outcome.ok ? "✓" : "✗"} ${name.padEnd(38)} → ${outcome.detail}`);
  };

  await step("allowed call (gpt-4o-mini)", "", async () => {
    const r = await client.chat.completions.create({ model: "gpt-4o-mini", messages: [{ role: "user", content: "Hello" }] });
    return `200, "${r.choices[0]?.message.content}" (${r.usage?.total_tokens} tokens)`;
  });
  await step("streamed call (events as they arrive)", "", async () => {
    const started = Date.now();
    const stream = await client.chat.completions.create({ model: "gpt-4o-mini", stream: true, messages: [{ role: "user", content: "Stream" }] });
    const arrivals: number[] = [];
    for await (const chunk of stream) if (chunk.choices[0]?.delta.content) arrivals.push(Date.now() - started);
    return `200, ${arrivals.length} events at ${arrivals.map((t) => `${t}ms`).join(", ")}`;
  });
  await step("bad key", "401 invalid_api_key", async () => {
    const bad = new OpenAI({ apiKey: generateApiKey(), baseURL, maxRetries: 0 });
    await bad.chat.completions.create({ model: "gpt-4o-mini", messages: [{ role: "user", content: "Hi" }] });
    return "unexpectedly allowed";
  });
  await step("forbidden model (gpt-4o)", "403 model_not_allowed", async () => {
    await client.chat.completions.create({ model: "gpt-4o", messages: [{ role: "user", content: "Hi" }] });
    return "unexpectedly allowed";
  });
  const lastSeen = upstream.seen.at(-1);
  print("");
  print(`The upstream saw Authorization: "${lastSeen?.headers.authorization === "Bearer stand-in-upstream-secret" ? "Bearer <Tollgate's upstream key>" : "something else!"}" and x-tollgate-user: "${lastSeen?.headers["x-tollgate-user"]}" — never the client's key.`);

  const stop = async () => {
    await server.shutdown(2_000);
    await upstream.close();
  };
  if (options.keepRunning) {
    print("");
    print(`Tollgate keeps running on the quickstart policy. Your key: ${key}`);
    print(`  curl -s ${baseURL}/chat/completions -H "Authorization: Bearer ${key}" -H "content-type: application/json" \\`);
    print(`    -d '{"model":"gpt-4o-mini","messages":[{"role":"user","content":"hi"}]}'`);
    print(`  curl -s http://127.0.0.1:${adminPort}/metrics | grep tollgate_requests_total`);
    print(`Press Ctrl-C to stop.`);
  }
  return { outcomes, server, stop };
}
