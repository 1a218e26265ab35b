/** Where a browser may be sent after sign-in: only a path on this site, never another origin. */
export function safeNext(next: string | null | undefined): string {
  if (!next || next.length > 2048) return "/";
  // Relative paths only: not `//evil.example`, not `/\evil.example`, not `https://…`, no control characters.
  if (!next.startsWith("/") || next.startsWith("//") || next.startsWith("/\\") || /[\x00-\x1f\x7f\\]/.test(next)) return "/";
  try {
    const resolved = new URL(next, "http://tollgate.invalid");
    if (resolved.origin !== "http://tollgate.invalid") return "/";
    const path = resolved.pathname + resolved.search + resolved.hash;
    // Dot segments can resolve into `//evil.example` (`/.//evil.example`): check the result, not only the input.
    return path.startsWith("//") || path.startsWith("/\\") ? "/" : path;
  } catch {
    return "/";
  }
}

/** A browser navigation (not an API call): GET/HEAD that accepts HTML. */
export function isBrowserNavigation(method: string | undefined, accept: string | undefined): boolean {
  return (method === "GET" || method === "HEAD") && typeof accept === "string" && accept.includes("text/html");
}
