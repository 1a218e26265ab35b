/**
 * Request hygiene end to end: what the upstream may and may not receive, ambiguous credentials, request ids,
 * bounded and strict bodies, Expect: 100-continue, WWW-Authenticate on every 401, and no key in any log line.
 * Requests are written on plain sockets so headers (Connection, duplicates, underscores) go out exactly as written.
 */
import t, { type Test } from "tap";
import { connect } from "node:net";
import { startHarness, makeKey, SERVER_BLOCK, type Harness } from "../helpers/harness.ts";

const alice = makeKey();
const bob = makeKey();
const expired = makeKey();
const stranger = makeKey();

const policy = `${SERVER_BLOCK}
upstreams:
  llm:
    url: "\${UPSTREAM_URL}"
    credential: { type: static, header: authorization, value: "Bearer upstream-secret-value" }
    identity: { headers: { user: x-tollgate-user, principal: x-tollgate-key-id } }
authenticators:
  - name: keys
    type: api_key
    keys:
      - { id: alice-key, hash: "${alice.hash}", user: alice, roles: [user] }
      - { id: bob-key, hash: "${bob.hash}", user: bob, roles: [user] }
      - { id: old-key, hash: "${expired.hash}", user: carol, roles: [user], expires: "2020-01-01T00:00:00Z" }
routes:
  - name: chat
    methods: [POST]
    paths: [/v1/chat/completions]
    upstream: llm
    maxBodyBytes: 2048
    allow: [{ roles: [user], models: [gpt-4o-mini] }]
  - name: open
    paths: [/v1/**]
    upstream: llm
    allow: [{ authenticated: true }]
`;

interface Reply {
  status: number;
  headers: Record<string, string>;
  body: string;
  json: { error?: { message?: unknown; type?: unknown; code?: unknown } } | undefined;
  /** Every status line received, interim (100 Continue) ones included. */
  statusLines: string[];
}

let h: Harness;
let port = 0;
t.before(async () => {
  h = await startHarness(policy);
  port = Number(new URL(h.url).port);
});
t.teardown(() => h.stop());

function parse(text: string): Reply {
  const statusLines: string[] = [];
  let rest = text;
  for (;;) {
    const end = rest.indexOf("\r\n\r\n");
    if (end < 0) throw new Error(`incomplete response: ${JSON.stringify(text.slice(0, 300))}`);
    const [statusLine, ...lines] = rest.slice(0, end).split("\r\n");
    statusLines.push(statusLine!);
    rest = rest.slice(end + 4);
    if (/^HTTP\/1\.1 1\d\d/.test(statusLine!)) continue;
    const headers: Record<string, string> = {};
    for (const line of lines) headers[line.slice(0, line.indexOf(":")).toLowerCase()] = line.slice(line.indexOf(":") + 1).trim();
    let body = rest;
    if (headers["transfer-encoding"] === "chunked") {
      body = "";
      for (let at = 0; ; ) {
        const eol = rest.indexOf("\r\n", at);
        const size = parseInt(rest.slice(at, eol), 16);
        if (!size) break;
        body += rest.slice(eol + 2, eol + 2 + size);
        at = eol + 2 + size + 2;
      }
    }
    let json: Reply["json"];
    try {
      json = JSON.parse(body) as Reply["json"];
    } catch {
      json = undefined;
    }
    return { status: Number(/^HTTP\/1\.1 (\d{3})/.exec(statusLine!)![1]), headers, body, json, statusLines };
  }
}

/**
 * Writes a request byte for byte (the socket stays open: a half-closed client makes Node abort the request).
 * With `continueFirst`, the body is held back until the server's `100 Continue` arrives.
 */
function send(method: string, path: string, headers: [string, string][], body?: string, continueFirst = false): Promise<Reply> {
  const lines = [`${method} ${path} HTTP/1.1`, `Host: 127.0.0.1:${port}`, "Connection: close", ...headers.map(([k, v]) => `${k}: ${v}`)];
  if (body !== undefined && !headers.some(([k]) => /^(content-length|transfer-encoding)$/i.test(k))) lines.push(`Content-Length: ${Buffer.byteLength(body)}`);
  if (continueFirst) lines.push("Expect: 100-continue");
  return new Promise((resolve, reject) => {
    const socket = connect(port, "127.0.0.1");
    let text = "";
    let bodySent = !continueFirst;
    socket.setEncoding("latin1");
    socket.on("data", (chunk: string) => {
      text += chunk;
      if (!bodySent && text.startsWith("HTTP/1.1 100 ")) {
        bodySent = true;
        socket.write(body ?? "");
      }
    });
    socket.on("error", (err) => (text ? undefined : reject(err)));
    socket.on("close", () => {
      try {
        resolve(parse(text));
      } catch (err) {
        reject(err);
      }
    });
    socket.write(lines.join("\r\n") + "\r\n\r\n" + (continueFirst ? "" : (body ?? "")));
  });
}

