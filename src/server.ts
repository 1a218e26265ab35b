/**
 * The process: two listeners (data, admin), the current Gateway, hot reload and graceful shutdown.
 * A reload builds a whole new Gateway; only if that succeeds is it swapped in. In-flight requests finish
 * on the gateway they started on.
 */
import { createServer, type Server, type IncomingMessage, type ServerResponse } from "node:http";
import type { Socket } from "node:net";
import { watch, readFileSync, type FSWatcher } from "node:fs";
import { createHash } from "node:crypto";
import { once } from "node:events";
import type { Logger } from "pino";
import { Gateway } from "./gateway.ts";
import type { Policy } from "./config/schema.ts";
import { ConfigError } from "./config/load.ts";
import { Metrics } from "./observe/metrics.ts";
import { createAdminServer } from "./observe/admin.ts";
import { TollgateError, sendError } from "./proxy/errors.ts";
import { systemClock, type Clock } from "./clock.ts";
import { StoreRegistry } from "./limits/stores.ts";

export interface PolicySource {
  /** Human-readable origin for logs: a file path or "embedded quickstart". */
  readonly description: string;
  /** The file to watch for changes, when there is one. */
  readonly file?: string | undefined;
  load(): Policy;
}

export interface ServerOptions {
  source: PolicySource;
  logger: Logger;
  metrics?: Metrics;
  clock?: Clock;
}

export class TollgateServer {
  readonly metrics: Metrics;
  readonly #source: PolicySource;
  readonly #logger: Logger;
  readonly #clock: Clock;
  #gateway: Gateway;
  #data: Server | undefined;
  #admin: Server | undefined;
  #watcher: FSWatcher | undefined;
  #reloadTimer: NodeJS.Timeout | undefined;
  #fileDigest: string | undefined;
  #draining = false;
  #inflight = 0;
  #idle: (() => void) | undefined;
  readonly #upgraded = new Set<Socket>();
  readonly #stores = new StoreRegistry();

