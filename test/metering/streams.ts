/** Hand-written provider streams, shaped as the providers document them, and helpers to cut them up. */

export type Eol = "\n" | "\r\n" | "\r";

/** One SSE event: optional `event:` line, a `data:` line, and the blank line, with the given line ending. */
export function sseEvent(data: unknown, eol: Eol = "\n", name?: string): string {
  const text = typeof data === "string" ? data : JSON.stringify(data);
  return `${name ? `event: ${name}${eol}` : ""}data: ${text}${eol}${eol}`;
}

const CHUNK = { id: "chatcmpl-B9MHDbslfkBeAs8l4bebGdFOJ6PeG", object: "chat.completion.chunk", created: 1741569952, model: "gpt-4o-2024-08-06", system_fingerprint: "fp_eb9dce56a8", service_tier: "default" };

export const OPENAI_USAGE = {
  prompt_tokens: 1290,
  completion_tokens: 312,
  total_tokens: 1602,
  prompt_tokens_details: { cached_tokens: 1152, audio_tokens: 0 },
  completion_tokens_details: { reasoning_tokens: 192, audio_tokens: 0, accepted_prediction_tokens: 0, rejected_prediction_tokens: 0 },
};

export const OPENAI_TEXT = ["Héllo", " wörld", " 👋", ", how can I help?"];

/** An OpenAI / Azure chat-completions stream with `stream_options.include_usage`; index of the usage event. */
export function openAiStream(eol: Eol = "\n"): { events: string[]; usageIndex: number } {
  const events = [
    sseEvent({ ...CHUNK, choices: [{ index: 0, delta: { role: "assistant", content: "", refusal: null }, logprobs: null, finish_reason: null }], usage: null }, eol),
    `: keep-alive comment${eol}${eol}`,
    ...OPENAI_TEXT.map((content) => sseEvent({ ...CHUNK, choices: [{ index: 0, delta: { content }, logprobs: null, finish_reason: null }], usage: null }, eol)),
    sseEvent({ ...CHUNK, choices: [{ index: 0, delta: { tool_calls: [{ index: 0, function: { arguments: '{"city":"Paris"}' } }] }, finish_reason: null }], usage: null }, eol),
    sseEvent({ ...CHUNK, choices: [{ index: 0, delta: {}, logprobs: null, finish_reason: "stop" }], usage: null }, eol),
    sseEvent({ ...CHUNK, choices: [], usage: OPENAI_USAGE }, eol),
    sseEvent("[DONE]", eol),
  ];
  return { events, usageIndex: events.length - 2 };
}

/** Generated characters in openAiStream: the text deltas and the tool-call arguments. */
export const OPENAI_CHARS = OPENAI_TEXT.join("").length + '{"city":"Paris"}'.length;

/** An Anthropic messages stream (as LiteLLM passes it through), with prompt caching. */
export function anthropicStream(eol: Eol = "\n", withDelta = true): string[] {
  const events = [
    sseEvent({ type: "message_start", message: { id: "msg_01XFDUDYJgAACzvnptvVoYEL", type: "message", role: "assistant", content: [], model: "claude-sonnet-4-20250514", stop_reason: null, stop_sequence: null, usage: { input_tokens: 25, cache_creation_input_tokens: 1500, cache_read_input_tokens: 3000, output_tokens: 1 } } }, eol, "message_start"),
    sseEvent({ type: "content_block_start", index: 0, content_block: { type: "text", text: "" } }, eol, "content_block_start"),
    sseEvent({ type: "ping" }, eol, "ping"),
    sseEvent({ type: "content_block_delta", index: 0, delta: { type: "text_delta", text: "Hello" } }, eol, "content_block_delta"),
    sseEvent({ type: "content_block_delta", index: 0, delta: { type: "text_delta", text: ", Claude here." } }, eol, "content_block_delta"),
    sseEvent({ type: "content_block_stop", index: 0 }, eol, "content_block_stop"),
  ];
  if (withDelta) {
    events.push(
      sseEvent({ type: "message_delta", delta: { stop_reason: "end_turn", stop_sequence: null }, usage: { output_tokens: 15 } }, eol, "message_delta"),
      sseEvent({ type: "message_stop" }, eol, "message_stop"),
    );
  }
  return events;
}

/** Every way to cut `bytes` in two, each as a list of chunks (copies, so no test shares memory with another). */
export function* twoWaySplits(bytes: Buffer): Generator<{ at: number; chunks: Buffer[] }> {
  for (let at = 1; at < bytes.length; at++) yield { at, chunks: [Buffer.from(bytes.subarray(0, at)), Buffer.from(bytes.subarray(at))] };
}

/** `bytes` one byte at a time. */
export function byteByByte(bytes: Buffer): Buffer[] {
  return Array.from(bytes, (b) => Buffer.from([b]));
}

export function b64(value: unknown): string {
  return Buffer.from(JSON.stringify(value)).toString("base64");
}