const chatBody = JSON.stringify({ model: "gpt-4o-mini", messages: [{ role: "user", content: "hi" }] });
const json: [string, string] = ["Content-Type", "application/json"];
const bearer = (key: string): [string, string] => ["Authorization", `Bearer ${key}`];

/** Sends and returns the reply plus what the upstream saw (undefined when nothing was forwarded). */
async function through(method: string, path: string, headers: [string, string][], body?: string, continueFirst = false) {
  const before = h.upstream.seen.length;
  const res = await send(method, path, headers, body, continueFirst);
  const seen = h.upstream.seen.slice(before);
  return { res, seen: seen.at(-1), forwarded: seen.length };
}

function openAiError(t: Test, res: Reply, status: number, code: string): void {
  t.equal(res.status, status, `status ${status} for ${code}`);
  t.match(res.headers["content-type"], /^application\/json/);
  t.match(res.json, { error: { message: String, type: String, code } }, `OpenAI error shape with code ${code}`);
}

const spoofs: [string, string][] = [["X-Tollgate-User", "root"], ["x-tollgate-key-id", "admin-key"], ["X-Tollgate-Roles", "admin"], ["Proxy-Authorization", "Basic cm9vdDpyb290"]];

t.test("the upstream never receives the client's credential or a spoofed identity, on buffered and streamed routes", async (t) => {
  for (const credential of [bearer(alice.key), ["x-api-key", alice.key], ["api-key", alice.key]] as [string, string][]) {
    for (const [method, path, body] of [["POST", "/v1/chat/completions", chatBody], ["POST", "/v1/embeddings", '{"input":"x"}'], ["GET", "/v1/models", undefined]] as const) {
      const { res, seen } = await through(method, path, [credential, json, ...spoofs], body);
      const what = `${credential[0]} on ${method} ${path}`;
      t.equal(res.status, 200, what);
      t.equal(seen?.headers.authorization, "Bearer upstream-secret-value", `${what}: Tollgate's credential replaces the client's`);
      for (const name of ["x-api-key", "api-key", "proxy-authorization", "x-tollgate-roles"]) t.equal(seen?.headers[name], undefined, `${what}: no ${name}`);
      t.equal(seen?.headers["x-tollgate-user"], "alice", `${what}: identity is Tollgate's, not the spoof`);
      t.equal(seen?.headers["x-tollgate-key-id"], "alice-key");
      t.notOk(JSON.stringify(seen?.headers).includes(alice.key) || seen?.body.includes(alice.key), `${what}: the key appears nowhere upstream`);
    }
  }
});

t.test("Connection naming Tollgate's headers does not remove the ones Tollgate adds", async (t) => {
  const { res, seen } = await through("POST", "/v1/chat/completions", [["x-api-key", alice.key], json, ["Connection", "x-tollgate-user, authorization, x-tollgate-key-id, x-request-id, x-forwarded-for"], ["X-Tollgate-User", "root"]], chatBody);
  t.equal(res.status, 200);
  t.equal(seen?.headers["x-tollgate-user"], "alice");
  t.equal(seen?.headers["x-tollgate-key-id"], "alice-key");
  t.equal(seen?.headers.authorization, "Bearer upstream-secret-value");
  t.match(seen?.headers["x-request-id"], /^[0-9a-f-]{36}$/);
  t.equal(seen?.headers["x-forwarded-for"], "127.0.0.1");
  const named = await through("GET", "/v1/models", [bearer(alice.key), ["Connection", "x-custom"], ["X-Custom", "1"], ["X-Other", "2"]]);
  t.equal(named.seen?.headers["x-custom"], undefined, "a client header the Connection header names is still dropped");
  t.equal(named.seen?.headers["x-other"], "2");
});

