/**
 * The load generators, on undici, one Client per connection, no pipelining. Every response body is checked
 * byte for byte against a reference answer (so a dropped, reordered or truncated SSE event is counted, not
 * missed), and each request records its latency to the last byte and to the first body byte; SSE streams
 * also record the gaps between their evenly spaced events (a proxy that holds an event back and sends it
 * with the next one — coalescing — shows as a gap far below the spacing).
 *
 * - closed loop (`runLoad`): N connections, each sending its next request when the previous one has ended.
 * - open loop (`runOpenLoop`): requests scheduled at a fixed rate whatever happens to earlier ones; latency is
 *   measured from the *intended* send time, so a request that waited for a free connection (queueing behind
 *   slow ones) counts its wait instead of hiding it (no coordinated omission).
 */
import { writeFileSync } from "node:fs";
import { Client, type Dispatcher } from "undici";

export interface Target {
  /** http://127.0.0.1:PORT */
  readonly origin: string;
  readonly path: string;
  /** The same headers for every request, or a supplier called once per request (e.g. a fresh token each time). */
  readonly headers: Record<string, string> | (() => Record<string, string>);
  readonly body: Buffer;
}

/** SSE: the first `count` events after the first are sent `spacingMs` apart by the stand-in. */
export interface Spacing {
  count: number;
  spacingMs: number;
}

export interface LoadResult {
  connections: number;
  /** Open loop: the scheduled rate (requests per second). */
  rate?: number | undefined;
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
  /** SSE: milliseconds between consecutive spaced events, all streams, sorted ascending. */
  gaps: Float64Array;
  /** SSE: spaced events that arrived in the same chunk as the previous one (held back and sent together). */
  coalesced: number;
  /** SSE: spaced events that arrived in a chunk of their own but less than half a spacing after the previous one. */
  bunched: number;
  firstError: string | undefined;
}

const NEWLINE = 0x0a;

interface Outcome {
  status: number;
  latency: number;
  ttfb: number;
  match: boolean;
  events: number;
  gaps: number[] | undefined;
  coalesced: number;
  bunched: number;
  body?: Buffer;
  error?: Error;
}

