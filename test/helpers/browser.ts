/**
 * A tiny HTTP "browser" for sign-in tests: a cookie jar that honours Set-Cookie (Path, Domain, Max-Age, Expires,
 * Secure), redirects followed one hop at a time so a test can inspect each, and HTML form submission.
 *
 * Cookies follow RFC 6265: they belong to a host, not to a port, so an IdP and Tollgate both on 127.0.0.1 share
 * them, as in a real browser. SameSite is recorded but not enforced: every request here is a top-level
 * navigation, for which Lax cookies are sent anyway. Secure cookies go only to https origins unless the jar is
 * told that plain-http loopback is a secure context (as browsers treat localhost).
 */
import { request } from "undici";

export interface Cookie {
  name: string;
  value: string;
  /** Host the cookie belongs to (lower case, no port). */
  domain: string;
  /** Set with a Domain attribute: also sent to subdomains. */
  hostOnly: boolean;
  path: string;
  /** Epoch ms; undefined = a session cookie. */
  expires: number | undefined;
  secure: boolean;
  httpOnly: boolean;
  sameSite: string | undefined;
}

/** One Set-Cookie header, split: name, value and attributes keyed by lower-cased name (flags map to ""). */
export interface SetCookie {
  name: string;
  value: string;
  attributes: Map<string, string>;
}

export function parseSetCookie(header: string): SetCookie {
  const [pair = "", ...attrs] = header.split(";");
  const eq = pair.indexOf("=");
  const attributes = new Map<string, string>();
  for (const a of attrs) {
    const i = a.indexOf("=");
    const key = (i < 0 ? a : a.slice(0, i)).trim().toLowerCase();
    if (key) attributes.set(key, i < 0 ? "" : a.slice(i + 1).trim());
  }
  return { name: pair.slice(0, Math.max(0, eq)).trim(), value: eq < 0 ? "" : pair.slice(eq + 1).trim(), attributes };
}

export class CookieJar {
  readonly #cookies: Cookie[] = [];
  readonly #secureContext: (url: URL) => boolean;

  constructor(opts: { secureContext?: (url: URL) => boolean } = {}) {
    this.#secureContext = opts.secureContext ?? ((url) => url.protocol === "https:");
  }