t.test("two different credentials are 400 multiple_credentials; the same key twice is allowed", async (t) => {
  for (const headers of [[bearer(alice.key), ["x-api-key", bob.key]], [["x-api-key", alice.key], ["api-key", bob.key]], [bearer(alice.key), bearer(bob.key)], [bearer(bob.key), ["api-key", alice.key]]] as [string, string][][]) {
    const { res, forwarded } = await through("POST", "/v1/chat/completions", [...headers, json], chatBody);
    openAiError(t, res, 400, "multiple_credentials");
    t.equal(forwarded, 0);
  }
  for (const headers of [[bearer(alice.key), ["x-api-key", alice.key]], [bearer(alice.key), ["x-api-key", alice.key], ["api-key", alice.key]], [bearer(alice.key), bearer(alice.key)]] as [string, string][][]) {
    const { res, seen } = await through("POST", "/v1/chat/completions", [...headers, json], chatBody);
    t.equal(res.status, 200, headers.map((h) => h[0]).join(" + "));
    t.equal(seen?.headers["x-tollgate-key-id"], "alice-key");
  }
});

t.test("underscore spellings of owned headers are 400 bad_header", async (t) => {
  for (const header of [["x_api_key", alice.key], ["X_Tollgate_User", "root"], ["x_tollgate_key_id", "admin-key"]] as [string, string][]) {
    const { res, forwarded } = await through("GET", "/v1/models", [bearer(alice.key), header]);
    openAiError(t, res, 400, "bad_header");
    t.equal(forwarded, 0);
  }
});

t.test("x-request-id: propagated when well-formed, generated when missing or malformed, returned on errors", async (t) => {
  const ok = await through("GET", "/v1/models", [bearer(alice.key), ["X-Request-Id", "req-42.a:B_c"]]);
  t.equal(ok.seen?.headers["x-request-id"], "req-42.a:B_c");
  const none = await through("GET", "/v1/models", [bearer(alice.key)]);
  t.match(none.seen?.headers["x-request-id"], /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/);
  for (const bad of ["has space", "x".repeat(129), "<script>", "a;b", "ü"]) {
    const r = await through("GET", "/v1/models", [bearer(alice.key), ["X-Request-Id", bad]]);
    t.match(r.seen?.headers["x-request-id"], /^[0-9a-f-]{36}$/, `${JSON.stringify(bad.slice(0, 12))} replaced`);
  }
  const denied = await send("GET", "/v1/models", [bearer(stranger.key), ["X-Request-Id", "trace-401"]]);
  t.equal(denied.status, 401);
  t.equal(denied.headers["x-request-id"], "trace-401", "a 401 returns the caller's id");
  const badPath = await send("GET", "/v1/%2e%2e%2fx", [["X-Request-Id", "has space"]]);
  t.equal(badPath.status, 400);
  t.match(badPath.headers["x-request-id"], /^[0-9a-f-]{36}$/, "a 400 returns a generated id for a malformed one");
  const audited = h.audit().find((a) => a.requestId === badPath.headers["x-request-id"]);
  t.match(audited, { reason: "bad_path", status: 400 }, "the returned id is the audited id");
  const upgrade = await send("GET", "/v1/realtime", [["Upgrade", "websocket"], ["Connection", "Upgrade"], ["Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ=="], ["Sec-WebSocket-Version", "13"], ["X-Request-Id", "trace-ws"]]);
  t.equal(upgrade.status, 401);
  t.equal(upgrade.headers["x-request-id"], "trace-ws", "a refused WebSocket upgrade returns the id too");
});

t.test("413 body_too_large over the route's maxBodyBytes, declared or streamed; exactly the bound is fine", async (t) => {
  const declared = await through("POST", "/v1/chat/completions", [bearer(alice.key), json, ["Content-Length", "4096"]], "");
  openAiError(t, declared.res, 413, "body_too_large");
  t.equal(declared.forwarded, 0);
  t.match(declared.res.headers["x-request-id"], /^[0-9a-f-]{36}$/);
  const big = JSON.stringify({ model: "gpt-4o-mini", messages: [{ role: "user", content: "x".repeat(3000) }] });
  const chunked = `${(1000).toString(16)}\r\n${big.slice(0, 1000)}\r\n${(big.length - 1000).toString(16)}\r\n${big.slice(1000)}\r\n0\r\n\r\n`;
  const streamed = await through("POST", "/v1/chat/completions", [bearer(alice.key), json, ["Transfer-Encoding", "chunked"]], chunked);
  openAiError(t, streamed.res, 413, "body_too_large");
  t.equal(streamed.forwarded, 0);
  const base = JSON.stringify({ model: "gpt-4o-mini", messages: [{ role: "user", content: "" }] });
  const exact = JSON.stringify({ model: "gpt-4o-mini", messages: [{ role: "user", content: "y".repeat(2048 - base.length) }] });
  t.equal(Buffer.byteLength(exact), 2048);
  const fits = await through("POST", "/v1/chat/completions", [bearer(alice.key), json], exact);
  t.equal(fits.res.status, 200);
  t.equal(fits.seen?.body, exact, "forwarded byte for byte");
});

