/** The JSON meter: every provider's whole-response shape, cut anywhere, and bodies past the bound. */
import t from "tap";
import { JsonUsageMeter, trailingUsage } from "../../src/metering/openai-json.ts";
import type { Usage } from "../../src/metering/usage.ts";
import { twoWaySplits } from "./streams.ts";

type Headers = Record<string, string>;

function run(body: unknown, headers: Headers = {}, chunks?: Buffer[]) {
  const m = new JsonUsageMeter({ headers });
  for (const chunk of chunks ?? [Buffer.from(typeof body === "string" ? body : JSON.stringify(body))]) m.write(chunk);
  return m.end();
}

const usage = (u: Partial<Usage>): Usage => ({ inputTokens: 0, outputTokens: 0, cachedInputTokens: 0, cacheWriteTokens: 0, reasoningTokens: 0, source: "provider", ...u });

const CHAT = {
  id: "chatcmpl-123",
  object: "chat.completion",
  created: 1741570283,
  model: "o4-mini-2025-04-16",
  choices: [
    {
      index: 0,
      message: {
        role: "assistant",
        content: "The weather in Paris is mild.",
        refusal: null,
        tool_calls: [{ id: "call_abc", type: "function", function: { name: "get_weather", arguments: '{"city":"Paris"}' } }],
        annotations: [],
      },
      logprobs: null,
      finish_reason: "tool_calls",
    },
  ],
  usage: {
    prompt_tokens: 1117,
    completion_tokens: 46,
    total_tokens: 1163,
    prompt_tokens_details: { cached_tokens: 1024, audio_tokens: 0 },
    completion_tokens_details: { reasoning_tokens: 32, audio_tokens: 0, accepted_prediction_tokens: 0, rejected_prediction_tokens: 0 },
  },
  service_tier: "default",
  system_fingerprint: "fp_6b68a8204b",
};
const CHAT_EXPECTED = { usage: usage({ inputTokens: 1117, outputTokens: 46, cachedInputTokens: 1024, reasoningTokens: 32 }), outputChars: "The weather in Paris is mild.".length + '{"city":"Paris"}'.length };

t.test("OpenAI / Azure chat completion: cached and reasoning tokens; text and tool-call arguments counted", async (t) => {
  t.same(run(CHAT), CHAT_EXPECTED);
});

t.test("the same body cut at every byte offset meters the same", async (t) => {
  const bytes = Buffer.from(JSON.stringify(CHAT, null, 2));
  const wrong: number[] = [];
  for (const { at, chunks } of twoWaySplits(bytes)) if (JSON.stringify(run(undefined, {}, chunks)) !== JSON.stringify(CHAT_EXPECTED)) wrong.push(at);
  t.same(wrong, [], `${bytes.length - 1} cuts`);
});

t.test("embeddings and legacy completions", async (t) => {
  const embeddings = { object: "list", data: [{ object: "embedding", index: 0, embedding: [0.0023, -0.0093] }], model: "text-embedding-3-small", usage: { prompt_tokens: 8, total_tokens: 8 } };
  t.same(run(embeddings), { usage: usage({ inputTokens: 8 }), outputChars: 0 });
  const completion = { id: "cmpl-1", object: "text_completion", model: "gpt-3.5-turbo-instruct", choices: [{ text: "\n\nThis is a test.", index: 0, finish_reason: "stop" }], usage: { prompt_tokens: 5, completion_tokens: 7, total_tokens: 12 } };
  t.same(run(completion), { usage: usage({ inputTokens: 5, outputTokens: 7 }), outputChars: "\n\nThis is a test.".length });
});

t.test("Responses API: input_tokens include the cached ones; output items' text, arguments and summaries counted", async (t) => {
  const response = {
    id: "resp_67ccd2bed1ec8190b14f964abc054267",
    object: "response",
    status: "completed",
    model: "o3-2025-04-16",
    output: [
      { type: "reasoning", id: "rs_1", summary: [{ type: "summary_text", text: "Thinking." }] },
      { type: "function_call", id: "fc_1", call_id: "call_1", name: "lookup", arguments: '{"q":"x"}' },
      { type: "message", id: "msg_1", status: "completed", role: "assistant", content: [{ type: "output_text", text: "In a peaceful grove.", annotations: [] }] },
    ],
    usage: { input_tokens: 328, input_tokens_details: { cached_tokens: 128 }, output_tokens: 52, output_tokens_details: { reasoning_tokens: 20 }, total_tokens: 380 },
  };
  t.same(run(response), { usage: usage({ inputTokens: 328, outputTokens: 52, cachedInputTokens: 128, reasoningTokens: 20 }), outputChars: "Thinking.".length + '{"q":"x"}'.length + "In a peaceful grove.".length });
});

