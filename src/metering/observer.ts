/** Connects a meter to the forwarder: picks it by the response's content type and feeds it every chunk. */
import type { ResponseObserver } from "../proxy/forward.ts";
import type { Usage, UsageMeter, FilteringUsageMeter } from "./usage.ts";
import { createMeter, isFilteringMeter, type MeterOptions } from "./select.ts";

const EMPTY = Buffer.alloc(0);

export class MeteringObserver implements ResponseObserver {
  readonly #strip: boolean;
  readonly #options: MeterOptions;
  #meter: UsageMeter | FilteringUsageMeter | undefined;
  #filtering = false;
  #status = 0;

  /** `stripUsageChunk`: Tollgate asked for stream usage on the client's behalf and must hide it again. */
  constructor(stripUsageChunk: boolean, options: MeterOptions) {
    this.#strip = stripUsageChunk;
    this.#options = options;
  }

  get status(): number {
    return this.#status;
  }

  onResponseStart(status: number, headers: Record<string, string | string[] | undefined>): void {
    this.#status = status;
    const type = headers["content-type"];
    const contentType = (Array.isArray(type) ? type[0] : type) ?? "";
    this.#meter = createMeter({ contentType: contentType.toLowerCase(), headers, stripUsageChunk: this.#strip && status < 300 }, this.#options);
    this.#filtering = isFilteringMeter(this.#meter);
  }

  transform(chunk: Buffer): Buffer {
    const meter = this.#meter;
    if (!meter) return chunk;
    if (this.#filtering) return (meter as FilteringUsageMeter).transform(chunk);
    meter.write(chunk);
    return chunk;
  }

  flush(): Buffer {
    return this.#filtering ? (this.#meter as FilteringUsageMeter).flush() : EMPTY;
  }

  /** The provider's usage if the response carried it, and the generated characters seen (for estimates). */
  result(): { usage: Usage | undefined; outputChars: number; responded: boolean } {
    if (!this.#meter) return { usage: undefined, outputChars: 0, responded: false };
    return { ...this.#meter.end(), responded: true };
  }
}
