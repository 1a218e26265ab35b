/** readBody is bounded by declared and by actual size; parseJsonStrict refuses malformed JSON and repeated keys. */
import t from "tap";
import { PassThrough } from "node:stream";
import { createServer, request, type IncomingMessage } from "node:http";
import { once } from "node:events";
import { readBody, parseJsonStrict } from "../../src/proxy/body.ts";
import { TollgateError } from "../../src/proxy/errors.ts";

/** A stand-in IncomingMessage: a stream with headers, fed by the test. */
function fakeRequest(headers: Record<string, string> = {}): PassThrough & IncomingMessage {
  const stream = new PassThrough() as PassThrough & IncomingMessage;
  (stream as { headers: Record<string, string> }).headers = headers;
  return stream;
}

async function failure(promise: Promise<unknown>): Promise<unknown> {
  try {
    await promise;
  } catch (err) {
    return err;
  }
  return "resolved";
}

function parseCode(text: string): string {
  try {
    parseJsonStrict(Buffer.from(text, "utf8"));
  } catch (err) {
    return err instanceof TollgateError ? `${err.status} ${err.code}` : `non-TollgateError: ${String(err)}`;
  }
  return "ok";
}

t.test("a declared Content-Length over the bound is refused before any byte is read", async (t) => {
  const req = fakeRequest({ "content-length": "1025" });
  // The stream never ends: if readBody waited for data the test would time out.
  const err = await failure(readBody(req, 1024));
  t.ok(err instanceof TollgateError);
  t.match(err, { code: "body_too_large", status: 413 });
  t.equal(req.listenerCount("data"), 0, "nothing is listening to the body");
});

t.test("a body of exactly the bound is read whole", async (t) => {
  const req = fakeRequest({ "content-length": "1024" });
  const pending = readBody(req, 1024);
  req.write(Buffer.alloc(600, "a"));
  req.end(Buffer.alloc(424, "b"));
  const body = await pending;
  t.equal(body.length, 1024);
  t.equal(body.toString(), "a".repeat(600) + "b".repeat(424), "chunks are concatenated in order");
});

t.test("an empty body reads as an empty buffer", async (t) => {
  const req = fakeRequest({ "content-length": "0" });
  const pending = readBody(req, 10);
  req.end();
  t.equal((await pending).length, 0);
});

t.test("a streamed body without Content-Length is refused once it actually passes the bound", async (t) => {
  const req = fakeRequest({ "transfer-encoding": "chunked" });
  const pending = readBody(req, 100);
  req.write(Buffer.alloc(60));
  req.write(Buffer.alloc(41));
  const err = await failure(pending);
  t.match(err, { code: "body_too_large", status: 413 });
  t.equal(req.listenerCount("data"), 0, "readBody stops listening");
  t.ok(req.isPaused(), "and pauses the stream rather than draining an unbounded body");
});

t.test("a Content-Length that understates the body does not let more through", async (t) => {
  const req = fakeRequest({ "content-length": "5" });
  const pending = readBody(req, 100);
  req.write(Buffer.alloc(50));
  req.write(Buffer.alloc(51));
  t.match(await failure(pending), { code: "body_too_large" });
});

t.test("an unparseable Content-Length falls back to counting", async (t) => {
  const small = fakeRequest({ "content-length": "lots" });
  const ok = readBody(small, 10);
  small.end("0123456789");
  t.equal((await ok).toString(), "0123456789");
  const big = fakeRequest({ "content-length": "lots" });
  const tooBig = readBody(big, 10);
  big.end("0123456789A");
  t.match(await failure(tooBig), { code: "body_too_large" });
});

t.test("stream errors and client aborts reject", async (t) => {
  const broken = fakeRequest();
  const p1 = readBody(broken, 100);
  broken.emit("error", new Error("boom"));
  t.match(await failure(p1), { message: "boom" });
  const aborted = fakeRequest();
  const p2 = readBody(aborted, 100);
  aborted.emit("aborted");
  t.match(await failure(p2), { message: /aborted/ });
  t.equal(aborted.listenerCount("data") + aborted.listenerCount("end"), 0, "listeners are cleaned up");
});

