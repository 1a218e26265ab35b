/** Header hygiene in both directions: hop-by-hop, Connection-named, credential and Tollgate-owned headers. */
import t from "tap";
import { buildHeaderPolicy, checkRawHeaders, forwardableRequestHeaders, forwardableResponseHeaders, CREDENTIAL_HEADERS } from "../../src/proxy/headers.ts";
import { extractCredential } from "../../src/auth/credential.ts";
import { TollgateError } from "../../src/proxy/errors.ts";

// Identity headers as a policy would configure them: one in Tollgate's namespace, one outside it.
const policy = buildHeaderPolicy(["x-tollgate-user", "X-Forwarded-User"]);

/** The error code `fn` throws, "none" when it returns. */
function thrown(fn: () => unknown): string {
  try {
    fn();
  } catch (err) {
    return err instanceof TollgateError ? `${err.status} ${err.code}` : `non-TollgateError: ${String(err)}`;
  }
  return "none";
}

t.test("buildHeaderPolicy owns the credential headers plus the configured identity headers, lower-cased", async (t) => {
  t.same([...CREDENTIAL_HEADERS].sort(), ["api-key", "authorization", "proxy-authorization", "x-api-key"]);
  for (const h of [...CREDENTIAL_HEADERS, "x-tollgate-user", "x-forwarded-user"]) t.ok(policy.owned.has(h), h);
  t.notOk(policy.owned.has("X-Forwarded-User"), "names are stored lower-case");
  t.notOk(policy.owned.has("content-type"));
});

t.test("hop-by-hop request headers are removed, end-to-end ones kept", async (t) => {
  const out = forwardableRequestHeaders(
    {
      connection: "keep-alive", "keep-alive": "timeout=5", "proxy-connection": "keep-alive", te: "trailers", trailer: "x-checksum",
      "transfer-encoding": "chunked", upgrade: "h2c", expect: "100-continue", host: "tollgate:8080", "http2-settings": "AAMAAABkAAQAAP__",
      "content-type": "application/json", "content-length": "12", accept: "text/event-stream", "user-agent": "sdk/1.0", "openai-beta": "assistants=v2",
      "x-forwarded-for": "10.0.0.1", "set-cookie": ["a=1", "b=2"],
    },
    policy,
  );
  t.same(out, {
    "content-type": "application/json", "content-length": "12", accept: "text/event-stream", "user-agent": "sdk/1.0", "openai-beta": "assistants=v2",
    "x-forwarded-for": "10.0.0.1", "set-cookie": ["a=1", "b=2"],
  });
});

t.test("headers named in the client's Connection header are removed", async (t) => {
  const out = forwardableRequestHeaders({ connection: "X-Foo,  x-bar ,close", "x-foo": "1", "x-bar": "2", "x-baz": "3", accept: "*/*" }, policy);
  t.same(out, { "x-baz": "3", accept: "*/*" });
  const list = forwardableRequestHeaders({ connection: ["x-one", "X-Two, keep-alive"] as unknown as string, "x-one": "1", "x-two": "2", "x-three": "3" }, policy);
  t.same(list, { "x-three": "3" }, "a Connection header sent as a list works too");
  const only = forwardableRequestHeaders({ connection: "close, keep-alive", "x-foo": "1" }, policy);
  t.same(only, { "x-foo": "1" }, "close and keep-alive tokens name nothing");
});

t.test("credential headers and every x-tollgate-* header from the client are stripped", async (t) => {
  const out = forwardableRequestHeaders(
    {
      authorization: "Bearer tg_client", "x-api-key": "tg_client", "api-key": "tg_client", "proxy-authorization": "Basic eDp5",
      "x-tollgate-user": "root", "x-tollgate-team": "admins", "x-tollgate-anything-new": "1", "x-forwarded-user": "root",
      "x-tollgateuser": "kept: not the prefix", "x-request-id": "abc",
    },
    policy,
  );
  t.same(out, { "x-tollgateuser": "kept: not the prefix", "x-request-id": "abc" });
  t.notOk(JSON.stringify(out).includes("tg_client"));
});

t.test("a Connection header naming Tollgate's headers cannot remove what Tollgate adds afterwards", async (t) => {
  const incoming = { connection: "x-tollgate-user, authorization, x-request-id, x-forwarded-for", "x-tollgate-user": "root", authorization: "Bearer tg_client", "x-forwarded-for": "6.6.6.6" };
  const out = forwardableRequestHeaders(incoming, policy);
  t.same(out, {}, "the client's versions are gone");
  t.notOk("connection" in out, "no Connection header survives to name Tollgate's own headers further down (end to end: test/e2e/hygiene.test.ts)");
});

