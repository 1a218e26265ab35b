/** Price lookups (exact, normalized, wildcard; overrides win) and exact micro-dollar arithmetic. */
import t from "tap";
import { compilePriceBook, normalizeModel } from "../../src/metering/pricing.ts";
import { PRICES_COMPILED, SHIPPED_PRICES } from "../../src/metering/prices.ts";
import type { Usage } from "../../src/metering/usage.ts";

const usage = (u: Partial<Usage>): Usage => ({ inputTokens: 0, outputTokens: 0, cachedInputTokens: 0, cacheWriteTokens: 0, reasoningTokens: 0, source: "provider", ...u });
const book = compilePriceBook();

t.test("normalization strips provider and region prefixes, dates, versions, case", async (t) => {
  const cases: [string, string][] = [
    ["gpt-4o-2024-08-06", "gpt-4o"],
    ["azure/GPT-4o-Mini", "gpt-4o-mini"],
    ["openai/gpt-4.1-2025-04-14", "gpt-4.1"],
    ["anthropic/claude-3-5-haiku-20241022", "claude-3-5-haiku"],
    ["claude-3-5-sonnet-latest", "claude-3-5-sonnet"],
    ["bedrock/us.anthropic.claude-3-5-sonnet-20241022-v2:0", "anthropic.claude-3-5-sonnet"],
    ["eu.anthropic.claude-sonnet-4-20250514-v1:0", "anthropic.claude-sonnet-4"],
    ["apac.amazon.nova-pro-v1:0", "amazon.nova-pro-v1"],
    ["arn:aws:bedrock:us-east-1:123456789012:inference-profile/us.meta.llama3-3-70b-instruct-v1:0", "meta.llama3-3-70b-instruct-v1"],
    ["  o3-mini  ", "o3-mini"],
  ];
  for (const [model, name] of cases) t.equal(normalizeModel(model), name, model);
});

t.test("lookups: exact first, then normalized; dated, prefixed and regional ids find their entry", async (t) => {
  t.match(book.lookup("gpt-4o"), { key: "gpt-4o", via: "exact", price: { input: 2.5, output: 10, cachedInput: 1.25 } });
  t.match(book.lookup("gpt-4o-2024-08-06"), { key: "gpt-4o", via: "normalized" });
  t.match(book.lookup("gpt-4o-2024-05-13"), { key: "gpt-4o-2024-05-13", via: "exact", price: { input: 5, output: 15 } }, "a dated id priced differently keeps its own entry");
  t.match(book.lookup("us.anthropic.claude-3-7-sonnet-20250219-v1:0"), { key: "anthropic.claude-3-7-sonnet-20250219-v1:0", via: "normalized", price: { input: 3, output: 15 } });
  t.match(book.lookup("bedrock/eu.anthropic.claude-3-5-sonnet-20241022-v2:0"), { key: "anthropic.claude-3-5-sonnet-20241022-v2:0" }, "the id's own entry, not a sibling version's");
  t.match(book.lookup("global.anthropic.claude-3-5-sonnet-20260101-v9:0"), { key: "anthropic.claude-3-5-sonnet-20240620-v1:0", price: { input: 3 } }, "an unlisted version finds its family");
  t.match(book.lookup("bedrock/amazon.nova-lite-v1:0"), { key: "amazon.nova-lite-v1:0", via: "normalized" });
  t.match(book.lookup("Claude-Opus-4-1-20250805"), { via: "exact", price: { input: 15, output: 75 } }, "exact is case-insensitive");
  t.equal(book.lookup("my-private-model"), undefined);
});

t.test("every model the issue names is in the shipped table", async (t) => {
  const wanted = ["gpt-4o", "gpt-4o-mini", "gpt-4.1", "gpt-4.1-mini", "gpt-4.1-nano", "o1", "o3", "o3-mini", "o4-mini", "gpt-5", "gpt-5-mini", "text-embedding-3-small", "text-embedding-3-large"];
  wanted.push("claude-3-5-haiku-20241022", "claude-3-5-sonnet-20241022", "claude-3-7-sonnet-20250219", "claude-sonnet-4-20250514", "claude-opus-4-20250514");
  wanted.push("us.anthropic.claude-3-5-haiku-20241022-v1:0", "eu.anthropic.claude-3-7-sonnet-20250219-v1:0", "amazon.nova-micro-v1:0", "meta.llama3-1-70b-instruct-v1:0", "mistral-large-latest", "mistral.mistral-7b-instruct-v0:2");
  t.same(wanted.filter((m) => book.lookup(m) === undefined), []);
  t.match(PRICES_COMPILED, /^\d{4}-\d{2}-\d{2}$/);
  for (const [key, price] of Object.entries(SHIPPED_PRICES)) {
    if (!(price.input >= 0 && price.output >= 0 && (price.cachedInput ?? 0) <= price.input)) t.fail(`${key}: a cached price above the input price, or a negative one`);
  }
});

