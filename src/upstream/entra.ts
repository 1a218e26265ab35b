/**
 * Azure OpenAI (or any Entra-protected upstream) without API keys: a bearer token for Tollgate's own
 * identity — managed identity, workload identity, service principal — acquired with @azure/identity,
 * cached, and refreshed before expiry by one refresher. Optionally falls back to an `api-key` while no
 * token can be had.
 */
import type { TokenCredential } from "@azure/identity";
import type { Logger } from "pino";
import type { UpstreamCredentialConfig } from "../config/schema.ts";
import type { Clock } from "../clock.ts";
import type { Metrics } from "../observe/metrics.ts";
import type { CredentialStatus, OutgoingRequest, UpstreamCredential } from "./credential.ts";
import { createAzureCredential } from "../azure/credential.ts";
import { Refresher } from "./refresher.ts";

type EntraConfig = Extract<UpstreamCredentialConfig, { type: "entra" }>;

export interface CredentialDeps {
  upstream: string;
  clock: Clock;
  metrics: Metrics;
  logger: Logger;
  /** `tollgate check` / `explain`: build the credential but never contact an identity endpoint. */
  offline?: boolean | undefined;
}

export class EntraCredential implements UpstreamCredential {
  readonly type = "entra";
  readonly needsBody = false;
  readonly #tokens: Refresher<string>;
  readonly #fallbackApiKey: string | undefined;
  readonly #deps: CredentialDeps;

  constructor(config: EntraConfig, deps: CredentialDeps, credential?: TokenCredential) {
    this.#deps = deps;
    this.#fallbackApiKey = config.fallbackApiKey;
    this.#tokens = new Refresher({
      upstream: deps.upstream,
      refreshBefore: config.refreshBefore,
      timeout: config.timeout,
      clock: deps.clock,
      metrics: deps.metrics,
      logger: deps.logger,
      fetch: async () => {
        // Created on first use: outside its pod a workload identity cannot even be constructed, and that must
        // be a refresh failure (503, /readyz), not a crash at load.
        credential ??= createAzureCredential(config.credential);
        const token = await credential.getToken(config.scope);
        if (!token) throw new Error("the credential returned no token");
        return { value: token.token, expiresAt: token.expiresOnTimestamp };
      },
    });
    if (!deps.offline) this.#tokens.start();
  }

  async apply(outgoing: OutgoingRequest): Promise<void> {
    let token: string | undefined;
    if (this.#fallbackApiKey === undefined) token = await this.#tokens.get();
    else token = this.#tokens.current() ?? (await this.#tokens.get().catch(() => undefined));
    if (token !== undefined) {
      outgoing.headers.authorization = `Bearer ${token}`;
      return;
    }
    outgoing.headers["api-key"] = this.#fallbackApiKey!;
    this.#deps.metrics.credentialFallbacks.inc({ upstream: this.#deps.upstream });
  }

  status(): CredentialStatus {
    const status = this.#tokens.status();
    return status.ready || this.#fallbackApiKey === undefined ? status : { ready: true, detail: `using the fallback API key: ${status.detail}` };
  }

  close(): void {
    this.#tokens.close();
  }
}
