/**
 * Gathers what a response says about its usage into one Usage. Providers name and split the counts differently,
 * and streams report them in pieces (Anthropic: input in message_start, cumulative output in message_delta), so
 * the tally overlays every count it sees — a later value of the same field wins — and interprets the fields once,
 * at the end. It also counts generated characters, for an estimate when no usage arrives.
 */
import type { Usage } from "./usage.ts";
import { estimateOutputTokens, DEFAULT_CHARS_PER_TOKEN } from "./estimate.ts";
import { field, isRecord, jsonLength, textLength } from "./shape.ts";

/** Bedrock InvokeModel reports token counts in response headers; the tally files them under these names. */
const BEDROCK_HEADERS: Readonly<Record<string, string>> = {
  "x-amzn-bedrock-input-token-count": "header.input",
  "x-amzn-bedrock-output-token-count": "header.output",
  "x-amzn-bedrock-cache-read-input-token-count": "header.cacheRead",
  "x-amzn-bedrock-cache-write-input-token-count": "header.cacheWrite",
};

const BEDROCK_HEADER_LIST = Object.entries(BEDROCK_HEADERS);

interface Spelling {
  input: string;
  output: string;
  /** Cache counts, under any of these names (Nova's InvokeModel body mixes Converse and metrics spellings). */
  read: readonly string[];
  write: readonly string[];
}

const BEDROCK_SPELLINGS: readonly Spelling[] = [
  { input: "inputTokens", output: "outputTokens", read: ["cacheReadInputTokens", "cacheReadInputTokenCount"], write: ["cacheWriteInputTokens", "cacheWriteInputTokenCount"] },
  { input: "inputTokenCount", output: "outputTokenCount", read: ["cacheReadInputTokenCount"], write: ["cacheWriteInputTokenCount"] },
  { input: "header.input", output: "header.output", read: ["header.cacheRead"], write: ["header.cacheWrite"] },
];

interface Counts {
  input: number;
  output: number;
  cached: number;
  written: number;
  reasoning: number;
}

export class UsageTally {
  /** Generated characters seen: text, reasoning text, tool-call arguments. */
  outputChars = 0;
  readonly #counts = new Map<string, number>();
  readonly #charsPerToken: number;
  /** Anthropic's message_start carries a placeholder output count; the real one follows in message_delta. */
  #outputPending = false;

  constructor(charsPerToken = DEFAULT_CHARS_PER_TOKEN) {
    this.#charsPerToken = charsPerToken;
  }

  /** Overlays a provider usage object: its counts, and those one level down (`prompt_tokens_details.cached_tokens`). */
  add(usage: unknown): void {
    if (!isRecord(usage)) return;
    for (const key of Object.keys(usage)) {
      const value = usage[key];
      if (isCount(value)) this.#counts.set(key, value);
      else if (isRecord(value)) {
        for (const sub of Object.keys(value)) {
          const inner = value[sub];
          if (isCount(inner)) this.#counts.set(`${key}.${sub}`, inner);
        }
      }
    }
  }

  /** Token counts from Bedrock's x-amzn-bedrock-*-token-count headers (used only when the body has none). */
  addHeaders(headers: Readonly<Record<string, string | string[] | undefined>>): void {
    // Every metered response passes here; almost none come from Bedrock: no allocation when the headers are absent.
    for (const [header, name] of BEDROCK_HEADER_LIST) {
      const raw = headers[header];
      if (raw === undefined) continue;
      const value = Number(Array.isArray(raw) ? raw[0] : raw);
      if (isCount(value)) this.#counts.set(name, value);
    }
  }

