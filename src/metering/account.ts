/** meter → settle for one request: the usage to record, token and spend metrics, and the admission's settlement. */
import type { Logger } from "pino";
import type { Exchange } from "../exchange.ts";
import type { ForwardResult } from "../proxy/forward.ts";
import type { Metrics } from "../observe/metrics.ts";
import type { MeteringObserver } from "./observer.ts";
import type { PriceBook } from "./pricing.ts";
import type { Usage } from "./usage.ts";
import { estimateUsage } from "./estimate.ts";
import { NO_USAGE } from "./request.ts";

export interface AccountingDeps {
  prices: PriceBook;
  metrics: Metrics;
  logger: Logger;
  charsPerToken: number;
}

/**
 * meter → settle: the provider's usage when the response carried it, else an estimate (marked so); an
 * upstream that answered nothing or an error is charged nothing; a client that left is charged what it got.
 * Returns the settlement's promise when the request holds an admission (it never rejects), else undefined.
 */
export function accountUsage(exchange: Exchange, observer: MeteringObserver, result: ForwardResult, deps: AccountingDeps): Promise<void> | undefined {
  const { usage, outputChars, responded } = observer.result();
  let final: Usage;
  if (usage) final = usage;
  else if (!responded || observer.status >= 400) final = NO_USAGE;
  else final = estimateUsage(exchange.promptTokens, outputChars, deps.charsPerToken);
  exchange.usage = final;
  const model = exchange.model;
  const priced = model === undefined ? undefined : deps.prices.lookup(model);
  const label = priced?.key ?? "other";
  const { tokens, spend } = deps.metrics;
  const source = final.source;
  if (final.inputTokens) tokens.inc({ model: label, type: "input", source }, final.inputTokens);
  if (final.outputTokens) tokens.inc({ model: label, type: "output", source }, final.outputTokens);
  if (final.cachedInputTokens) tokens.inc({ model: label, type: "cached_input", source }, final.cachedInputTokens);
  if (final.cacheWriteTokens) tokens.inc({ model: label, type: "cache_write", source }, final.cacheWriteTokens);
  if (final.reasoningTokens) tokens.inc({ model: label, type: "reasoning", source }, final.reasoningTokens);
  if (model !== undefined && priced) {
    const cost = deps.prices.cost(model, final);
    exchange.costMicros = cost.micros;
    if (cost.micros > 0) spend.inc({ model: label }, cost.micros / 1e6);
  }
  const outcome = result.outcome === "upstream_error" && responded ? "client_aborted" : result.outcome;
  // A promise only when there is a settlement to wait for (limits on this route): no promise otherwise.
  return exchange.admission?.settle(final, outcome).then(
    () => undefined,
    (err: unknown) => deps.logger.warn({ err: (err as Error).message }, "settlement failed"),
  );
}
