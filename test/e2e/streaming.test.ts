/** The forwarder under stress: back-pressure, client aborts, upstream failures, byte-identical bodies. */
import t from "tap";
import { createServer, request as httpRequest, type IncomingMessage } from "node:http";
import { once } from "node:events";
import { Readable } from "node:stream";
import { request } from "undici";
import { startHarness, makeKey, SERVER_BLOCK, until, type Harness } from "../helpers/harness.ts";

const key = makeKey();
const auth = { authorization: `Bearer ${key.key}`, "content-type": "application/json" };

// An upstream that streams 64 MiB as fast as its socket accepts, counting what it managed to write.
let firehoseWritten = 0;
let firehoseDone = false;
const firehose = createServer((req, res) => {
  if (req.url?.endsWith("/hang")) return; // never answers: for the timeout test
  res.writeHead(200, { "content-type": "application/octet-stream" });
  const chunk = Buffer.alloc(64 * 1024, 97);
  const pump = () => {
    while (firehoseWritten < 64 * 1024 * 1024) {
      firehoseWritten += chunk.length;
      if (!res.write(chunk)) return void res.once("drain", pump);
    }
    firehoseDone = true;
    res.end();
  };
  pump();
});

let h: Harness;
t.before(async () => {
  firehose.listen(0, "127.0.0.1");
  await once(firehose, "listening");
  const firehoseUrl = `http://127.0.0.1:${(firehose.address() as { port: number }).port}`;
  h = await startHarness(
    (upstreamUrl) => `${SERVER_BLOCK}
upstreams:
  llm: { url: "${upstreamUrl}" }
  firehose: { url: "${firehoseUrl}", timeouts: { headers: 300ms } }
  dead: { url: "http://127.0.0.1:9" }
authenticators: [{ name: keys, type: api_key, keys: [{ id: k, hash: "${key.hash}", roles: [user] }] }]
routes:
  - { name: firehose, paths: [/firehose/**], upstream: firehose, allow: [{ roles: [user] }] }
  - { name: dead, paths: [/dead/**], upstream: dead, allow: [{ roles: [user] }] }
  - { name: checked, methods: [POST], paths: [/v1/chat/completions], upstream: llm, allow: [{ roles: [user], models: [gpt-4o-mini] }] }
  - { name: passthrough, paths: [/v1/**], upstream: llm, allow: [{ roles: [user] }] }
`,
    { upstream: { events: 40, intervalMs: 50 } },
  );
});
t.teardown(async () => {
  await h.stop();
  firehose.closeAllConnections();
  firehose.close();
});

t.test("a slow client pauses the upstream (back-pressure), then receives every byte", async (t) => {
  const url = new URL(`${h.url}/firehose/big`);
  const res = await new Promise<IncomingMessage>((resolve) => httpRequest(url, { headers: auth }, resolve).end());
  res.pause();
  await new Promise((r) => setTimeout(r, 700));
  const whilePaused = firehoseWritten;
  t.notOk(firehoseDone, "the upstream could not finish while the client was not reading");
  t.ok(whilePaused < 24 * 1024 * 1024, `upstream wrote ${(whilePaused / 1048576).toFixed(1)} MiB of 64 while the client was paused`);
  let received = 0;
  res.on("data", (c: Buffer) => (received += c.length));
  res.resume();
  await once(res, "end");
  t.equal(received, 64 * 1024 * 1024, "every byte arrived");
});

t.test("a client that disconnects mid-stream aborts the upstream request", async (t) => {
  const before = h.upstream.abortedStreams();
  const res = await request(`${h.url}/v1/chat/completions`, { method: "POST", headers: auth, body: '{"model":"gpt-4o-mini","stream":true}' });
  for await (const _chunk of res.body) break; // first event, then go away
  await until(() => h.upstream.abortedStreams() === before + 1, 2000, "upstream abort");
  await until(() => h.audit().some((a) => a.outcome === "client_aborted"), 2000, "audit line");
  const metrics = await (await request(`${h.adminUrl}/metrics`)).body.text();
  t.match(metrics, /tollgate_upstream_errors_total\{upstream="llm",outcome="client_aborted"\} 1/);
});

t.test("an unreachable upstream is a 502 and a silent one a 504, in the OpenAI error shape", async (t) => {
  const dead = await request(`${h.url}/dead/x`, { headers: auth });
  t.equal(dead.statusCode, 502);
  t.match(await dead.body.json(), { error: { code: "upstream_unavailable", type: "api_error" } });
  const hang = await request(`${h.url}/firehose/hang`, { headers: auth });
  t.equal(hang.statusCode, 504);
  t.match(await hang.body.json(), { error: { code: "upstream_timeout" } });
});

t.test("bodies are forwarded byte-identical, whether Tollgate read them or not", async (t) => {
  const odd = '{"model":"gpt-4o-mini",  "messages":[{"role":"user","content":"caf\\u00e9 ☕"}],"n":1.0}';
  for (const path of ["/v1/chat/completions", "/v1/embeddings"]) {
    const res = await request(`${h.url}${path}`, { method: "POST", headers: auth, body: odd });
    await res.body.dump();
    t.equal(h.upstream.seen.at(-1)!.body, odd, `${path}: same bytes upstream`);
  }
  const chunked = await request(`${h.url}/v1/embeddings`, { method: "POST", headers: auth, body: Readable.from(['{"model":', '"x"}']) });
  await chunked.body.dump();
  t.equal(h.upstream.seen.at(-1)!.body, '{"model":"x"}', "a chunked body streams through");
});

t.test("a failure while settling a request costs that request at most, never the process", async (t) => {
  const inc = h.server.metrics.requests.inc.bind(h.server.metrics.requests);
  h.server.metrics.requests.inc = () => {
    throw new Error("simulated bug in settle");
  };
  const res = await request(`${h.url}/v1/embeddings`, { method: "POST", headers: auth, body: '{"model":"x"}' });
  await res.body.dump();
  t.equal(res.statusCode, 200, "the response was already complete");
  h.server.metrics.requests.inc = inc;
  await until(() => h.logs.some((l) => l.msg === "unexpected error while handling a request"), 2000, "error log");
  const next = await request(`${h.url}/v1/embeddings`, { method: "POST", headers: auth, body: '{"model":"x"}' });
  t.equal(next.statusCode, 200, "Tollgate keeps serving");
  await next.body.dump();
});
