/**
 * Streaming forwarder over a keep-alive undici Pool. The response is never buffered: each chunk goes to the
 * client as it arrives, the upstream is paused when the client cannot keep up, and a client that goes away
 * aborts the upstream request. Observers (metering) see every chunk without holding it.
 */
import type { IncomingMessage, ServerResponse } from "node:http";
import { Pool, errors as undiciErrors, type Dispatcher } from "undici";
import { forwardableResponseHeaders } from "./headers.ts";
import { TollgateError, sendError, type RequestIdHeader } from "./errors.ts";

export interface UpstreamTarget {
  /** Origin only, e.g. http://127.0.0.1:4000 */
  readonly origin: string;
  /** A base path from the upstream URL, prefixed to every forwarded path ("" for none). */
  readonly basePath: string;
}

export interface ForwardRequest {
  readonly method: string;
  readonly path: string;
  readonly headers: Record<string, string | string[]>;
  /** A buffered body, the client's stream, or null when the request has none. */
  readonly body: Buffer | IncomingMessage | null;
  /** Headers Tollgate adds to the client's response (e.g. Deprecation/Sunset), over the upstream's. */
  readonly responseHeaders?: Readonly<Record<string, string | string[]>> | undefined;
}

/**
 * Sees the response as it passes (metering). `transform` returns the bytes to send for each chunk — the chunk
 * itself, except when the observer removes something Tollgate added (the usage chunk it asked for); `flush`
 * returns what it held back when the upstream ends. It must not throw.
 */
export interface ResponseObserver {
  onResponseStart?(status: number, headers: Record<string, string | string[] | undefined>): void;
  transform?(chunk: Buffer): Buffer;
  flush?(): Buffer;
  onEnd?(outcome: ForwardOutcome): void;
}

export type ForwardOutcome = "complete" | "client_aborted" | "upstream_error";

export interface ForwardResult {
  readonly status: number;
  readonly outcome: ForwardOutcome;
  /** Milliseconds from dispatch to the upstream's response headers; undefined when none arrived. */
  readonly ttfbMs: number | undefined;
  readonly error?: TollgateError | undefined;
}

export interface ForwarderOptions {
  connections: number;
  connectTimeoutMs: number;
  headersTimeoutMs: number;
  bodyTimeoutMs: number;
}

export class Forwarder {
  readonly target: UpstreamTarget;
  readonly #pool: Pool;

  constructor(url: string, options: ForwarderOptions) {
    const parsed = new URL(url);
    this.target = { origin: parsed.origin, basePath: parsed.pathname === "/" ? "" : parsed.pathname.replace(/\/$/, "") };
    this.#pool = new Pool(parsed.origin, {
      connections: options.connections,
      pipelining: 1,
      keepAliveTimeout: 30_000,
      headersTimeout: options.headersTimeoutMs,
      bodyTimeout: options.bodyTimeoutMs,
      connect: { timeout: options.connectTimeoutMs },
    });
  }

  forward(req: ForwardRequest, res: ServerResponse, observer?: ResponseObserver, requestId?: RequestIdHeader): Promise<ForwardResult> {
    // The callbacks below are written in this function's body, not inside the promise's executor: they live as
    // long as the response streams, and what they can reach stays in memory that long. This way the request (its
    // headers and body, which undici has already serialized or holds itself) is not captured by them; only its
    // extra response headers are.
    let resolve!: (result: ForwardResult) => void;
    const promise = new Promise<ForwardResult>((r) => (resolve = r));
    const responseHeaders = req.responseHeaders;
    const started = performance.now();
    let ttfbMs: number | undefined;
    let status = 0;
    let controller: Dispatcher.DispatchController | undefined;
    let settled = false;

    const finish = (outcome: ForwardOutcome, error?: TollgateError) => {
      if (settled) return;
      settled = true;
      res.off("close", onClientClose);
      observer?.onEnd?.(outcome);
      resolve({ status: status || error?.status || 0, outcome, ttfbMs, error });
    };
    const onClientClose = () => {
      if (res.writableFinished) return;
      // Settle first: aborting calls onResponseError synchronously, which must not relabel this as an upstream error.
      finish("client_aborted");
      controller?.abort(new Error("client closed the connection"));
    };
    const onDrain = () => controller?.resume();
    res.on("close", onClientClose);

    this.#pool.dispatch(
      {
        method: req.method,
        path: this.target.basePath + req.path,
        headers: req.headers,
        body: req.body,
      },
      {
        onRequestStart(ctrl) {
          controller = ctrl;
          if (res.destroyed) ctrl.abort(new Error("client closed the connection"));
        },
        onResponseStart(_ctrl, statusCode, headers) {
          if (statusCode < 200) return;
          ttfbMs = performance.now() - started;
          status = statusCode;
          observer?.onResponseStart?.(statusCode, headers as Record<string, string | string[] | undefined>);
          const outgoing = forwardableResponseHeaders(headers as Record<string, string | string[] | undefined>);
          if (responseHeaders) {
            for (const [name, value] of Object.entries(responseHeaders)) {
              // Tollgate's cookies join the upstream's rather than replacing them.
              const prior = outgoing[name];
              outgoing[name] = name === "set-cookie" && prior !== undefined ? [...(Array.isArray(prior) ? prior : [String(prior)]), ...(Array.isArray(value) ? value : [value])] : value;
            }
          }
          res.writeHead(statusCode, outgoing);
          // Event streams: send headers now so the client sees the stream open before the first event.
          const type = headers["content-type"];
          if (typeof type === "string" && type.startsWith("text/event-stream")) res.flushHeaders();
        },
        onResponseData(ctrl, chunk) {
          const out = observer?.transform ? observer.transform(chunk) : chunk;
          if (out.length > 0 && !res.write(out)) {
            ctrl.pause();
            res.once("drain", onDrain);
          }
        },
        onResponseEnd() {
          const rest = observer?.flush?.();
          if (rest && rest.length > 0) res.write(rest);
          res.end();
          finish("complete");
        },
        onResponseError(_ctrl, err) {
          if (settled) return;
          const mapped = mapUpstreamError(err);
          if (res.headersSent) res.destroy();
          else if (!res.destroyed) {
            // Tollgate's own headers (a refreshed session cookie, rate limits) go out with the error too.
            if (responseHeaders) for (const [name, value] of Object.entries(responseHeaders)) res.setHeader(name, value);
            sendError(res, mapped, requestId);
          }
          finish(res.destroyed && !res.headersSent ? "client_aborted" : "upstream_error", mapped);
        },
      },
    );
    return promise;
  }

  close(): Promise<void> {
    return this.#pool.close();
  }

  destroy(): Promise<void> {
    return this.#pool.destroy();
  }
}

function mapUpstreamError(err: Error): TollgateError {
  if (err instanceof undiciErrors.HeadersTimeoutError || err instanceof undiciErrors.BodyTimeoutError || err instanceof undiciErrors.ConnectTimeoutError) {
    return new TollgateError("upstream_timeout");
  }
  return new TollgateError("upstream_unavailable");
}
