/**
 * The shipped price table: USD per 1M tokens, list prices for standard on-demand use (no batch or priority
 * tiers; Anthropic's cache writes at the 5-minute rate; long-context surcharges not modelled).
 *
 * Compiled 2026-11-23 from the providers' published list prices as known to the compiler; it was not checked
 * against the live price pages on that day, and prices change. Policy overrides (`pricing.models`) always win
 * over this table: set them for negotiated rates, Azure deployments named differently, and newer models.
 *
 * Keys are model ids as providers spell them; lookups also match after normalization (lower case, no provider
 * or region prefix, no date or `:0` suffix), so `us.anthropic.claude-sonnet-4-20250514-v1:0` finds
 * `anthropic.claude-sonnet-4-20250514-v1:0`, and `gpt-4o-2024-08-06` finds `gpt-4o`.
 */

export interface ModelPrice {
  /** USD per 1M input tokens not served from a cache. */
  input: number;
  /** USD per 1M output tokens, reasoning included. */
  output: number;
  /** USD per 1M input tokens read from the prompt cache (default: the input price). */
  cachedInput?: number | undefined;
  /** USD per 1M input tokens written to the prompt cache (default: 1.25× input for Claude, else input). */
  cacheWrite?: number | undefined;
}

export const PRICES_COMPILED = "2026-11-23";

const CLAUDE_3_HAIKU: ModelPrice = { input: 0.25, output: 1.25, cachedInput: 0.03, cacheWrite: 0.3 };
const CLAUDE_3_5_HAIKU: ModelPrice = { input: 0.8, output: 4, cachedInput: 0.08, cacheWrite: 1 };
const CLAUDE_HAIKU_4_5: ModelPrice = { input: 1, output: 5, cachedInput: 0.1, cacheWrite: 1.25 };
const CLAUDE_SONNET: ModelPrice = { input: 3, output: 15, cachedInput: 0.3, cacheWrite: 3.75 };
const CLAUDE_OPUS: ModelPrice = { input: 15, output: 75, cachedInput: 1.5, cacheWrite: 18.75 };
const CLAUDE_OPUS_4_5: ModelPrice = { input: 5, output: 25, cachedInput: 0.5, cacheWrite: 6.25 };

