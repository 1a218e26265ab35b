/** The SSE meter: usage from OpenAI, Anthropic and Responses streams, cut anywhere; the usage chunk stripped exactly. */
import t from "tap";
import { SseUsageMeter } from "../../src/metering/sse.ts";
import type { Usage } from "../../src/metering/usage.ts";
import { anthropicStream, byteByByte, OPENAI_CHARS, openAiStream, sseEvent, twoWaySplits, type Eol } from "./streams.ts";

const OPENAI_EXPECTED: Usage = { inputTokens: 1290, outputTokens: 312, cachedInputTokens: 1152, cacheWriteTokens: 0, reasoningTokens: 192, source: "provider" };
const ANTHROPIC_EXPECTED: Usage = { inputTokens: 25 + 1500 + 3000, outputTokens: 15, cachedInputTokens: 3000, cacheWriteTokens: 1500, reasoningTokens: 0, source: "provider" };
const ENDINGS: Eol[] = ["\n", "\r\n", "\r"];

function meter(chunks: Buffer[], strip = false) {
  const m = new SseUsageMeter({ stripUsageChunk: strip });
  const sent = chunks.map((c) => m.transform(c));
  const flushed = m.flush();
  return { sent, flushed, client: Buffer.concat([...sent, flushed]), ...m.end() };
}

/**
 * What the client must have received once `fed` bytes of the stream went in: every event complete by then
 * (a CRLF event is complete at its last CR), minus the dropped one, and nothing of incomplete events.
 */
function expectedClient(events: string[], drop: number, fed: number): Buffer {
  const out: Buffer[] = [];
  let offset = 0;
  for (const [k, text] of events.entries()) {
    const bytes = Buffer.from(text);
    const end = offset + bytes.length;
    if (end <= fed) {
      if (k !== drop) out.push(bytes);
    } else {
      if (end - 1 === fed && text.endsWith("\r\n") && k !== drop) out.push(bytes.subarray(0, -1));
      break;
    }
    offset = end;
  }
  return Buffer.concat(out);
}

t.test("OpenAI stream: provider usage with cached and reasoning tokens; the chunk itself goes on when not stripping", async (t) => {
  const stream = Buffer.from(openAiStream().events.join(""));
  for (const chunks of [[stream], byteByByte(stream)]) {
    const m = new SseUsageMeter({ stripUsageChunk: false });
    t.ok(chunks.every((c) => m.transform(c) === c), "transform returns the very same Buffer (zero copy)");
    t.equal(m.flush().length, 0);
    t.same(m.end(), { usage: OPENAI_EXPECTED, outputChars: OPENAI_CHARS });
  }
});

t.test("OpenAI stream cut at every byte offset meters the same, with LF, CRLF and CR line endings", async (t) => {
  for (const eol of ENDINGS) {
    const stream = Buffer.from(openAiStream(eol).events.join(""));
    const wrong: number[] = [];
    let tried = 0;
    for (const { at, chunks } of twoWaySplits(stream)) {
      const result = meter(chunks);
      tried++;
      if (JSON.stringify([result.usage, result.outputChars]) !== JSON.stringify([OPENAI_EXPECTED, OPENAI_CHARS]) || !result.client.equals(stream)) wrong.push(at);
    }
    t.equal(tried, stream.length - 1, `${JSON.stringify(eol)}: every offset tried`);
    t.same(wrong, [], `${JSON.stringify(eol)}: same usage and chars, client sees the stream unchanged, at every cut`);
  }
});

