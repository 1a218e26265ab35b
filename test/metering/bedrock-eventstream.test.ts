/** The Bedrock event-stream meter: ConverseStream and InvokeModelWithResponseStream frames, cut anywhere. */
import t from "tap";
import { EventStreamCodec } from "@smithy/core/event-streams";
import { fromUtf8, toUtf8 } from "@smithy/core/serde";
import { BedrockEventStreamMeter } from "../../src/metering/bedrock-eventstream.ts";
import type { Usage } from "../../src/metering/usage.ts";
import { b64, byteByByte, twoWaySplits } from "./streams.ts";

const codec = new EventStreamCodec(toUtf8, fromUtf8);

function frame(eventType: string, payload: unknown, messageType = "event"): Buffer {
  const typeHeader = messageType === "event" ? ":event-type" : ":exception-type";
  return Buffer.from(
    codec.encode({
      headers: {
        [typeHeader]: { type: "string", value: eventType },
        ":content-type": { type: "string", value: "application/json" },
        ":message-type": { type: "string", value: messageType },
      },
      body: fromUtf8(JSON.stringify(payload)),
    }),
  );
}

function run(chunks: Buffer[], headers: Record<string, string> = {}) {
  const m = new BedrockEventStreamMeter({ headers });
  for (const chunk of chunks) m.write(chunk);
  return m.end();
}

/** ConverseStream as Bedrock sends it; `p` is Bedrock's padding field. */
const CONVERSE = Buffer.concat([
  frame("messageStart", { p: "abcdefghijklmn", role: "assistant" }),
  frame("contentBlockDelta", { contentBlockIndex: 0, delta: { text: "Bonjour, " }, p: "abcdef" }),
  frame("contentBlockDelta", { contentBlockIndex: 0, delta: { text: "ça va ?" }, p: "abcdefghij" }),
  frame("contentBlockStop", { contentBlockIndex: 0, p: "abcdefghijklmnopqrs" }),
  frame("messageStop", { p: "abcdefgh", stopReason: "end_turn" }),
  frame("metadata", { metrics: { latencyMs: 412 }, p: "abc", usage: { inputTokens: 21, outputTokens: 9, totalTokens: 2078, cacheReadInputTokens: 2048, cacheWriteInputTokens: 0 } }),
]);
const CONVERSE_EXPECTED = { usage: { inputTokens: 21 + 2048, outputTokens: 9, cachedInputTokens: 2048, cacheWriteTokens: 0, reasoningTokens: 0, source: "provider" } as Usage, outputChars: "Bonjour, ça va ?".length };

/** InvokeModelWithResponseStream for an Anthropic model: the model's events, base64, in `chunk` frames. */
const INVOKE_ANTHROPIC = Buffer.concat([
  frame("chunk", { bytes: b64({ type: "message_start", message: { id: "msg_bdrk_01", type: "message", role: "assistant", model: "claude-3-5-sonnet-20241022", content: [], usage: { input_tokens: 30, cache_creation_input_tokens: 1200, cache_read_input_tokens: 0, output_tokens: 1 } } }), p: "abcd" }),
  frame("chunk", { bytes: b64({ type: "content_block_start", index: 0, content_block: { type: "text", text: "" } }), p: "ab" }),
  frame("chunk", { bytes: b64({ type: "content_block_delta", index: 0, delta: { type: "text_delta", text: "Hi there" } }), p: "abcdefgh" }),
  frame("chunk", { bytes: b64({ type: "content_block_stop", index: 0 }), p: "a" }),
  frame("chunk", { bytes: b64({ type: "message_delta", delta: { stop_reason: "end_turn", stop_sequence: null }, usage: { output_tokens: 12 } }), p: "abc" }),
  frame("chunk", { bytes: b64({ type: "message_stop", "amazon-bedrock-invocationMetrics": { inputTokenCount: 30, outputTokenCount: 12, invocationLatency: 812, firstByteLatency: 344, cacheReadInputTokenCount: 0, cacheWriteInputTokenCount: 1200 } }), p: "abcdef" }),
]);
const INVOKE_EXPECTED = { usage: { inputTokens: 1230, outputTokens: 12, cachedInputTokens: 0, cacheWriteTokens: 1200, reasoningTokens: 0, source: "provider" } as Usage, outputChars: "Hi there".length };

