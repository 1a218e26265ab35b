/** Small schema pieces shared by several parts of the policy. */
import { z } from "zod";
import { isLoopbackUrl } from "../auth/loopback.ts";

export const name = z.string().regex(/^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$/, "names use letters, digits, '.', '_' and '-'");

export const headerName = z
  .string()
  .regex(/^[A-Za-z0-9!#$%&'*+.^_`|~-]+$/, "not a valid HTTP header name")
  .transform((h) => h.toLowerCase());

/** A claim path: a claim name, or a dot path into nested claims (`realm_access.roles`). */
export const claimPath = z.string().min(1);

/** One claim path, or several tried in order (the first present wins). */
export const claimPaths = z.union([claimPath, z.array(claimPath).min(1)]).transform((v) => (Array.isArray(v) ? v : [v]));

/** An https URL, or http towards this machine only (local development, tests): identity traffic never crosses a network in clear. */
export const secureUrl = z.url().refine((value) => {
  const url = new URL(value);
  return url.protocol === "https:" || (url.protocol === "http:" && isLoopbackUrl(url));
}, "must be https (plain http is accepted only for 127.0.0.1, ::1 or localhost)");