t.test("over a real socket: chunked uploads are bounded by their actual size", async (t) => {
  const server = createServer((req, res) => {
    readBody(req, 4096).then(
      (body) => res.writeHead(200, { connection: "close" }).end(`read ${body.length}`),
      (err: TollgateError) => res.writeHead(err.status ?? 500, { connection: "close" }).end(String(err.code)),
    );
  });
  server.listen(0, "127.0.0.1");
  await once(server, "listening");
  t.teardown(() => new Promise<void>((r) => server.close(() => r())));
  const port = (server.address() as { port: number }).port;
  const upload = (chunks: number[]) =>
    new Promise<{ status: number; text: string }>((resolve, reject) => {
      const req = request({ host: "127.0.0.1", port, method: "POST", path: "/", headers: { "transfer-encoding": "chunked" } }, (res) => {
        let text = "";
        res.setEncoding("utf8");
        res.on("data", (c: string) => (text += c));
        res.on("end", () => resolve({ status: res.statusCode!, text }));
      });
      req.on("error", reject);
      for (const n of chunks) req.write(Buffer.alloc(n, "x"));
      req.end();
    });
  t.same(await upload([2048, 2048]), { status: 200, text: "read 4096" });
  t.same(await upload([2048, 2048, 1]), { status: 413, text: "body_too_large" });
});

t.test("parseJsonStrict returns what JSON.parse returns for well-formed JSON", async (t) => {
  const text = '{"model":"gpt-4o","messages":[{"role":"user","content":"hi"},{"role":"user","content":"again"}],"n":1,"x":null,"s":"\\u00e9"}';
  t.same(parseJsonStrict(Buffer.from(text)), JSON.parse(text));
  t.same(parseJsonStrict(Buffer.from("[1,2]")), [1, 2]);
  t.equal(parseJsonStrict(Buffer.from('"model"')), "model");
});

t.test("malformed JSON is invalid_json", async (t) => {
  for (const text of ["", "{", '{"model":}', '{"model":"a",}', '{"a":1}x', "{'model':'a'}", '// c\n{"a":1}', '{"a":1 /* c */}', "NaN", '{"a":01}', "\ufeff{}", '{"a":"\u0001"}']) {
    t.equal(parseCode(text), "400 invalid_json", JSON.stringify(text));
  }
});

t.test("a repeated key at the top level is duplicate_json_key", async (t) => {
  t.equal(parseCode('{"model":"gpt-4o-mini","model":"o1-pro"}'), "400 duplicate_json_key");
  t.equal(parseCode('{"model":"gpt-4o-mini","messages":[],"model":"gpt-4o-mini"}'), "400 duplicate_json_key", "even with the same value");
  t.equal(parseCode('{"__proto__":1,"__proto__":2}'), "400 duplicate_json_key");
});

t.test("a repeated key in a nested object or in an object inside an array is duplicate_json_key", async (t) => {
  t.equal(parseCode('{"a":{"b":1,"b":2}}'), "400 duplicate_json_key");
  t.equal(parseCode('{"messages":[{"role":"user","role":"system","content":"x"}]}'), "400 duplicate_json_key");
  t.equal(parseCode('[{"x":1,"x":2}]'), "400 duplicate_json_key");
  t.equal(parseCode('{"a":{"b":{"c":{"d":1,"d":1}}}}'), "400 duplicate_json_key");
  t.equal(parseCode('{"model":{"x":1},"model":"gpt-4o-mini"}'), "400 duplicate_json_key", "a repeat after a nested object closes");
});

t.test("keys that are equal once unescaped are duplicates", async (t) => {
  t.equal(parseCode('{"model":"gpt-4o-mini","\\u006dodel":"o1-pro"}'), "400 duplicate_json_key");
  t.equal(parseCode('{"\\u006D\\u006F\\u0064\\u0065\\u006C":"o1-pro","model":"gpt-4o-mini"}'), "400 duplicate_json_key");
  t.equal(parseCode('{"mod\\u0065l":"o1-pro","model":"gpt-4o-mini"}'), "400 duplicate_json_key");
  t.equal(parseCode('{"a/b":1,"a\\/b":2}'), "400 duplicate_json_key");
  t.equal(parseCode('{"x":{"\\u0074ool":1,"tool":2}}'), "400 duplicate_json_key", "nested and escaped");
});

t.test("the same key in sibling or nested objects is not a duplicate", async (t) => {
  t.equal(parseCode('{"a":{"x":1},"b":{"x":1}}'), "ok");
  t.equal(parseCode('{"x":{"x":{"x":1}}}'), "ok");
  t.equal(parseCode('{"a":{"model":"o1-pro"},"model":"gpt-4o-mini"}'), "ok", "a key inside a closed object does not clash with its parent's");
  t.equal(parseCode('[{"role":"user"},{"role":"assistant"}]'), "ok");
  t.equal(parseCode('{"model":"a","Model":"b","MODEL":"c"}'), "ok", "keys are case-sensitive");
  t.equal(parseCode('{"model":"a","model ":"b"}'), "ok");
});
