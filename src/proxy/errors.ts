/**
 * Every failure a client can see has a stable code. This module is the one place that maps a code to an HTTP
 * status and the OpenAI error body, so callers throw `new TollgateError("key_expired")` and never pick statuses.
 */
import { STATUS_CODES, type ServerResponse } from "node:http";
import type { Duplex } from "node:stream";

interface ErrorKind {
  status: number;
  type: string;
  message: string;
}

const KINDS = {
  // 400 — the request itself is malformed or ambiguous
  bad_path: { status: 400, type: "invalid_request_error", message: "The request path is ambiguous or malformed." },
  bad_header: { status: 400, type: "invalid_request_error", message: "A request header is malformed or duplicated." },
  multiple_credentials: { status: 400, type: "invalid_request_error", message: "The request carries more than one credential; send exactly one." },
  invalid_json: { status: 400, type: "invalid_request_error", message: "The request body is not valid JSON." },
  duplicate_json_key: { status: 400, type: "invalid_request_error", message: "The request body repeats a JSON key." },
  model_required: { status: 400, type: "invalid_request_error", message: "This route requires a `model` in the JSON body." },
  body_too_large: { status: 413, type: "invalid_request_error", message: "The request body exceeds the size this route accepts." },
  // 401 — who are you?
  missing_credential: { status: 401, type: "authentication_error", message: "No credential was sent. Send an API key or bearer token." },
  unrecognized_credential: { status: 401, type: "authentication_error", message: "The credential is not of a kind this route accepts." },
  invalid_api_key: { status: 401, type: "authentication_error", message: "The API key is not valid." },
  key_expired: { status: 401, type: "authentication_error", message: "The API key has expired." },
  invalid_token: { status: 401, type: "authentication_error", message: "The bearer token is not valid." },
  token_expired: { status: 401, type: "authentication_error", message: "The bearer token has expired." },
  token_inactive: { status: 401, type: "authentication_error", message: "The bearer token is not active." },
  invalid_session: { status: 401, type: "authentication_error", message: "The sign-in session is not valid; sign in again." },
  session_expired: { status: 401, type: "authentication_error", message: "The sign-in session has ended; sign in again." },
  sign_in_failed: { status: 400, type: "invalid_request_error", message: "The sign-in could not be completed; start again." },
  invalid_assertion: { status: 401, type: "authentication_error", message: "The identity assertion from the proxy is not valid." },
  // 403 / 404 — may you?
  forbidden: { status: 403, type: "permission_error", message: "You are not allowed to use this route." },
  email_domain_not_allowed: { status: 403, type: "permission_error", message: "Your email domain is not allowed." },
  model_not_allowed: { status: 403, type: "permission_error", message: "You are not allowed to use this model." },
  rate_limited: { status: 429, type: "rate_limit_error", message: "Rate limit reached; retry after the time in Retry-After." },
  concurrency_limited: { status: 429, type: "rate_limit_error", message: "Too many requests in flight; retry shortly." },
  budget_exceeded: { status: 429, type: "insufficient_quota", message: "The budget for this period is used up." },
  unpriced_model: { status: 403, type: "permission_error", message: "This model has no price, and the policy denies unpriced models under a budget." },
  no_route: { status: 404, type: "invalid_request_error", message: "No route matches this method and path." },
  // 5xx — us or the upstream
  upstream_unavailable: { status: 502, type: "api_error", message: "The upstream could not be reached." },
  upstream_timeout: { status: 504, type: "api_error", message: "The upstream did not answer in time." },
  limits_unavailable: { status: 503, type: "api_error", message: "Tollgate cannot check your limits right now; retry shortly." },
  auth_unavailable: { status: 503, type: "api_error", message: "Tollgate could not verify the credential right now; retry shortly." },
  upstream_credential_unavailable: { status: 503, type: "api_error", message: "Tollgate could not obtain a credential for the upstream." },
  shutting_down: { status: 503, type: "api_error", message: "Tollgate is shutting down; retry on another replica." },
  internal: { status: 500, type: "api_error", message: "Tollgate hit an internal error." },
} as const satisfies Record<string, ErrorKind>;

export type ErrorCode = keyof typeof KINDS;

export class TollgateError extends Error {
  readonly code: ErrorCode;
  readonly status: number;
  readonly type: string;
  /** Extra response headers, e.g. Retry-After. Never put a credential here. */
  readonly headers: Record<string, string> | undefined;

  /**
   * A finer, stable reason for audit lines and the auth-failure metric (e.g. `audience`, `signature`,
   * `unknown_kid`); clients see only `code`. A bounded set chosen in code, never request data.
   */
  readonly detail: string | undefined;

  constructor(code: ErrorCode, message?: string, headers?: Record<string, string>, detail?: string) {
    const kind: ErrorKind = KINDS[code];
    super(message ?? kind.message);
    this.name = "TollgateError";
    this.code = code;
    this.status = kind.status;
    this.type = kind.type;
    this.headers = headers;
    this.detail = detail;
  }

  /** `code` or `code:detail`: what audit lines and metrics record. */
  get reason(): string {
    return this.detail ? `${this.code}:${this.detail}` : this.code;
  }
}

export function isTollgateError(err: unknown): err is TollgateError {
  return err instanceof TollgateError;
}

/** Turns anything thrown into a TollgateError; unknown errors become `internal` with a generic message. */
export function toTollgateError(err: unknown): TollgateError {
  return isTollgateError(err) ? err : new TollgateError("internal");
}

/** A request id to echo back: [header name, value]. */
export type RequestIdHeader = readonly [string, string];

/** Status, headers and OpenAI-shaped body for an error; 401s always carry WWW-Authenticate. */
export function errorResponse(err: TollgateError, requestId?: RequestIdHeader): { status: number; headers: Record<string, string>; body: string } {
  const body = JSON.stringify({ error: { message: err.message, type: err.type, code: err.code, param: null } });
  const headers: Record<string, string> = {
    "content-type": "application/json",
    "content-length": String(Buffer.byteLength(body)),
    ...err.headers,
  };
  if (err.status === 401 && headers["www-authenticate"] === undefined) {
    const description = err.message.replace(/["\\]/g, "");
    headers["www-authenticate"] = `Bearer realm="tollgate", error="invalid_token", error_description="${description}"`;
  }
  if (requestId) headers[requestId[0]] = requestId[1];
  return { status: err.status, headers, body };
}

export function sendError(res: ServerResponse, err: TollgateError, requestId?: RequestIdHeader): void {
  if (res.headersSent) {
    res.destroy();
    return;
  }
  const { status, headers, body } = errorResponse(err, requestId);
  res.writeHead(status, headers);
  res.end(body);
}

/** The same response written on a raw socket, for refused WebSocket upgrades (no ServerResponse exists there). */
export function sendErrorOnSocket(socket: Duplex, err: TollgateError, requestId?: RequestIdHeader): void {
  const { status, headers, body } = errorResponse(err, requestId);
  let head = `HTTP/1.1 ${status} ${STATUS_CODES[status] ?? "Error"}\r\n`;
  for (const name in headers) head += `${name}: ${headers[name]}\r\n`;
  socket.end(`${head}connection: close\r\n\r\n${body}`);
}
