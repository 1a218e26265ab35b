/** createMeter picks by content type; what it returns meters what it is fed. */
import t from "tap";
import { createMeter, isFilteringMeter } from "../../src/metering/select.ts";
import { SseUsageMeter } from "../../src/metering/sse.ts";
import { JsonUsageMeter } from "../../src/metering/openai-json.ts";
import { BedrockEventStreamMeter } from "../../src/metering/bedrock-eventstream.ts";
import { openAiStream } from "./streams.ts";

const ctx = (contentType: string, headers: Record<string, string> = {}, stripUsageChunk = false) => ({ contentType, headers, stripUsageChunk });

t.test("each content type gets its meter", async (t) => {
  t.ok(createMeter(ctx("text/event-stream")) instanceof SseUsageMeter);
  t.ok(createMeter(ctx("Text/Event-Stream; charset=utf-8")) instanceof SseUsageMeter, "parameters and case tolerated");
  t.ok(createMeter(ctx("application/json")) instanceof JsonUsageMeter);
  t.ok(createMeter(ctx("application/problem+json")) instanceof JsonUsageMeter);
  t.ok(createMeter(ctx("application/vnd.amazon.eventstream")) instanceof BedrockEventStreamMeter);
  t.ok(isFilteringMeter(createMeter(ctx("text/event-stream"))), "the SSE meter may rewrite");
  t.notOk(isFilteringMeter(createMeter(ctx("application/vnd.amazon.eventstream"))), "the event-stream meter never does");
  t.notOk(isFilteringMeter(createMeter(ctx("application/json"))));
});

t.test("the selected SSE meter honours stripUsageChunk", async (t) => {
  const { events, usageIndex } = openAiStream();
  const meter = createMeter(ctx("text/event-stream", {}, true));
  if (!isFilteringMeter(meter)) return t.fail("not a filtering meter");
  t.equal(meter.transform(Buffer.from(events.join(""))).toString(), events.filter((_, k) => k !== usageIndex).join(""));
  t.equal(meter.end().usage?.inputTokens, 1290);
});

t.test("an unknown content type finds nothing in the body", async (t) => {
  const meter = createMeter(ctx("text/plain"));
  meter.write(Buffer.from('{"usage":{"prompt_tokens":5,"completion_tokens":5}}'));
  t.same(meter.end(), { usage: undefined, outputChars: 0 });
  const bedrock = createMeter(ctx("image/png", { "x-amzn-bedrock-input-token-count": "12", "x-amzn-bedrock-output-token-count": "0" }));
  t.same(bedrock.end().usage, { inputTokens: 12, outputTokens: 0, cachedInputTokens: 0, cacheWriteTokens: 0, reasoningTokens: 0, source: "provider" }, "Bedrock's headers still count");
});

t.test("a compressed body is not parsed: gzip bytes would be counted as text", async (t) => {
  const meter = createMeter(ctx("application/json", { "content-encoding": "gzip" }));
  t.notOk(meter instanceof JsonUsageMeter);
  meter.write(Buffer.from([0x1f, 0x8b, 0x08, 0x00]));
  t.same(meter.end(), { usage: undefined, outputChars: 0 });
  t.ok(createMeter(ctx("application/json", { "content-encoding": "identity" })) instanceof JsonUsageMeter, "identity is no encoding");
});