  /** Stores (or deletes) what a response from `url` set. */
  store(url: URL, setCookies: readonly string[]): void {
    for (const header of setCookies) {
      const { name, value, attributes } = parseSetCookie(header);
      if (!name) continue;
      const host = url.hostname.toLowerCase();
      const domainAttr = attributes.get("domain")?.replace(/^\./, "").toLowerCase();
      if (domainAttr && !domainMatches(host, domainAttr)) continue; // a foreign Domain is ignored
      const secure = attributes.has("secure");
      if (secure && !this.#secureContext(url)) continue;
      const pathAttr = attributes.get("path");
      const path = pathAttr?.startsWith("/") ? pathAttr : defaultPath(url.pathname);
      let expires: number | undefined;
      const maxAge = attributes.get("max-age");
      if (maxAge !== undefined && /^-?\d+$/.test(maxAge)) expires = Number(maxAge) <= 0 ? 0 : Date.now() + Number(maxAge) * 1000;
      else if (attributes.has("expires")) {
        const at = Date.parse(attributes.get("expires")!);
        if (!Number.isNaN(at)) expires = at;
      }
      const cookie: Cookie = { name, value, domain: domainAttr ?? host, hostOnly: !domainAttr, path, expires, secure, httpOnly: attributes.has("httponly"), sameSite: attributes.get("samesite") };
      const at = this.#cookies.findIndex((c) => c.name === name && c.domain === cookie.domain && c.path === path);
      if (at >= 0) this.#cookies.splice(at, 1);
      if (expires === undefined || expires > Date.now()) this.#cookies.push(cookie);
    }
  }

  /** The cookies a request to `url` carries, longest path first (RFC 6265 §5.4). */
  matching(url: URL): Cookie[] {
    const host = url.hostname.toLowerCase();
    const now = Date.now();
    for (let i = this.#cookies.length - 1; i >= 0; i--) if (this.#cookies[i]!.expires !== undefined && this.#cookies[i]!.expires! <= now) this.#cookies.splice(i, 1);
    return this.#cookies
      .filter((c) => (c.hostOnly ? c.domain === host : domainMatches(host, c.domain)) && pathMatches(url.pathname, c.path) && (!c.secure || this.#secureContext(url)))
      .sort((a, b) => b.path.length - a.path.length);
  }

  header(url: URL): string | undefined {
    const cookies = this.matching(url);
    return cookies.length > 0 ? cookies.map((c) => `${c.name}=${c.value}`).join("; ") : undefined;
  }

  get(name: string, url?: URL): Cookie | undefined {
    return (url ? this.matching(url) : this.#cookies).find((c) => c.name === name);
  }

  /** Puts a cookie in the jar as if `url` had set it (tests use this to tamper or to add a site's own cookie). */
  set(url: URL, name: string, value: string, path = "/"): void {
    this.store(url, [`${name}=${value}; Path=${path}`]);
  }

  delete(name: string): void {
    for (let i = this.#cookies.length - 1; i >= 0; i--) if (this.#cookies[i]!.name === name) this.#cookies.splice(i, 1);
  }

  all(): readonly Cookie[] {
    return [...this.#cookies];
  }
}

export interface Hop {
  method: string;
  url: URL;
  status: number;
  headers: Record<string, string | string[] | undefined>;
  /** Raw Set-Cookie headers of this response. */
  setCookies: string[];
  /** The Location, resolved against the request URL, for a redirect. */
  location: URL | undefined;
  /** The Cookie header this request carried. */
  sentCookie: string | undefined;
  body: string;
}

export interface RequestOptions {
  headers?: Record<string, string>;
  /** application/x-www-form-urlencoded body. */
  form?: Record<string, string> | URLSearchParams;
  /** Send exactly this Cookie header instead of the jar's (undefined in the object = none at all). */
  cookie?: string | undefined;
}

export interface FollowOptions {
  maxHops?: number;
  /** A page that is not a redirect: return the next hop to make (e.g. a submitted form), or undefined to stop. */
  onPage?: (hop: Hop) => Promise<Hop | undefined> | Hop | undefined;
  /** Stop before requesting a URL for which this returns true (the test takes it from there). */
  stopBefore?: (url: URL) => boolean;
}

const NAVIGATION_ACCEPT = "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8";
const MAX_BODY_BYTES = 1024 * 1024;

export class Browser {
  readonly jar: CookieJar;
  /** Every hop this browser made, in order. */
  readonly history: Hop[] = [];
  readonly #timeoutMs: number;

  constructor(opts: { secureContext?: (url: URL) => boolean; timeoutMs?: number } = {}) {
    this.jar = new CookieJar(opts.secureContext ? { secureContext: opts.secureContext } : {});
    this.#timeoutMs = opts.timeoutMs ?? 10_000;
  }

  /** One request, cookies from and into the jar, no redirect followed. */
  async request(method: string, target: string | URL, opts: RequestOptions = {}): Promise<Hop> {
    const url = new URL(target);
    const headers: Record<string, string> = { accept: NAVIGATION_ACCEPT, "user-agent": "tollgate-test-browser", ...opts.headers };
    const sentCookie = "cookie" in opts ? opts.cookie : this.jar.header(url);
    if (sentCookie !== undefined) headers.cookie = sentCookie;
    let body: string | undefined;
    if (opts.form) {
      body = (opts.form instanceof URLSearchParams ? opts.form : new URLSearchParams(opts.form)).toString();
      headers["content-type"] = "application/x-www-form-urlencoded";
    }
    const res = await request(url, { method: method as "GET", headers, body, signal: AbortSignal.timeout(this.#timeoutMs) });
    const chunks: Buffer[] = [];
    let size = 0;
    for await (const chunk of res.body) {
      size += (chunk as Buffer).length;
      if (size > MAX_BODY_BYTES) throw new Error(`response body over ${MAX_BODY_BYTES} bytes from ${url.href}`);
      chunks.push(chunk as Buffer);
    }
    const raw = res.headers["set-cookie"];
    const setCookies = raw === undefined ? [] : Array.isArray(raw) ? raw : [raw];
    this.jar.store(url, setCookies);
    const location = typeof res.headers.location === "string" ? new URL(res.headers.location, url) : undefined;
    const hop: Hop = { method, url, status: res.statusCode, headers: res.headers, setCookies, location, sentCookie, body: Buffer.concat(chunks).toString("utf8") };
    this.history.push(hop);
    return hop;
  }

  get(target: string | URL, opts: RequestOptions = {}): Promise<Hop> {
    return this.request("GET", target, opts);
  }

  /** Requests `target` and follows redirects (303 and 301/302 as GET), one hop at a time; returns every hop. */
  async navigate(target: string | URL, opts: FollowOptions = {}): Promise<Hop[]> {
    return this.follow(await this.get(target), opts);
  }

  /** Continues from a hop already made. */
  async follow(first: Hop, opts: FollowOptions = {}): Promise<Hop[]> {
    const hops = [first];
    const max = opts.maxHops ?? 20;
    let hop = first;
    while (hops.length <= max) {
      let next: Hop | undefined;
      if (hop.status >= 300 && hop.status < 400 && hop.location) {
        if (opts.stopBefore?.(hop.location)) return hops;
        next = await this.get(hop.location);
      } else {
        next = opts.onPage ? await opts.onPage(hop) : undefined;
      }
      if (!next) return hops;
      hops.push(next);
      hop = next;
    }
    throw new Error(`more than ${max} hops from ${first.url.href}: ${hops.map((h) => `${h.status} ${h.url.href}`).join(" → ")}`);
  }

  /**
   * Fills the page's form (the first, or the first whose action matches `opts.action`) and submits it, as a
   * click on the submit button named or labelled `opts.button` would (its name=value is sent), else on none.
   */
  async submit(page: Hop, values: Record<string, string> = {}, opts: { action?: RegExp; button?: string } = {}): Promise<Hop> {
    const form = parseForms(page.body, page.url).find((f) => !opts.action || opts.action.test(f.action.href));
    if (!form) throw new Error(`no form${opts.action ? ` matching ${opts.action}` : ""} on ${page.url.href}`);
    const fields = new URLSearchParams();
    for (const [name, value] of form.fields) fields.append(name, Object.hasOwn(values, name) ? values[name]! : value);
    for (const [name, value] of Object.entries(values)) if (!fields.has(name)) fields.set(name, value);
    if (opts.button !== undefined) {
      const button = form.buttons.find((b) => b.name === opts.button || b.label === opts.button);
      if (!button) throw new Error(`no button ${opts.button} for the form on ${page.url.href}`);
      if (button.name) fields.append(button.name, button.value);
    }
    return form.method === "GET" ? this.get(new URL(`?${fields}`, form.action)) : this.request("POST", form.action, { form: fields });
  }
}

export interface Form {
  action: URL;
  method: "GET" | "POST";
  /** Input names and their default values, in document order (submit buttons excluded). */
  fields: [string, string][];
  /** Submit buttons, inside the form or associated with it by `form="<id>"`. */
  buttons: { name: string | undefined; value: string; label: string }[];
}

const SUBMIT_TYPES = new Set(["submit", "image"]);
const IGNORED_TYPES = new Set(["button", "reset", "file"]);

/** Just enough HTML form parsing for IdP login, consent and logout pages: form, input, button. */
export function parseForms(html: string, base: URL): Form[] {
  const forms: Form[] = [];
  for (const m of html.matchAll(/<form\b([^>]*)>([\s\S]*?)<\/form>/gi)) {
    const attrs = attributesOf(m[1]!);
    const fields: [string, string][] = [];
    const buttons: Form["buttons"] = [];
    for (const control of controls(m[2]!)) {
      if (control.submit) buttons.push(control.button);
      else if (control.field) fields.push(control.field);
    }
    const id = attrs.get("id");
    if (id) {
      for (const control of controls(html)) if (control.form === id && control.submit) buttons.push(control.button);
    }
    forms.push({ action: new URL(attrs.get("action") || base.href, base), method: (attrs.get("method") ?? "GET").toUpperCase() === "POST" ? "POST" : "GET", fields, buttons });
  }
  return forms;
}

function* controls(html: string) {
  for (const m of html.matchAll(/<button\b([^>]*)>([\s\S]*?)<\/button>|<input\b([^>]*)>/gi)) {
    const isButton = m[1] !== undefined;
    const a = attributesOf(isButton ? m[1]! : m[3]!);
    const type = (a.get("type") ?? (isButton ? "submit" : "text")).toLowerCase();
    const name = a.get("name");
    const value = a.get("value") ?? "";
    const submit = SUBMIT_TYPES.has(type);
    const skip = IGNORED_TYPES.has(type) || ((type === "checkbox" || type === "radio") && !a.has("checked"));
    yield {
      submit,
      form: a.get("form"),
      button: { name, value, label: (isButton ? m[2]! : value).replace(/<[^>]*>/g, "").trim() },
      field: !submit && !skip && name ? ([name, value] as [string, string]) : undefined,
    };
  }
}

function attributesOf(source: string): Map<string, string> {
  const out = new Map<string, string>();
  for (const m of source.matchAll(/([A-Za-z_:][-A-Za-z0-9_:.]*)(?:\s*=\s*(?:"([^"]*)"|'([^']*)'|([^\s"'=<>`]+)))?/g)) {
    out.set(m[1]!.toLowerCase(), decodeEntities(m[2] ?? m[3] ?? m[4] ?? ""));
  }
  return out;
}

function decodeEntities(s: string): string {
  return s.replace(/&(#x[0-9a-f]+|#\d+|amp|lt|gt|quot|apos);/gi, (_, e: string) => {
    const lower = e.toLowerCase();
    if (lower.startsWith("#x")) return String.fromCodePoint(parseInt(lower.slice(2), 16));
    if (lower.startsWith("#")) return String.fromCodePoint(Number(lower.slice(1)));
    return ({ amp: "&", lt: "<", gt: ">", quot: '"', apos: "'" } as Record<string, string>)[lower]!;
  });
}

function domainMatches(host: string, domain: string): boolean {
  return host === domain || (host.endsWith(`.${domain}`) && !/^\d+\.\d+\.\d+\.\d+$/.test(host));
}

function defaultPath(requestPath: string): string {
  if (!requestPath.startsWith("/")) return "/";
  const slash = requestPath.lastIndexOf("/");
  return slash <= 0 ? "/" : requestPath.slice(0, slash);
}

function pathMatches(requestPath: string, cookiePath: string): boolean {
  if (requestPath === cookiePath) return true;
  if (!requestPath.startsWith(cookiePath)) return false;
  return cookiePath.endsWith("/") || requestPath[cookiePath.length] === "/";
}
