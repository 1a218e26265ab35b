/**
 * Token estimates for when a response carries no usage (or before it exists: reserving a budget). Roughly four
 * characters a token for English text; images, tool definitions and tool calls count as their JSON text, which
 * over-estimates them — on purpose, since an estimate is charged against a budget and doubt should deny.
 */
import type { Usage } from "./usage.ts";
import { isRecord, jsonLength, type JsonRecord } from "./shape.ts";

export const DEFAULT_CHARS_PER_TOKEN = 4;

/** Tokens a chat format spends per message on role and separators (OpenAI's counting guide says 3–4). */
const MESSAGE_OVERHEAD_TOKENS = 4;

/** Request fields that carry prompt text across OpenAI, Anthropic and Bedrock (Converse and InvokeModel) bodies. */
const PROMPT_FIELDS = ["messages", "input", "prompt", "system", "instructions", "tools", "functions", "toolConfig", "inputText", "texts"];

interface Tally {
  chars: number;
  /** Tokens given as ids (`prompt: [1, 2, 3]`), counted as they are. */
  tokens: number;
  messages: number;
}

/** Estimated prompt tokens of a parsed request body; 0 when it holds nothing recognisable. */
export function estimatePromptTokens(body: unknown, charsPerToken = DEFAULT_CHARS_PER_TOKEN): number {
  if (!isRecord(body)) return 0;
  const tally: Tally = { chars: 0, tokens: 0, messages: 0 };
  for (const name of PROMPT_FIELDS) {
    if (body[name] !== undefined) walk(body[name], tally);
  }
  return Math.ceil(tally.chars / ratio(charsPerToken)) + tally.tokens + tally.messages * MESSAGE_OVERHEAD_TOKENS;
}

/** Estimated tokens for generated text of `chars` characters. */
export function estimateOutputTokens(chars: number, charsPerToken = DEFAULT_CHARS_PER_TOKEN): number {
  return chars > 0 ? Math.ceil(chars / ratio(charsPerToken)) : 0;
}

/** A Usage built from estimates, marked as such. */
export function estimateUsage(promptTokens: number, outputChars: number, charsPerToken = DEFAULT_CHARS_PER_TOKEN): Usage {
  return {
    inputTokens: Math.max(0, Math.ceil(promptTokens)),
    outputTokens: estimateOutputTokens(outputChars, charsPerToken),
    cachedInputTokens: 0,
    cacheWriteTokens: 0,
    reasoningTokens: 0,
    source: "estimated",
  };
}

/**
 * The most output tokens a request may produce: its own limit (OpenAI `max_completion_tokens` / `max_tokens`,
 * Responses `max_output_tokens`, Anthropic `max_tokens`, Bedrock Converse `inferenceConfig.maxTokens`, and the
 * InvokeModel spellings of Nova, Titan and Llama) or `defaultMaxTokens` when it sets none.
 */
export function maxOutputTokens(body: unknown, defaultMaxTokens: number): number {
  if (!isRecord(body)) return defaultMaxTokens;
  const inference = isRecord(body.inferenceConfig) ? body.inferenceConfig : undefined;
  const titan = isRecord(body.textGenerationConfig) ? body.textGenerationConfig : undefined;
  const candidates = [
    body.max_completion_tokens,
    body.max_output_tokens,
    body.max_tokens,
    inference?.maxTokens,
    inference?.max_new_tokens,
    titan?.maxTokenCount,
    body.max_gen_len,
  ];
  for (const value of candidates) {
    if (typeof value === "number" && Number.isInteger(value) && value > 0) return value;
  }
  return defaultMaxTokens;
}

function walk(value: unknown, tally: Tally): void {
  if (typeof value === "string") {
    tally.chars += value.length;
  } else if (Array.isArray(value)) {
    if (value.length > 0 && value.every((v) => typeof v === "number")) tally.tokens += value.length;
    else for (const item of value) walk(item, tally);
  } else if (isRecord(value)) {
    walkObject(value, tally);
  }
}

function walkObject(value: JsonRecord, tally: Tally): void {
  // A text part: OpenAI {type:"text"}, Responses {type:"input_text"}, Anthropic {type:"text"}, Converse {text}.
  if (typeof value.text === "string") {
    tally.chars += value.text.length;
    return;
  }
  // A message (chat, Anthropic, Converse, Responses input item): its content, plus any tool calls it made.
  if (typeof value.role === "string") {
    tally.messages++;
    walk(value.content, tally);
    tally.chars += jsonLength(value.tool_calls) + jsonLength(value.function_call);
    return;
  }
  // Images, tool uses and results, tool definitions: their JSON text.
  tally.chars += jsonLength(value);
}

function ratio(charsPerToken: number): number {
  return Number.isFinite(charsPerToken) && charsPerToken > 0 ? charsPerToken : DEFAULT_CHARS_PER_TOKEN;
}
