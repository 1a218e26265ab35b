/** Picks the meter for a response by its content type; a type no meter reads gets one that finds nothing in it. */
import type { FilteringUsageMeter, MeterContext, Usage, UsageMeter } from "./usage.ts";
import { JsonUsageMeter, type JsonMeterOptions } from "./openai-json.ts";
import { SseUsageMeter, type SseMeterOptions } from "./sse.ts";
import { BedrockEventStreamMeter, type EventStreamMeterOptions } from "./bedrock-eventstream.ts";
import { UsageTally } from "./tally.ts";

export type MeterOptions = JsonMeterOptions & SseMeterOptions & EventStreamMeterOptions;

export function createMeter(ctx: MeterContext, options: MeterOptions = {}): UsageMeter | FilteringUsageMeter {
  // Compressed bytes cannot be read as they pass; the gateway should ask upstream for identity encoding.
  if (isEncoded(ctx.headers["content-encoding"])) return new HeaderOnlyMeter(ctx);
  const type = mediaType(ctx.contentType);
  if (type === "text/event-stream") return new SseUsageMeter(ctx, options);
  if (type === "application/vnd.amazon.eventstream") return new BedrockEventStreamMeter(ctx, options);
  if (type === "application/json" || type.endsWith("+json")) return new JsonUsageMeter(ctx, options);
  return new HeaderOnlyMeter(ctx);
}

/** True for a meter that may rewrite what the client sees: send `transform(chunk)`, then `flush()` at the end. */
export function isFilteringMeter(meter: UsageMeter | FilteringUsageMeter): meter is FilteringUsageMeter {
  return "transform" in meter;
}

/** "Text/Event-Stream; charset=utf-8" → "text/event-stream" (the context should already be so; cheap to be sure). */
function mediaType(contentType: string): string {
  const semicolon = contentType.indexOf(";");
  return (semicolon < 0 ? contentType : contentType.slice(0, semicolon)).trim().toLowerCase();
}

function isEncoded(header: string | string[] | undefined): boolean {
  const value = (Array.isArray(header) ? header.join(",") : (header ?? "")).trim().toLowerCase();
  return value !== "" && value !== "identity";
}

/** Reads nothing from the body; only Bedrock's token-count headers, when an InvokeModel answer is not JSON. */
class HeaderOnlyMeter implements UsageMeter {
  readonly #headers: MeterContext["headers"];

  constructor(ctx: Pick<MeterContext, "headers">) {
    this.#headers = ctx.headers;
  }

  write(): void {}

  end(): { usage: Usage | undefined; outputChars: number } {
    const tally = new UsageTally();
    tally.addHeaders(this.#headers);
    return { usage: tally.result(), outputChars: 0 };
  }
}