t.test("upgrades keep Upgrade and Connection but still lose credentials and Connection-named headers", async (t) => {
  const out = forwardableRequestHeaders({ connection: "Upgrade", upgrade: "websocket", "sec-websocket-key": "dGhlIHNhbXBsZSBub25jZQ==", "sec-websocket-version": "13", authorization: "Bearer tg_x", "x-tollgate-user": "root" }, policy, true);
  t.same(out, { connection: "Upgrade", upgrade: "websocket", "sec-websocket-key": "dGhlIHNhbXBsZSBub25jZQ==", "sec-websocket-version": "13" }, "every WebSocket client sends `Connection: Upgrade`; the upgrade header must survive it");
  const named = forwardableRequestHeaders({ connection: "upgrade, x-secret", upgrade: "websocket", "x-secret": "1" }, policy, true);
  t.equal(named["x-secret"], undefined, "other Connection-named headers still go");
  const plain = forwardableRequestHeaders({ connection: "upgrade", upgrade: "websocket" }, policy, false);
  t.same(plain, {}, "without keepUpgrade both are hop-by-hop");
});

t.test("response headers lose hop-by-hop and Connection-named headers, keep the rest", async (t) => {
  const out = forwardableResponseHeaders({
    connection: "keep-alive, X-Upstream-Internal", "keep-alive": "timeout=5", "transfer-encoding": "chunked", upgrade: "h2c", trailer: "x", "proxy-authenticate": "Basic",
    "x-upstream-internal": "secret", "content-type": "text/event-stream", "cache-control": "no-cache", "set-cookie": ["a=1", "b=2"], "x-ratelimit-remaining": "9", "x-missing": undefined,
  });
  t.same(out, { "content-type": "text/event-stream", "cache-control": "no-cache", "set-cookie": ["a=1", "b=2"], "x-ratelimit-remaining": "9" });
});

t.test("underscore spellings of owned headers are rejected", async (t) => {
  for (const name of ["x_api_key", "X_API_KEY", "api_key", "proxy_authorization", "x_tollgate_user", "X_Tollgate_User", "x_tollgate_anything", "x-tollgate_user", "x_forwarded_user"]) {
    t.equal(thrown(() => checkRawHeaders([name, "v"], policy)), "400 bad_header", name);
  }
  t.equal(thrown(() => checkRawHeaders(["x_custom_trace", "1", "x-api-key", "k"], policy)), "none", "an underscore in a header Tollgate does not own is fine");
});

t.test("an owned header repeated with different values is refused; repeated identically it is not", async (t) => {
  t.equal(thrown(() => checkRawHeaders(["Authorization", "Bearer tg_a", "authorization", "Bearer tg_b"], policy)), "400 multiple_credentials");
  t.equal(thrown(() => checkRawHeaders(["x-api-key", "tg_a", "Accept", "*/*", "X-API-KEY", "tg_b"], policy)), "400 multiple_credentials");
  t.equal(thrown(() => checkRawHeaders(["api-key", "tg_a", "api-key", "tg_a "], policy)), "400 multiple_credentials", "values are compared exactly");
  t.equal(thrown(() => checkRawHeaders(["x-tollgate-user", "alice", "x-tollgate-user", "root"], policy)), "400 multiple_credentials", "identity headers too");
  t.equal(thrown(() => checkRawHeaders(["authorization", "Bearer tg_a", "authorization", "Bearer tg_a"], policy)), "none");
  t.equal(thrown(() => checkRawHeaders(["authorization", "Bearer tg_a", "x-api-key", "tg_b"], policy)), "none", "different headers are extractCredential's business");
  t.equal(thrown(() => checkRawHeaders(["accept", "a", "accept", "b"], policy)), "none", "repeats of ordinary headers are fine");
});

t.test("extractCredential: one credential, or the same one twice; never two", async (t) => {
  t.same(extractCredential({ authorization: "Bearer tg_a" }), { header: "authorization", scheme: "bearer", value: "tg_a" });
  t.same(extractCredential({ "x-api-key": " tg_a " }), { header: "x-api-key", scheme: "key", value: "tg_a" });
  t.same(extractCredential({ "api-key": "tg_a" }), { header: "api-key", scheme: "key", value: "tg_a" });
  t.same(extractCredential({ authorization: "Bearer tg_a", "x-api-key": "tg_a", "api-key": "tg_a" }), { header: "authorization", scheme: "bearer", value: "tg_a" });
  t.equal(extractCredential({}), undefined);
  t.equal(thrown(() => extractCredential({ authorization: "Bearer tg_a", "x-api-key": "tg_b" })), "400 multiple_credentials");
  t.equal(thrown(() => extractCredential({ "x-api-key": "tg_a", "api-key": "tg_b" })), "400 multiple_credentials");
  t.equal(thrown(() => extractCredential({ authorization: "Bearer" })), "401 unrecognized_credential");
  t.equal(thrown(() => extractCredential({ "x-api-key": "  " })), "401 unrecognized_credential");
});
