import type { CredentialStatus, OutgoingRequest, UpstreamCredential } from "./credential.ts";

/** A fixed header (an upstream API key or master key) read from the environment or a secret file at load. */
export class StaticCredential implements UpstreamCredential {
  readonly type = "static";
  readonly needsBody = false;
  readonly #header: string;
  readonly #value: string;

  constructor(header: string, value: string) {
    this.#header = header;
    this.#value = value;
  }

  apply(outgoing: OutgoingRequest): void {
    outgoing.headers[this.#header] = this.#value;
  }

  status(): CredentialStatus {
    return { ready: true };
  }
}
