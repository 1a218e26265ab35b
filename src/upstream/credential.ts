/** The request Tollgate is about to send upstream; credentials add headers or a signature to it. */
import type { UpstreamCredentialConfig } from "../config/schema.ts";
import { StaticCredential } from "./static.ts";
import { EntraCredential, type CredentialDeps } from "./entra.ts";
import { SigV4Credential } from "./sigv4.ts";

export interface OutgoingRequest {
  readonly method: string;
  /** The upstream origin, e.g. `https://my-resource.openai.azure.com`. */
  readonly origin: string;
  /** Path and query as sent upstream. */
  readonly path: string;
  /** Lower-case header names; a credential mutates this object. */
  readonly headers: Record<string, string | string[]>;
  /** The body when Tollgate holds it in memory (always, for credentials with `needsBody`). */
  readonly body: Buffer | undefined;
}

export interface CredentialStatus {
  readonly ready: boolean;
  readonly detail?: string;
}

/**
 * An upstream credential, built once per upstream. `apply` runs after every other header change, so a
 * signature covers the request exactly as it leaves.
 */
export interface UpstreamCredential {
  readonly type: string;
  /** Signers that hash the body set this, so the gateway buffers it (bounded) before `apply`. */
  readonly needsBody: boolean;
  /** Inbound headers of this credential's kind that must never reach the upstream next to ours. */
  readonly ownedHeaders?: readonly string[];
  apply(outgoing: OutgoingRequest): void | Promise<void>;
  status(): CredentialStatus;
  close?(): void | Promise<void>;
}

const none: UpstreamCredential = { type: "none", needsBody: false, apply() {}, status: () => ({ ready: true }) };

export function createUpstreamCredential(config: UpstreamCredentialConfig, deps: CredentialDeps): UpstreamCredential {
  switch (config.type) {
    case "static":
      return new StaticCredential(config.header, config.value);
    case "none":
      return none;
    case "entra":
      return new EntraCredential(config, deps);
    case "sigv4":
      return new SigV4Credential(config, deps);
  }
}
