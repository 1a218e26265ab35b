/** normalizeTarget: what routes match and what goes upstream is one string, and anything ambiguous is a 400. */
import t, { type Test } from "tap";
import { normalizeTarget } from "../../src/proxy/normalize.ts";
import { TollgateError } from "../../src/proxy/errors.ts";

const HOST = "127.0.0.1:8080";
const path = (url: string) => normalizeTarget(url, HOST).path;

/** `host` given explicitly (even as undefined) replaces the default Host header. */
function rejects(t: Test, url: string, ...hostArg: [string | undefined] | []): void {
  const host = hostArg.length > 0 ? hostArg[0] : HOST;
  let caught: unknown;
  try {
    normalizeTarget(url, host);
  } catch (err) {
    caught = err;
  }
  t.ok(caught instanceof TollgateError, `${JSON.stringify(url)} throws a TollgateError`);
  t.match(caught, { code: "bad_path", status: 400 }, `${JSON.stringify(url)} is bad_path`);
}

t.test("dot segments are resolved", async (t) => {
  t.equal(path("/v1/../admin/x"), "/admin/x");
  t.equal(path("/v1/./chat/completions"), "/v1/chat/completions");
  t.equal(path("/v1/chat/./../models"), "/v1/models");
  t.equal(path("/a/b/c/../../d"), "/a/d");
  t.equal(path("/v1/."), "/v1/", "a trailing dot keeps the directory slash");
  t.equal(path("/v1/.."), "/", "a trailing dot-dot leaves the directory");
  t.equal(path("/v1/chat/.."), "/v1/");
  t.equal(path("/v1/..."), "/v1/...", "three dots are an ordinary segment");
  t.equal(path("/v1/.hidden/x"), "/v1/.hidden/x", "a leading dot in a name is not a dot segment");
  t.equal(path("/v1/chat/completions"), "/v1/chat/completions", "a clean path is untouched");
  t.equal(path("/v1/chat/"), "/v1/chat/", "a trailing slash is kept");
});

t.test("repeated slashes collapse", async (t) => {
  t.equal(path("//admin/x"), "/admin/x");
  t.equal(path("/v1//chat//completions"), "/v1/chat/completions");
  t.equal(path("///v1///models"), "/v1/models");
  t.equal(path("/v1//"), "/v1/");
  t.equal(path("//"), "/");
  t.equal(path("/v1//..//admin"), "/admin");
});

t.test("never climbs above the root", async (t) => {
  t.equal(path("/.."), "/");
  t.equal(path("/../admin"), "/admin");
  t.equal(path("/../../../../etc/passwd"), "/etc/passwd");
  t.equal(path("/a/b/../../../../c"), "/c");
  t.equal(path("/%2e%2e/%2e%2e/admin"), "/admin");
  for (const p of ["/..", "/../..", "/v1/../../..", "/./../."]) t.ok(path(p).startsWith("/"), `${p} stays rooted`);
});

t.test("%2e and mixed-case encodings of dots are decoded, then resolved", async (t) => {
  t.equal(path("/v1/%2e%2e/admin/x"), "/admin/x");
  t.equal(path("/v1/%2E%2E/admin"), "/admin");
  t.equal(path("/v1/%2E%2e/admin"), "/admin");
  t.equal(path("/v1/.%2e/admin"), "/admin");
  t.equal(path("/v1/%2e./admin"), "/admin");
  t.equal(path("/v1/%2e/chat"), "/v1/chat");
  t.equal(path("/v1/%2e%2E"), "/");
});

t.test("other unreserved escapes are decoded so routes cannot be dodged by encoding letters", async (t) => {
  t.equal(path("/%61dmin/x"), "/admin/x");
  t.equal(path("/%41%5a%30%39%2d%5f%7e"), "/AZ09-_~");
  t.equal(path("/v1/%7e%5F"), "/v1/~_");
});

t.test("reserved and non-ASCII escapes are kept encoded", async (t) => {
  t.equal(path("/v1/files/a%20b"), "/v1/files/a%20b");
  t.equal(path("/v1/files/a%3Fb"), "/v1/files/a%3Fb", "an encoded ? stays encoded and does not start a query");
  t.equal(path("/v1/files/%25"), "/v1/files/%25", "an encoded % stays encoded");
  t.equal(path("/v1/%c0%ae%c0%ae/admin"), "/v1/%c0%ae%c0%ae/admin", "overlong UTF-8 is not turned into dots");
});

t.test("encoded separators and NUL are refused", async (t) => {
  for (const url of ["/v1/..%2Fadmin", "/v1%2fadmin", "/v1%2Fadmin", "/v1/..%5Cadmin", "/v1/..%5cadmin", "/v1/%00", "/v1/chat%00.json", "/v1/%2e%2e%2fadmin"]) rejects(t, url);
});

t.test("double-encoded dots, separators and NUL are refused", async (t) => {
  for (const url of ["/v1/%252e%252e/admin", "/v1/%252E%252E/admin", "/v1/..%252fadmin", "/v1%252Fadmin", "/v1/..%255cadmin", "/v1/%2500"]) rejects(t, url);
});

