/**
 * Meters a server-sent event stream as it passes: OpenAI / Azure chat-completions chunks (the usage chunk at the
 * end), Anthropic message events (message_start / message_delta usage), and OpenAI Responses API events.
 *
 * When Tollgate asked for usage on the client's behalf (`stream_options.include_usage`), it also removes that
 * extra usage-only chunk (`"choices": []` with `usage`) from what the client sees. Every other byte passes
 * unchanged and in order; only the one incomplete event at the end of a chunk is held back, so a complete event
 * is never delayed. Line endings may be LF, CR or CRLF, split anywhere across chunks.
 */
import type { FilteringUsageMeter, MeterContext, Usage } from "./usage.ts";
import { UsageTally } from "./tally.ts";
import { isRecord } from "./shape.ts";

export interface SseMeterOptions {
  /** An event larger than this is passed on without being parsed (default 1 MiB). */
  maxEventBytes?: number;
  charsPerToken?: number;
}

const LF = 0x0a;
const CR = 0x0d;
const EMPTY = Buffer.alloc(0);

export class SseUsageMeter implements FilteringUsageMeter {
  readonly #tally: UsageTally;
  readonly #strip: boolean;
  readonly #maxEventBytes: number;
  /** Bytes of the event in progress from earlier chunks: kept to parse it, and held from the client when stripping. */
  #partial: Buffer[] = [];
  #partialBytes = 0;
  /** The event in progress outgrew maxEventBytes: it is passed on as it comes and not parsed. */
  #oversize = false;
  #atLineStart = true;
  /** The last byte was a CR: an LF now is the second half of a CRLF, not another line. */
  #afterCr = false;
  /** The previous event ended on a CR at the end of a chunk: an LF opening the next chunk belongs to it. */
  #pendingLf: "pass" | "drop" | undefined;
  /** Whether the held unterminated event is the usage chunk, once end() or flush() metered it. */
  #heldUsageOnly: boolean | undefined;

  constructor(ctx: Pick<MeterContext, "stripUsageChunk">, options: SseMeterOptions = {}) {
    this.#strip = ctx.stripUsageChunk;
    this.#maxEventBytes = options.maxEventBytes ?? 1024 * 1024;
    this.#tally = new UsageTally(options.charsPerToken);
  }

  /** Meters a chunk the caller sends on as it is. Use either write or transform for a stream, not both. */
  write(chunk: Buffer): void {
    this.#scan(chunk, undefined);
  }

  /** Meters a chunk and returns what the client should see: the chunk itself unless stripping the usage chunk. */
  transform(chunk: Buffer): Buffer {
    if (!this.#strip) {
      this.#scan(chunk, undefined);
      return chunk;
    }
    const out: Buffer[] = [];
    this.#scan(chunk, out);
    if (out.length === 0) return EMPTY;
    return out.length === 1 ? out[0]! : Buffer.concat(out);
  }

