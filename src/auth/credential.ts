/**
 * Finds the one credential a request carries. Two different credentials in one request are refused rather
 * than guessed between; the same key repeated in `Authorization` and `x-api-key` is accepted.
 */
import type { IncomingHttpHeaders } from "node:http";
import { TollgateError } from "../proxy/errors.ts";

export interface Credential {
  /** Where it came from: `authorization`, `x-api-key` or `api-key`. */
  readonly header: string;
  /** Lower-case auth scheme for `authorization` (`bearer`, `basic`, …); `key` for the API-key headers. */
  readonly scheme: string;
  readonly value: string;
}

const KEY_HEADERS = ["x-api-key", "api-key"] as const;

export function extractCredential(headers: IncomingHttpHeaders): Credential | undefined {
  let found: Credential | undefined;
  const authorization = headers.authorization;
  if (authorization !== undefined) {
    const space = authorization.indexOf(" ");
    const scheme = (space < 0 ? authorization : authorization.slice(0, space)).toLowerCase();
    const value = space < 0 ? "" : authorization.slice(space + 1).trim();
    if (!value) throw new TollgateError("unrecognized_credential", "The Authorization header has no credential.");
    found = { header: "authorization", scheme, value };
  }
  for (const header of KEY_HEADERS) {
    const raw = headers[header];
    if (raw === undefined) continue;
    // Node joins a repeated header into "a, b"; the same key twice is one credential, two keys are two.
    const parts = [...new Set((Array.isArray(raw) ? raw.join(",") : raw).split(",").map((p) => p.trim()))];
    if (parts.length > 1) throw new TollgateError("multiple_credentials");
    const value = parts[0]!;
    if (!value) throw new TollgateError("unrecognized_credential", `The ${header} header is empty.`);
    if (found && found.value !== value) throw new TollgateError("multiple_credentials");
    found ??= { header, scheme: "key", value };
  }
  return found;
}