  constructor(options: ServerOptions) {
    this.#source = options.source;
    this.#logger = options.logger;
    this.#clock = options.clock ?? systemClock;
    this.metrics = options.metrics ?? new Metrics();
    const policy = this.#source.load();
    this.#fileDigest = this.#digest();
    this.#gateway = this.#compile(policy);
    this.metrics.configLoadedAt.set(Math.floor(this.#clock.now() / 1000));
  }

  get gateway(): Gateway {
    return this.#gateway;
  }

  #compile(policy: Policy): Gateway {
    return new Gateway(policy, { metrics: this.metrics, logger: this.#logger, clock: this.#clock, stores: this.#stores });
  }

  /** Starts both listeners; resolves with the bound ports (useful when the policy says port 0). */
  async start(): Promise<{ port: number; adminPort: number }> {
    const { listen, admin } = this.#gateway.policy.server;
    // requestTimeout bounds receiving a request (a stalled upload), never the response: streams may run for long.
    this.#data = createServer({ keepAliveTimeout: 65_000, headersTimeout: 30_000, requestTimeout: this.#gateway.policy.server.requestTimeout }, (req, res) => this.#onRequest(req, res));
    this.#data.on("upgrade", (req: IncomingMessage, socket: Socket, head: Buffer) => this.#onUpgrade(req, socket, head));
    this.#data.on("clientError", (err: NodeJS.ErrnoException, socket: Socket) => {
      if (!socket.writable) return void socket.destroy();
      // Oversized headers (e.g. a 64 KiB token) are refused by Node's parser before Tollgate sees them.
      const status = err.code === "HPE_HEADER_OVERFLOW" ? "431 Request Header Fields Too Large" : "400 Bad Request";
      socket.end(`HTTP/1.1 ${status}\r\nConnection: close\r\nContent-Length: 0\r\n\r\n`);
    });
    this.#admin = createAdminServer(this.metrics, {
      accepting: () => !this.#draining,
      upstreams: () => this.#gateway.upstreamStatus(),
      limits: () => this.#gateway.limits.status(),
      usage: (query) => this.#gateway.limits.usage(query),
    });
    this.#data.listen(listen.port, listen.host);
    this.#admin.listen(admin.port, admin.host);
    await Promise.all([once(this.#data, "listening"), once(this.#admin, "listening")]);
    const port = (this.#data.address() as { port: number }).port;
    const adminPort = (this.#admin.address() as { port: number }).port;
    this.#logger.info({ port, adminPort, policy: this.#source.description }, "tollgate listening");
    if (this.#source.file && this.#gateway.policy.server.watch) this.#watch(this.#source.file);
    return { port, adminPort };
  }

  #onRequest(req: IncomingMessage, res: ServerResponse): void {
    if (this.#draining) {
      res.setHeader("connection", "close");
      sendError(res, new TollgateError("shutting_down"));
      return;
    }
    this.#inflight++;
    this.metrics.inflight.inc();
    this.#gateway
      .handle(req, res)
      .catch((err: unknown) => this.#unexpected(err, res))
      .finally(() => {
        this.#inflight--;
        this.metrics.inflight.dec();
        if (this.#inflight === 0) this.#idle?.();
      });
  }

  /** A bug must cost one request, never the process: log it, answer 500 if nothing was sent yet. */
  #unexpected(err: unknown, res?: ServerResponse): void {
    this.#logger.error({ err }, "unexpected error while handling a request");
    if (res && !res.destroyed) sendError(res, new TollgateError("internal"));
  }

  #onUpgrade(req: IncomingMessage, socket: Socket, head: Buffer): void {
    // Node stops listening for socket errors once it hands over an upgrade: a reset must not kill the process.
    socket.on("error", () => socket.destroy());
    if (this.#draining) {
      socket.destroy();
      return;
    }
    this.#upgraded.add(socket);
    socket.once("close", () => this.#upgraded.delete(socket));
    this.#gateway.handleUpgrade(req, socket, head).catch((err: unknown) => {
      this.#unexpected(err);
      socket.destroy();
    });
  }

  /** Reloads the policy. An invalid policy leaves the running one in place and is logged and counted. */
  async reload(reason: string): Promise<boolean> {
    let next: Gateway;
    try {
      next = this.#compile(this.#source.load());
    } catch (err) {
      this.metrics.configReloads.inc({ result: "failure" });
      const problems = err instanceof ConfigError ? err.problems : undefined;
      this.#logger.error({ reason, problems, err: problems ? undefined : String(err) }, "policy reload failed; keeping the running policy");
      return false;
    }
    const previous = this.#gateway;
    const { listen, admin } = previous.policy.server;
    const wanted = next.policy.server;
    if (wanted.listen.port !== listen.port || wanted.admin.port !== admin.port || wanted.listen.host !== listen.host || wanted.admin.host !== admin.host) {
      this.#logger.warn("listener addresses changed in the policy; they take effect at the next restart");
    }
    this.#gateway = next;
    this.metrics.configReloads.inc({ result: "success" });
    this.metrics.configLoadedAt.set(Math.floor(this.#clock.now() / 1000));
    this.#logger.info({ reason }, "policy reloaded");
    // Requests already on the previous gateway keep its pools and its limits store until they have settled.
    void previous.close();
    return true;
  }

  #watch(file: string): void {
    // Watch the folder: editors and Kubernetes ConfigMaps replace the file (rename) rather than write it.
    const folder = file.includes("/") ? file.slice(0, file.lastIndexOf("/")) || "/" : ".";
    this.#watcher = watch(folder, { persistent: false }, () => {
      clearTimeout(this.#reloadTimer);
      this.#reloadTimer = setTimeout(() => {
        const digest = this.#digest();
        if (digest === undefined || digest === this.#fileDigest) return;
        this.#fileDigest = digest;
        void this.reload("file changed");
      }, 150);
    });
  }

  #digest(): string | undefined {
    if (!this.#source.file) return undefined;
    try {
      return createHash("sha256").update(readFileSync(this.#source.file)).digest("hex");
    } catch {
      return undefined;
    }
  }

  get draining(): boolean {
    return this.#draining;
  }

  /**
   * Graceful stop: refuse new connections, let in-flight requests and streams finish up to the policy's
   * grace period, then cut what is left. Resolves with the number of requests cut short.
   */
  async shutdown(graceMs = this.#gateway.policy.server.shutdownGrace): Promise<number> {
    if (this.#draining) return 0;
    this.#draining = true;
    this.#logger.info({ inflight: this.#inflight, graceMs }, "draining");
    clearTimeout(this.#reloadTimer);
    this.#watcher?.close();
    const closed = this.#data ? new Promise<void>((resolve) => this.#data!.close(() => resolve())) : Promise.resolve();
    this.#data?.closeIdleConnections();
    let cut = 0;
    if (this.#inflight > 0) {
      const idle = new Promise<void>((resolve) => (this.#idle = resolve));
      const timer = new Promise<"timeout">((resolve) => setTimeout(resolve, graceMs, "timeout").unref());
      if ((await Promise.race([idle, timer])) === "timeout") {
        cut = this.#inflight;
        this.#logger.warn({ inflight: cut }, "grace period over; closing remaining connections");
      }
    }
    for (const socket of this.#upgraded) socket.destroy();
    this.#data?.closeAllConnections();
    await closed;
    // Requests cut at the end of the grace period still settle their limits before the store closes (bounded).
    await this.#gateway.close(graceMs);
    await new Promise<void>((resolve) => (this.#admin ? this.#admin.close(() => resolve()) : resolve()));
    this.#admin?.closeAllConnections();
    this.#logger.info({ cut }, "stopped");
    return cut;
  }
}
