/** What the `admit` room needs from a request body, and the rewrites metering asks of it. */
import { estimatePromptTokens, maxOutputTokens } from "./estimate.ts";
import type { Usage } from "./usage.ts";

export interface RequestEstimate {
  promptTokens: number;
  maxOutputTokens: number;
}

export function estimateRequest(json: Record<string, unknown> | undefined, bodyBytes: number, charsPerToken: number, defaultMaxTokens: number): RequestEstimate {
  if (!json) return { promptTokens: Math.ceil(bodyBytes / charsPerToken), maxOutputTokens: defaultMaxTokens };
  return { promptTokens: estimatePromptTokens(json, charsPerToken), maxOutputTokens: maxOutputTokens(json, defaultMaxTokens) };
}

/**
 * An OpenAI-style streamed completion that did not ask for usage: ask for it (the only way to meter a
 * stream exactly), and the caller hides the extra chunk from the client again.
 */
export function requestStreamUsage(json: Record<string, unknown>, path: string): boolean {
  if (json.stream !== true || !/\/(chat\/)?completions$/.test(path)) return false;
  const options = json.stream_options;
  if (options !== null && typeof options === "object" && (options as Record<string, unknown>).include_usage === true) return false;
  json.stream_options = { ...(options !== null && typeof options === "object" ? options : {}), include_usage: true };
  return true;
}

/** Lowers the request's output limit to what the budget can pay for, in whichever field it uses. */
export function clampMaxTokens(json: Record<string, unknown>, max: number): void {
  if (typeof json.max_completion_tokens === "number") json.max_completion_tokens = Math.min(json.max_completion_tokens, max);
  else if (typeof json.max_output_tokens === "number") json.max_output_tokens = Math.min(json.max_output_tokens, max);
  else json.max_tokens = typeof json.max_tokens === "number" ? Math.min(json.max_tokens, max) : max;
}

export const NO_USAGE: Usage = Object.freeze({ inputTokens: 0, outputTokens: 0, cachedInputTokens: 0, cacheWriteTokens: 0, reasoningTokens: 0, source: "estimated" as const });
