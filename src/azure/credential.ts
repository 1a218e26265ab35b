/**
 * Tollgate's own Entra ID credential, built with @azure/identity from the policy: the default chain,
 * managed identity (system- or user-assigned), workload identity (AKS federated token), client secret or
 * certificate. Every getToken is wrapped in our own timeout: a silent IMDS otherwise hangs for minutes and
 * @azure/identity ignores abort signals there.
 */
import {
  ClientCertificateCredential,
  ClientSecretCredential,
  DefaultAzureCredential,
  ManagedIdentityCredential,
  WorkloadIdentityCredential,
  type AccessToken,
  type TokenCredential,
} from "@azure/identity";
import type { AzureCredentialConfig } from "../config/azure.ts";

export function createAzureCredential(config: AzureCredentialConfig): TokenCredential {
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
