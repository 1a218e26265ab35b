/** WebSocket upgrades (OpenAI Realtime, /v1/realtime) are authenticated like any request, then tunnelled. */
import t from "tap";
import { createServer } from "node:http";
import { once } from "node:events";
import { WebSocketServer, WebSocket } from "ws";
import { startHarness, makeKey, SERVER_BLOCK, type Harness } from "../helpers/harness.ts";

const user = makeKey();
const noRealtime = makeKey();
let h: Harness;
let seenHeaders: Record<string, string | string[] | undefined> = {};
const wsUpstream = createServer();
const wss = new WebSocketServer({ server: wsUpstream });
wss.on("connection", (socket, req) => {
  seenHeaders = req.headers;
  socket.on("message", (data) => socket.send(`echo:${data}`));
});

t.before(async () => {
  wsUpstream.listen(0, "127.0.0.1");
  await once(wsUpstream, "listening");
  const wsUrl = `http://127.0.0.1:${(wsUpstream.address() as { port: number }).port}`;
  h = await startHarness(`${SERVER_BLOCK}
upstreams:
  realtime:
    url: "${wsUrl}"
    credential: { type: static, header: authorization, value: "Bearer upstream-realtime-secret" }
    identity: { headers: { user: x-tollgate-user } }
authenticators:
  - name: keys
    type: api_key
    keys:
      - { id: u, hash: "${user.hash}", user: ursula, roles: [realtime] }
      - { id: n, hash: "${noRealtime.hash}", user: nadia, roles: [user] }
routes:
  - name: realtime
    methods: [GET]
    paths: [/v1/realtime]
    upstream: realtime
    allow: [{ roles: [realtime] }]
`);
});
t.teardown(async () => {
  await h.stop();
  wss.close();
  wsUpstream.close();
});

const connect = (key: string | undefined) =>
  new WebSocket(`${h.url.replace("http", "ws")}/v1/realtime?model=gpt-4o-realtime-preview`, { headers: key ? { authorization: `Bearer ${key}` } : {} });

t.test("an allowed upgrade is tunnelled both ways with Tollgate's credential", async (t) => {
  const ws = connect(user.key);
  await once(ws, "open");
  ws.send("hello");
  const [reply] = await once(ws, "message");
  t.equal(String(reply), "echo:hello");
  t.equal(seenHeaders.authorization, "Bearer upstream-realtime-secret");
  t.equal(seenHeaders["x-tollgate-user"], "ursula");
  t.notOk(JSON.stringify(seenHeaders).includes(user.key), "the client's key never reaches the upstream");
  ws.close();
  await once(ws, "close");
});

t.test("upgrades without a credential or with the wrong role are refused before any tunnel", async (t) => {
  for (const [key, status] of [[undefined, 401], [noRealtime.key, 403], [makeKey().key, 401]] as const) {
    const ws = connect(key);
    ws.on("error", () => {}); // the refused handshake surfaces as an error after unexpected-response
    const [, res] = (await once(ws, "unexpected-response")) as [unknown, import("node:http").IncomingMessage];
    t.equal(res.statusCode, status);
    if (status === 401) t.match(res.headers["www-authenticate"], /Bearer/);
    res.destroy();
  }
  const audit = h.audit().filter((a) => a.route === "realtime");
  t.ok(audit.some((a) => a.status === 101 && a.decision === "allow"));
  t.ok(audit.some((a) => a.status === 403 && a.reason === "forbidden"));
});