t.test("stripping: the client gets the stream minus the usage event, at every cut, and no complete event waits", async (t) => {
  for (const eol of ENDINGS) {
    const name = JSON.stringify(eol);
    const { events, usageIndex } = openAiStream(eol);
    const stream = Buffer.from(events.join(""));
    const wanted = Buffer.from(events.filter((_, k) => k !== usageIndex).join(""));
    t.ok(wanted.length < stream.length && !wanted.includes('"choices":[],"usage"'), "the expectation has no usage event");
    const late: number[] = [];
    const wrong: number[] = [];
    for (const { at, chunks } of twoWaySplits(stream)) {
      const m = new SseUsageMeter({ stripUsageChunk: true });
      const first = m.transform(chunks[0]!);
      if (!first.equals(expectedClient(events, usageIndex, at))) late.push(at);
      const second = m.transform(chunks[1]!);
      if (!Buffer.concat([first, second, m.flush()]).equals(wanted) || JSON.stringify(m.end().usage) !== JSON.stringify(OPENAI_EXPECTED)) wrong.push(at);
    }
    t.same(late, [], `${name}: at every cut, the first transform sends exactly the events it completes`);
    t.same(wrong, [], `${name}: at every cut, the whole output is the stream minus the usage event, and usage is metered`);
    // One byte at a time: after each byte the client has exactly the events complete so far.
    const m = new SseUsageMeter({ stripUsageChunk: true });
    const sent: Buffer[] = [];
    const behind: number[] = [];
    for (const [i, byte] of byteByByte(stream).entries()) {
      sent.push(m.transform(byte));
      if (!Buffer.concat(sent).equals(expectedClient(events, usageIndex, i + 1))) behind.push(i + 1);
    }
    t.same(behind, [], `${name} byte by byte: output keeps pace with complete events`);
    t.ok(Buffer.concat([...sent, m.flush()]).equals(wanted), `${name} byte by byte: whole output`);
  }
});

t.test("stripping a whole stream in one chunk: one transform returns everything but the usage event", async (t) => {
  const { events, usageIndex } = openAiStream();
  const result = meter([Buffer.from(events.join(""))], true);
  t.equal(result.sent[0]!.toString(), events.filter((_, k) => k !== usageIndex).join(""));
  t.equal(result.flushed.length, 0);
  t.same(result.usage, OPENAI_EXPECTED);
});

t.test("stripping leaves a chunk with no usage event untouched (same Buffer)", async (t) => {
  const { events } = openAiStream();
  const chunk = Buffer.from(events.slice(0, 3).join(""));
  t.equal(new SseUsageMeter({ stripUsageChunk: true }).transform(chunk), chunk);
});

t.test("Azure's prompt-filter chunk (choices: [] without usage) is never stripped", async (t) => {
  const filter = sseEvent({ id: "", object: "", created: 0, model: "", choices: [], prompt_filter_results: [{ prompt_index: 0, content_filter_results: { hate: { filtered: false, severity: "safe" } } }] });
  const { events } = openAiStream();
  const result = meter([Buffer.from(filter + events.join(""))], true);
  t.ok(result.client.toString().startsWith(filter), "the filter chunk reaches the client");
  t.notOk(result.client.toString().includes('"usage":{'), "the usage chunk does not");
});

t.test("Anthropic stream: input from message_start (cache reads and writes), output from message_delta, at every cut", async (t) => {
  const wanted = JSON.stringify({ usage: ANTHROPIC_EXPECTED, outputChars: "Hello, Claude here.".length });
  for (const eol of ENDINGS) {
    const stream = Buffer.from(anthropicStream(eol).join(""));
    const wrong: number[] = [];
    for (const { at, chunks } of twoWaySplits(stream)) {
      const result = meter(chunks, true);
      if (JSON.stringify({ usage: result.usage, outputChars: result.outputChars }) !== wanted || !result.client.equals(stream)) wrong.push(at);
    }
    t.same(wrong, [], `${JSON.stringify(eol)}: same usage at every cut, and nothing stripped from an Anthropic stream`);
  }
  t.same(meter([Buffer.from(anthropicStream().join(""))]).usage, ANTHROPIC_EXPECTED);
});

t.test("an Anthropic stream cut before message_delta keeps the input count and marks the output estimated", async (t) => {
  const result = meter([Buffer.from(anthropicStream("\n", false).join(""))]);
  t.same(result.usage, { ...ANTHROPIC_EXPECTED, outputTokens: Math.ceil("Hello, Claude here.".length / 4), source: "estimated" });
});

