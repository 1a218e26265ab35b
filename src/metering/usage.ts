/**
 * Token usage as metered from a response. Every meter is fed the response bytes as they stream past and
 * never holds the stream: it copies what it needs to parse and reports at the end.
 */
export interface Usage {
  /** Prompt / input tokens, cached ones included. */
  inputTokens: number;
  /** Completion / output tokens, reasoning ones included. */
  outputTokens: number;
  /** Of inputTokens, those served from the provider's prompt cache (read). */
  cachedInputTokens: number;
  /** Input tokens written to the provider's prompt cache (Anthropic/Bedrock cache writes), when reported. */
  cacheWriteTokens: number;
  /** Of outputTokens, reasoning tokens (o-series, extended thinking), when reported. */
  reasoningTokens: number;
  /** `provider` when the response carried usage, `estimated` when Tollgate had to estimate it. */
  source: "provider" | "estimated";
}

export interface UsageMeter {
  /** Called with each response chunk, in order, as it passes to the client. Must not throw. */
  write(chunk: Buffer): void;
  /**
   * Called once when the response ended (completely or not). Returns the provider's usage when the bytes
   * carried it, else undefined. `outputChars` counts generated text seen so far, for estimates.
   */
  end(): { usage: Usage | undefined; outputChars: number };
}

/**
 * A meter that may also rewrite what the client sees: the OpenAI SSE meter drops the usage chunk Tollgate
 * asked for on the client's behalf. `transform` returns the bytes to send (possibly empty); the meter
 * holds back at most one incomplete SSE event.
 */
export interface FilteringUsageMeter extends UsageMeter {
  transform(chunk: Buffer): Buffer;
  /** Bytes held back at the end (an unterminated last event), to flush to the client. */
  flush(): Buffer;
}

export interface MeterContext {
  /** Response content type (lower case, without parameters). */
  contentType: string;
  /** The upstream's response headers (Bedrock reports token counts in x-amzn-bedrock-*-token-count). */
  headers: Readonly<Record<string, string | string[] | undefined>>;
  /** True when Tollgate added `stream_options.include_usage` and must hide the extra usage chunk. */
  stripUsageChunk: boolean;
}