  /**
   * One parsed streaming event: an OpenAI chat/completions chunk, an Anthropic message event, a Responses API
   * event, or a Bedrock model's own stream event (Anthropic events with `amazon-bedrock-invocationMetrics`, Nova).
   */
  event(event: unknown): void {
    if (!isRecord(event)) return;
    switch (event.type) {
      case "message_start": {
        const usage = field(event.message, "usage");
        if (usage) {
          this.add(usage);
          this.#outputPending = true;
        }
        break;
      }
      case "message_delta":
        this.add(event.usage);
        if (isCount(field(event, "usage")?.output_tokens)) this.#outputPending = false;
        break;
      case "content_block_delta": {
        const delta = field(event, "delta");
        this.outputChars += textLength(delta?.text) + textLength(delta?.partial_json) + textLength(delta?.thinking);
        break;
      }
      case "response.output_text.delta":
      case "response.refusal.delta":
      case "response.function_call_arguments.delta":
      case "response.reasoning_summary_text.delta":
        this.outputChars += textLength(event.delta);
        break;
      case "response.completed":
      case "response.incomplete":
      case "response.failed":
        this.add(field(event.response, "usage"));
        break;
      case undefined:
        // OpenAI chunks have no `type`; their usage (null on all but the last, when asked for) is top level.
        this.add(event.usage);
        this.#choices(event.choices);
        this.outputChars += textLength(event.generation) + textLength(event.outputText); // Bedrock Llama, Titan
        break;
    }
    this.add(event["amazon-bedrock-invocationMetrics"]);
    // Nova's InvokeModel stream: Converse-shaped events keyed by name.
    if (isRecord(event.contentBlockDelta)) this.converse("contentBlockDelta", event.contentBlockDelta);
    if (isRecord(event.metadata)) this.converse("metadata", event.metadata);
  }

  /** One Bedrock Converse stream event by its :event-type. */
  converse(eventType: string | undefined, payload: unknown): void {
    if (eventType === "metadata") this.add(field(payload, "usage"));
    else if (eventType === "contentBlockDelta") {
      const delta = field(payload, "delta");
      this.outputChars += textLength(delta?.text) + textLength(field(delta, "toolUse")?.input) + textLength(field(delta, "reasoningContent")?.text);
    }
  }

  /** The usage, interpreted by whichever provider's field names appeared; undefined when none did. */
  result(): Usage | undefined {
    const counts = this.#openAi() ?? this.#anthropicOrResponses() ?? this.#bedrock();
    if (!counts) return undefined;
    let { input, output, cached, written, reasoning } = counts;
    let source: Usage["source"] = "provider";
    if (this.#outputPending) {
      // The stream ended before Anthropic's final count: what was generated is an estimate.
      output = Math.max(output, estimateOutputTokens(this.outputChars, this.#charsPerToken));
      source = "estimated";
    }
    cached = Math.min(cached, input);
    written = Math.min(written, input - cached);
    reasoning = Math.min(reasoning, output);
    return { inputTokens: input, outputTokens: output, cachedInputTokens: cached, cacheWriteTokens: written, reasoningTokens: reasoning, source };
  }

  /** OpenAI / Azure chat, completions, embeddings (and LiteLLM's OpenAI shape, which adds Anthropic's cache fields). */
  #openAi(): Counts | undefined {
    const input = this.#counts.get("prompt_tokens");
    const output = this.#counts.get("completion_tokens");
    if (input === undefined && output === undefined) return undefined;
    return {
      input: input ?? 0,
      output: output ?? 0,
      cached: this.#counts.get("prompt_tokens_details.cached_tokens") ?? this.#counts.get("cache_read_input_tokens") ?? 0,
      written: this.#counts.get("cache_creation_input_tokens") ?? 0,
      reasoning: this.#counts.get("completion_tokens_details.reasoning_tokens") ?? 0,
    };
  }

  /** Anthropic messages and the OpenAI Responses API share input_tokens / output_tokens, with different meanings. */
  #anthropicOrResponses(): Counts | undefined {
    const input = this.#counts.get("input_tokens");
    const output = this.#counts.get("output_tokens") ?? 0;
    if (input === undefined && !this.#counts.has("output_tokens")) return undefined;
    const reasoning = this.#counts.get("output_tokens_details.reasoning_tokens") ?? 0;
    const responsesCached = this.#counts.get("input_tokens_details.cached_tokens");
    // Responses API: input_tokens includes the cached ones.
    if (responsesCached !== undefined) return { input: input ?? 0, output, cached: responsesCached, written: 0, reasoning };
    // Anthropic: input_tokens excludes cache reads and writes; Usage.inputTokens includes both.
    const cached = this.#counts.get("cache_read_input_tokens") ?? 0;
    const written = this.#counts.get("cache_creation_input_tokens") ?? 0;
    return { input: (input ?? 0) + cached + written, output, cached, written, reasoning };
  }

  /**
   * Bedrock's spellings, best first: Converse `usage`, then `amazon-bedrock-invocationMetrics`, then the headers.
   * In each, the input count excludes cache reads and writes (Converse: totalTokens = input + output + both).
   */
  #bedrock(): Counts | undefined {
    const first = (names: readonly string[]): number => {
      for (const name of names) {
        const value = this.#counts.get(name);
        if (value !== undefined) return value;
      }
      return 0;
    };
    for (const spelling of BEDROCK_SPELLINGS) {
      const input = this.#counts.get(spelling.input);
      const output = this.#counts.get(spelling.output);
      if (input === undefined && output === undefined) continue;
      const cached = first(spelling.read);
      const written = first(spelling.write);
      return { input: (input ?? 0) + cached + written, output: output ?? 0, cached, written, reasoning: 0 };
    }
    return undefined;
  }