t.test("ConverseStream: usage from the metadata event, chars from contentBlockDelta", async (t) => {
  t.same(run([CONVERSE]), CONVERSE_EXPECTED);
  t.same(run(byteByByte(CONVERSE)), CONVERSE_EXPECTED, "one byte at a time");
});

t.test("frames cut at every byte offset decode to the same usage", async (t) => {
  for (const [name, stream, expected] of [["ConverseStream", CONVERSE, CONVERSE_EXPECTED], ["InvokeModelWithResponseStream", INVOKE_ANTHROPIC, INVOKE_EXPECTED]] as const) {
    const wrong: number[] = [];
    for (const { at, chunks } of twoWaySplits(stream)) {
      if (JSON.stringify(run(chunks)) !== JSON.stringify(expected)) wrong.push(at);
    }
    t.same(wrong, [], `${name}: ${stream.length - 1} cuts, all alike`);
  }
});

t.test("InvokeModelWithResponseStream (Anthropic): the model's own usage, with its cache write", async (t) => {
  t.same(run([INVOKE_ANTHROPIC]), INVOKE_EXPECTED);
});

t.test("InvokeModelWithResponseStream (Llama): usage from amazon-bedrock-invocationMetrics", async (t) => {
  const stream = Buffer.concat([
    frame("chunk", { bytes: b64({ generation: "The sky", prompt_token_count: 18, generation_token_count: 2, stop_reason: null }) }),
    frame("chunk", { bytes: b64({ generation: " is blue.", prompt_token_count: null, generation_token_count: 5, stop_reason: "stop", "amazon-bedrock-invocationMetrics": { inputTokenCount: 18, outputTokenCount: 5, invocationLatency: 300, firstByteLatency: 120 } }) }),
  ]);
  t.same(run([stream]), { usage: { inputTokens: 18, outputTokens: 5, cachedInputTokens: 0, cacheWriteTokens: 0, reasoningTokens: 0, source: "provider" }, outputChars: "The sky is blue.".length });
});

t.test("an exception frame is skipped; a stream that ends early has no usage, only chars", async (t) => {
  const stream = Buffer.concat([
    frame("contentBlockDelta", { contentBlockIndex: 0, delta: { text: "partial" } }),
    frame("throttlingException", { message: "Too many requests, please wait before trying again." }, "exception"),
  ]);
  t.same(run([stream]), { usage: undefined, outputChars: 7 });
});

t.test("a frame that fails its CRC stops metering without throwing; the bytes are never altered", async (t) => {
  const corrupt = Buffer.from(CONVERSE);
  const second = corrupt.readUInt32BE(0); // the first frame's length: the next frame starts there
  corrupt[second + 40] = corrupt[second + 40]! ^ 0xff;
  const copy = Buffer.from(corrupt);
  const m = new BedrockEventStreamMeter({ headers: {} });
  t.doesNotThrow(() => m.write(corrupt));
  t.ok(corrupt.equals(copy), "write leaves the chunk as it was");
  t.same(m.end(), { usage: undefined, outputChars: 0 }, "nothing metered past the corrupt frame, not even its metadata");
  t.same(run([Buffer.from("HTTP/1.1 garbage that is no event stream at all")]), { usage: undefined, outputChars: 0 }, "a declared length out of bounds is corrupt");
});

t.test("a frame declaring more than maxFrameBytes is treated as corrupt", async (t) => {
  const m = new BedrockEventStreamMeter({ headers: {} }, { maxFrameBytes: 64 });
  m.write(CONVERSE);
  t.same(m.end(), { usage: undefined, outputChars: 0 });
});

t.test("Bedrock's token-count headers are the fallback when the stream reports nothing", async (t) => {
  const headers = { "x-amzn-bedrock-input-token-count": "40", "x-amzn-bedrock-output-token-count": "7" };
  t.same(run([], headers).usage, { inputTokens: 40, outputTokens: 7, cachedInputTokens: 0, cacheWriteTokens: 0, reasoningTokens: 0, source: "provider" });
  t.same(run([CONVERSE], headers), CONVERSE_EXPECTED, "the stream's own usage wins over headers");
});
