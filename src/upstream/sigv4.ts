/**
 * AWS SigV4 for Bedrock (or any AWS service): credentials from the AWS SDK's Node chain (env, profile, web
 * identity / IRSA, EKS Pod Identity / container credentials, instance metadata), optionally an assumed role;
 * the request signed with @smithy/signature-v4 after every other header change, the body hashed, the host
 * the upstream's.
 */
import type { SignatureV4 } from "@smithy/signature-v4";
import type { AwsCredentialIdentity, AwsCredentialIdentityProvider } from "@smithy/types";
import type { UpstreamCredentialConfig } from "../config/schema.ts";
import type { CredentialStatus, OutgoingRequest, UpstreamCredential } from "./credential.ts";
import type { CredentialDeps } from "./entra.ts";
import { Refresher } from "./refresher.ts";
import { lazily } from "../lazy.ts";

type SigV4Config = Extract<UpstreamCredentialConfig, { type: "sigv4" }>;

/** Inbound AWS auth headers: the client's own signature material must never travel next to ours. */
export const AWS_AUTH_HEADERS = ["x-amz-date", "x-amz-security-token", "x-amz-content-sha256"] as const;

const REFRESH_BEFORE_MS = 5 * 60_000;

export class SigV4Credential implements UpstreamCredential {
  readonly type = "sigv4";
  readonly needsBody = true;
  readonly ownedHeaders = AWS_AUTH_HEADERS;
  readonly #credentials: Refresher<AwsCredentialIdentity>;
  readonly #signer: () => Promise<SignatureV4>;
  readonly #deps: CredentialDeps;

  constructor(config: SigV4Config, deps: CredentialDeps, provider: AwsCredentialIdentityProvider = providerFor(config)) {
    this.#deps = deps;
    this.#credentials = new Refresher({
      upstream: deps.upstream,
      refreshBefore: REFRESH_BEFORE_MS,
      timeout: config.timeout,
      clock: deps.clock,
      metrics: deps.metrics,
      logger: deps.logger,
      fetch: async () => {
        // We are the cache: ask the SDK's memoized chain for fresh credentials rather than the ones it holds.
        const credentials = await provider({ forceRefresh: true } as Parameters<AwsCredentialIdentityProvider>[0]);
        return { value: credentials, expiresAt: credentials.expiration?.getTime() };
      },
    });
    // The signer and the AWS SDK's credential chain are imported only by a SigV4 upstream, not with Tollgate:
    // together they add ~12 MB of resident memory that a policy without one should not pay for.
    this.#signer = lazily(() =>
      Promise.all([import("@smithy/signature-v4"), import("@smithy/hash-node")]).then(
        ([{ SignatureV4 }, { Hash }]) =>
          new SignatureV4({
            service: config.service,
            region: config.region,
            sha256: Hash.bind(null, "sha256"),
            credentials: () => this.#credentials.get(),
            uriEscapePath: true,
            applyChecksum: true,
          }),
      ),
    );
    if (!deps.offline) this.#credentials.start();
  }

  async apply(outgoing: OutgoingRequest): Promise<void> {
    const origin = new URL(outgoing.origin);
    const queryAt = outgoing.path.indexOf("?");
    const path = queryAt >= 0 ? outgoing.path.slice(0, queryAt) : outgoing.path;
    const query: Record<string, string | string[]> = {};
    if (queryAt >= 0) {
      for (const [k, v] of new URLSearchParams(outgoing.path.slice(queryAt + 1))) {
        const prior = query[k];
        query[k] = prior === undefined ? v : Array.isArray(prior) ? [...prior, v] : [prior, v];
      }
    }
    const headers: Record<string, string> = {};
    for (const [name, value] of Object.entries(outgoing.headers)) {
      // The signer trusts an existing x-amz-content-sha256 instead of hashing: only our own hash may be signed.
      if ((AWS_AUTH_HEADERS as readonly string[]).includes(name)) continue;
      headers[name] = Array.isArray(value) ? value.join(", ") : value;
    }
    for (const name of AWS_AUTH_HEADERS) delete outgoing.headers[name];
    headers.host = origin.host;
    const signed = await (await this.#signer()).sign(
      { method: outgoing.method, protocol: origin.protocol, hostname: origin.hostname, port: origin.port ? Number(origin.port) : undefined, path, query, headers, body: outgoing.body ?? "" },
      { signingDate: new Date(this.#deps.clock.now()) },
    );
    for (const [name, value] of Object.entries(signed.headers)) outgoing.headers[name.toLowerCase()] = value;
  }

  status(): CredentialStatus {
    return this.#credentials.status();
  }

  close(): void {
    this.#credentials.close();
  }
}

function providerFor(config: SigV4Config): AwsCredentialIdentityProvider {
  const provider = lazily(async () => buildProvider(await import("@aws-sdk/credential-providers"), config));
  return async (options) => (await provider())(options);
}

function buildProvider({ fromNodeProviderChain, fromTemporaryCredentials }: typeof import("@aws-sdk/credential-providers"), config: SigV4Config): AwsCredentialIdentityProvider {
  const base = fromNodeProviderChain(config.profile ? { profile: config.profile } : {});
  if (!config.assumeRole) return base;
  const role = config.assumeRole;
  return fromTemporaryCredentials({
    masterCredentials: base,
    params: {
      RoleArn: role.roleArn,
      RoleSessionName: role.sessionName,
      DurationSeconds: Math.round(role.duration / 1000),
      ...(role.externalId ? { ExternalId: role.externalId } : {}),
    },
    clientConfig: { region: config.region },
  });
}
