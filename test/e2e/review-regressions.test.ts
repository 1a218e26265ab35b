/** Regressions found in review: crashes from odd sockets, Content-Type tricks, WebSocket models, lease leaks. */
import t from "tap";
import { connect } from "node:net";
import { once } from "node:events";
import { createServer } from "node:http";
import { WebSocketServer, WebSocket } from "ws";
import { request } from "undici";
import { startHarness, makeKey, SERVER_BLOCK, until, type Harness } from "../helpers/harness.ts";

const key = makeKey();

async function raw(port: number, text: string, reset = false): Promise<string> {
  const socket = connect(port, "127.0.0.1");
  await once(socket, "connect");
  socket.write(text);
  if (reset) {
    socket.resetAndDestroy();
    return "";
  }
  let out = "";
  socket.on("data", (d) => (out += d));
  await Promise.race([once(socket, "close"), new Promise((r) => setTimeout(r, 2000))]);
  socket.destroy();
  return out;
}

t.test("a reset WebSocket upgrade and a malformed admin request do not crash Tollgate", async (t) => {
  const h = await startHarness(`${SERVER_BLOCK}
upstreams: { llm: { url: "\${UPSTREAM_URL}" } }
authenticators: [{ name: keys, type: api_key, keys: [{ id: k, hash: "${key.hash}", roles: [user] }] }]
routes: [{ name: r, paths: [/v1/**], upstream: llm, allow: [{ roles: [user] }] }]
`);
  t.teardown(() => h.stop());
  const port = Number(new URL(h.url).port);
  for (let i = 0; i < 20; i++) await raw(port, "GET /nope HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n", true);
  const adminPort = Number(new URL(h.adminUrl).port);
  const answer = await raw(adminPort, "GET http://[ HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
  t.match(answer, /^HTTP\/1\.1 400/, "the admin port answers 400");
  await new Promise((r) => setTimeout(r, 100));
  const res = await request(`${h.url}/v1/models`, { headers: { authorization: `Bearer ${key.key}` } });
  t.equal(res.statusCode, 200, "still serving");
  await res.body.dump();
  t.equal((await request(`${h.adminUrl}/healthz`)).statusCode, 200);
});

t.test("a JSON body labelled text/plain is still counted by budgets and model-scoped limits", async (t) => {
  const h = await startHarness(`${SERVER_BLOCK}
upstreams: { llm: { url: "\${UPSTREAM_URL}", identity: { openaiUser: true } } }
authenticators: [{ name: keys, type: api_key, keys: [{ id: k, hash: "${key.hash}", user: alice, roles: [user] }] }]
routes: [{ name: chat, methods: [POST], paths: [/v1/chat/completions], upstream: llm, allow: [{ roles: [user] }] }]
limits:
  meter: limited
  rules: [{ name: gpt4o-rpm, by: [user], models: [gpt-4o], requests: { limit: 1, per: 1m } }]
`);
  t.teardown(() => h.stop());
  const send = (type: string) =>
    request(`${h.url}/v1/chat/completions`, { method: "POST", headers: { authorization: `Bearer ${key.key}`, "content-type": type }, body: '{"model":"gpt-4o","user":"bob","messages":[]}' });
  const first = await send("text/plain");
  t.equal(first.statusCode, 200);
  await first.body.dump();
  t.equal(JSON.parse(h.upstream.seen.at(-1)!.body).user, "alice", "the client's `user` is replaced whatever the label");
  const second = await send("text/plain");
  t.equal(second.statusCode, 429, "the model-scoped limit saw the model");
  await second.body.dump();
});

t.test("WebSocket sessions are held to model allow-lists through the `model` query parameter", async (t) => {
  const upstream = createServer();
  const wss = new WebSocketServer({ server: upstream });
  upstream.listen(0, "127.0.0.1");
  await once(upstream, "listening");
  t.teardown(() => {
    wss.close();
    upstream.close();
  });
  const h = await startHarness(`${SERVER_BLOCK}
upstreams: { rt: { url: "http://127.0.0.1:${(upstream.address() as { port: number }).port}" } }
authenticators: [{ name: keys, type: api_key, keys: [{ id: k, hash: "${key.hash}", roles: [user] }] }]
routes: [{ name: realtime, methods: [GET], paths: [/v1/realtime], upstream: rt, models: [gpt-4o-realtime-preview], allow: [{ roles: [user] }] }]
`);
  t.teardown(() => h.stop());
  const open = async (query: string) => {
    const ws = new WebSocket(`${h.url.replace("http", "ws")}/v1/realtime${query}`, { headers: { authorization: `Bearer ${key.key}` } });
    ws.on("error", () => {});
    const [event, arg] = (await Promise.race([once(ws, "open").then(() => ["open"]), once(ws, "unexpected-response").then(([, res]) => ["refused", res])])) as [string, import("node:http").IncomingMessage?];
    const status = event === "open" ? 101 : arg!.statusCode;
    if (event === "open") ws.close();
    else arg!.destroy();
    return status;
  };
  t.equal(await open("?model=gpt-4o-realtime-preview"), 101);
  t.equal(await open("?model=gpt-4o-mini-realtime"), 403, "another model is refused");
  t.equal(await open(""), 400, "no model at all is refused where models are checked");
});

t.test("with meter: limited, concurrency leases are released when requests end", async (t) => {
  const h = await startHarness(`${SERVER_BLOCK}
upstreams: { llm: { url: "\${UPSTREAM_URL}" } }
authenticators: [{ name: keys, type: api_key, keys: [{ id: k, hash: "${key.hash}", user: alice, roles: [user] }] }]
routes: [{ name: chat, paths: [/v1/**], upstream: llm, allow: [{ roles: [user] }] }]
limits:
  meter: limited
  rules: [{ name: one-at-a-time, by: [user], concurrency: 1 }]
`);
  t.teardown(() => h.stop());
  for (let i = 0; i < 5; i++) {
    const res = await request(`${h.url}/v1/models`, { headers: { authorization: `Bearer ${key.key}` } });
    t.equal(res.statusCode, 200, `request ${i + 1}`);
    await res.body.dump();
  }
  await until(async () => (await (await request(`${h.adminUrl}/usage?user=alice`)).body.json() as { limits: { used: number }[] }).limits[0]!.used === 0, 2000, "no lease left");
});

t.test("a session cookie does not authorize cross-site state-changing requests", async (t) => {
  const secret = "x".repeat(48);
  const h = await startHarness(`${SERVER_BLOCK}
upstreams: { ui: { url: "\${UPSTREAM_URL}" } }
authenticators:
  - name: sso
    type: session
    provider: { preset: oidc, issuer: "http://127.0.0.1:1" }
    clientId: ui
    clientSecret: s
    redirectUri: "https://llm.example.com/sso/callback"
    sessionSecret: "${secret}"
    cookie: { secure: false }
routes: [{ name: ui, paths: [/key/**], upstream: ui, signIn: sso, allow: [{ roles: [admin] }] }]
`);
  t.teardown(() => h.stop());
  const { Sealer } = await import("../../src/auth/session/seal.ts");
  const end = Date.now() + 3_600_000;
  const cookie = await new Sealer(secret, "session").seal({ sid: "s1", p: { id: "ada", kind: "user", groups: [], roles: ["admin"], scopes: [] }, fresh: end, end }, end);
  const call = (method: string, headers: Record<string, string>) =>
    request(`${h.url}/key/generate`, { method, headers: { cookie: `tollgate_session=${cookie}`, ...headers }, body: method === "POST" ? "{}" : null }).then(async (r) => (await r.body.dump(), r.statusCode));
  t.equal(await call("POST", { origin: "https://llm.example.com" }), 404, "same origin: reaches the UI (the stand-in has no such page)");
  t.equal(await call("POST", { origin: "https://evil.example.com" }), 403, "another origin is refused");
  t.equal(await call("POST", { "sec-fetch-site": "same-site" }), 403, "a sibling subdomain is refused");
  t.equal(await call("GET", { "sec-fetch-site": "cross-site" }), 404, "navigations (GET) stay possible");
});