t.test("malformed JSON and repeated model keys are 400 with the OpenAI error shape", async (t) => {
  for (const [body, code] of [
    ['{"model":"gpt-4o-mini",', "invalid_json"],
    ["{'model':'gpt-4o-mini'}", "invalid_json"],
    ['{"model":"gpt-4o-mini","model":"o1-pro"}', "duplicate_json_key"],
    ['{"model":"o1-pro","\\u006dodel":"gpt-4o-mini"}', "duplicate_json_key"],
    ['{"model":"gpt-4o-mini","messages":[{"role":"user","role":"system"}]}', "duplicate_json_key"],
    ['{"messages":[]}', "model_required"],
  ]) {
    const { res, forwarded } = await through("POST", "/v1/chat/completions", [bearer(alice.key), json], body);
    openAiError(t, res, 400, code!);
    t.equal(res.json?.error?.type, "invalid_request_error");
    t.equal(forwarded, 0, `${body} not forwarded`);
  }
});

t.test("Expect: 100-continue works on buffered and streamed routes, and is not forwarded", async (t) => {
  for (const [path, body] of [["/v1/chat/completions", chatBody], ["/v1/embeddings", '{"model":"text-embedding-3-small","input":"x"}']] as const) {
    const { res, seen } = await through("POST", path, [bearer(alice.key), json], body, true);
    t.same(res.statusLines.slice(0, 1), ["HTTP/1.1 100 Continue"], `${path}: the client is told to continue`);
    t.equal(res.status, 200, `${path}: then answered`);
    t.equal(seen?.body, body, `${path}: the upstream got the whole body`);
    t.equal(seen?.headers.expect, undefined, `${path}: Expect is hop-by-hop`);
  }
});

t.test("every 401 carries WWW-Authenticate", async (t) => {
  const upgrade: [string, string][] = [["Upgrade", "websocket"], ["Connection", "Upgrade"], ["Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ=="], ["Sec-WebSocket-Version", "13"]];
  for (const [what, method, headers, code] of [
    ["no credential", "POST", [json], "missing_credential"],
    ["unknown key", "POST", [bearer(stranger.key), json], "invalid_api_key"],
    ["unknown key in x-api-key", "POST", [["x-api-key", stranger.key], json], "invalid_api_key"],
    ["expired key", "POST", [bearer(expired.key), json], "key_expired"],
    ["bearer token of no known kind", "POST", [["Authorization", "Bearer eyJhbGciOiJub25lIn0.e30."], json], "unrecognized_credential"],
    ["basic auth", "POST", [["Authorization", "Basic YTpi"], json], "unrecognized_credential"],
    ["empty bearer", "POST", [["Authorization", "Bearer"], json], "unrecognized_credential"],
    ["empty x-api-key", "POST", [["x-api-key", ""], json], "unrecognized_credential"],
    ["websocket upgrade without credential", "GET", upgrade, "missing_credential"],
    ["websocket upgrade with unknown key", "GET", [...upgrade, bearer(stranger.key)], "invalid_api_key"],
  ] as [string, string, [string, string][], string][]) {
    const path = method === "GET" ? "/v1/realtime" : "/v1/chat/completions";
    const { res, forwarded } = await through(method, path, headers, method === "POST" ? chatBody : undefined);
    t.equal(res.status, 401, what);
    t.match(res.headers["www-authenticate"], /^Bearer realm="tollgate"/, `${what}: WWW-Authenticate`);
    t.match(res.json, { error: { type: "authentication_error", code } }, `${what}: ${code}`);
    t.equal(forwarded, 0);
  }
});

t.test("no key, and not the upstream secret, appears in any log line", async (t) => {
  const text = h.logText();
  t.ok(h.audit().length >= 40, "the suite's requests were audited");
  for (const [name, k] of [["alice", alice.key], ["bob", bob.key], ["expired", expired.key], ["stranger", stranger.key], ["upstream", "upstream-secret-value"]]) {
    t.notOk(text.includes(k!), `${name}'s secret is not logged`);
    t.notOk(text.includes(k!.slice(3, 20)), `nor a fragment of it`);
  }
});
