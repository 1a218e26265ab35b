/**
 * Prices a metered Usage. A PriceBook is compiled once from the policy's overrides and the shipped table; per
 * request it only looks up and multiplies. Policy overrides are searched before the table, each by the exact id
 * (lower case), then the normalized id (the exact id under provider and region prefixes first, then with dates
 * and versions stripped too); the policy's `*` wildcards come last, most specific first, for what neither names.
 *
 * Money is counted exactly: prices become integer micro-dollars per 1M tokens at compile time, a cost is a BigInt
 * of 1e-12 dollars, and `micros` rounds it up to a whole micro-dollar. An unknown model costs 0 with
 * `priced: false`; the caller denies it or records it at zero with a warning, as the policy says.
 */
import type { Usage } from "./usage.ts";
import { SHIPPED_PRICES, type ModelPrice } from "./prices.ts";

export type { ModelPrice } from "./prices.ts";

export interface PriceMatch {
  /** The table or override key that matched. */
  readonly key: string;
  readonly via: "exact" | "normalized" | "wildcard";
  readonly price: ModelPrice;
}

export interface Cost {
  usd: number;
  /** Whole micro-dollars, rounded up: what budgets add and compare. */
  micros: number;
  priced: boolean;
}

export interface PriceBook {
  lookup(model: string): PriceMatch | undefined;
  cost(model: string, usage: Usage): Cost;
}

interface Entry {
  readonly key: string;
  readonly price: ModelPrice;
  /** Micro-dollars per 1M tokens. */
  readonly input: bigint;
  readonly output: bigint;
  readonly cached: bigint;
  /** Undefined: the default for the priced model's family, decided at cost time. */
  readonly write: bigint | undefined;
}

interface Found {
  readonly entry: Entry;
  readonly via: PriceMatch["via"];
  /** The normalized model id (cost rules look at its family). */
  readonly name: string;
  /** What `lookup` answers. */
  readonly match: PriceMatch;
}

/** Distinct model ids whose price lookup is remembered, and the longest id remembered (see `find`). */
const MEMO_LIMIT = 1024;
const MEMO_MAX_ID = 256;

interface Wildcard {
  readonly entry: Entry;
  readonly regex: RegExp;
  readonly specificity: number;
  readonly order: number;
}

const REGION_PREFIX = /^(?:us|eu|apac|us-gov|global|jp|au|ca)\./;
const VERSION_SUFFIX = /(?::[0-9a-z]+)+$/;
const DATE_SUFFIX = /(?:-\d{8}|-\d{4}-\d{2}-\d{2})(?:-v\d+)?$|-latest$/;
const UNPRICED: Cost = Object.freeze({ usd: 0, micros: 0, priced: false });

/**
 * `bedrock/us.anthropic.claude-3-5-sonnet-20241022-v2:0` → `anthropic.claude-3-5-sonnet`;
 * `azure/GPT-4o-2024-08-06` → `gpt-4o`; a Bedrock ARN → its last path segment, normalized.
 */
export function normalizeModel(model: string): string {
  return unprefixed(model).replace(VERSION_SUFFIX, "").replace(DATE_SUFFIX, "");
}

/** Lower case, without provider path or Bedrock region prefix: `bedrock/us.amazon.nova-pro-v1:0` → `amazon.nova-pro-v1:0`. */
function unprefixed(model: string): string {
  const lower = model.trim().toLowerCase();
  return lower.slice(lower.lastIndexOf("/") + 1).replace(REGION_PREFIX, "");
}

