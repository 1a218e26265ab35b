/** Tells the upstream who is calling: configured headers and, optionally, the OpenAI `user` field. */
import type { Principal } from "../auth/principal.ts";
import type { UpstreamConfig } from "../config/schema.ts";

type HeaderField = keyof UpstreamConfig["identity"]["headers"];

const VALUE_OF: Record<HeaderField, (p: Principal) => string | undefined> = {
  principal: (p) => p.id,
  user: (p) => p.user ?? (p.kind === "user" ? p.id : undefined),
  email: (p) => p.email,
  groups: (p) => (p.groups.length > 0 ? p.groups.join(",") : undefined),
  roles: (p) => (p.roles.length > 0 ? p.roles.join(",") : undefined),
  team: (p) => p.team,
  method: (p) => p.method,
};

export interface IdentityForwarding {
  /** Header names this upstream receives identity in; Tollgate strips them from every inbound request. */
  readonly headerNames: readonly string[];
  readonly setsOpenAiUser: boolean;
  applyHeaders(principal: Principal, headers: Record<string, string | string[]>): void;
  /** The value for the OpenAI `user` field. */
  openAiUser(principal: Principal): string;
}

export function compileIdentityForwarding(config: UpstreamConfig["identity"]): IdentityForwarding {
  const entries = (Object.entries(config.headers) as [HeaderField, string | undefined][]).filter(
    (e): e is [HeaderField, string] => e[1] !== undefined,
  );
  return {
    headerNames: entries.map(([, header]) => header),
    setsOpenAiUser: config.openaiUser,
    applyHeaders(principal, headers) {
      if (principal.kind === "anonymous") return;
      for (const [field, header] of entries) {
        const value = VALUE_OF[field](principal);
        if (value !== undefined) headers[header] = headerSafe(value);
      }
    },
    openAiUser: (principal) => principal.user ?? principal.email ?? principal.id,
  };
}

// Claims can hold any Unicode; header values must be visible ASCII. Percent-encode the rest so nothing is lost.
function headerSafe(value: string): string {
  return /^[\x20-\x7e]*$/.test(value) ? value : value.replace(/[^\x20-\x7e]/gu, (c) => encodeURIComponent(c));
}
