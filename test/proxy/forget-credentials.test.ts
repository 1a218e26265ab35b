/**
 * Once a request is authenticated, the client's credential is dropped from Node's request object: a stream held
 * open for minutes must not keep the secret (or its bytes) in memory for that long. Checked on the function
 * itself and on the gateway while a stream is still running.
 */
import t from "tap";
import { createServer, request as httpRequest, type IncomingMessage, type Server } from "node:http";
import { once } from "node:events";
import { forgetCredentials } from "../../src/proxy/headers.ts";
import { startHarness, makeKey, SERVER_BLOCK, type Harness } from "../helpers/harness.ts";

/** A server that hands each request to `handler`; resolves with its port. */
async function serve(handler: (req: IncomingMessage, res: import("node:http").ServerResponse) => void): Promise<{ server: Server; port: number }> {
  const server = createServer(handler);
  server.listen(0, "127.0.0.1");
  await once(server, "listening");
  return { server, port: (server.address() as { port: number }).port };
}

/** Sends the headers (names go out spelled as given) and resolves with the response's status and body. */
function send(port: number, headers: Record<string, string>, path = "/", body = ""): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    const req = httpRequest({ host: "127.0.0.1", port, method: "POST", path, headers }, (res) => {
      let text = "";
      res.setEncoding("utf8");
      res.on("data", (c: string) => (text += c));
      res.on("end", () => resolve({ status: res.statusCode ?? 0, body: text }));
    });
    req.on("error", reject);
    req.end(body);
  });
}

t.test("forgetCredentials removes every credential header, whatever its spelling, and keeps the rest", async (t) => {
  let seen: { headers: Record<string, unknown>; raw: string[] } | undefined;
  const { server, port } = await serve((req, res) => {
    forgetCredentials(req);
    seen = { headers: { ...req.headers }, raw: [...req.rawHeaders] };
    res.end("ok");
  });
  t.teardown(() => void server.close());
  const reply = await send(port, {
    Authorization: "Bearer secret-token-1",
    "X-API-Key": "secret-key-2",
    "api-key": "secret-key-3",
    "Proxy-Authorization": "Basic c2VjcmV0",
    "Content-Type": "application/json",
    "X-Custom": "kept",
  });
  t.equal(reply.status, 200);
  t.ok(seen);
  for (const name of ["authorization", "x-api-key", "api-key", "proxy-authorization"]) t.equal(seen!.headers[name], undefined, `${name} gone from headers`);
  t.equal(seen!.headers["content-type"], "application/json");
  t.equal(seen!.headers["x-custom"], "kept");
  const raw = seen!.raw.join("\n");
  for (const secret of ["secret-token-1", "secret-key-2", "secret-key-3", "c2VjcmV0"]) t.notOk(raw.includes(secret), `${secret} gone from rawHeaders`);
  t.ok(seen!.raw.includes("X-Custom") && seen!.raw.includes("kept"), "other raw headers are untouched");
});

t.test("the gateway forgets the client's key while the stream it admitted is still running", async (t) => {
  const alice = makeKey();
  const h: Harness = await startHarness(
    `${SERVER_BLOCK}
upstreams:
  llm:
    url: "\${UPSTREAM_URL}"
    credential: { type: static, header: authorization, value: "Bearer upstream-secret" }
authenticators:
  - name: keys
    type: api_key
    keys:
      - { id: alice-key, hash: "${alice.hash}", user: alice, roles: [user] }
routes:
  - name: chat
    paths: [/v1/chat/completions]
    upstream: llm
    allow: [{ roles: [user] }]
`,
    { upstream: { events: 5, intervalMs: 40 } },
  );
  t.teardown(() => h.stop());
  // The gateway behind a server of the test's own, so the test holds Node's request object.
  const held: IncomingMessage[] = [];
  const { server, port } = await serve((req, res) => {
    held.push(req);
    void h.server.gateway.handle(req, res);
  });
  t.teardown(() => void server.close());

  const body = JSON.stringify({ model: "gpt-4o-mini", stream: true, messages: [{ role: "user", content: "hi" }] });
  const duringStream = await new Promise<{ status: number; headers: Record<string, unknown>; raw: string[]; rest: Promise<string> }>((resolve, reject) => {
    const req = httpRequest({ host: "127.0.0.1", port, method: "POST", path: "/v1/chat/completions", headers: { authorization: `Bearer ${alice.key}`, "content-type": "application/json" } }, (res) => {
      res.setEncoding("utf8");
      let text = "";
      const rest = new Promise<string>((done) => res.on("end", () => done(text)));
      res.once("data", (first: string) => {
        text += first;
        res.on("data", (c: string) => (text += c));
        // The first event is here; the upstream is still writing the others.
        resolve({ status: res.statusCode ?? 0, headers: { ...held[0]!.headers }, raw: [...held[0]!.rawHeaders], rest });
      });
    });
    req.on("error", reject);
    req.end(body);
  });
  t.equal(duringStream.status, 200);
  t.equal(h.upstream.openStreams(), 1, "the upstream stream is still open");
  t.equal(duringStream.headers.authorization, undefined, "no Authorization on the request object mid-stream");
  t.notOk(duringStream.raw.join("\n").includes(alice.key), "the key is in no raw header mid-stream");
  t.equal(duringStream.headers["content-type"], "application/json", "the other headers stay");
  const text = await duringStream.rest;
  t.match(text, /data: \[DONE\]/, "the stream completes");
  t.equal(h.upstream.seen.at(-1)?.headers.authorization, "Bearer upstream-secret", "the upstream got its own credential");
});
