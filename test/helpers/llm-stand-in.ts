/**
 * A configurable OpenAI-compatible chat-completions stand-in for the limits and metering tests. Beyond the demo
 * stand-in it can: report chosen usage (per request through `x-stand-in-usage: <prompt>,<completion>`), stream
 * without a usage chunk whatever the client asked (`streamUsage: "never"`), hold a stream open after its first
 * event until the test releases it (`x-stand-in-hold: 1`), answer an error status (`x-stand-in-status: 500`),
 * and record every event it sent so a test can compare them with what the client received.
 */
import { createServer, type IncomingHttpHeaders, type ServerResponse } from "node:http";
import { once } from "node:events";

export interface LlmUsage {
  prompt_tokens: number;
  completion_tokens: number;
}

export interface LlmStandInOptions {
  /** Content events per streamed completion (before the finish chunk, the usage chunk and [DONE]). Default 5. */
  events?: number;
  /** Milliseconds between content events. Default 5. */
  intervalMs?: number;
  /** `on-request`: a usage chunk when the request set stream_options.include_usage (OpenAI); `never`: none. */
  streamUsage?: "on-request" | "never";
  /** Usage reported when the request carries no x-stand-in-usage header. Default 12 prompt, 7 completion. */
  usage?: (body: Record<string, unknown>) => LlmUsage;
  /** Keep a record of each request (the 1,000-request test turns it off). Default true. */
  remember?: boolean;
}

export interface LlmExchange {
  url: string;
  headers: IncomingHttpHeaders;
  body: Record<string, unknown>;
  /** Each SSE event written, `data: …\n\n` included. */
  sent: string[];
  /** The stream ended because the client (Tollgate) went away before [DONE]. */
  aborted: boolean;
}

export interface LlmStandIn {
  readonly url: string;
  readonly requests: LlmExchange[];
  /** Requests answered so far (counted even when not remembered). */
  count(): number;
  openStreams(): number;
  abortedStreams(): number;
  /** Lets every held stream finish. */
  release(): void;
  close(): Promise<void>;
}

export async function startLlmStandIn(options: LlmStandInOptions = {}): Promise<LlmStandIn> {
  const events = options.events ?? 5;
  const intervalMs = options.intervalMs ?? 5;
  const requests: LlmExchange[] = [];
  let answered = 0;
  let open = 0;
  let aborted = 0;
  let waiting: (() => void)[] = [];

  const server = createServer(async (req, res) => {
    const chunks: Buffer[] = [];
    for await (const chunk of req) chunks.push(chunk as Buffer);
    answered++;
    let body: Record<string, unknown> = {};
    try {
      body = chunks.length ? (JSON.parse(Buffer.concat(chunks).toString("utf8")) as Record<string, unknown>) : {};
    } catch {
      return json(res, 400, { error: { message: "invalid JSON", type: "invalid_request_error", code: null } });
    }
    const exchange: LlmExchange = { url: req.url ?? "", headers: req.headers, body, sent: [], aborted: false };
    if (options.remember !== false) requests.push(exchange);
    if (req.method !== "POST" || !(req.url ?? "").split("?")[0]!.endsWith("/chat/completions")) {
      return json(res, 404, { error: { message: "not found", type: "invalid_request_error", code: null } });
    }
    const status = Number(req.headers["x-stand-in-status"] ?? 200);
    if (status >= 400) return json(res, status, { error: { message: "stand-in failure", type: "api_error", code: null } });
    const usage = usageFor(req.headers["x-stand-in-usage"], body, options.usage);
    const model = typeof body.model === "string" ? body.model : "gpt-4o-mini";
    if (body.stream !== true) {
      return json(res, 200, {
        id: "chatcmpl-llm",
        object: "chat.completion",
        created: 0,
        model,
        choices: [{ index: 0, message: { role: "assistant", content: "Hello from the stand-in." }, finish_reason: "stop" }],
        usage: { ...usage, total_tokens: usage.prompt_tokens + usage.completion_tokens },
      });
    }
    open++;
    res.on("close", () => {
      open--;
      if (!res.writableFinished) {
        aborted++;
        exchange.aborted = true;
      }
    });
    const hold = req.headers["x-stand-in-hold"] === "1";
    const withUsage = options.streamUsage !== "never" && includeUsage(body);
    res.writeHead(200, { "content-type": "text/event-stream", "cache-control": "no-cache" });
    const base = { id: "chatcmpl-llm", object: "chat.completion.chunk", created: 0, model };
    const send = (data: unknown) => {
      if (res.destroyed) return false;
      const event = `data: ${typeof data === "string" ? data : JSON.stringify(data)}\n\n`;
      exchange.sent.push(event);
      res.write(event);
      return true;
    };
    for (let i = 0; i < events; i++) {
      const delta = i === 0 ? { role: "assistant", content: `tok${i} ` } : { content: `tok${i} ` };
      if (!send({ ...base, choices: [{ index: 0, delta, finish_reason: null }] })) return;
      if (i === 0 && hold) {
        await new Promise<void>((resolve) => {
          waiting.push(resolve);
          res.once("close", resolve);
        });
      } else if (intervalMs > 0) await new Promise((r) => setTimeout(r, intervalMs));
    }
    if (!send({ ...base, choices: [{ index: 0, delta: {}, finish_reason: "stop" }] })) return;
    if (withUsage && !send({ ...base, choices: [], usage: { ...usage, total_tokens: usage.prompt_tokens + usage.completion_tokens } })) return;
    if (res.destroyed) return;
    exchange.sent.push("data: [DONE]\n\n");
    res.end("data: [DONE]\n\n");
  });
  server.keepAliveTimeout = 60_000;
  server.listen(0, "127.0.0.1");
  await once(server, "listening");
  const port = (server.address() as { port: number }).port;
  return {
    url: `http://127.0.0.1:${port}`,
    requests,
    count: () => answered,
    openStreams: () => open,
    abortedStreams: () => aborted,
    release() {
      const now = waiting;
      waiting = [];
      for (const resolve of now) resolve();
    },
    close: () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
}

function usageFor(header: string | string[] | undefined, body: Record<string, unknown>, fallback: LlmStandInOptions["usage"]): LlmUsage {
  if (typeof header === "string") {
    const [prompt, completion] = header.split(",").map(Number);
    return { prompt_tokens: prompt ?? 0, completion_tokens: completion ?? 0 };
  }
  return fallback ? fallback(body) : { prompt_tokens: 12, completion_tokens: 7 };
}

function includeUsage(body: Record<string, unknown>): boolean {
  const opts = body.stream_options;
  return typeof opts === "object" && opts !== null && (opts as Record<string, unknown>).include_usage === true;
}

function json(res: ServerResponse, status: number, body: unknown): void {
  const text = JSON.stringify(body);
  res.writeHead(status, { "content-type": "application/json", "content-length": Buffer.byteLength(text) }).end(text);
}

/** Parses an SSE body into its `data:` payloads, in order. */
export function sseData(text: string): string[] {
  return text
    .split(/\r?\n\r?\n/)
    .map((event) => event.split(/\r?\n/).filter((l) => l.startsWith("data:")).map((l) => l.slice(5).trimStart()).join("\n"))
    .filter((d) => d !== "");
}
