/**
 * Cookie handling for browser sessions: parsing, Set-Cookie with the right attributes, chunking of values
 * too large for one cookie (Entra refresh tokens are big), and removing Tollgate's cookies from what the
 * upstream receives.
 */
const CHUNK = 3800;
const MAX_CHUNKS = 8;

export function parseCookies(header: string | undefined): Map<string, string> {
  const out = new Map<string, string>();
  if (!header) return out;
  for (const part of header.split(";")) {
    const eq = part.indexOf("=");
    if (eq <= 0) continue;
    const name = part.slice(0, eq).trim();
    if (!out.has(name)) out.set(name, part.slice(eq + 1).trim());
  }
  return out;
}

export interface CookieAttributes {
  path: string;
  secure: boolean;
  domain?: string | undefined;
  /** Seconds; 0 deletes the cookie. */
  maxAge: number;
}

export function serializeCookie(name: string, value: string, a: CookieAttributes): string {
  let cookie = `${name}=${value}; Path=${a.path}; HttpOnly; SameSite=Lax; Max-Age=${a.maxAge}`;
  if (a.secure) cookie += "; Secure";
  if (a.domain) cookie += `; Domain=${a.domain}`;
  return cookie;
}

/** Set-Cookie headers for a value, split into `name.0`, `name.1`, … when it does not fit one cookie. */
export function chunkedCookies(name: string, value: string, a: CookieAttributes, present: ReadonlySet<string>): string[] {
  const chunks: string[] = [];
  for (let i = 0; i < value.length; i += CHUNK) chunks.push(value.slice(i, i + CHUNK));
  if (chunks.length > MAX_CHUNKS) throw new Error("session too large for cookies");
  const out = chunks.length === 1 ? [serializeCookie(name, value, a)] : chunks.map((c, i) => serializeCookie(`${name}.${i}`, c, a));
  // Remove leftovers of an earlier, differently chunked value.
  for (const existing of present) {
    const isOurs = existing === name || existing.startsWith(`${name}.`);
    const written = chunks.length === 1 ? existing === name : /^\d+$/.test(existing.slice(name.length + 1)) && Number(existing.slice(name.length + 1)) < chunks.length;
    if (isOurs && !written) out.push(serializeCookie(existing, "", { ...a, maxAge: 0 }));
  }
  return out;
}

/** Reassembles a value written by chunkedCookies. */
export function readChunked(cookies: Map<string, string>, name: string): string | undefined {
  const whole = cookies.get(name);
  if (whole !== undefined) return whole;
  let value = "";
  for (let i = 0; i < MAX_CHUNKS; i++) {
    const part = cookies.get(`${name}.${i}`);
    if (part === undefined) break;
    value += part;
  }
  return value || undefined;
}

/** Set-Cookie headers deleting every cookie of this name (whole or chunked) the browser sent. */
export function clearCookies(name: string, present: Iterable<string>, a: Omit<CookieAttributes, "maxAge">): string[] {
  const out: string[] = [];
  for (const existing of present) if (existing === name || existing.startsWith(`${name}.`)) out.push(serializeCookie(existing, "", { ...a, maxAge: 0 }));
  return out;
}

/** The Cookie header without Tollgate's cookies (the upstream must never see a session). */
export function stripCookies(header: string, isOwned: (name: string) => boolean): string | undefined {
  const kept = header
    .split(";")
    .map((p) => p.trim())
    .filter((p) => p && !isOwned(p.slice(0, Math.max(0, p.indexOf("="))).trim()));
  return kept.length > 0 ? kept.join("; ") : undefined;
}
