/** Estimates: prompt tokens from each request format, output from characters, max output tokens. */
import t from "tap";
import { estimateOutputTokens, estimatePromptTokens, estimateUsage, maxOutputTokens, DEFAULT_CHARS_PER_TOKEN } from "../../src/metering/estimate.ts";

t.test("OpenAI chat: message text (string or parts) at 4 chars a token, plus 4 tokens a message", async (t) => {
  const body = {
    model: "gpt-4o",
    messages: [
      { role: "system", content: "You are terse." }, // 14 chars
      { role: "user", content: [{ type: "text", text: "Describe this." }] }, // 14 chars
    ],
  };
  t.equal(estimatePromptTokens(body), Math.ceil(28 / 4) + 2 * 4);
  t.equal(estimatePromptTokens(body, 2), 14 + 8, "the ratio is configurable");
  t.equal(estimatePromptTokens(body, 0), estimatePromptTokens(body), "a nonsensical ratio falls back to the default");
});

t.test("images, tool calls and tool definitions count as their JSON text", async (t) => {
  const image = { type: "image_url", image_url: { url: "data:image/png;base64,iVBORw0KGgo=" } };
  const toolCalls = [{ id: "call_1", type: "function", function: { name: "f", arguments: "{}" } }];
  const tools = [{ type: "function", function: { name: "get_weather", parameters: { type: "object", properties: {} } } }];
  const body = { messages: [{ role: "user", content: [image] }, { role: "assistant", content: null, tool_calls: toolCalls }], tools };
  const chars = JSON.stringify(image).length + JSON.stringify(toolCalls).length + JSON.stringify(tools[0]).length;
  t.equal(estimatePromptTokens(body), Math.ceil(chars / 4) + 8);
});

t.test("Anthropic: system (string or blocks) and messages with text, tool_use and tool_result blocks", async (t) => {
  const toolResult = { type: "tool_result", tool_use_id: "toolu_1", content: "15 degrees" };
  const body = {
    model: "claude-sonnet-4-20250514",
    max_tokens: 1024,
    system: [{ type: "text", text: "Be kind.", cache_control: { type: "ephemeral" } }], // 8
    messages: [
      { role: "user", content: "What's the weather?" }, // 19
      { role: "user", content: [toolResult] },
    ],
  };
  t.equal(estimatePromptTokens(body), Math.ceil((8 + 19 + JSON.stringify(toolResult).length) / 4) + 8);
  t.equal(estimatePromptTokens({ ...body, system: "Be kind." }), estimatePromptTokens(body), "a string system prompt counts the same");
});

t.test("Bedrock Converse: system and messages of content blocks, toolConfig", async (t) => {
  const toolConfig = { tools: [{ toolSpec: { name: "top_song", inputSchema: { json: { type: "object" } } } }] };
  const body = { messages: [{ role: "user", content: [{ text: "Hello Nova" }] }], system: [{ text: "Reply briefly." }], inferenceConfig: { maxTokens: 300 }, toolConfig };
  t.equal(estimatePromptTokens(body), Math.ceil((10 + 14 + JSON.stringify(toolConfig).length) / 4) + 4);
});

t.test("completions and embeddings: prompt / input as text, lists, or token ids", async (t) => {
  t.equal(estimatePromptTokens({ prompt: "Say this is a test" }), 5);
  t.equal(estimatePromptTokens({ input: ["abcd", "efgh"] }), 2);
  t.equal(estimatePromptTokens({ input: [1212, 318, 257, 1332] }), 4, "token ids are counted as tokens");
  t.equal(estimatePromptTokens({ input: [[1, 2], [3, 4, 5]] }), 5);
  t.equal(estimatePromptTokens({ model: "x" }), 0, "nothing to read");
  t.equal(estimatePromptTokens("not an object"), 0);
});

t.test("Responses API: instructions and input items", async (t) => {
  const body = { model: "gpt-4.1", instructions: "Talk like a pirate.", input: [{ role: "user", content: [{ type: "input_text", text: "Hi" }] }] };
  t.equal(estimatePromptTokens(body), Math.ceil((19 + 2) / 4) + 4);
});

t.test("output estimates and estimated usage are marked estimated", async (t) => {
  t.equal(DEFAULT_CHARS_PER_TOKEN, 4);
  t.equal(estimateOutputTokens(0), 0);
  t.equal(estimateOutputTokens(9), 3);
  t.equal(estimateOutputTokens(9, 3), 3);
  t.same(estimateUsage(120, 41), { inputTokens: 120, outputTokens: 11, cachedInputTokens: 0, cacheWriteTokens: 0, reasoningTokens: 0, source: "estimated" });
  t.equal(estimateUsage(10, 10, 2).outputTokens, 5);
});

t.test("maxOutputTokens reads each format's limit, else the default", async (t) => {
  t.equal(maxOutputTokens({ max_completion_tokens: 500, max_tokens: 900 }, 1024), 500, "OpenAI's newer field first");
  t.equal(maxOutputTokens({ max_tokens: 900 }, 1024), 900, "OpenAI / Anthropic max_tokens");
  t.equal(maxOutputTokens({ max_output_tokens: 700 }, 1024), 700, "Responses API");
  t.equal(maxOutputTokens({ inferenceConfig: { maxTokens: 300 } }, 1024), 300, "Bedrock Converse");
  t.equal(maxOutputTokens({ inferenceConfig: { max_new_tokens: 200 } }, 1024), 200, "Nova InvokeModel");
  t.equal(maxOutputTokens({ textGenerationConfig: { maxTokenCount: 100 } }, 1024), 100, "Titan");
  t.equal(maxOutputTokens({ max_gen_len: 64 }, 1024), 64, "Llama");
  t.equal(maxOutputTokens({ max_tokens: -5 }, 1024), 1024, "a nonsensical limit is ignored");
  t.equal(maxOutputTokens({ max_tokens: 10.5 }, 1024), 1024);
  t.equal(maxOutputTokens({}, 1024), 1024);
  t.equal(maxOutputTokens(null, 77), 77);
});