t.test("raw backslash, control characters, spaces and fragments are refused", async (t) => {
  for (const url of ["/v1/..\\admin", "/v1\\admin", "/v1/\x00", "/v1/a\tb", "/v1/a\rb", "/v1/a\nb", "/v1/a b", "/v1/\x7f", "/v1/\x1b[0m", "/v1/x#frag", "/v1/x?q=1#frag"]) rejects(t, url);
});

t.test("malformed percent-escapes are refused", async (t) => {
  for (const url of ["/v1/%", "/v1/%2", "/v1/%zz", "/v1/%u002e%u002e/admin", "/v1/%g0"]) rejects(t, url);
});

t.test("Tomcat-style path parameters on dot segments are refused", async (t) => {
  for (const url of ["/v1/..;/admin", "/v1/..;jsessionid=1/admin", "/v1/.;/admin", "/..;/admin", "/v1/%2e%2e;/admin", "/v1/%2E.;x/admin"]) rejects(t, url);
  t.equal(path("/v1/files;v=1"), "/v1/files;v=1", "a parameter on an ordinary segment is kept as is");
});

t.test("an encoded semicolon after a dot segment is refused like a raw one", async (t) => {
  // An upstream that percent-decodes before stripping path parameters reads `..%3b` as `..;` and then as `..`,
  // so `/v1/..%3b/admin` would be `/admin` there while Tollgate routes it under `/v1/**`.
  rejects(t, "/v1/..%3b/admin");
  rejects(t, "/v1/..%3B/admin");
  rejects(t, "/v1/%2e%2e%3b/admin");
});

t.test("the query string is preserved untouched and does not take part in path rules", async (t) => {
  const target = normalizeTarget("/v1//chat/../models?a=%2F..%2F&b=../x&c=%00&d=%252e&e=\\", HOST);
  t.same(target, { path: "/v1/models", search: "?a=%2F..%2F&b=../x&c=%00&d=%252e&e=\\" });
  t.same(normalizeTarget("/v1/models?", HOST), { path: "/v1/models", search: "?" });
  t.same(normalizeTarget("/v1/models", HOST), { path: "/v1/models", search: "" });
  t.same(normalizeTarget("/v1/models??x=1", HOST), { path: "/v1/models", search: "??x=1" });
  t.equal(normalizeTarget("/v1/%2e%2e/admin?next=/v1", HOST).path, "/admin", "dots before the query still resolve");
});

t.test("absolute-form naming this host is accepted and its path extracted", async (t) => {
  t.same(normalizeTarget(`http://${HOST}/v1/models?x=1`, HOST), { path: "/v1/models", search: "?x=1" });
  t.same(normalizeTarget(`http://${HOST}/v1/../admin/x`, HOST), { path: "/admin/x", search: "" }, "and normalized like origin-form");
  t.same(normalizeTarget(`HTTP://${HOST}/v1`, HOST), { path: "/v1", search: "" }, "the scheme is case-insensitive");
  t.same(normalizeTarget("http://LOCALHOST:8080/v1", "localhost:8080"), { path: "/v1", search: "" }, "the host is case-insensitive");
  t.same(normalizeTarget(`https://${HOST}/v1`, HOST), { path: "/v1", search: "" });
  t.same(normalizeTarget(`http://${HOST}`, HOST), { path: "/", search: "" }, "no path is the root");
  rejects(t, `http://${HOST}/v1/..%2fadmin`);
  rejects(t, `http://${HOST}/v1/..;/admin`);
});

t.test("absolute-form with a query but no path keeps the query as the query", async (t) => {
  // RFC 3986: in `http://host?next=/admin/x` the path is empty and everything after `?` is the query.
  t.same(normalizeTarget(`http://${HOST}?next=/admin/x`, HOST), { path: "/", search: "?next=/admin/x" });
  t.same(normalizeTarget(`http://${HOST}?x=1`, HOST), { path: "/", search: "?x=1" });
});

t.test("absolute-form naming another host, or no Host at all, is refused", async (t) => {
  rejects(t, "http://evil.example/v1/models");
  rejects(t, "http://127.0.0.1:9999/v1/models", "127.0.0.1:8080");
  rejects(t, `http://${HOST}.evil.example/v1`);
  rejects(t, `http://${HOST}/v1/models`, undefined);
  rejects(t, `http://${HOST}/v1/models`, "");
  rejects(t, "http://[::1/v1");
});

t.test("asterisk-form, authority-form, relative and empty targets are refused", async (t) => {
  for (const url of ["*", "127.0.0.1:8080", "v1/models", "ftp://127.0.0.1:8080/v1", "", "?x=1", "../admin"]) rejects(t, url);
  rejects(t, undefined as unknown as string);
});

t.test("idempotent: a normalized path normalizes to itself", async (t) => {
  for (const url of ["/v1/../admin/x", "//a//b/./c/..", "/v1/%2e%2e/%61dmin/", "/v1/files/a%20b", "/v1/.."]) {
    const once = path(url);
    t.equal(path(once), once, `${url} → ${once}`);
  }
});
