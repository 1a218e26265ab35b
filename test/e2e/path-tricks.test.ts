/**
 * Path tricks through a real Tollgate: whatever spelling a client uses, the route it is judged by and the path
 * the upstream receives are the same normalized path, and an admin-only route is never reached by a non-admin.
 * fetch normalizes paths itself, so requests are written byte for byte on a plain socket.
 */
import t from "tap";
import { connect } from "node:net";
import { startHarness, makeKey, SERVER_BLOCK, type Harness } from "../helpers/harness.ts";

const user = makeKey();
const admin = makeKey();

const policy = `${SERVER_BLOCK}
upstreams:
  llm:
    url: "\${UPSTREAM_URL}"
    credential: { type: static, header: authorization, value: "Bearer upstream-secret" }
    identity: { headers: { principal: x-tollgate-key-id } }
authenticators:
  - name: keys
    type: api_key
    keys:
      - { id: user-key, hash: "${user.hash}", user: alice, roles: [user] }
      - { id: admin-key, hash: "${admin.hash}", user: root, roles: [admin] }
routes:
  - name: api
    paths: [/v1/**]
    upstream: llm
    allow: [{ authenticated: true }]
  - name: admin
    paths: [/admin/**]
    upstream: llm
    allow: [{ roles: [admin] }]
`;

interface RawResponse {
  status: number;
  headers: Record<string, string>;
  body: string;
}

let h: Harness;
let port = 0;
t.before(async () => {
  h = await startHarness(policy);
  port = Number(new URL(h.url).port);
});
t.teardown(() => h.stop());

/** Sends `GET <target>` exactly as written and parses the reply. */
function raw(target: string, key: string | undefined, extra: string[] = []): Promise<RawResponse> {
  const lines = [`GET ${target} HTTP/1.1`, `Host: 127.0.0.1:${port}`, "Connection: close", ...(key ? [`Authorization: Bearer ${key}`] : []), ...extra];
  return new Promise((resolve, reject) => {
    const socket = connect(port, "127.0.0.1");
    const chunks: Buffer[] = [];
    socket.on("data", (c: Buffer) => chunks.push(c));
    socket.on("error", reject);
    socket.on("close", () => {
      const text = Buffer.concat(chunks).toString("latin1");
      const end = text.indexOf("\r\n\r\n");
      const [statusLine, ...headerLines] = text.slice(0, end < 0 ? text.length : end).split("\r\n");
      const m = /^HTTP\/1\.1 (\d{3})/.exec(statusLine ?? "");
      if (!m) return reject(new Error(`no status line in ${JSON.stringify(text.slice(0, 200))}`));
      const headers: Record<string, string> = {};
      for (const line of headerLines) {
        const colon = line.indexOf(":");
        headers[line.slice(0, colon).trim().toLowerCase()] = line.slice(colon + 1).trim();
      }
      resolve({ status: Number(m[1]), headers, body: end < 0 ? "" : text.slice(end + 4) });
    });
    // write, not end: a half-closed client socket makes Node abort the request before the upstream answers.
    socket.write(lines.join("\r\n") + "\r\n\r\n", "latin1");
  });
}

const errorCode = (r: RawResponse): unknown => (r.body ? (JSON.parse(r.body) as { error?: { code?: unknown } }).error?.code : undefined);

/** Sends the request and returns what the upstream saw (undefined when nothing was forwarded). */
async function through(target: string, key: string | undefined, extra: string[] = []) {
  const before = h.upstream.seen.length;
  const res = await raw(target, key, extra);
  const seen = h.upstream.seen.slice(before);
  return { res, seen: seen.length === 0 ? undefined : seen.at(-1)!, forwarded: seen.length };
}

const climbs = ["/v1/../admin/x", "//admin/x", "/v1/%2e%2e/admin/x", "/v1/%2E%2E/admin", "/v1/.%2e/admin/x", "/v1/./../admin/x", "/v1//..//admin/x", "/%61dmin/x", "/v1/../../../admin/x", "/v1/chat/%2e%2e/%2e%2e/admin/x"];

t.test("dot segments and doubled slashes that climb into /admin are judged as /admin: 403 for a non-admin", async (t) => {
  for (const target of climbs) {
    const { res, forwarded } = await through(target, user.key);
    t.equal(res.status, 403, `${target} → 403`);
    t.equal(errorCode(res), "forbidden", target);
    t.equal(forwarded, 0, `${target} never reaches the upstream`);
  }
});

t.test("the same climbs with the admin key reach the upstream as the normalized /admin path", async (t) => {
  for (const target of climbs) {
    const { seen } = await through(target, admin.key);
    const expected = target.endsWith("/admin") ? "/admin" : "/admin/x";
    t.equal(seen?.url, expected, `${target} arrives as ${expected}`);
    t.equal(seen?.headers["x-tollgate-key-id"], "admin-key");
  }
});

t.test("encoded and double-encoded separators, backslashes and path parameters are 400 and never forwarded", async (t) => {
  for (const target of ["/v1/..%2Fadmin", "/v1/..%2fadmin/x", "/v1%2fadmin", "/v1%2Fadmin/x", "/v1/..%5Cadmin", "/v1/%252e%252e/admin/x", "/v1/..%252fadmin", "/v1/%00/../admin", "/v1/..;/admin/x", "/v1/%2e%2e;/admin/x", "/v1/%zz/../admin"]) {
    const { res, forwarded } = await through(target, admin.key);
    t.equal(res.status, 400, `${target} → 400`);
    t.equal(errorCode(res), "bad_path", target);
    t.equal(forwarded, 0, `${target} not forwarded`);
  }
});

