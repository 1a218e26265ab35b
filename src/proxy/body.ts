/** Reads a request body only when a route needs to look inside it; bounded, so a huge body is a 413, not OOM. */
import type { IncomingMessage } from "node:http";
import { visit } from "jsonc-parser";
import { TollgateError } from "./errors.ts";

export function readBody(req: IncomingMessage, maxBytes: number): Promise<Buffer> {
  const declared = Number(req.headers["content-length"]);
  if (Number.isFinite(declared) && declared > maxBytes) return Promise.reject(new TollgateError("body_too_large"));
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    let size = 0;
    const onData = (chunk: Buffer) => {
      size += chunk.length;
      if (size > maxBytes) {
        cleanup();
        // Stop reading; the response will close the connection rather than drain an unbounded body.
        req.pause();
        reject(new TollgateError("body_too_large"));
        return;
      }
      chunks.push(chunk);
    };
    const onEnd = () => {
      cleanup();
      resolve(chunks.length === 1 ? chunks[0]! : Buffer.concat(chunks, size));
    };
    const onError = (err: Error) => {
      cleanup();
      reject(err);
    };
    const cleanup = () => {
      req.off("data", onData);
      req.off("end", onEnd);
      req.off("error", onError);
      req.off("aborted", onAborted);
    };
    const onAborted = () => onError(new Error("client aborted"));
    req.on("data", onData);
    req.on("end", onEnd);
    req.on("error", onError);
    req.on("aborted", onAborted);
  });
}

/**
 * Parses a JSON body strictly: malformed JSON and duplicated keys (which parsers resolve differently, so the
 * model Tollgate checks could differ from the one the upstream uses) are both 400s.
 */
export function parseJsonStrict(body: Buffer): unknown {
  const text = body.toString("utf8");
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch {
    throw new TollgateError("invalid_json");
  }
  if (hasDuplicateKey(text)) throw new TollgateError("duplicate_json_key");
  return value;
}

function hasDuplicateKey(text: string): boolean {
  const stack: Set<string>[] = [];
  let duplicate = false;
  visit(text, {
    onObjectBegin: () => void stack.push(new Set()),
    onObjectEnd: () => void stack.pop(),
    onObjectProperty: (property) => {
      const keys = stack[stack.length - 1];
      if (!keys) return;
      if (keys.has(property)) duplicate = true;
      keys.add(property);
    },
  }, { disallowComments: true, allowTrailingComma: false });
  return duplicate;
}

/** For metering only: a body that is not valid JSON is not an error here, just not parsed. */
export function parseJsonLenient(body: Buffer): unknown {
  try {
    return JSON.parse(body.toString("utf8"));
  } catch {
    return undefined;
  }
}
