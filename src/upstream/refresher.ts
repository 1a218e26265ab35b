/**
 * One refresher for an expiring upstream secret (an Entra token, AWS credentials). The value is fetched in
 * the background at start, refreshed `refreshBefore` its expiry by a single timer — never by a herd of
 * requests — and, when a refresh fails while the current value is still valid, retried with backoff while
 * requests keep using it. With no valid value a request waits for at most one fetch (bounded by `timeout`)
 * and then fails fast with a 503; it never hangs.
 */
import type { Logger } from "pino";
import type { Clock } from "../clock.ts";
import type { Metrics } from "../observe/metrics.ts";
import type { CredentialStatus } from "./credential.ts";
import { TollgateError } from "../proxy/errors.ts";

export interface Expiring<T> {
  value: T;
  /** Epoch ms; undefined for values that never expire (e.g. static AWS keys from the environment). */
  expiresAt: number | undefined;
}

export interface RefresherOptions<T> {
  upstream: string;
  fetch: () => Promise<Expiring<T>>;
  refreshBefore: number;
  timeout: number;
  clock: Clock;
  metrics: Metrics;
  logger: Logger;
}

const MAX_BACKOFF_MS = 30_000;
const REQUEST_RETRY_MS = 1000;

export class Refresher<T> {
  readonly #o: RefresherOptions<T>;
  #current: Expiring<T> | undefined;
  #inflight: Promise<Expiring<T>> | undefined;
  #timer: NodeJS.Timeout | undefined;
  #failures = 0;
  /**
   * After a failure, requests fail fast for a second instead of each calling the endpoint: at most one
   * request-driven attempt per second, while the background retries back off further.
   */
  #retryAt = 0;
  #lastError: string | undefined;
  #closed = false;

  constructor(options: RefresherOptions<T>) {
    this.#o = options;
    options.metrics.registerCredentialExpiry(options.upstream, () => {
      const expiresAt = this.#current?.expiresAt;
      return expiresAt === undefined ? undefined : (expiresAt - options.clock.now()) / 1000;
    });
  }

  /** Starts the first fetch without waiting for it: startup never blocks on an identity endpoint. */
  start(): void {
    void this.#refresh().catch(() => {});
  }

  /** A valid value, or undefined when there is none right now. */
  current(): T | undefined {
    const c = this.#current;
    return c && (c.expiresAt === undefined || c.expiresAt > this.#o.clock.now()) ? c.value : undefined;
  }

  async get(): Promise<T> {
    const valid = this.current();
    if (valid !== undefined) return valid;
    if (!this.#inflight && this.#o.clock.now() < this.#retryAt) {
      throw new TollgateError("upstream_credential_unavailable", undefined, { "retry-after": String(Math.max(1, Math.ceil((this.#retryAt - this.#o.clock.now()) / 1000))) }, this.#lastError ?? "fetch_failed");
    }
    try {
      return (await this.#refresh()).value;
    } catch {
      throw new TollgateError("upstream_credential_unavailable", undefined, { "retry-after": "5" }, this.#lastError ?? "fetch_failed");
    }
  }

  status(): CredentialStatus {
    if (this.current() !== undefined) return { ready: true };
    return { ready: false, detail: this.#inflight ? "fetching credential" : `no valid credential${this.#lastError ? ` (${this.#lastError})` : ""}` };
  }

  #refresh(): Promise<Expiring<T>> {
    this.#inflight ??= this.#fetchOnce().finally(() => (this.#inflight = undefined));
    return this.#inflight;
  }

  async #fetchOnce(): Promise<Expiring<T>> {
    clearTimeout(this.#timer);
    let timer: NodeJS.Timeout | undefined;
    try {
      const deadline = new Promise<never>((_, reject) => {
        timer = setTimeout(() => reject(new Error("timeout")), this.#o.timeout);
        timer.unref();
      });
      const next = await Promise.race([this.#o.fetch(), deadline]);
      this.#current = next;
      this.#failures = 0;
      this.#retryAt = 0;
      this.#lastError = undefined;
      this.#o.metrics.credentialRefreshes.inc({ upstream: this.#o.upstream, result: "success" });
      if (next.expiresAt !== undefined) this.#schedule(this.#refreshDelay(next.expiresAt));
      return next;
    } catch (err) {
      this.#failures++;
      this.#lastError = (err as Error).message === "timeout" ? "timeout" : "fetch_failed";
      this.#o.metrics.credentialRefreshes.inc({ upstream: this.#o.upstream, result: "failure" });
      this.#o.logger.warn({ upstream: this.#o.upstream, failures: this.#failures, err: (err as Error).message }, "upstream credential refresh failed");
      // Keep trying in the background: soon while a valid value remains, and so that an outage heals by itself.
      const backoff = Math.min(MAX_BACKOFF_MS, 1000 * 2 ** (this.#failures - 1));
      this.#retryAt = this.#o.clock.now() + Math.min(backoff, REQUEST_RETRY_MS);
      this.#schedule(backoff);
      throw err;
    } finally {
      clearTimeout(timer);
    }
  }

  /**
   * `refreshBefore` ahead of expiry; a value that lives less than that (short-lived tokens) is refreshed at
   * half its remaining life, never sooner than a second — no refresh loop.
   */
  #refreshDelay(expiresAt: number): number {
    const remaining = expiresAt - this.#o.clock.now();
    if (remaining > this.#o.refreshBefore) return remaining - this.#o.refreshBefore;
    return Math.max(1000, remaining / 2);
  }

  #schedule(delayMs: number): void {
    if (this.#closed) return;
    clearTimeout(this.#timer);
    this.#timer = setTimeout(() => void this.#refresh().catch(() => {}), Math.max(0, delayMs));
    this.#timer.unref();
  }

  close(): void {
    this.#closed = true;
    clearTimeout(this.#timer);
  }
}
