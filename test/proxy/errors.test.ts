import t from "tap";
import { PassThrough } from "node:stream";
import { TollgateError, errorResponse, sendErrorOnSocket, toTollgateError } from "../../src/proxy/errors.ts";

t.test("every error is the OpenAI shape with its status; 401s carry WWW-Authenticate", async (t) => {
  const r = errorResponse(new TollgateError("invalid_api_key"), ["x-correlation-id", "abc-123"]);
  t.equal(r.status, 401);
  t.same(JSON.parse(r.body), { error: { message: "The API key is not valid.", type: "authentication_error", code: "invalid_api_key", param: null } });
  t.match(r.headers["www-authenticate"], /^Bearer realm="tollgate", error="invalid_token"/);
  t.equal(r.headers["x-correlation-id"], "abc-123", "the configured request-id header is echoed");
  t.equal(r.headers["content-length"], String(Buffer.byteLength(r.body)));
  const forbidden = errorResponse(new TollgateError("model_not_allowed"));
  t.equal(forbidden.status, 403);
  t.equal(forbidden.headers["www-authenticate"], undefined);
  const limited = errorResponse(new TollgateError("shutting_down", undefined, { "retry-after": "1" }));
  t.equal(limited.headers["retry-after"], "1");
});

t.test("unknown errors become a generic 500 that reveals nothing", async (t) => {
  const e = toTollgateError(new Error("ECONNREFUSED 10.0.0.5:4000 secret=xyz"));
  t.equal(e.status, 500);
  t.equal(e.code, "internal");
  t.notMatch(e.message, /secret|10\.0\.0\.5/);
});

t.test("a refused upgrade gets a proper HTTP response on the raw socket", async (t) => {
  const socket = new PassThrough();
  let written = "";
  socket.on("data", (d) => (written += d));
  sendErrorOnSocket(socket, new TollgateError("missing_credential"), ["x-request-id", "ws-1"]);
  await new Promise((r) => socket.on("end", r));
  t.match(written, /^HTTP\/1\.1 401 Unauthorized\r\n/);
  t.match(written, /\r\nx-request-id: ws-1\r\n/);
  t.match(written, /\r\nwww-authenticate: Bearer /);
  t.match(written, /\r\n\r\n\{"error":\{"message":"No credential was sent/);
});