/** One request; resolves with its timings and whether the body matched the reference. `from`: when it counts from. */
function request(client: Client, target: Target, reference: Buffer | undefined, collect: boolean, spacing?: Spacing, from?: number) {
  return new Promise<Outcome>((resolve) => {
    const started = from ?? performance.now();
    let ttfb = -1;
    let status = 0;
    let offset = 0;
    let match = reference !== undefined;
    let events = 0;
    let lastByte = 0;
    let lastEventAt = 0;
    let coalesced = 0;
    let bunched = 0;
    const gaps: number[] | undefined = spacing ? [] : undefined;
    const chunks: Buffer[] | undefined = collect ? [] : undefined;
    const handler: Dispatcher.DispatchHandler = {
      onRequestStart() {},
      onResponseStart(_ctrl, statusCode) {
        status = statusCode;
      },
      onResponseData(_ctrl, chunk) {
        const now = performance.now();
        if (ttfb < 0) ttfb = now - started;
        chunks?.push(chunk);
        if (match) {
          if (offset + chunk.length > reference!.length || reference!.compare(chunk, 0, chunk.length, offset, offset + chunk.length) !== 0) match = false;
        }
        // Count "\n\n" (event ends), including one split across chunks.
        let endedHere = 0;
        for (let i = chunk.indexOf(NEWLINE); i !== -1; i = chunk.indexOf(NEWLINE, i + 1)) {
          const previous = i > 0 ? chunk[i - 1] : lastByte;
          if (previous !== NEWLINE) continue;
          events++;
          endedHere++;
          // Events 2..count+1 each follow the previous one by `spacingMs` at the source: arriving in the same
          // chunk as it is coalescing; arriving under half a spacing after it, in a chunk of its own, is bunching.
          if (gaps && events >= 2 && events <= spacing!.count + 1) {
            const gap = now - lastEventAt;
            gaps.push(gap);
            if (endedHere > 1) coalesced++;
            else if (gap < spacing!.spacingMs / 2) bunched++;
          }
          lastEventAt = now;
        }
        lastByte = chunk[chunk.length - 1]!;
        offset += chunk.length;
      },
      onResponseEnd() {
        const latency = performance.now() - started;
        if (match && offset !== reference!.length) match = false;
        resolve({ status, latency, ttfb: ttfb < 0 ? latency : ttfb, match, events, gaps, coalesced, bunched, ...(chunks ? { body: Buffer.concat(chunks) } : {}) });
      },
      onResponseError(_ctrl, error) {
        resolve({ status, latency: performance.now() - started, ttfb, match: false, events, gaps, coalesced, bunched, error });
      },
    };
    const headers = typeof target.headers === "function" ? target.headers() : target.headers;
    client.dispatch({ method: "POST", path: target.path, headers, body: target.body }, handler);
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

/** Tallies outcomes into a LoadResult. */
class Tally {
  readonly latencies = new Samples();
  readonly ttfbs = new Samples();
  readonly gaps = new Samples();
  requests = 0;
  intact = 0;
  non200 = 0;
  mismatched = 0;
  transportErrors = 0;
  coalesced = 0;
  bunched = 0;
  eventsMin = Infinity;
  eventsMax = -Infinity;
  firstError: string | undefined;

  add(r: Outcome): void {
    this.requests++;
    if (r.error) {
      this.transportErrors++;
      this.firstError ??= `${r.error.name}: ${r.error.message}`;
      return;
    }
    this.latencies.push(r.latency);
    this.ttfbs.push(r.ttfb);
    if (r.gaps) for (const g of r.gaps) this.gaps.push(g);
    this.coalesced += r.coalesced;
    this.bunched += r.bunched;
    this.eventsMin = Math.min(this.eventsMin, r.events);
    this.eventsMax = Math.max(this.eventsMax, r.events);
    if (r.status !== 200) {
      this.non200++;
      this.firstError ??= `HTTP ${r.status}`;
    } else if (!r.match) {
      this.mismatched++;
      this.firstError ??= `body differs from the direct answer (${r.events} events)`;
    } else this.intact++;
  }

  result(connections: number, elapsedS: number, rate?: number): LoadResult {
    return {
      connections,
      ...(rate !== undefined ? { rate } : {}),
      elapsedS,
      requests: this.requests,
      intact: this.intact,
      non200: this.non200,
      mismatched: this.mismatched,
      transportErrors: this.transportErrors,
      eventsMin: Number.isFinite(this.eventsMin) ? this.eventsMin : undefined,
      eventsMax: Number.isFinite(this.eventsMax) ? this.eventsMax : undefined,
      latencies: this.latencies.sorted(),
      ttfbs: this.ttfbs.sorted(),
      gaps: this.gaps.sorted(),
      coalesced: this.coalesced,
      bunched: this.bunched,
      firstError: this.firstError,
    };
  }
}

/** Resolves "timeout" after `ms` unless cancelled; every wait in the bench is bounded this way. */
function deadlineTimer(ms: number): { promise: Promise<"timeout">; cancel: () => void } {
  let timer: NodeJS.Timeout | undefined;
  const promise = new Promise<"timeout">((resolve) => {
    timer = setTimeout(resolve, ms, "timeout");
  });
  return { promise, cancel: () => clearTimeout(timer) };
}

/**
 * Runs `connections` closed loops for `durationMs`. Loops start no request after the deadline; requests in
 * flight then finish (bounded by `drainMs`, after which the connections are destroyed).
 */
/**
 * A closed loop on `connections` connections. `staggerMs` spreads the connections' first requests evenly over that
 * time (a diagnostic for SSE: equal-length streams started together stay in lockstep, so every stream's first byte
 * waits behind the same burst of 32 requests).
 */
export async function runLoad(target: Target, reference: Buffer, connections: number, durationMs: number, spacing?: Spacing, drainMs = 15_000, staggerMs = 0): Promise<LoadResult> {
  const clients = Array.from({ length: connections }, () => newClient(target.origin));
  const tally = new Tally();
  const started = performance.now();
  const deadline = started + durationMs;
  let lastEnd = started;

  const loop = async (client: Client, index: number) => {
    if (staggerMs > 0) await new Promise((resolve) => setTimeout(resolve, (index * staggerMs) / connections));
    while (performance.now() < deadline) {
      const r = await request(client, target, reference, false, spacing);
      lastEnd = performance.now();
      tally.add(r);
      if (r.error) await new Promise((resolve) => setTimeout(resolve, 10)); // no hot loop against a dead target
    }
  };

  const drained = deadlineTimer(durationMs + drainMs);
  try {
    const outcome = await Promise.race([Promise.all(clients.map((client, index) => loop(client, index))), drained.promise]);
    if (outcome === "timeout") tally.firstError ??= `requests still in flight ${drainMs} ms after the deadline`;
  } finally {
    drained.cancel();
    await Promise.all(clients.map((c) => c.destroy().catch(() => undefined)));
  }
  return tally.result(connections, (lastEnd - started) / 1000);
}

/**
 * An open loop: request i is due at start + i / rate, sent on an idle connection (a new one while fewer than
 * `maxConnections` are open) or else queued until one frees up. Its latency counts from when it was due.
 * Connections are opened and used once before the clock starts, so connection set-up is not measured.
 */
/** Requests the open loop sends before its clock starts (one per pre-opened connection), not counted. */
export const OPEN_LOOP_WARM = 16;

/**
 * With `trace`, each request's figures are written there as JSON (an array of [due ms from the start, how late it
 * was sent ms, time to first byte ms, latency ms, 1 when it was the first request of a connection opened during the
 * run]): `node bench/open-trace.ts FILE` shows when the tail happened and on which connections.
 */
export async function runOpenLoop(target: Target, reference: Buffer, rate: number, durationMs: number, maxConnections = 256, drainMs = 15_000, trace?: string): Promise<LoadResult> {
  const tally = new Tally();
  const all: Client[] = [];
  const idle: Client[] = [];
  const open = () => {
    const c = newClient(target.origin);
    all.push(c);
    return c;
  };
  const interval = 1000 / rate;
  const total = Math.max(1, Math.floor(durationMs / interval));
  let firstError: string | undefined;
  try {
    // Pre-open a few connections (each used once, not counted).
    const warm = Array.from({ length: Math.min(OPEN_LOOP_WARM, maxConnections) }, open);
    await Promise.all(warm.map(async (c) => void (await request(c, target, undefined, false))));
    idle.push(...warm);
    const used = new Set<Client>(warm);
    const records: number[][] | undefined = trace === undefined ? undefined : [];

    const started = performance.now() + 2;
    let issued = 0;
    let completed = 0;
    let lastEnd = started;
    const queue: number[] = [];
    let queueHead = 0;
    let finish: () => void = () => {};
    const allDone = new Promise<void>((resolve) => (finish = resolve));

    const send = (client: Client, due: number) => {
      const late = performance.now() - due;
      const opened = used.has(client) ? 0 : 1;
      used.add(client);
      void request(client, target, reference, false, undefined, due).then((r) => {
        records?.push([round3(due - started), round3(late), round3(r.ttfb), round3(r.latency), opened]);
        lastEnd = performance.now();
        tally.add(r);
        completed++;
        if (queueHead < queue.length) send(client, queue[queueHead++]!);
        else idle.push(client);
        if (completed === total) finish();
      });
    };
    let timer: NodeJS.Timeout | undefined;
    const tick = () => {
      const now = performance.now();
      while (issued < total && started + issued * interval <= now) {
        const due = started + issued * interval;
        issued++;
        const client = idle.pop() ?? (all.length < maxConnections ? open() : undefined);
        if (client) send(client, due);
        else queue.push(due);
      }
      if (issued < total) timer = setTimeout(tick, Math.max(0, started + issued * interval - performance.now()));
    };
    timer = setTimeout(tick, 2);
    const drained = deadlineTimer(durationMs + drainMs);
    try {
      if ((await Promise.race([allDone, drained.promise])) === "timeout") firstError = `requests still in flight ${drainMs} ms after the deadline`;
    } finally {
      clearTimeout(timer);
      drained.cancel();
    }
    const result = tally.result(all.length, (lastEnd - started) / 1000, rate);
    if (firstError) result.firstError ??= firstError;
    if (records && trace !== undefined) writeFileSync(trace, JSON.stringify(records));
    return result;
  } finally {
    await Promise.all(all.map((c) => c.destroy().catch(() => undefined)));
  }
}

function round3(x: number): number {
  return Math.round(x * 1000) / 1000;
}

/** Nearest-rank percentile of an ascending array; undefined when empty. */
export function percentile(sorted: Float64Array, p: number): number | undefined {
  if (sorted.length === 0) return undefined;
  return sorted[Math.min(sorted.length - 1, Math.max(0, Math.ceil(p * sorted.length) - 1))];
}
