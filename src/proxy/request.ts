/** Small facts about an incoming request, read the same way everywhere. */
import type { IncomingMessage } from "node:http";

export function requestHasBody(req: IncomingMessage): boolean {
  const length = req.headers["content-length"];
  if (length !== undefined) return length !== "0";
  return req.headers["transfer-encoding"] !== undefined;
}

/** Form bodies (multipart uploads such as audio transcriptions, urlencoded) are not JSON whatever they contain. */
export function isForm(req: IncomingMessage): boolean {
  const type = req.headers["content-type"];
  return type !== undefined && /^(multipart\/form-data|application\/x-www-form-urlencoded)\b/i.test(type);
}

export function appendForwarded(headers: Record<string, string | string[]>, req: IncomingMessage, peer: string): void {
  const prior = headers["x-forwarded-for"];
  headers["x-forwarded-for"] = prior ? `${Array.isArray(prior) ? prior.join(", ") : prior}, ${peer}` : peer;
  headers["x-forwarded-proto"] = "encrypted" in req.socket && req.socket.encrypted ? "https" : "http";
  if (req.headers.host) headers["x-forwarded-host"] = req.headers.host;
}
