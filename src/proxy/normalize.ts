/**
 * Path hygiene. The normalized path is both what routes match and what goes upstream, so a path can never
 * be read one way by Tollgate and another way by the upstream. Anything ambiguous is a 400.
 */
import { TollgateError } from "./errors.ts";

export interface NormalizedTarget {
  /** Normalized path, starting with `/`; percent-encodings other than unreserved characters are kept. */
  path: string;
  /** The raw query string including the leading `?`, or "". */
  search: string;
}

// Encoded separators and NUL change meaning depending on who decodes them; any double encoding too
// (`%252e`, `%25252e`: an upstream that decodes more than once would see a dot or a slash).
const AMBIGUOUS = /%(2f|5c|00)|%25[0-9a-f]{2}|\\|[\x00-\x20\x7f]|#/i;
const UNRESERVED_ESCAPE = /%(2[DdEe]|3\d|[46][1-9A-Fa-f]|[57][0-9Aa]|5[Ff]|7[Ee])/g;
// Tomcat-style path parameters turn `..;` into `..` on some upstreams; `%3b` is a `;` to one that decodes first.
const DOT_PARAM_SEGMENT = /(^|\/)\.\.?(;|%3b)/i;

export function normalizeTarget(rawUrl: string | undefined, host: string | undefined): NormalizedTarget {
  if (!rawUrl) throw new TollgateError("bad_path");
  let target = rawUrl;
  if (!target.startsWith("/")) {
    // Absolute-form is only acceptable when it names this very host; asterisk-form and others are refused.
    if (!/^https?:\/\//i.test(target)) throw new TollgateError("bad_path");
    let url: URL;
    try {
      url = new URL(target);
    } catch {
      throw new TollgateError("bad_path");
    }
    if (!host || url.host.toLowerCase() !== host.toLowerCase()) throw new TollgateError("bad_path", "Absolute-form request targets must name this host.");
    // The authority ends at the first `/`, `?` or `#`; what follows is the path (or `/` when there is none).
    const rest = target.slice(target.indexOf("//") + 2);
    const end = rest.search(/[/?#]/);
    target = end < 0 ? "/" : rest[end] === "/" ? rest.slice(end) : "/" + rest.slice(end);
  }
  const queryAt = target.indexOf("?");
  const rawPath = queryAt >= 0 ? target.slice(0, queryAt) : target;
  const search = queryAt >= 0 ? target.slice(queryAt) : "";
  if (AMBIGUOUS.test(rawPath) || search.includes("#")) throw new TollgateError("bad_path");

  // Decode only unreserved characters (RFC 3986 §6.2.2.2): `%2e%2e` becomes `..` and is then resolved.
  const decoded = rawPath.includes("%") ? rawPath.replace(UNRESERVED_ESCAPE, (e) => String.fromCharCode(parseInt(e.slice(1), 16))) : rawPath;
  if (DOT_PARAM_SEGMENT.test(decoded)) throw new TollgateError("bad_path");
  if (decoded.includes("%") && /%(?![0-9A-Fa-f]{2})/.test(decoded)) throw new TollgateError("bad_path");
  return { path: resolveSegments(decoded), search };
}

/** Collapses repeated slashes and resolves `.` and `..` without ever climbing above the root. */
function resolveSegments(path: string): string {
  if (!path.includes("//") && !path.includes("/.")) return path;
  const out: string[] = [];
  const segments = path.split("/");
  for (let i = 1; i < segments.length; i++) {
    const segment = segments[i]!;
    if (segment === "" || segment === ".") {
      if (i === segments.length - 1) out.push("");
      continue;
    }
    if (segment === "..") {
      out.pop();
      if (i === segments.length - 1) out.push("");
      continue;
    }
    out.push(segment);
  }
  return "/" + out.join("/");
}
