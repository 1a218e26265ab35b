/**
 * Meters a whole JSON response as it passes: OpenAI / Azure (chat, completions, embeddings, Responses API),
 * Anthropic messages, Bedrock Converse, and Bedrock InvokeModel (the model's own body, plus Bedrock's
 * x-amzn-bedrock-*-token-count headers). It keeps a bounded copy; past the bound it keeps only the tail, where
 * every one of these formats puts its `"usage"` object, and still finds the counts there.
 */
import type { MeterContext, Usage, UsageMeter } from "./usage.ts";
import { UsageTally, responseChars } from "./tally.ts";
import { isRecord } from "./shape.ts";

export interface JsonMeterOptions {
  /** Bytes kept to parse the whole body (default 4 MiB). */
  maxBytes?: number;
  /** Bytes kept from the end once the body outgrew maxBytes (default 64 KiB). */
  tailBytes?: number;
  charsPerToken?: number;
}

const USAGE_KEY = '"usage"';

export class JsonUsageMeter implements UsageMeter {
  readonly #headers: MeterContext["headers"];
  readonly #maxBytes: number;
  readonly #tailBytes: number;
  readonly #charsPerToken: number | undefined;
  #parts: Buffer[] = [];
  #kept = 0;
  #seen = 0;
  #truncated = false;

  constructor(ctx: Pick<MeterContext, "headers">, options: JsonMeterOptions = {}) {
    this.#headers = ctx.headers;
    this.#maxBytes = options.maxBytes ?? 4 * 1024 * 1024;
    this.#tailBytes = Math.min(options.tailBytes ?? 64 * 1024, this.#maxBytes);
    this.#charsPerToken = options.charsPerToken;
  }

  write(chunk: Buffer): void {
    if (chunk.length === 0) return;
    this.#parts.push(chunk);
    this.#kept += chunk.length;
    this.#seen += chunk.length;
    const limit = this.#truncated ? 2 * this.#tailBytes : this.#maxBytes;
    if (this.#kept > limit) this.#keepTail();
  }

  end(): { usage: Usage | undefined; outputChars: number } {
    const tally = new UsageTally(this.#charsPerToken);
    const text = Buffer.concat(this.#parts, this.#kept).toString("utf8");
    this.#parts = [];
    let body: unknown;
    if (!this.#truncated) {
      try {
        body = JSON.parse(text);
      } catch {
        body = undefined;
      }
    }
    if (isRecord(body)) {
      tally.add(body.usage);
      tally.outputChars = responseChars(body);
    } else {
      tally.add(trailingUsage(text));
      // The text could not be read as a whole: its size is an upper bound of what was generated.
      tally.outputChars = this.#seen;
    }
    tally.addHeaders(this.#headers);
    return { usage: tally.result(), outputChars: tally.outputChars };
  }

  /** Drops whole chunks from the front, keeping at least tailBytes. */
  #keepTail(): void {
    this.#truncated = true;
    let drop = 0;
    while (drop < this.#parts.length && this.#kept - this.#parts[drop]!.length >= this.#tailBytes) {
      this.#kept -= this.#parts[drop]!.length;
      drop++;
    }
    this.#parts = this.#parts.slice(drop);
    // One huge chunk: keep only its end.
    if (this.#parts.length === 1 && this.#kept > 2 * this.#tailBytes) {
      this.#parts[0] = this.#parts[0]!.subarray(this.#kept - this.#tailBytes);
      this.#kept = this.#tailBytes;
    }
  }
}

/**
 * The last `"usage": {…}` object in a JSON text that may have lost its beginning. A `"usage"` inside a string
 * would be escaped (`\"usage\"`), so an unescaped match is a key.
 */
export function trailingUsage(text: string): unknown {
  for (let at = text.lastIndexOf(USAGE_KEY); at >= 0; at = at === 0 ? -1 : text.lastIndexOf(USAGE_KEY, at - 1)) {
    let i = skipSpace(text, at + USAGE_KEY.length);
    if (text[i] !== ":") continue;
    i = skipSpace(text, i + 1);
    if (text[i] !== "{") continue;
    const end = objectEnd(text, i);
    if (end < 0) continue;
    try {
      return JSON.parse(text.slice(i, end));
    } catch {
      continue;
    }
  }
  return undefined;
}

function skipSpace(text: string, i: number): number {
  while (i < text.length && (text[i] === " " || text[i] === "\n" || text[i] === "\r" || text[i] === "\t")) i++;
  return i;
}

/** Index just past the object that opens at `start`, skipping braces inside strings; -1 when it does not close. */
function objectEnd(text: string, start: number): number {
  let depth = 0;
  let inString = false;
  for (let i = start; i < text.length; i++) {
    const c = text[i];
    if (inString) {
      if (c === "\\") i++;
      else if (c === '"') inString = false;
    } else if (c === '"') inString = true;
    else if (c === "{") depth++;
    else if (c === "}" && --depth === 0) return i + 1;
  }
  return -1;
}
