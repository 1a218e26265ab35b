/**
 * Tollgate's own Entra ID credential, built with @azure/identity from the policy: the default chain,
 * managed identity (system- or user-assigned), workload identity (AKS federated token), client secret or
 * certificate. Every getToken is wrapped in our own timeout: a silent IMDS otherwise hangs for minutes and
 * @azure/identity ignores abort signals there.
 */
import type { AccessToken, GetTokenOptions, TokenCredential } from "@azure/identity";
import type { AzureCredentialConfig } from "../config/azure.ts";
import { lazily } from "../lazy.ts";

/**
 * The credential is built on its first getToken: @azure/identity (with MSAL) adds ~40 MB of resident memory
 * to a process, which a sidecar whose policy never asks for an Entra token should not carry. The module is
 * imported once, by the first credential that needs it.
 */
export function createAzureCredential(config: AzureCredentialConfig): TokenCredential {
  // A credential that cannot be built (outside its pod, a certificate not mounted yet) is tried again next time.
  const built = lazily(async () => buildCredential(await import("@azure/identity"), config));
  return {
    async getToken(scopes: string | string[], options?: GetTokenOptions): Promise<AccessToken | null> {
      return (await built()).getToken(scopes, options);
    },
  };
}

function buildCredential(identity: typeof import("@azure/identity"), config: AzureCredentialConfig): TokenCredential {
  const { ClientCertificateCredential, ClientSecretCredential, DefaultAzureCredential, ManagedIdentityCredential, WorkloadIdentityCredential } = identity;
  switch (config.type) {
    case "default":
      return new DefaultAzureCredential({
        ...(config.managedIdentityClientId ? { managedIdentityClientId: config.managedIdentityClientId } : {}),
        ...(config.tenantId ? { tenantId: config.tenantId } : {}),
      });
    case "managed_identity":
      if (config.clientId) return new ManagedIdentityCredential({ clientId: config.clientId });
      if (config.resourceId) return new ManagedIdentityCredential({ resourceId: config.resourceId });
      return new ManagedIdentityCredential();
    case "workload_identity":
      return new WorkloadIdentityCredential({
        ...(config.tenantId ? { tenantId: config.tenantId } : {}),
        ...(config.clientId ? { clientId: config.clientId } : {}),
        ...(config.tokenFilePath ? { tokenFilePath: config.tokenFilePath } : {}),
      });
    case "client_secret":
      return new ClientSecretCredential(config.tenantId, config.clientId, config.clientSecret, { additionallyAllowedTenants: ["*"] });
    case "client_certificate":
      return new ClientCertificateCredential(config.tenantId, config.clientId, { certificatePath: config.certificatePath }, { additionallyAllowedTenants: ["*"] });
  }
}

export class TokenTimeoutError extends Error {
  override name = "TokenTimeoutError";
}

/** getToken with a hard deadline; rejects with TokenTimeoutError rather than waiting on a silent endpoint. */
export async function getTokenWithin(credential: TokenCredential, scope: string, timeoutMs: number, tenantId?: string): Promise<AccessToken> {
  let timer: NodeJS.Timeout | undefined;
  const deadline = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new TokenTimeoutError(`no Entra token within ${timeoutMs} ms`)), timeoutMs);
    timer.unref();
  });
  try {
    const token = await Promise.race([credential.getToken(scope, tenantId ? { tenantId } : {}), deadline]);
    if (!token) throw new Error("the credential returned no token");
    return token;
  } finally {
    clearTimeout(timer);
  }
}
