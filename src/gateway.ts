/**
 * The compiled, immutable Gateway: the corridor wired for one policy. Built once per load ("compile once,
 * evaluate many"); a reload builds a new one and swaps it in. Per request it only evaluates:
 *
 *   normalize → route → authenticate → authorize → credential → forward → settle (metrics, audit)
 */
import type { IncomingMessage, ServerResponse } from "node:http";
import type { Duplex } from "node:stream";
import { randomUUID } from "node:crypto";
import type { Logger } from "pino";
import type { Policy } from "./config/schema.ts";
import type { Clock } from "./clock.ts";
import { normalizeTarget } from "./proxy/normalize.ts";
import { buildHeaderPolicy, checkRawHeaders, forgetCredentials, forwardableRequestHeaders, type HeaderPolicy } from "./proxy/headers.ts";
import { readBody, parseJsonStrict, parseJsonLenient } from "./proxy/body.ts";
import type { ForwardResult } from "./proxy/forward.ts";
import { requestHasBody, isForm, appendForwarded } from "./proxy/request.ts";
import { TollgateError, sendError, sendErrorOnSocket, toTollgateError } from "./proxy/errors.ts";
import { extractCredential } from "./auth/credential.ts";
import { AuthChain, refusedBy } from "./auth/chain.ts";
import { createAuthenticator } from "./auth/index.ts";
import type { Authenticator } from "./auth/authenticator.ts";
import { deprecationHeaders } from "./auth/deprecation.ts";
import { SessionAuthenticator, errorCookies } from "./auth/session/session.ts";
import { stripCookies } from "./auth/session/cookies.ts";
import { isBrowserNavigation } from "./auth/session/redirect.ts";
import { compileNames } from "./policy/patterns.ts";
import { RouteTable } from "./policy/routes.ts";
import { callerRules, decide } from "./policy/authorize.ts";
import type { CredentialStatus } from "./upstream/credential.ts";
import { buildUpstream, closeUpstream, type Upstream } from "./upstream/upstream.ts";
import type { Metrics } from "./observe/metrics.ts";
import { LimitsEngine } from "./limits/engine.ts";
import { StoreRegistry } from "./limits/stores.ts";
import { compilePriceBook, type PriceBook } from "./metering/pricing.ts";
import { MeteringObserver } from "./metering/observer.ts";
import { accountUsage, type AccountingDeps } from "./metering/account.ts";
import { estimateRequest, requestStreamUsage, clampMaxTokens, NO_USAGE } from "./metering/request.ts";
import { AuditLog } from "./observe/audit.ts";
import { settleExchange } from "./observe/settle.ts";
import { Exchange } from "./exchange.ts";

export interface GatewayDeps {
  metrics: Metrics;
  logger: Logger;
  clock: Clock;
  /** Shared across reloads so counters and connections survive them; a gateway alone gets its own. */
  stores?: StoreRegistry;
  /** `check` / `explain`: compile everything, contact no identity endpoint. */
  offline?: boolean;
}

const REQUEST_ID = /^[A-Za-z0-9._:-]{1,128}$/;

export class Gateway {
  readonly policy: Policy;
  readonly routes: RouteTable;
  readonly #deps: GatewayDeps;
  readonly #headerPolicy: HeaderPolicy;
  readonly #chains = new Map<string, AuthChain>();
  readonly #authenticators: Authenticator[];
  readonly #upstreams = new Map<string, Upstream>();
  readonly #audit: AuditLog;
  readonly #requestIdHeader: string;
  readonly #trustRequestId: boolean;
  readonly #engine: LimitsEngine;
  readonly #prices: PriceBook;
  /** What metering needs after each response (built once, not per request). */
  readonly #accounting: AccountingDeps;
  readonly #meterOptions: { charsPerToken: number };
  readonly #releaseStore: () => Promise<void>;
  readonly #meterAll: boolean;
  /** Browser sign-in methods: their endpoints, their cookies (never forwarded), their login redirects. */
  readonly #sessions: SessionAuthenticator[];
  /** Deprecation/Sunset/Link response headers per deprecated authenticator (migration mode). */
  readonly #deprecations = new Map<string, Readonly<Record<string, string>>>();
  /** Requests and WebSocket sessions on this gateway not yet settled: a retired gateway keeps its store for them. */
  #unsettled = 0;
  #onSettled: (() => void) | undefined;