  #choices(choices: unknown): void {
    if (!Array.isArray(choices)) return;
    for (const choice of choices) {
      const delta = field(choice, "delta");
      if (delta) {
        this.outputChars += textLength(delta.content) + textLength(delta.reasoning_content) + textLength(delta.refusal);
        if (Array.isArray(delta.tool_calls)) {
          for (const call of delta.tool_calls) this.outputChars += textLength(field(call, "function")?.arguments);
        }
      } else if (isRecord(choice)) {
        this.outputChars += textLength(choice.text); // legacy completions stream
      }
    }
  }
}

/** Generated characters of a whole (non-streamed) response, in any of the shapes the JSON meter reads. */
export function responseChars(body: unknown): number {
  if (!isRecord(body)) return 0;
  let chars = 0;
  if (Array.isArray(body.choices)) {
    for (const choice of body.choices) {
      const message = field(choice, "message");
      if (isRecord(choice)) chars += textLength(choice.text); // legacy completions
      if (!message) continue;
      chars += contentChars(message.content) + textLength(message.reasoning_content) + textLength(message.refusal);
      if (Array.isArray(message.tool_calls)) for (const call of message.tool_calls) chars += textLength(field(call, "function")?.arguments);
    }
  }
  chars += contentChars(body.content); // Anthropic messages
  if (Array.isArray(body.output)) {
    // Responses API output items: messages, function calls, reasoning summaries.
    for (const item of body.output) {
      if (!isRecord(item)) continue;
      chars += contentChars(item.content) + contentChars(item.summary) + textLength(item.arguments);
    }
  }
  chars += contentChars(field(field(body, "output"), "message")?.content); // Bedrock Converse
  return chars;
}

/** Characters of a content value: a string, or parts with text, thinking, reasoning or tool input. */
function contentChars(content: unknown): number {
  if (typeof content === "string") return content.length;
  if (!Array.isArray(content)) return 0;
  let chars = 0;
  for (const part of content) {
    if (!isRecord(part)) continue;
    chars += textLength(part.text) + textLength(part.thinking);
    if (part.type === "tool_use") chars += jsonLength(part.input);
    chars += jsonLength(field(part, "toolUse")?.input);
    chars += textLength(field(field(part, "reasoningContent"), "reasoningText")?.text);
  }
  return chars;
}

function isCount(value: unknown): value is number {
  return typeof value === "number" && Number.isFinite(value) && value >= 0;
}
