/** How Tollgate obtains its own Entra ID credential (@azure/identity), for Graph lookups and upstream tokens. */
import { z } from "zod";

export const azureCredential = z.discriminatedUnion("type", [
  z.strictObject({ type: z.literal("default"), managedIdentityClientId: z.string().optional(), tenantId: z.string().optional() }),
  z.strictObject({
    type: z.literal("managed_identity"),
    clientId: z.string().optional().describe("User-assigned identity by client id"),
    resourceId: z.string().optional().describe("User-assigned identity by ARM resource id"),
  }),
  z.strictObject({
    type: z.literal("workload_identity"),
    tenantId: z.string().optional(),
    clientId: z.string().optional(),
    tokenFilePath: z.string().optional(),
  }),
  z.strictObject({ type: z.literal("client_secret"), tenantId: z.string(), clientId: z.string(), clientSecret: z.string().min(1) }),
  z.strictObject({
    type: z.literal("client_certificate"),
    tenantId: z.string(),
    clientId: z.string(),
    certificatePath: z.string().min(1),
  }),
]);

export type AzureCredentialConfig = z.output<typeof azureCredential>;