t.test("a raw backslash in the path is bad_path and never forwarded", async (t) => {
  for (const target of ["/v1/..\\admin", "/v1\\..\\admin\\x"]) {
    const { res, forwarded } = await through(target, admin.key);
    t.equal(res.status, 400, `${target} → 400`);
    t.equal(errorCode(res), "bad_path", target);
    t.equal(forwarded, 0);
  }
});

t.test("an encoded semicolon after a dot segment is refused like `..;`", async (t) => {
  // An upstream that decodes %3B before stripping path parameters reads this as /v1/..;/admin/x, i.e. /admin/x.
  for (const target of ["/v1/..%3b/admin/x", "/v1/..%3B/admin/x"]) {
    const { res, seen } = await through(target, user.key);
    t.equal(res.status, 400, `${target} → 400`);
    t.equal(seen?.url, undefined, `${target} not forwarded`);
  }
});

t.test("/v1/./chat/completions and /v1//chat//completions are forwarded normalized", async (t) => {
  for (const target of ["/v1/./chat/completions", "/v1//chat//completions", "/v1/chat/./completions", "//v1///chat/completions", "/v1/x/../chat/completions", "/v1/%63hat/completions"]) {
    const { res, seen } = await through(target, user.key);
    t.equal(seen?.url, "/v1/chat/completions", `${target} arrives as /v1/chat/completions`);
    t.equal(seen?.method, "GET");
    t.equal(res.status, 404, "the stand-in's own answer (it serves POST only) comes back, so the request really went through");
  }
});

t.test("the query string goes upstream untouched, after the normalized path", async (t) => {
  const { seen } = await through("/v1//models/./?next=../admin&x=%2F..%2F&y=a%20b", user.key);
  t.equal(seen?.url, "/v1/models/?next=../admin&x=%2F..%2F&y=a%20b");
  const climbed = await through("/v1/%2e%2e/admin/x?from=/v1", user.key);
  t.equal(climbed.res.status, 403, "a query naming /v1 does not change which route the path is judged by");
});

t.test("absolute-form targets: this host is accepted and normalized, a foreign host is 400", async (t) => {
  const own = await through(`http://127.0.0.1:${port}/v1/./models`, user.key);
  t.equal(own.seen?.url, "/v1/models");
  const climbed = await through(`http://127.0.0.1:${port}/v1/../admin/x`, user.key);
  t.equal(climbed.res.status, 403);
  t.equal(climbed.forwarded, 0);
  const foreign = await through("http://evil.example/admin/x", admin.key);
  t.equal(foreign.res.status, 400);
  t.equal(errorCode(foreign.res), "bad_path");
  t.equal(foreign.forwarded, 0);
});

t.test("absolute-form with a query and no path is the root with that query, not a path taken from the query", async (t) => {
  // http://host?next=/admin/x names path "/" (no route here → 404); it must not be routed or forwarded as /admin/x.
  const { res, seen } = await through(`http://127.0.0.1:${port}?next=/admin/x`, admin.key);
  t.equal(seen?.url, undefined, `not forwarded (upstream saw ${seen?.url})`);
  t.equal(res.status, 404);
  t.equal(errorCode(res), "no_route");
});

t.test("asterisk-form and paths outside every route are refused", async (t) => {
  const star = await through("*", admin.key);
  t.equal(star.res.status, 400);
  t.equal(star.forwarded, 0);
  for (const target of ["/v1admin/x", "/ADMIN/x", "/v1/..", "/"]) {
    const { res, forwarded } = await through(target, admin.key);
    t.equal(res.status, 404, `${target} → 404`);
    t.equal(errorCode(res), "no_route");
    t.equal(forwarded, 0);
  }
});

t.test("refusals carry the OpenAI error shape", async (t) => {
  const res = await raw("/v1/..%2Fadmin", user.key);
  t.match(res.headers["content-type"], /^application\/json/);
  t.match(JSON.parse(res.body), { error: { message: String, type: "invalid_request_error", code: "bad_path" } });
});

t.test("across the whole suite, the upstream never saw an /admin request from the non-admin key", async (t) => {
  const fromUser = h.upstream.seen.filter((s) => s.headers["x-tollgate-key-id"] === "user-key");
  t.ok(fromUser.length >= 8, `the non-admin key did reach the upstream (${fromUser.length} times) on /v1`);
  for (const s of fromUser) t.match(s.url, /^\/v1\//, `${s.url} is under /v1`);
  for (const s of h.upstream.seen) t.notOk(/(^|\/)\.\.?(\/|$|\?)|\/\/|%2e|%2f|\\/i.test(s.url.split("?")[0]!), `${s.url} arrived normalized`);
  const denied = h.audit().filter((a) => a.route === "admin" && a.principal === "user-key");
  t.ok(denied.length >= climbs.length, "each climb was audited against the admin route");
  t.ok(denied.every((a) => a.decision === "deny" && a.status === 403));
});
