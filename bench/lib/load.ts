/**
 * A closed-loop load generator on undici: N connections (one undici Client each, no pipelining), each sending
 * its next request as soon as the previous response has ended, for a fixed time. It records per request the
 * latency to the last byte and to the first body byte, and checks every response body byte for byte against a
 * reference answer (so a dropped, reordered or truncated SSE event is counted, not missed).
 */
import { Client, type Dispatcher } from "undici";

export interface Target {
  /** http://127.0.0.1:PORT */
  readonly origin: string;
  readonly path: string;
  readonly headers: Record<string, string>;
  readonly body: Buffer;
}

export interface LoadResult {
  connections: number;
  /** Seconds from the first request to the last response (requests started before the deadline all finish). */
  elapsedS: number;
  requests: number;
  /** Byte-identical to the reference, status 200. */
  intact: number;
  non200: number;
  mismatched: number;
  transportErrors: number;
  /** SSE: the fewest and most events ("\n\n"-terminated) any stream carried. */
  eventsMin: number | undefined;
  eventsMax: number | undefined;
  /** Milliseconds, sorted ascending. */
  latencies: Float64Array;
  ttfbs: Float64Array;
  firstError: string | undefined;
}

const NEWLINE = 0x0a;

/** One request; resolves with its timings and whether the body matched the reference. */
function request(client: Client, target: Target, reference: Buffer | undefined, collect: boolean) {
  return new Promise<{ status: number; latency: number; ttfb: number; match: boolean; events: number; body?: Buffer; error?: Error }>((resolve) => {
    const started = performance.now();
    let ttfb = -1;
    let status = 0;
    let offset = 0;
    let match = reference !== undefined;
    let events = 0;
    let lastByte = 0;
    const chunks: Buffer[] | undefined = collect ? [] : undefined;
    const handler: Dispatcher.DispatchHandler = {
      onRequestStart() {},
      onResponseStart(_ctrl, statusCode) {
        status = statusCode;
      },
      onResponseData(_ctrl, chunk) {
        if (ttfb < 0) ttfb = performance.now() - started;
        chunks?.push(chunk);
        if (match) {
          if (offset + chunk.length > reference!.length || reference!.compare(chunk, 0, chunk.length, offset, offset + chunk.length) !== 0) match = false;
        }
        // Count "\n\n" (event ends), including one split across chunks.
        for (let i = chunk.indexOf(NEWLINE); i !== -1; i = chunk.indexOf(NEWLINE, i + 1)) {
          const previous = i > 0 ? chunk[i - 1] : lastByte;
          if (previous === NEWLINE) events++;
        }
        lastByte = chunk[chunk.length - 1]!;
        offset += chunk.length;
      },
      onResponseEnd() {
        const latency = performance.now() - started;
        if (match && offset !== reference!.length) match = false;
        resolve({ status, latency, ttfb: ttfb < 0 ? latency : ttfb, match, events, ...(chunks ? { body: Buffer.concat(chunks) } : {}) });
      },
      onResponseError(_ctrl, error) {
        resolve({ status, latency: performance.now() - started, ttfb, match: false, events, error });
      },
    };
    client.dispatch({ method: "POST", path: target.path, headers: target.headers, body: target.body }, handler);
  });
}

function newClient(origin: string): Client {
  return new Client(origin, { pipelining: 1, keepAliveTimeout: 60_000, headersTimeout: 15_000, bodyTimeout: 15_000, connect: { timeout: 5000 } });
}

/** A single request, its body kept: how the bench learns the reference answer from the stand-in itself. */
export async function fetchOnce(target: Target): Promise<{ status: number; body: Buffer }> {
  const client = newClient(target.origin);
  try {
    const r = await request(client, target, undefined, true);
    if (r.error) throw r.error;
    return { status: r.status, body: r.body ?? Buffer.alloc(0) };
  } finally {
    await client.destroy();
  }
}

class Samples {
  #data = new Float64Array(4096);
  length = 0;
  push(v: number): void {
    if (this.length === this.#data.length) {
      const grown = new Float64Array(this.#data.length * 2);
      grown.set(this.#data);
      this.#data = grown;
    }
    this.#data[this.length++] = v;
  }
  sorted(): Float64Array {
    return this.#data.slice(0, this.length).sort();
  }
}

/**
 * Runs `connections` closed loops for `durationMs`. Loops start no request after the deadline; requests in
 * flight then finish (bounded by `drainMs`, after which the connections are destroyed).
 */
export async function runLoad(target: Target, reference: Buffer, connections: number, durationMs: number, drainMs = 15_000): Promise<LoadResult> {
  const clients = Array.from({ length: connections }, () => newClient(target.origin));
  const latencies = new Samples();
  const ttfbs = new Samples();
  const result = { requests: 0, intact: 0, non200: 0, mismatched: 0, transportErrors: 0, eventsMin: Infinity, eventsMax: -Infinity, firstError: undefined as string | undefined };
  const started = performance.now();
  const deadline = started + durationMs;
  let lastEnd = started;

  const loop = async (client: Client) => {
    while (performance.now() < deadline) {
      const r = await request(client, target, reference, false);
      lastEnd = performance.now();
      result.requests++;
      if (r.error) {
        result.transportErrors++;
        result.firstError ??= `${r.error.name}: ${r.error.message}`;
        await new Promise((resolve) => setTimeout(resolve, 10)); // no hot loop against a dead target
        continue;
      }
      latencies.push(r.latency);
      ttfbs.push(r.ttfb);
      result.eventsMin = Math.min(result.eventsMin, r.events);
      result.eventsMax = Math.max(result.eventsMax, r.events);
      if (r.status !== 200) {
        result.non200++;
        result.firstError ??= `HTTP ${r.status}`;
      } else if (!r.match) {
        result.mismatched++;
        result.firstError ??= `body differs from the direct answer (${r.events} events)`;
      } else result.intact++;
    }
  };

  let drainTimer: NodeJS.Timeout | undefined;
  const drained = new Promise<"timeout">((resolve) => {
    drainTimer = setTimeout(resolve, durationMs + drainMs, "timeout");
  });
  try {
    const outcome = await Promise.race([Promise.all(clients.map(loop)), drained]);
    if (outcome === "timeout") result.firstError ??= `requests still in flight ${drainMs} ms after the deadline`;
  } finally {
    clearTimeout(drainTimer);
    await Promise.all(clients.map((c) => c.destroy().catch(() => undefined)));
  }
  return {
    connections,
    elapsedS: (lastEnd - started) / 1000,
    ...result,
    eventsMin: Number.isFinite(result.eventsMin) ? result.eventsMin : undefined,
    eventsMax: Number.isFinite(result.eventsMax) ? result.eventsMax : undefined,
    latencies: latencies.sorted(),
    ttfbs: ttfbs.sorted(),
  };
}

/** Nearest-rank percentile of an ascending array; undefined when empty. */
export function percentile(sorted: Float64Array, p: number): number | undefined {
  if (sorted.length === 0) return undefined;
  return sorted[Math.min(sorted.length - 1, Math.max(0, Math.ceil(p * sorted.length) - 1))];
}