t.test("cost: cached input at the cached price, reasoning inside output, exact micro-dollars", async (t) => {
  // gpt-4o: 1,234,567 in of which 1,000,000 cached; 89,012 out (of which 40,000 reasoning, not charged twice).
  const cost = book.cost("gpt-4o", usage({ inputTokens: 1_234_567, cachedInputTokens: 1_000_000, outputTokens: 89_012, reasoningTokens: 40_000 }));
  // 234,567 × 2.5 + 1,000,000 × 1.25 + 89,012 × 10 = 586,417.5 + 1,250,000 + 890,120 = 2,726,537.5 µ$
  t.same(cost, { usd: 2.7265375, micros: 2_726_538, priced: true });
  t.same(book.cost("gpt-4o-mini", usage({ inputTokens: 1000, outputTokens: 1000 })), { usd: 0.00075, micros: 750, priced: true });
  t.same(book.cost("o3", usage({})), { usd: 0, micros: 0, priced: true }, "no tokens, no cost, still priced");
});

t.test("micro-dollars are exact where floating point is not", async (t) => {
  // gpt-4.1-nano, 2 in + 2 out: 2 × 0.1 + 2 × 0.4 = 1.0 µ$ exactly; in floating point it is 1.0000000000000002.
  const naive = (2 * 0.1) / 1e6 + (2 * 0.4) / 1e6;
  t.equal(Math.ceil(naive * 1e6), 2, "the naive sum rounds up to 2");
  t.same(book.cost("gpt-4.1-nano", usage({ inputTokens: 2, outputTokens: 2 })), { usd: 0.000001, micros: 1, priced: true });
  // Summing many requests in micros equals the cost of the sum when each is a whole micro-dollar.
  let total = 0;
  for (let i = 0; i < 1000; i++) total += book.cost("gpt-4.1-nano", usage({ inputTokens: 2, outputTokens: 2 })).micros;
  t.equal(total, book.cost("gpt-4.1-nano", usage({ inputTokens: 2000, outputTokens: 2000 })).micros);
  t.equal(book.cost("gpt-4o-mini", usage({ inputTokens: 1 })).micros, 1, "a fraction of a micro-dollar rounds up");
});

t.test("cache writes: the table's price, else 1.25× input for Claude, input for others; cached defaults to input", async (t) => {
  // claude-sonnet-4: 10,000 in = 2,000 plain + 5,000 read + 3,000 written; 100 out.
  t.same(book.cost("claude-sonnet-4-20250514", usage({ inputTokens: 10_000, cachedInputTokens: 5_000, cacheWriteTokens: 3_000, outputTokens: 100 })).micros, 2_000 * 3 + 5_000 * 0.3 + 3_000 * 3.75 + 100 * 15);
  const custom = compilePriceBook({ "claude-internal": { input: 2, output: 10 }, "llama-internal": { input: 2, output: 10 } });
  const u = usage({ inputTokens: 1_000, cachedInputTokens: 400, cacheWriteTokens: 400, outputTokens: 0 });
  t.equal(custom.cost("claude-internal", u).micros, 200 * 2 + 400 * 2 + 400 * 2.5, "Claude: cache write 1.25× input, cache read at input");
  t.equal(custom.cost("llama-internal", u).micros, 1_000 * 2, "others: every input token at the input price");
});

