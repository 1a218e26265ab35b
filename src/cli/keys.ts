/** `tollgate keys new`: a fresh key, printed once, and the policy entry that stores only its hash. */
import { stringify } from "yaml";
import { generateApiKey, hashApiKey, DEFAULT_KEY_PREFIX } from "../auth/keys.ts";

export interface NewKeyOptions {
  id: string;
  user?: string | undefined;
  team?: string | undefined;
  roles?: string[] | undefined;
  groups?: string[] | undefined;
  models?: string[] | undefined;
  expires?: string | undefined;
  prefix?: string | undefined;
}

export function newKey(options: NewKeyOptions): { key: string; entry: Record<string, unknown>; text: string } {
  const key = generateApiKey(options.prefix ?? DEFAULT_KEY_PREFIX);
  const entry: Record<string, unknown> = { id: options.id, hash: hashApiKey(key) };
  if (options.user) entry.user = options.user;
  if (options.team) entry.team = options.team;
  if (options.groups?.length) entry.groups = options.groups;
  entry.roles = options.roles?.length ? options.roles : ["user"];
  if (options.models?.length) entry.models = options.models;
  if (options.expires) entry.expires = options.expires;
  const snippet = stringify([entry], { flowCollectionPadding: false }).trimEnd().split("\n").map((l) => "      " + l).join("\n");
  const text = [
    `API key (give it to its owner now; Tollgate stores only its hash):`,
    ``,
    `  ${key}`,
    ``,
    `Paste under your api_key authenticator's keys:`,
    ``,
    snippet,
  ].join("\n");
  return { key, entry, text };
}