export const SHIPPED_PRICES: Readonly<Record<string, ModelPrice>> = {
  // OpenAI (and Azure OpenAI, whose global deployments list the same prices)
  "gpt-4o": { input: 2.5, output: 10, cachedInput: 1.25 },
  "gpt-4o-2024-05-13": { input: 5, output: 15 },
  "gpt-4o-mini": { input: 0.15, output: 0.6, cachedInput: 0.075 },
  "gpt-4.1": { input: 2, output: 8, cachedInput: 0.5 },
  "gpt-4.1-mini": { input: 0.4, output: 1.6, cachedInput: 0.1 },
  "gpt-4.1-nano": { input: 0.1, output: 0.4, cachedInput: 0.025 },
  "gpt-4-turbo": { input: 10, output: 30 },
  "gpt-3.5-turbo": { input: 0.5, output: 1.5 },
  o1: { input: 15, output: 60, cachedInput: 7.5 },
  "o1-mini": { input: 1.1, output: 4.4, cachedInput: 0.55 },
  o3: { input: 2, output: 8, cachedInput: 0.5 },
  "o3-mini": { input: 1.1, output: 4.4, cachedInput: 0.55 },
  "o4-mini": { input: 1.1, output: 4.4, cachedInput: 0.275 },
  "gpt-5": { input: 1.25, output: 10, cachedInput: 0.125 },
  "gpt-5-mini": { input: 0.25, output: 2, cachedInput: 0.025 },
  "gpt-5-nano": { input: 0.05, output: 0.4, cachedInput: 0.005 },
  "text-embedding-3-small": { input: 0.02, output: 0 },
  "text-embedding-3-large": { input: 0.13, output: 0 },
  "text-embedding-ada-002": { input: 0.1, output: 0 },

  // Anthropic (undated aliases; dated ids also match by normalization)
  "claude-3-haiku": CLAUDE_3_HAIKU,
  "claude-3-haiku-20240307": CLAUDE_3_HAIKU,
  "claude-3-5-haiku": CLAUDE_3_5_HAIKU,
  "claude-3-5-haiku-20241022": CLAUDE_3_5_HAIKU,
  "claude-3-5-sonnet": CLAUDE_SONNET,
  "claude-3-5-sonnet-20240620": CLAUDE_SONNET,
  "claude-3-5-sonnet-20241022": CLAUDE_SONNET,
  "claude-3-7-sonnet": CLAUDE_SONNET,
  "claude-3-7-sonnet-20250219": CLAUDE_SONNET,
  "claude-sonnet-4": CLAUDE_SONNET,
  "claude-sonnet-4-20250514": CLAUDE_SONNET,
  "claude-sonnet-4-5": CLAUDE_SONNET,
  "claude-sonnet-4-5-20250929": CLAUDE_SONNET,
  "claude-haiku-4-5": CLAUDE_HAIKU_4_5,
  "claude-haiku-4-5-20251001": CLAUDE_HAIKU_4_5,
  "claude-3-opus": CLAUDE_OPUS,
  "claude-opus-4": CLAUDE_OPUS,
  "claude-opus-4-20250514": CLAUDE_OPUS,
  "claude-opus-4-1": CLAUDE_OPUS,
  "claude-opus-4-1-20250805": CLAUDE_OPUS,
  "claude-opus-4-5": CLAUDE_OPUS_4_5,
  "claude-opus-4-5-20251101": CLAUDE_OPUS_4_5,

  // Amazon Bedrock (on-demand, US regions; `us.` / `eu.` / `apac.` inference profiles match by normalization)
  "anthropic.claude-3-haiku-20240307-v1:0": CLAUDE_3_HAIKU,
  "anthropic.claude-3-5-haiku-20241022-v1:0": CLAUDE_3_5_HAIKU,
  "anthropic.claude-3-5-sonnet-20240620-v1:0": CLAUDE_SONNET,
  "anthropic.claude-3-5-sonnet-20241022-v2:0": CLAUDE_SONNET,
  "anthropic.claude-3-7-sonnet-20250219-v1:0": CLAUDE_SONNET,
  "anthropic.claude-sonnet-4-20250514-v1:0": CLAUDE_SONNET,
  "anthropic.claude-sonnet-4-5-20250929-v1:0": CLAUDE_SONNET,
  "anthropic.claude-haiku-4-5-20251001-v1:0": CLAUDE_HAIKU_4_5,
  "anthropic.claude-opus-4-20250514-v1:0": CLAUDE_OPUS,
  "anthropic.claude-opus-4-1-20250805-v1:0": CLAUDE_OPUS,
  "amazon.nova-micro-v1:0": { input: 0.035, output: 0.14, cachedInput: 0.00875 },
  "amazon.nova-lite-v1:0": { input: 0.06, output: 0.24, cachedInput: 0.015 },
  "amazon.nova-pro-v1:0": { input: 0.8, output: 3.2, cachedInput: 0.2 },
  "amazon.nova-premier-v1:0": { input: 2.5, output: 12.5 },
  "amazon.titan-embed-text-v2:0": { input: 0.02, output: 0 },
  "meta.llama3-8b-instruct-v1:0": { input: 0.3, output: 0.6 },
  "meta.llama3-70b-instruct-v1:0": { input: 2.65, output: 3.5 },
  "meta.llama3-1-8b-instruct-v1:0": { input: 0.22, output: 0.22 },
  "meta.llama3-1-70b-instruct-v1:0": { input: 0.72, output: 0.72 },
  "meta.llama3-1-405b-instruct-v1:0": { input: 2.4, output: 2.4 },
  "meta.llama3-2-1b-instruct-v1:0": { input: 0.1, output: 0.1 },
  "meta.llama3-2-3b-instruct-v1:0": { input: 0.15, output: 0.15 },
  "meta.llama3-2-11b-instruct-v1:0": { input: 0.16, output: 0.16 },
  "meta.llama3-2-90b-instruct-v1:0": { input: 0.72, output: 0.72 },
  "meta.llama3-3-70b-instruct-v1:0": { input: 0.72, output: 0.72 },
  "mistral.mistral-7b-instruct-v0:2": { input: 0.15, output: 0.2 },
  "mistral.mixtral-8x7b-instruct-v0:1": { input: 0.45, output: 0.7 },
  "mistral.mistral-small-2402-v1:0": { input: 1, output: 3 },
  "mistral.mistral-large-2402-v1:0": { input: 4, output: 12 },

  // Mistral (La Plateforme)
  "mistral-large-latest": { input: 2, output: 6 },
  "mistral-medium-latest": { input: 0.4, output: 2 },
  "mistral-small-latest": { input: 0.1, output: 0.3 },
  "codestral-latest": { input: 0.3, output: 0.9 },
  "open-mistral-nemo": { input: 0.15, output: 0.15 },
  "mistral-embed": { input: 0.1, output: 0 },
};