t.test("policy overrides win over the table, even over a more exact table entry", async (t) => {
  const custom = compilePriceBook({ "gpt-4o": { input: 1, output: 2 }, "azure/gpt-4o-2024-05-13": { input: 3, output: 4 }, "claude-sonnet-4": { input: 2, output: 10 } });
  t.match(custom.lookup("gpt-4o"), { via: "exact", price: { input: 1, output: 2 } });
  t.match(custom.lookup("gpt-4o-2024-11-20"), { key: "gpt-4o", via: "normalized", price: { input: 1, output: 2 } });
  t.match(custom.lookup("azure/gpt-4o-2024-05-13"), { via: "exact", price: { input: 3, output: 4 } });
  t.match(custom.lookup("gpt-4o-2024-05-13"), { key: "gpt-4o", price: { input: 1 } }, "the override of the family beats the table's dated entry");
  t.match(custom.lookup("claude-sonnet-4-20250514"), { key: "claude-sonnet-4", via: "normalized", price: { input: 2 } }, "likewise for a dated Claude id the table lists");
  t.match(custom.lookup("anthropic.claude-sonnet-4-20250514-v1:0"), { price: { input: 3 } }, "the Bedrock id is another name, still the table's");
  t.match(custom.lookup("gpt-4o-mini"), { via: "exact", price: { input: 0.15 } }, "other table entries stay");
  t.match(compilePriceBook().lookup("gpt-4o"), { price: { input: 2.5 } }, "the shipped book is unchanged");
});

t.test("wildcard overrides come last, most specific first; they match the raw or the normalized id", async (t) => {
  const custom = compilePriceBook({ "*": { input: 9, output: 9 }, "ollama/*": { input: 0, output: 0 }, "acme-*": { input: 1, output: 1 }, "acme-large*": { input: 5, output: 5 } });
  t.match(custom.lookup("ollama/llama3:8b"), { key: "ollama/*", via: "wildcard" });
  t.match(custom.lookup("acme-large-2"), { key: "acme-large*" });
  t.match(custom.lookup("azure/acme-small"), { key: "acme-*" }, "matched on the normalized id");
  t.match(custom.lookup("something-else"), { key: "*" });
  t.match(custom.lookup("gpt-4o-2024-08-06"), { key: "gpt-4o", via: "normalized" }, "a table entry beats every wildcard");
});

t.test("an unknown model is flagged, at zero cost; bad override prices fail the compile", async (t) => {
  t.same(book.cost("my-finetune", usage({ inputTokens: 1_000_000, outputTokens: 1_000_000 })), { usd: 0, micros: 0, priced: false });
  t.throws(() => compilePriceBook({ bad: { input: -1, output: 1 } }), /bad.*input/);
  t.throws(() => compilePriceBook({ bad: { input: 1, output: Number.NaN } }), /output/);
  t.throws(() => compilePriceBook({ bad: { output: 1 } as never }), /input/);
});

t.test("remembered lookups: the same answer every time; past the memo's bound (it starts over) every id is still priced right", async (t) => {
  const own = compilePriceBook({ "team-*": { input: 1, output: 2 } });
  const first = own.lookup("azure/GPT-4o-2024-08-06");
  t.match(first, { key: "gpt-4o", via: "normalized" });
  t.equal(own.lookup("azure/GPT-4o-2024-08-06"), first, "the second lookup is the remembered answer");
  t.throws(() => ((first as { key: string }).key = "other"), TypeError, "a remembered answer cannot be changed by a caller");
  t.equal(own.lookup("no-such-model"), undefined);
  t.equal(own.lookup("no-such-model"), undefined, "a miss is remembered as a miss");
  // More distinct ids than the memo holds (clients choose model names): every one still gets its own answer.
  const wrong: string[] = [];
  for (let i = 0; i < 3000; i++) {
    const model = i % 2 === 0 ? `team-${i}` : `unknown-${i}`;
    const cost = own.cost(model, usage({ inputTokens: 1_000_000, outputTokens: 1_000_000 }));
    if (i % 2 === 0 ? cost.micros !== 3_000_000 || !cost.priced : cost.priced) wrong.push(`${model}: ${JSON.stringify(cost)}`);
  }
  t.same(wrong, [], "3,000 distinct ids, each priced (or not) as the book says");
  t.match(own.lookup("team-0"), { key: "team-*", via: "wildcard" }, "an id forgotten when the memo started over is looked up again");
  t.match(own.lookup("gpt-4o-2024-08-06"), { key: "gpt-4o", via: "normalized" });
  // Ids longer than any model name are not remembered (a body may carry a huge `model`), but still priced.
  const long = `team-${"x".repeat(300_000)}`;
  t.match(own.lookup(long), { key: "team-*", via: "wildcard" });
  t.equal(own.cost(long, usage({ outputTokens: 1_000_000 })).micros, 2_000_000);
  t.equal(own.lookup(`unknown-${"x".repeat(300)}`), undefined);
});