  constructor(policy: Policy, deps: GatewayDeps) {
    this.policy = policy;
    this.#deps = deps;
    this.routes = new RouteTable(policy.routes, policy.server.maxBodyBytes);
    // check / explain never connect to Redis: they compile the limits against an in-memory store.
    const held = (deps.stores ?? new StoreRegistry()).acquire(deps.offline ? { type: "memory" } : policy.limits.store);
    this.#releaseStore = held.release;
    const groupFilter = compileNames(policy.routes.flatMap((r) => r.allow.flatMap((rule) => rule.groups ?? [])));
    this.#authenticators = policy.authenticators.map((a) => createAuthenticator(a, { clock: deps.clock, metrics: deps.metrics, logger: deps.logger, store: held.store, groupFilter }));
    this.#sessions = this.#authenticators.filter((a): a is SessionAuthenticator => a instanceof SessionAuthenticator);
    const byName = new Map(this.#authenticators.map((a) => [a.name, a]));
    for (const a of this.#authenticators) if (a.deprecation) this.#deprecations.set(a.name, deprecationHeaders(a.deprecation, deps.clock.now()));
    for (const route of this.routes.routes) {
      const names = route.authenticators ?? this.#authenticators.map((a) => a.name);
      this.#chains.set(route.name, new AuthChain(names.map((n) => byName.get(n)!)));
    }
    const owned: string[] = this.#authenticators.flatMap((a) => a.ownedHeaders ?? []);
    for (const [name, config] of Object.entries(policy.upstreams)) {
      const upstream = buildUpstream(name, config, { clock: deps.clock, metrics: deps.metrics, logger: deps.logger, offline: deps.offline });
      owned.push(...upstream.identity.headerNames, ...(upstream.credential.ownedHeaders ?? []));
      this.#upstreams.set(name, upstream);
    }
    this.#headerPolicy = buildHeaderPolicy(owned);
    this.#audit = new AuditLog(deps.logger, policy.audit.enabled);
    this.#requestIdHeader = policy.server.requestIdHeader;
    this.#trustRequestId = policy.server.trustRequestId;
    this.#prices = compilePriceBook(policy.pricing.models);
    this.#meterOptions = { charsPerToken: policy.limits.charsPerToken };
    this.#accounting = { prices: this.#prices, metrics: deps.metrics, logger: deps.logger, charsPerToken: policy.limits.charsPerToken };
    this.#meterAll = policy.limits.meter === "all";
    this.#engine = new LimitsEngine(policy.limits, {
      store: held.store,
      price: (model, usage) => (model === undefined ? { micros: 0, priced: false } : this.#prices.cost(model, { ...NO_USAGE, ...usage })),
      unknownModel: policy.pricing.unknownModel,
      clock: deps.clock,
      metrics: deps.metrics,
      logger: deps.logger,
    });
  }

  get limits(): LimitsEngine {
    return this.#engine;
  }

  /** The authenticators that apply on a route, in policy order (for `tollgate explain`). */
  authenticatorsFor(routeName: string): readonly Authenticator[] {
    return this.#chains.get(routeName)?.authenticators ?? [];
  }

  /** Readiness of every upstream credential, for /readyz. */
  upstreamStatus(): Record<string, CredentialStatus> {
    const out: Record<string, CredentialStatus> = {};
    for (const [name, upstream] of this.#upstreams) out[name] = upstream.credential.status();
    return out;
  }

  async handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    this.#unsettled++;
    const exchange = new Exchange(req, performance.now());
    exchange.requestId = this.#requestId(req);
    try {
      if (this.#sessions.length > 0 && (await this.#serveSignIn(exchange, res))) return;
      const { upstream, headers, path, body } = await this.#admit(exchange, false);
      const observer = exchange.meters ? new MeteringObserver(exchange.stripUsageChunk, this.#meterOptions) : undefined;
      const result = await upstream.forwarder.forward({ method: req.method!, path, headers, body, responseHeaders: exchange.responseHeaders }, res, observer, [this.#requestIdHeader, exchange.requestId]);
      exchange.forwarded = result;
      // Awaited only when there is something to wait for (a settlement with the limits store).
      const settling = observer
        ? accountUsage(exchange, observer, result, this.#accounting)
        : // Unmetered (`meter: limited`, no token or budget limit here): leases and reservations are still given back.
          exchange.admission?.settle(NO_USAGE, result.outcome).catch(() => {});
      if (settling) await settling;
      exchange.status = result.status;
      if (result.outcome !== "complete") {
        exchange.reason = result.outcome;
        this.#deps.metrics.upstreamErrors.inc({ upstream: upstream.name, outcome: result.outcome === "client_aborted" ? "client_aborted" : result.error?.code ?? "error" });
      }
      if (result.ttfbMs !== undefined) this.#deps.metrics.upstreamTtfb.observe({ upstream: upstream.name }, result.ttfbMs / 1000);
    } catch (err) {
      // Admitted but never sent (e.g. no upstream credential): give back what admission reserved.
      await exchange.admission?.settle(NO_USAGE, "upstream_error").catch(() => {});
      this.#refuse(exchange, err, res);
    } finally {
      settleExchange(exchange, this.#deps.metrics, this.#audit);
      this.#settled();
    }
  }

  #settled(): void {
    if (--this.#unsettled === 0) this.#onSettled?.();
  }

  /** {basePath}/login, /callback and /logout of a browser sign-in method; true when this request was one. */
  async #serveSignIn(exchange: Exchange, res: ServerResponse): Promise<boolean> {
    const target = normalizeTarget(exchange.req.url, exchange.req.headers.host);
    const session = this.#sessions.find((s) => s.handles(target.path));
    if (!session) return false;
    exchange.authMethod = session.type;
    try {
      exchange.reason = await session.serve(exchange.req, res, target.path, target.search);
      exchange.status = res.statusCode;
    } catch (err) {
      const cookies = err instanceof TollgateError ? errorCookies.get(err) : undefined;
      for (const c of cookies ?? []) exchange.setCookie(c);
      throw err;
    }
    return true;
  }

  /** WebSocket upgrades (e.g. the OpenAI Realtime API) walk the same corridor, then are tunnelled. */
  async handleUpgrade(req: IncomingMessage, socket: Duplex, head: Buffer): Promise<void> {
    this.#unsettled++;
    const exchange = new Exchange(req, performance.now());
    exchange.requestId = this.#requestId(req);
    try {
      const { upstream, headers, path } = await this.#admit(exchange, true);
      exchange.status = 101;
      exchange.reason = "allowed";
      const admission = exchange.admission;
      // The session's concurrency lease is held until the socket closes; its tokens are not metered.
      if (admission) {
        this.#unsettled++;
        socket.once("close", () => void admission.settle(NO_USAGE, "complete").catch(() => {}).finally(() => this.#settled()));
      }
      await upstream.tunnel.open(req, socket, head, path, headers);
    } catch (err) {
      await exchange.admission?.settle(NO_USAGE, "upstream_error").catch(() => {});
      const error = toTollgateError(err);
      this.#record(exchange, error, err);
      sendErrorOnSocket(socket, error, [this.#requestIdHeader, exchange.requestId]);
    } finally {
      settleExchange(exchange, this.#deps.metrics, this.#audit);
      this.#settled();
    }
  }

  /** normalize → route → authenticate → authorize → credential: everything before bytes go upstream. */
  async #admit(exchange: Exchange, upgrade: boolean) {
    const req = exchange.req;
    const target = normalizeTarget(req.url, req.headers.host);
    checkRawHeaders(req.rawHeaders, this.#headerPolicy);
    const match = this.routes.match(req.method!, target.path);
    if (!match) throw new TollgateError("no_route");
    const route = match.route;
    exchange.route = route;

    const credential = extractCredential(req.headers);
    const answer = this.#chains.get(route.name)!.authenticate({ credential, method: req.method ?? "GET", headers: req.headers, remoteAddress: exchange.remoteAddress, setCookie: (c) => exchange.setCookie(c) });
    const principal = answer instanceof Promise ? await answer : answer; // API keys answer synchronously
    exchange.principal = principal;
    exchange.authMethod = principal.method;
    const deprecation = this.#deprecations.get(principal.authenticator);
    if (deprecation) {
      // A copy: the per-authenticator object is shared, and this request may add its own headers (cookies).
      exchange.responseHeaders = { ...exchange.responseHeaders, ...deprecation };
      this.#deps.metrics.deprecatedAuthCalls.inc({ authenticator: principal.authenticator });
    }
    const rules = callerRules(route, principal);
    if (rules.length === 0) throw new TollgateError(principal.kind === "anonymous" ? "missing_credential" : "forbidden");

    const upstream = this.#upstreams.get(route.upstream)!;
    const checksModel = route.restrictsModels || principal.models !== undefined;
    // Azure deployments and Bedrock model ids name the model in the path; WebSocket sessions (Realtime) in the
    // query; otherwise it is the JSON body's.
    if (route.modelFromPath) exchange.model = route.modelFromPath(match.params);
    else if (upgrade) {
      const query = new URLSearchParams(target.search);
      const named = query.get("model") ?? query.get("deployment");
      if (named) exchange.model = route.modelAlias(named);
      else if (checksModel) throw new TollgateError("model_required", "This route requires a `model` query parameter.");
    }
    const checksBodyModel = checksModel && !route.modelFromPath && !upgrade;
    const hasBody = !upgrade && requestHasBody(req);
    exchange.meters = !upgrade && (this.#meterAll || this.#engine.meters(route.name));
    // Reading the body for estimates, or for a model that limits are keyed by, never turns bad JSON into an error.
    const readsBody = exchange.meters || (!route.modelFromPath && this.#engine.needsModel(route.name));
    let body: Buffer | IncomingMessage | null = hasBody ? req : null;
    let buffered: Buffer | undefined;
    let json: Record<string, unknown> | undefined;
    if (hasBody && (checksBodyModel || upstream.identity.setsOpenAiUser || upstream.credential.needsBody || readsBody)) {
      buffered = await readBody(req, route.maxBodyBytes);
      body = buffered;
      // Parsed whatever the Content-Type says: upstreams such as LiteLLM read any non-form body as JSON, so a
      // `text/plain` label must not hide the model from limits and budgets. Only a model check makes bad JSON a 400.
      if (checksBodyModel || !isForm(req)) {
        const parsed = checksBodyModel ? parseJsonStrict(buffered) : parseJsonLenient(buffered);
        if (parsed && typeof parsed === "object" && !Array.isArray(parsed)) json = parsed as Record<string, unknown>;
        else if (checksBodyModel) throw new TollgateError("model_required");
      }
    }
    if (json !== undefined && !route.modelFromPath) {
      if (typeof json.model === "string") exchange.model = route.modelAlias(json.model);
      else if (checksBodyModel) throw new TollgateError("model_required");
    }
    const decision = decide(route, principal, rules, checksModel ? exchange.model : undefined);
    if (!decision.allowed) throw new TollgateError(decision.code === "allowed" ? "forbidden" : decision.code);

    let rewrite = false;
    if (this.#engine.limits(route.name)) {
      // Every limit applies, metered or not; WebSocket sessions count as requests and hold a lease while open.
      const limits = this.policy.limits;
      const estimate = upgrade ? { promptTokens: 0, maxOutputTokens: 0 } : estimateRequest(json, buffered?.length ?? 0, limits.charsPerToken, limits.defaultMaxTokens);
      exchange.promptTokens = estimate.promptTokens;
      const admission = await this.#engine.admit({ principal, route: route.name, model: exchange.model, inputTokens: estimate.promptTokens, maxOutputTokens: estimate.maxOutputTokens });
      if (admission) {
        exchange.admission = admission;
        exchange.responseHeaders = { ...exchange.responseHeaders, ...admission.headers };
        if (admission.clampMaxTokens !== undefined && json !== undefined) {
          clampMaxTokens(json, admission.clampMaxTokens);
          rewrite = true;
        }
      }
    }
    if (exchange.meters && json !== undefined && requestStreamUsage(json, target.path)) {
      exchange.stripUsageChunk = true;
      rewrite = true;
    }

    const headers = forwardableRequestHeaders(req.headers, this.#headerPolicy, upgrade);
    if (this.#sessions.length > 0 && typeof headers.cookie === "string") {
      // The upstream UI gets the identity headers, never Tollgate's session.
      const kept = stripCookies(headers.cookie, (name) => this.#sessions.some((s) => s.ownsCookie(name)));
      if (kept === undefined) delete headers.cookie;
      else headers.cookie = kept;
    }
    // Authenticated and its upstream headers built: the client's credential is not needed any more.
    forgetCredentials(req);
    headers[this.#requestIdHeader] = exchange.requestId;
    appendForwarded(headers, req, exchange.remoteAddress);
    // A compressed response cannot be metered as it passes; ask for plain bytes on metered requests.
    if (exchange.meters) headers["accept-encoding"] = "identity";
    upstream.identity.applyHeaders(principal, headers);
    if (json !== undefined && upstream.identity.setsOpenAiUser && principal.kind !== "anonymous") {
      // LiteLLM attributes spend to the OpenAI `user` field.
      json.user = upstream.identity.openAiUser(principal);
      rewrite = true;
    }
    if (rewrite) {
      // The body is re-serialized only when Tollgate changed it; otherwise the client's bytes go as they came.
      buffered = Buffer.from(JSON.stringify(json));
      body = buffered;
    }
    if (buffered !== undefined) {
      headers["content-length"] = String(buffered.length);
      delete headers["transfer-encoding"];
    }
    const path = target.path + target.search;
    await upstream.credential.apply({ method: req.method!, origin: upstream.forwarder.target.origin, path: upstream.forwarder.target.basePath + path, headers, body: buffered });
    return { upstream, headers, path, body };
  }

  #requestId(req: IncomingMessage): string {
    const incoming = req.headers[this.#requestIdHeader];
    if (this.#trustRequestId && typeof incoming === "string" && REQUEST_ID.test(incoming)) return incoming;
    return randomUUID();
  }

  #refuse(exchange: Exchange, err: unknown, res: ServerResponse): void {
    const error = toTollgateError(err);
    this.#record(exchange, error, err);
    if (!res.headersSent && !res.destroyed) {
      const signIn = exchange.route?.signIn;
      if (error.status === 401 && signIn !== undefined && isBrowserNavigation(exchange.req.method, exchange.req.headers.accept)) {
        // A browser on a sign-in route goes to the IdP; an API caller on the same path gets the 401.
        const session = this.#sessions.find((s) => s.name === signIn)!;
        // A tampered or ended session is cleared on the way, so the browser does not keep sending it.
        if (error.code === "invalid_session" || error.code === "session_expired") for (const c of session.clearSession(exchange.req.headers.cookie)) exchange.setCookie(c);
        if (exchange.responseHeaders) for (const [name, value] of Object.entries(exchange.responseHeaders)) res.setHeader(name, value);
        res.writeHead(302, { location: session.loginUrl(exchange.req.url ?? "/"), "cache-control": "no-store", "content-length": "0" }).end();
        exchange.status = 302;
        return;
      }
      // The client may still be sending a body we did not read; close rather than drain it.
      if (!exchange.req.complete) res.setHeader("connection", "close");
      if (exchange.responseHeaders) for (const [name, value] of Object.entries(exchange.responseHeaders)) res.setHeader(name, value);
      sendError(res, error, [this.#requestIdHeader, exchange.requestId]);
    }
  }

  #record(exchange: Exchange, error: TollgateError, raw: unknown): void {
    exchange.status = error.status;
    exchange.reason = error.reason;
    const refusingMethod = raw !== null && typeof raw === "object" ? refusedBy.get(raw) : undefined;
    if (refusingMethod !== undefined || error.status === 401) {
      const method = refusingMethod ?? exchange.authMethod;
      exchange.authMethod = method;
      this.#deps.metrics.authFailures.inc({ method, reason: error.reason });
    } else if (error.code === "internal") {
      this.#deps.logger.error({ err: raw, requestId: exchange.requestId }, "internal error");
    }
  }

  /**
   * Retires this gateway after a reload or at shutdown. Its requests still running settle on its limits store
   * (a budget's spend, a lease, a token window's correction), so the store is released only once they have —
   * after a reload, however long its streams run; at shutdown, within `waitMs` — then pools and the rest close.
   */
  async close(waitMs?: number): Promise<void> {
    if (this.#unsettled > 0) {
      await new Promise<void>((resolve) => {
        const timer = waitMs === undefined ? undefined : setTimeout(resolve, waitMs);
        this.#onSettled = () => {
          clearTimeout(timer);
          resolve();
        };
      });
    }
    await Promise.allSettled([
      this.#engine.close().then(() => this.#releaseStore()),
      ...[...this.#upstreams.values()].flatMap(closeUpstream),
      ...this.#authenticators.map((a) => a.close?.()),
    ]);
  }
}