  /** The held-back unterminated last event, to send when the upstream ends (empty if it was the usage chunk). */
  flush(): Buffer {
    if (!this.#strip) return EMPTY; // transform sent every byte already
    const usageOnly = this.#meterHeld();
    const held = this.#takePartial();
    this.#heldUsageOnly = undefined;
    return usageOnly ? EMPTY : held;
  }

  end(): { usage: Usage | undefined; outputChars: number } {
    // An unterminated last event still counts, whether it is flushed to the client before or after this.
    this.#meterHeld();
    return { usage: this.#tally.result(), outputChars: this.#tally.outputChars };
  }

  /** Meters the held unterminated event once; true when it is the usage-only chunk. */
  #meterHeld(): boolean {
    if (this.#heldUsageOnly === undefined && this.#partialBytes > 0) {
      this.#heldUsageOnly = this.#parse(Buffer.concat(this.#partial, this.#partialBytes));
    }
    return this.#heldUsageOnly ?? false;
  }

  /**
   * Finds the events that complete in `chunk`, meters them, and — when `out` is given — appends to it the bytes
   * the client should see, holding back the incomplete event at the end.
   */
  #scan(chunk: Buffer, out: Buffer[] | undefined): void {
    const length = chunk.length;
    if (length === 0) return;
    let i = 0;
    let keepFrom = 0; // first byte of chunk not yet appended to out, nor dropped
    if (this.#pendingLf !== undefined) {
      const fate = this.#pendingLf;
      this.#pendingLf = undefined;
      if (chunk[0] === LF) {
        i = 1;
        this.#afterCr = false;
        if (fate === "drop") keepFrom = 1;
      }
    }
    let start = i; // first byte of the event in progress within chunk
    for (; i < length; i++) {
      const byte = chunk[i]!;
      if (byte !== LF && byte !== CR) {
        this.#atLineStart = false;
        this.#afterCr = false;
        continue;
      }
      if (byte === LF && this.#afterCr) {
        this.#afterCr = false;
        continue;
      }
      this.#afterCr = byte === CR;
      if (!this.#atLineStart) {
        this.#atLineStart = true;
        continue;
      }
      // A blank line: the event ends here, with the LF of a CRLF when it is in this chunk.
      let end = i + 1;
      if (byte === CR && end < length && chunk[end] === LF) {
        end++;
        i++;
        this.#afterCr = false;
      }
      const held = this.#takePartial();
      const drop = this.#complete(held, chunk.subarray(start, end)) && this.#strip;
      if (out) {
        // Held bytes begin the first event of a chunk, so nothing is in out before them.
        if (!drop && held.length > 0) out.push(held);
        if (drop) {
          if (start > keepFrom) out.push(chunk.subarray(keepFrom, start));
          keepFrom = end;
        }
        if (this.#afterCr && end === length) this.#pendingLf = drop ? "drop" : "pass";
      }
      start = end;
    }
    // The incomplete event at the end of the chunk.
    let sendTo = length;
    if (start < length && !this.#oversize) {
      this.#partial.push(Buffer.from(chunk.subarray(start)));
      this.#partialBytes += length - start;
      if (this.#partialBytes > this.#maxEventBytes) {
        // Too big to be the usage chunk or worth parsing: release it and let the rest of it flow.
        this.#oversize = true;
        this.#tally.outputChars += this.#partialBytes;
        const held = this.#takePartial();
        if (out) {
          if (start > keepFrom) out.push(chunk.subarray(keepFrom, start));
          out.push(held);
          keepFrom = length;
        }
      } else {
        sendTo = start;
      }
    } else if (start < length) {
      this.#tally.outputChars += length - start;
    }
    if (out && sendTo > keepFrom) out.push(keepFrom === 0 && sendTo === length ? chunk : chunk.subarray(keepFrom, sendTo));
  }

  /** An event completed: held bytes from earlier chunks, then `tail`. Meters it; true when it is the usage chunk. */
  #complete(held: Buffer, tail: Buffer): boolean {
    if (this.#oversize) {
      this.#oversize = false;
      this.#tally.outputChars += tail.length;
      return false;
    }
    return this.#parse(held.length > 0 ? Buffer.concat([held, tail]) : tail);
  }

  /** Meters one event's data; true when it is the usage-only chunk (`"choices": []` with `usage`). */
  #parse(event: Buffer): boolean {
    const text = event.toString("utf8");
    let data: string | undefined;
    for (const line of text.split(/\r\n|\r|\n/)) {
      if (!line.startsWith("data:")) continue;
      const value = line.charCodeAt(5) === 0x20 ? line.slice(6) : line.slice(5);
      data = data === undefined ? value : `${data}\n${value}`;
    }
    if (data === undefined || data === "[DONE]") return false;
    let parsed: unknown;
    try {
      parsed = JSON.parse(data);
    } catch {
      return false;
    }
    this.#tally.event(parsed);
    return isRecord(parsed) && Array.isArray(parsed.choices) && parsed.choices.length === 0 && isRecord(parsed.usage);
  }

  #takePartial(): Buffer {
    const held = this.#partialBytes === 0 ? EMPTY : this.#partial.length === 1 ? this.#partial[0]! : Buffer.concat(this.#partial);
    this.#partial = [];
    this.#partialBytes = 0;
    return held;
  }
}