t.test("Responses API stream: usage from response.completed, chars from output_text deltas", async (t) => {
  const events = [
    sseEvent({ type: "response.created", sequence_number: 0, response: { id: "resp_1", status: "in_progress", usage: null } }, "\n", "response.created"),
    sseEvent({ type: "response.output_text.delta", item_id: "msg_1", output_index: 0, content_index: 0, delta: "Bonjour" }, "\n", "response.output_text.delta"),
    sseEvent({ type: "response.output_text.delta", item_id: "msg_1", output_index: 0, content_index: 0, delta: " tout le monde" }, "\n", "response.output_text.delta"),
    sseEvent({ type: "response.completed", sequence_number: 9, response: { id: "resp_1", status: "completed", usage: { input_tokens: 320, input_tokens_details: { cached_tokens: 256 }, output_tokens: 120, output_tokens_details: { reasoning_tokens: 64 }, total_tokens: 440 } } }, "\n", "response.completed"),
  ];
  const result = meter([Buffer.from(events.join(""))], true);
  t.same(result.usage, { inputTokens: 320, outputTokens: 120, cachedInputTokens: 256, cacheWriteTokens: 0, reasoningTokens: 64, source: "provider" });
  t.equal(result.outputChars, "Bonjour tout le monde".length);
  t.equal(result.client.toString(), events.join(""), "no `choices: []` event, nothing stripped");
});

t.test("an unterminated last event is held, flushed, and metered; a held usage-only event is dropped on flush", async (t) => {
  const usage = `data: ${JSON.stringify({ id: "c", object: "chat.completion.chunk", choices: [], usage: { prompt_tokens: 9, completion_tokens: 3, total_tokens: 12 } })}`;
  const text = sseEvent({ choices: [{ index: 0, delta: { content: "hey" } }] });
  for (const strip of [true, false]) {
    const m = new SseUsageMeter({ stripUsageChunk: strip });
    const sent = m.transform(Buffer.from(text + usage));
    t.equal(sent.toString(), strip ? text : text + usage, strip ? "the incomplete tail is held" : "nothing held when not stripping");
    const ended = m.end();
    t.same(ended.usage, { inputTokens: 9, outputTokens: 3, cachedInputTokens: 0, cacheWriteTokens: 0, reasoningTokens: 0, source: "provider" }, "metered even before flush");
    t.equal(ended.outputChars, 3);
    t.equal(m.flush().length, 0, strip ? "the held usage-only event is dropped" : "nothing was held back, so nothing to flush");
  }
  const m = new SseUsageMeter({ stripUsageChunk: true });
  t.equal(m.transform(Buffer.from(text + 'data: {"choices":[{"delta":{"content":"ab"}}]}')).toString(), text);
  t.equal(m.flush().toString(), 'data: {"choices":[{"delta":{"content":"ab"}}]}', "an ordinary unterminated event is sent on flush");
  t.equal(m.end().outputChars, 5);
});

t.test("an event held past maxEventBytes passes through unparsed and is counted by size", async (t) => {
  const big = sseEvent({ choices: [{ index: 0, delta: { content: "x".repeat(300) } }] });
  const { events, usageIndex } = openAiStream();
  const stream = Buffer.from(big + events.join(""));
  const m = new SseUsageMeter({ stripUsageChunk: true }, { maxEventBytes: 128 });
  t.ok(Buffer.byteLength(big) > 200, "the cut falls inside the big event, past the bound");
  const sent = [stream.subarray(0, 200), stream.subarray(200)].map((c) => m.transform(c));
  t.ok(sent[0]!.equals(stream.subarray(0, 200)), "the oversize event's bytes are released as they come");
  t.equal(Buffer.concat([...sent, m.flush()]).toString(), big + events.filter((_, k) => k !== usageIndex).join(""));
  const { usage, outputChars } = m.end();
  t.same(usage, OPENAI_EXPECTED);
  t.equal(outputChars, OPENAI_CHARS + Buffer.byteLength(big), "its bytes stand in for its text");
  // Held across chunks only up to the bound: an event that completes before outgrowing it is parsed as usual.
  const small = new SseUsageMeter({ stripUsageChunk: true }, { maxEventBytes: 128 });
  t.equal(small.transform(stream.subarray(0, 100)).length, 0, "100 bytes of an incomplete event are held");
  small.transform(stream.subarray(100));
  t.equal(small.end().outputChars, OPENAI_CHARS + 300);
});

t.test("multi-line data, `data:` without a space, and a stream with no usage", async (t) => {
  const stream = 'data:{"choices":[{"index":0,\ndata: "delta":{"content":"abc"}}]}\n\n' + "data: [DONE]\n\n";
  const result = meter([Buffer.from(stream)], true);
  t.equal(result.usage, undefined, "no usage in the stream");
  t.equal(result.outputChars, 3, "the two data lines joined into one JSON document");
  t.equal(result.client.toString(), stream);
});