export function compilePriceBook(overrides: Readonly<Record<string, ModelPrice>> = {}, table: Readonly<Record<string, ModelPrice>> = SHIPPED_PRICES): PriceBook {
  const wildcards: Wildcard[] = [];
  const named: Record<string, ModelPrice> = {};
  for (const [key, price] of Object.entries(overrides)) {
    if (!key.includes("*")) named[key] = price;
    else wildcards.push({ entry: compileEntry(key, price), regex: wildcardRegex(key), specificity: key.replaceAll("*", "").length, order: wildcards.length });
  }
  wildcards.sort((a, b) => b.specificity - a.specificity || a.order - b.order);
  // Overrides are searched whole before the table: a policy's `claude-sonnet-4` also prices the dated ids the
  // table lists one by one.
  const books = [compileNames(named), compileNames(table)];

  // Every metered request looks its model up (twice: for the metric label and for the cost), and the normalizing
  // (lower case, prefix and suffix regexes, two map reads per book) was ~2 % of the API-key path's CPU in the
  // profile. Answers are remembered per model id; model ids come from clients, so the memo is bounded — in
  // entries (it starts over when full) and in size: an id longer than any real model name (a body can carry a
  // megabyte-long `model`) is looked up every time, never kept.
  const memo = new Map<string, Found | null>();
  const find = (model: string): Found | undefined => {
    if (model.length > MEMO_MAX_ID) return search(model);
    let known = memo.get(model);
    if (known === undefined) {
      if (memo.size >= MEMO_LIMIT) memo.clear();
      known = search(model) ?? null;
      memo.set(model, known);
    }
    return known ?? undefined;
  };
  const search = (model: string): Found | undefined => {
    const lower = model.trim().toLowerCase();
    const bare = unprefixed(model);
    const name = normalizeModel(model);
    for (const { exact, normalized } of books) {
      const hit = exact.get(lower);
      if (hit) return found(hit, "exact", name);
      // The exact entry under its prefixes first, so `us.…-20241022-v2:0` reports that key rather than a sibling's.
      const near = exact.get(bare) ?? normalized.get(name);
      if (near) return found(near, "normalized", name);
    }
    const wild = wildcards.find((w) => w.regex.test(lower) || w.regex.test(name));
    return wild ? found(wild.entry, "wildcard", name) : undefined;
  };
  const found = (entry: Entry, via: PriceMatch["via"], name: string): Found => ({ entry, via, name, match: Object.freeze({ key: entry.key, via, price: entry.price }) });

  return {
    lookup(model) {
      return find(model)?.match;
    },
    cost(model, usage) {
      const found = find(model);
      return found ? costOf(found.entry, found.name, usage) : UNPRICED;
    },
  };
}

/**
 * Exact (lower-cased) and normalized maps of named prices. A key already normalized (`gpt-4o`) takes the normalized
 * slot before its dated variants (`gpt-4o-2024-05-13`), which keep their own exact slot.
 */
function compileNames(prices: Readonly<Record<string, ModelPrice>>): { exact: Map<string, Entry>; normalized: Map<string, Entry> } {
  const exact = new Map<string, Entry>();
  const normalized = new Map<string, Entry>();
  const keys = Object.keys(prices);
  const isCanonical = (key: string) => normalizeModel(key) === key.trim().toLowerCase();
  for (const key of [...keys.filter(isCanonical), ...keys.filter((k) => !isCanonical(k))]) {
    const entry = compileEntry(key, prices[key]!);
    const lower = key.trim().toLowerCase();
    if (!exact.has(lower)) exact.set(lower, entry);
    const name = normalizeModel(key);
    if (!normalized.has(name)) normalized.set(name, entry);
  }
  return { exact, normalized };
}

function costOf(entry: Entry, model: string, usage: Usage): Cost {
  const input = count(usage.inputTokens);
  const cached = Math.min(count(usage.cachedInputTokens), input);
  const written = Math.min(count(usage.cacheWriteTokens), input - cached);
  const plain = input - cached - written;
  // Anthropic charges cache writes at 1.25× input; elsewhere a write, if reported, is an ordinary input token.
  const write = entry.write ?? (model.includes("claude") ? (entry.input * 5n + 3n) / 4n : entry.input);
  const picoUsd = BigInt(plain) * entry.input + BigInt(cached) * entry.cached + BigInt(written) * write + BigInt(count(usage.outputTokens)) * entry.output;
  return { usd: Number(picoUsd) / 1e12, micros: Number((picoUsd + 999_999n) / 1_000_000n), priced: true };
}

function compileEntry(key: string, price: ModelPrice): Entry {
  const micros = (name: string, usd: number | undefined, optional = false): bigint | undefined => {
    if (usd === undefined && optional) return undefined;
    if (typeof usd !== "number" || !Number.isFinite(usd) || usd < 0) throw new Error(`price of "${key}": ${name} must be a non-negative number of USD per 1M tokens`);
    return BigInt(Math.round(usd * 1e6));
  };
  const input = micros("input", price.input) as bigint;
  return {
    key,
    price,
    input,
    output: micros("output", price.output) as bigint,
    cached: micros("cachedInput", price.cachedInput, true) ?? input,
    write: micros("cacheWrite", price.cacheWrite, true),
  };
}

function wildcardRegex(pattern: string): RegExp {
  const parts = pattern.trim().toLowerCase().split("*").map((p) => p.replace(/[.*+?^${}()|[\]\\]/g, "\\$&"));
  return new RegExp(`^${parts.join(".*")}$`);
}

function count(tokens: number): number {
  return Number.isFinite(tokens) && tokens > 0 ? Math.floor(tokens) : 0;
}