t.test("Anthropic messages: input_tokens exclude cache reads and writes, which Usage adds in", async (t) => {
  const message = {
    id: "msg_013Zva2CMHLNnXjNJJKqJ2EF",
    type: "message",
    role: "assistant",
    model: "claude-3-7-sonnet-20250219",
    content: [
      { type: "thinking", thinking: "Let me see.", signature: "EqQB" },
      { type: "text", text: "Hi! My name is Claude." },
      { type: "tool_use", id: "toolu_01", name: "get_weather", input: { location: "SF" } },
    ],
    stop_reason: "tool_use",
    stop_sequence: null,
    usage: { input_tokens: 2095, cache_creation_input_tokens: 2051, cache_read_input_tokens: 10000, output_tokens: 503 },
  };
  t.same(run(message), {
    usage: usage({ inputTokens: 2095 + 2051 + 10000, outputTokens: 503, cachedInputTokens: 10000, cacheWriteTokens: 2051 }),
    outputChars: "Let me see.".length + "Hi! My name is Claude.".length + JSON.stringify({ location: "SF" }).length,
  });
});

t.test("Bedrock Converse: inputTokens exclude cacheRead/cacheWrite (totalTokens is their sum with output)", async (t) => {
  const converse = {
    output: { message: { role: "assistant", content: [{ text: "Hello there." }, { reasoningContent: { reasoningText: { text: "hmm", signature: "x" } } }, { toolUse: { toolUseId: "t1", name: "f", input: { a: 1 } } }] } },
    stopReason: "end_turn",
    usage: { inputTokens: 4, outputTokens: 52, totalTokens: 1658, cacheReadInputTokens: 1602, cacheWriteInputTokens: 0 },
    metrics: { latencyMs: 1235 },
  };
  t.same(run(converse), { usage: usage({ inputTokens: 1606, outputTokens: 52, cachedInputTokens: 1602 }), outputChars: "Hello there.".length + 3 + '{"a":1}'.length });
});

t.test("Bedrock InvokeModel (Nova): Converse-like usage with the metrics' cache spelling", async (t) => {
  const nova = { output: { message: { role: "assistant", content: [{ text: "Ahoy." }] } }, stopReason: "end_turn", usage: { inputTokens: 10, outputTokens: 3, totalTokens: 613, cacheReadInputTokenCount: 600, cacheWriteInputTokenCount: 0 } };
  t.same(run(nova), { usage: usage({ inputTokens: 610, outputTokens: 3, cachedInputTokens: 600 }), outputChars: 5 });
});

t.test("Bedrock InvokeModel: the model's own body first, the x-amzn-bedrock-*-token-count headers otherwise", async (t) => {
  const headers = { "x-amzn-bedrock-input-token-count": "15", "x-amzn-bedrock-output-token-count": "9", "x-amzn-bedrock-cache-read-input-token-count": "100" };
  const anthropic = { id: "msg_bdrk_1", type: "message", role: "assistant", content: [{ type: "text", text: "Sure." }], usage: { input_tokens: 15, output_tokens: 9 } };
  t.same(run(anthropic, headers), { usage: usage({ inputTokens: 15, outputTokens: 9 }), outputChars: 5 });
  const llama = { generation: "Paris is the capital.", prompt_token_count: 15, generation_token_count: 9, stop_reason: "stop" };
  t.same(run(llama, headers).usage, usage({ inputTokens: 115, outputTokens: 9, cachedInputTokens: 100 }), "headers, cache reads added to input as in Converse");
});

t.test("no usage: an error body, malformed JSON", async (t) => {
  t.same(run({ error: { message: "The model `x` does not exist", type: "invalid_request_error", code: "model_not_found" } }), { usage: undefined, outputChars: 0 });
  const broken = '{"choices": [{"message": {"content": "cut';
  t.same(run(broken), { usage: undefined, outputChars: broken.length }, "unparseable: its size is an upper bound of the text");
});

t.test("a body past maxBytes keeps only its tail and still finds the trailing usage", async (t) => {
  const big = { ...CHAT, choices: [{ index: 0, message: { role: "assistant", content: "y".repeat(50_000) }, finish_reason: "stop" }] };
  const bytes = Buffer.from(JSON.stringify(big));
  const m = new JsonUsageMeter({ headers: {} }, { maxBytes: 8192, tailBytes: 1024 });
  for (let i = 0; i < bytes.length; i += 700) m.write(bytes.subarray(i, i + 700));
  t.same(m.end(), { usage: CHAT_EXPECTED.usage, outputChars: bytes.length });
  const single = new JsonUsageMeter({ headers: {} }, { maxBytes: 8192, tailBytes: 1024 });
  single.write(bytes);
  t.same(single.end().usage, CHAT_EXPECTED.usage, "one chunk bigger than the bound: its end is kept");
  const within = new JsonUsageMeter({ headers: {} }, { maxBytes: bytes.length });
  within.write(bytes);
  t.equal(within.end().outputChars, 50_000, "within the bound it is parsed whole");
});

t.test("trailingUsage: the last real `usage` key, not one quoted in text, braces in strings skipped", async (t) => {
  const tail = `ntent":"he said \\"usage\\": {\\"x\\": 1}","n":"}{"}],"usage":{"prompt_tokens":3,"note":"a } brace","completion_tokens":4}}`;
  t.same(trailingUsage(tail), { prompt_tokens: 3, note: "a } brace", completion_tokens: 4 });
  t.same(trailingUsage('"usage": {"prompt_tokens": 1}, "x": {"usage": 5}'), { prompt_tokens: 1 }, "a later `usage` that is no object is passed over");
  t.equal(trailingUsage('"usage":{"prompt_tokens":1'), undefined, "an object that never closes");
  t.equal(trailingUsage("no usage here"), undefined);
});
