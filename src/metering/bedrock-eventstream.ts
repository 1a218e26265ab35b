/**
 * Meters a Bedrock event stream (application/vnd.amazon.eventstream) as it passes, never altering it:
 * ConverseStream (`metadata` event with usage; `contentBlockDelta` text) and InvokeModelWithResponseStream
 * (`chunk` events whose `bytes` is base64 JSON of the model's own stream events — e.g. Anthropic message_start /
 * message_delta — the last one carrying `amazon-bedrock-invocationMetrics`). Frames split across chunks are
 * reassembled; a frame that fails its length or CRC check stops metering, not the stream.
 */
import { EventStreamCodec } from "@smithy/core/event-streams";
import { fromUtf8, toUtf8 } from "@smithy/core/serde";
import type { Message, MessageHeaderValue } from "@smithy/types";
import type { MeterContext, Usage, UsageMeter } from "./usage.ts";
import { UsageTally } from "./tally.ts";
import { isRecord } from "./shape.ts";

export interface EventStreamMeterOptions {
  /** Frames declaring more than this are treated as corrupt (default 16 MiB, Bedrock's own bound is lower). */
  maxFrameBytes?: number;
  charsPerToken?: number;
}

/** Prelude (total length, headers length, prelude CRC) plus message CRC. */
const FRAME_OVERHEAD = 16;

export class BedrockEventStreamMeter implements UsageMeter {
  readonly #codec = new EventStreamCodec(toUtf8, fromUtf8);
  readonly #tally: UsageTally;
  readonly #headers: MeterContext["headers"];
  readonly #maxFrameBytes: number;
  #parts: Buffer[] = [];
  #bytes = 0;
  /** Bytes needed before the next frame can be decoded: its prelude, then its declared length. */
  #need = 4;
  #broken = false;

  constructor(ctx: Pick<MeterContext, "headers">, options: EventStreamMeterOptions = {}) {
    this.#headers = ctx.headers;
    this.#maxFrameBytes = options.maxFrameBytes ?? 16 * 1024 * 1024;
    this.#tally = new UsageTally(options.charsPerToken);
  }

  write(chunk: Buffer): void {
    if (this.#broken || chunk.length === 0) return;
    this.#parts.push(chunk);
    this.#bytes += chunk.length;
    if (this.#bytes < this.#need) return;
    try {
      this.#decodeFrames();
    } catch {
      // A corrupt frame: the bytes still flow to the client; metering falls back to an estimate.
      this.#broken = true;
      this.#parts = [];
      this.#bytes = 0;
    }
  }

  end(): { usage: Usage | undefined; outputChars: number } {
    this.#parts = [];
    this.#tally.addHeaders(this.#headers);
    return { usage: this.#tally.result(), outputChars: this.#tally.outputChars };
  }

  #decodeFrames(): void {
    const buffer = this.#parts.length === 1 ? this.#parts[0]! : Buffer.concat(this.#parts, this.#bytes);
    let offset = 0;
    this.#need = 4;
    while (buffer.length - offset >= 4) {
      const total = buffer.readUInt32BE(offset);
      if (total < FRAME_OVERHEAD || total > this.#maxFrameBytes) throw new Error(`event stream frame of ${total} bytes`);
      if (buffer.length - offset < total) {
        this.#need = total;
        break;
      }
      this.#message(this.#codec.decode(buffer.subarray(offset, offset + total)));
      offset += total;
    }
    // Keep the start of the next frame; a view of the chunk, which nobody writes to.
    const rest = buffer.subarray(offset);
    this.#parts = rest.length > 0 ? [rest] : [];
    this.#bytes = rest.length;
  }

  #message(message: Message): void {
    if (headerText(message.headers[":message-type"]) !== "event") return; // exceptions carry no usage
    const payload = parseJson(Buffer.from(message.body.buffer, message.body.byteOffset, message.body.byteLength));
    const eventType = headerText(message.headers[":event-type"]);
    if (eventType === "chunk") {
      // InvokeModelWithResponseStream: the model's own event, base64 in `bytes`.
      if (isRecord(payload) && typeof payload.bytes === "string") this.#tally.event(parseJson(Buffer.from(payload.bytes, "base64")));
    } else {
      this.#tally.converse(eventType, payload);
    }
  }
}

function headerText(header: MessageHeaderValue | undefined): string | undefined {
  return header?.type === "string" ? header.value : undefined;
}

function parseJson(bytes: Buffer): unknown {
  try {
    return JSON.parse(bytes.toString("utf8"));
  } catch {
    return undefined;
  }
}
