/**
 * A stand-in OpenAI-compatible upstream (what LiteLLM or Azure OpenAI would answer), for the demo, the tests
 * and the benches. It answers chat completions as JSON or SSE with a usage block, embeddings and the model
 * list, and remembers the last requests it saw so tests can check what Tollgate forwarded.
 */
import { createServer, type IncomingMessage, type Server, type ServerResponse } from "node:http";
import { once } from "node:events";

export interface SeenRequest {
  method: string;
  url: string;
  headers: IncomingMessage["headers"];
  body: string;
}

export interface StandInOptions {
  /** SSE content events per streamed completion (before the usage chunk and [DONE]). */
  events?: number;
  /** Milliseconds between SSE events. */
  intervalMs?: number;
  /** How many requests to remember (the benches set 0). */
  remember?: number;
  /** Pad JSON completions to about this many bytes. */
  responseBytes?: number;
}

export interface StandInUpstream {
  readonly url: string;
  readonly port: number;
  readonly server: Server;
  readonly seen: SeenRequest[];
  /** Streams the stand-in is currently writing. */
  readonly openStreams: () => number;
  /** Streams that ended because the client (Tollgate) went away. */
  readonly abortedStreams: () => number;
  close(): Promise<void>;
}

const MODELS = ["gpt-4o-mini", "gpt-4o", "gpt-4.1-mini", "text-embedding-3-small"];

export async function startStandInUpstream(options: StandInOptions = {}, port = 0, host = "127.0.0.1"): Promise<StandInUpstream> {
  const events = options.events ?? 5;
  const intervalMs = options.intervalMs ?? 20;
  const remember = options.remember ?? 50;
  const seen: SeenRequest[] = [];
  let open = 0;
  let aborted = 0;

  const server = createServer(async (req, res) => {
    const chunks: Buffer[] = [];
    for await (const chunk of req) chunks.push(chunk as Buffer);
    const body = Buffer.concat(chunks).toString("utf8");
    if (remember > 0) {
      seen.push({ method: req.method ?? "", url: req.url ?? "", headers: req.headers, body });
      if (seen.length > remember) seen.shift();
    }
    const path = (req.url ?? "/").split("?")[0]!.replace(/^\/v1/, "");
    if (req.method === "GET" && path === "/models") return json(res, 200, { object: "list", data: MODELS.map((id) => ({ id, object: "model", created: 0, owned_by: "stand-in" })) });
    let payload: Record<string, unknown> = {};
    try {
      payload = body ? (JSON.parse(body) as Record<string, unknown>) : {};
    } catch {
      return json(res, 400, { error: { message: "invalid JSON", type: "invalid_request_error", code: null } });
    }
    const model = typeof payload.model === "string" ? payload.model : "gpt-4o-mini";
    if (req.method === "POST" && path === "/embeddings") {
      return json(res, 200, { object: "list", model, data: [{ object: "embedding", index: 0, embedding: [0.1, 0.2, 0.3] }], usage: { prompt_tokens: 4, total_tokens: 4 } });
    }
    if (req.method === "POST" && path === "/chat/completions") {
      if (payload.stream === true) {
        open++;
        let ended = false;
        res.on("close", () => {
          open--;
          if (!ended) aborted++;
        });
        await stream(res, model, events, intervalMs, includeUsage(payload));
        ended = true;
        return;
      }
      const content = "Hello from the stand-in upstream.";
      const reply = {
        id: "chatcmpl-standin",
        object: "chat.completion",
        created: 0,
        model,
        choices: [{ index: 0, message: { role: "assistant", content }, finish_reason: "stop" }],
        usage: { prompt_tokens: 12, completion_tokens: 7, total_tokens: 19 },
        ...(options.responseBytes ? { system_fingerprint: "x".repeat(Math.max(0, options.responseBytes - 330)) } : {}),
      };
      return json(res, 200, reply);
    }
    json(res, 404, { error: { message: `no stand-in for ${req.method} ${path}`, type: "invalid_request_error", code: null } });
  });
  server.keepAliveTimeout = 60_000;
  server.listen(port, host);
  await once(server, "listening");
  const bound = (server.address() as { port: number }).port;
  return {
    url: `http://${host}:${bound}`,
    port: bound,
    server,
    seen,
    openStreams: () => open,
    abortedStreams: () => aborted,
    close: () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
}

function includeUsage(payload: Record<string, unknown>): boolean {
  const opts = payload.stream_options;
  return typeof opts === "object" && opts !== null && (opts as Record<string, unknown>).include_usage === true;
}

async function stream(res: ServerResponse, model: string, events: number, intervalMs: number, usage: boolean): Promise<void> {
  res.writeHead(200, { "content-type": "text/event-stream", "cache-control": "no-cache" });
  const base = { id: "chatcmpl-standin", object: "chat.completion.chunk", created: 0, model };
  for (let i = 0; i < events; i++) {
    if (res.destroyed) return;
    const delta = i === 0 ? { role: "assistant", content: "tok0 " } : { content: `tok${i} ` };
    res.write(`data: ${JSON.stringify({ ...base, choices: [{ index: 0, delta, finish_reason: null }] })}\n\n`);
    if (intervalMs > 0) await new Promise((r) => setTimeout(r, intervalMs));
  }
  if (res.destroyed) return;
  res.write(`data: ${JSON.stringify({ ...base, choices: [{ index: 0, delta: {}, finish_reason: "stop" }] })}\n\n`);
  if (usage) res.write(`data: ${JSON.stringify({ ...base, choices: [], usage: { prompt_tokens: 12, completion_tokens: events, total_tokens: 12 + events } })}\n\n`);
  res.end("data: [DONE]\n\n");
}

function json(res: ServerResponse, status: number, body: unknown): void {
  const text = JSON.stringify(body);
  res.writeHead(status, { "content-type": "application/json", "content-length": Buffer.byteLength(text) }).end(text);
}
