/**
 * The one header-hygiene function for both directions. Inbound: hop-by-hop headers and whatever the client's
 * `Connection` names are dropped, then every credential and identity header Tollgate owns; only after that does
 * Tollgate add its own, so a client can never remove or spoof them.
 */
import type { IncomingHttpHeaders, IncomingMessage, OutgoingHttpHeaders } from "node:http";
import { TollgateError } from "./errors.ts";

const HOP_BY_HOP = new Set([
  "connection", "keep-alive", "proxy-connection", "te", "trailer", "transfer-encoding", "upgrade",
  "proxy-authorization", "proxy-authenticate", "expect", "host", "http2-settings",
]);

/** Headers that carry an inbound credential; never forwarded. */
export const CREDENTIAL_HEADERS: readonly string[] = ["authorization", "x-api-key", "api-key", "proxy-authorization"];

const CREDENTIAL_NAME_LENGTHS = new Set(CREDENTIAL_HEADERS.map((h) => h.length));

/**
 * Drops the client's credential from the request object once the request is authenticated and its upstream
 * headers are built: Node keeps a request's headers (both `headers` and `rawHeaders`) for as long as its response
 * runs, so a stream held open for minutes would otherwise keep the secret in memory (and in any heap dump) all
 * that time — and its bytes: ~0.7 KB per open stream for a small JWT, 1.5–3 KB for an Entra ID access token.
 */
export function forgetCredentials(req: IncomingMessage): void {
  const headers = req.headers;
  // Cleared, not deleted: `delete` turns Node's headers object into a slow dictionary (an allocation per request,
  // and every later read slower); an undefined value is what every reader here already skips.
  for (const name of CREDENTIAL_HEADERS) if (headers[name] !== undefined) headers[name] = undefined;
  const raw = req.rawHeaders;
  for (let i = 0; i < raw.length; i += 2) {
    const name = raw[i]!;
    if (CREDENTIAL_NAME_LENGTHS.has(name.length) && CREDENTIAL_HEADERS.includes(name.toLowerCase())) raw[i + 1] = "";
  }
}

/** Any inbound header with this prefix is Tollgate's namespace and is dropped. */
export const OWNED_PREFIX = "x-tollgate-";

export interface HeaderPolicy {
  /** Lower-case names Tollgate owns (credentials, identity headers it sets); always stripped from the client's request. */
  readonly owned: ReadonlySet<string>;
}

export function buildHeaderPolicy(extraOwned: Iterable<string>): HeaderPolicy {
  return { owned: new Set([...CREDENTIAL_HEADERS, ...extraOwned].map((h) => h.toLowerCase())) };
}

/**
 * Rejects the header tricks that make two parsers disagree: a credential or identity header repeated with
 * different values, or spelled with underscores (which some servers fold into dashes).
 */
export function checkRawHeaders(rawHeaders: readonly string[], policy: HeaderPolicy): void {
  let seen: Map<string, string> | undefined;
  for (let i = 0; i < rawHeaders.length; i += 2) {
    const lower = rawHeaders[i]!.toLowerCase();
    if (lower.includes("_")) {
      const dashed = lower.replaceAll("_", "-");
      if (policy.owned.has(dashed) || dashed.startsWith(OWNED_PREFIX)) {
        throw new TollgateError("bad_header", `Header "${rawHeaders[i]}" is not accepted; use dashes, not underscores.`);
      }
      continue;
    }
    if (!policy.owned.has(lower)) continue;
    seen ??= new Map();
    const previous = seen.get(lower);
    const value = rawHeaders[i + 1]!;
    if (previous !== undefined && previous !== value) throw new TollgateError("multiple_credentials");
    seen.set(lower, value);
  }
}

/** Builds the upstream request headers from the client's, dropping hop-by-hop, connection-named and owned headers. */
export function forwardableRequestHeaders(incoming: IncomingHttpHeaders, policy: HeaderPolicy, keepUpgrade = false): Record<string, string | string[]> {
  const named = connectionNamed(incoming.connection);
  const out: Record<string, string | string[]> = {};
  for (const name in incoming) {
    const value = incoming[name];
    if (value === undefined || HOP_BY_HOP.has(name)) continue;
    if (named?.has(name) || policy.owned.has(name) || name.startsWith(OWNED_PREFIX)) continue;
    out[name] = value;
  }
  if (keepUpgrade && typeof incoming.upgrade === "string") {
    // A WebSocket handshake: the only hop-by-hop pair that must travel, rebuilt rather than copied.
    out.connection = "Upgrade";
    out.upgrade = incoming.upgrade;
  }
  return out;
}

/** Copies upstream response headers for the client, without hop-by-hop ones. */
export function forwardableResponseHeaders(upstream: Record<string, string | string[] | undefined>): OutgoingHttpHeaders {
  const named = connectionNamed(upstream.connection);
  const out: OutgoingHttpHeaders = {};
  for (const name in upstream) {
    const value = upstream[name];
    if (value === undefined || HOP_BY_HOP.has(name) || named?.has(name)) continue;
    out[name] = value;
  }
  return out;
}

function connectionNamed(connection: string | string[] | undefined): Set<string> | undefined {
  // The usual values name no header: answered without splitting (both directions, every request).
  if (!connection || connection === "keep-alive" || connection === "close") return undefined;
  const list = Array.isArray(connection) ? connection.join(",") : connection;
  const names = new Set<string>();
  for (const token of list.split(",")) {
    const name = token.trim().toLowerCase();
    if (name && name !== "close" && name !== "keep-alive") names.add(name);
  }
  return names.size > 0 ? names : undefined;
}
