/** Virtual API keys: generated with enough entropy that a plain SHA-256 is a safe way to store them. */
import { hash, randomBytes } from "node:crypto";

export const DEFAULT_KEY_PREFIX = "tg_";

export function generateApiKey(prefix = DEFAULT_KEY_PREFIX): string {
  return prefix + randomBytes(32).toString("base64url");
}

export function hashApiKey(key: string): string {
  return "sha256:" + hash("sha256", key, "hex");
}

/** The only form of a key that may appear in logs: its prefix and last four characters. */
export function redactKey(key: string): string {
  return key.length <= 8 ? "…" : `${key.slice(0, 3)}…${key.slice(-4)}`;
}
