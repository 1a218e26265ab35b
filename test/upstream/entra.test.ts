/**
 * The Entra upstream credential through the real @azure/identity code path: ManagedIdentityCredential finds
 * the App Service identity endpoint (IDENTITY_ENDPOINT + IDENTITY_HEADER) that this file runs on 127.0.0.1.
 * The stand-in counts calls, can fail (400, which MSAL does not retry) or hang, and issues tokens with a
 * chosen lifetime. Lifetimes stay under MSAL's own 5-minute renewal offset, so every getToken reaches it.
 */
import t, { type Test } from "tap";
import { createServer, type ServerResponse } from "node:http";
import { once } from "node:events";
import { writeFileSync } from "node:fs";
import { join } from "node:path";
import { startHarness, makeKey, SERVER_BLOCK, until, tempDir, type Harness } from "../helpers/harness.ts";
import { check } from "../../src/cli/check.ts";

const IDENTITY_HEADER = "stand-in-identity-header-secret";

const idp = {
  mode: "ok" as "ok" | "fail" | "hang",
  delayMs: 0,
  lifetimeSec: 60,
  calls: 0,
  callTimes: [] as number[],
  failureTimes: [] as number[],
  issued: [] as { token: string; expiresAt: number }[],
  hung: new Set<ServerResponse>(),
  reset(lifetimeSec: number, delayMs = 0) {
    Object.assign(idp, { mode: "ok", delayMs, lifetimeSec, calls: 0, callTimes: [], failureTimes: [], issued: [] });
  },
  latest: () => idp.issued.at(-1)!,
  releaseHung() {
    for (const res of idp.hung) res.destroy();
    idp.hung.clear();
  },
};
let serial = 0;

const msi = createServer((req, res) => {
  idp.calls++;
  idp.callTimes.push(Date.now());
  const url = new URL(req.url!, "http://x");
  if (req.headers["x-identity-header"] !== IDENTITY_HEADER || url.searchParams.get("resource") !== "https://cognitiveservices.azure.com") {
    return void res.writeHead(400, { "content-type": "application/json" }).end(JSON.stringify({ error: "unexpected identity request" }));
  }
  if (idp.mode === "hang") return void idp.hung.add(res);
  if (idp.mode === "fail") {
    idp.failureTimes.push(Date.now());
    return void res.writeHead(400, { "content-type": "application/json" }).end(JSON.stringify({ error: "invalid_request", error_description: "identity not available" }));
  }
  const expiresOn = Math.floor(Date.now() / 1000) + idp.lifetimeSec;
  const token = `mi-token-${++serial}`;
  idp.issued.push({ token, expiresAt: expiresOn * 1000 });
  const body = JSON.stringify({ access_token: token, expires_on: String(expiresOn), resource: "https://cognitiveservices.azure.com", token_type: "Bearer" });
  setTimeout(() => res.writeHead(200, { "content-type": "application/json" }).end(body), idp.delayMs);
});
msi.listen(0, "127.0.0.1");
await once(msi, "listening");
process.env.IDENTITY_ENDPOINT = `http://127.0.0.1:${(msi.address() as { port: number }).port}/msi/token`;
process.env.IDENTITY_HEADER = IDENTITY_HEADER;
t.teardown(() => {
  idp.releaseHung();
  msi.closeAllConnections();
  msi.close();
});

const app = makeKey();
function policy(credential: string): string {
  return `${SERVER_BLOCK}
upstreams:
  azure:
    url: "\${UPSTREAM_URL}"
    credential:
      type: entra
      credential: { type: managed_identity }
${credential}
authenticators:
  - name: keys
    type: api_key
    keys: [{ id: app, hash: "${app.hash}", roles: [user] }]
routes:
  - { name: chat, methods: [POST], paths: [/v1/chat/completions], upstream: azure, allow: [{ roles: [user] }] }
`;
}

async function start(t: Test, credential: string): Promise<Harness> {
  const h = await startHarness(policy(credential));
  t.teardown(() => h.stop());
  return h;
}

interface Reply {
  status: number;
  headers: Headers;
  body: { error?: { code?: string; type?: string; message?: string } };
  ms: number;
}
async function chat(h: Harness, header: "authorization" | "api-key" = "authorization"): Promise<Reply> {
  const started = Date.now();
  const res = await fetch(`${h.url}/v1/chat/completions`, {
    method: "POST",
    headers: { [header]: header === "authorization" ? `Bearer ${app.key}` : app.key, "content-type": "application/json" },
    body: JSON.stringify({ model: "gpt-4o", messages: [{ role: "user", content: "hi" }] }),
    signal: AbortSignal.timeout(10_000),
  });
  return { status: res.status, headers: res.headers, body: (await res.json()) as Reply["body"], ms: Date.now() - started };
}

async function readyz(h: Harness): Promise<{ status: number; body: { status: string; upstreams: Record<string, { ready: boolean; detail?: string }> } }> {
  const res = await fetch(`${h.adminUrl}/readyz`, { signal: AbortSignal.timeout(5000) });
  return { status: res.status, body: (await res.json()) as never };
}

/** One sample of a Prometheus series whose labels include `labels`; undefined when absent. */
async function metric(h: Harness, name: string, labels: Record<string, string>): Promise<number | undefined> {
  const text = await (await fetch(`${h.adminUrl}/metrics`, { signal: AbortSignal.timeout(5000) })).text();
  for (const line of text.split("\n")) {
    const m = /^(\w+)(?:\{(.*)\})? (\S+)$/.exec(line);
    if (!m || m[1] !== name) continue;
    const have = Object.fromEntries([...(m[2] ?? "").matchAll(/(\w+)="([^"]*)"/g)].map((x) => [x[1], x[2]]));
    if (Object.entries(labels).every(([k, v]) => have[k] === v)) return Number(m[3]);
  }
  return undefined;
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const lastAuthorizations = (h: Harness, n: number) => h.upstream.seen.slice(-n).map((s) => s.headers.authorization);

t.test("a token is acquired at start, cached across requests, and refreshed by the timer before it expires", async (t) => {
  idp.reset(4);
  const h = await start(t, "      refreshBefore: 1500ms\n      timeout: 2s");
  await until(() => idp.issued.length === 1, 3000, "the token fetched at start, with no request");
  t.equal(idp.calls, 1);
  const first = idp.latest();
  t.equal((await readyz(h)).status, 200, "/readyz is 200 once the token is there");
  const expiry = await metric(h, "tollgate_upstream_credential_expiry_seconds", { upstream: "azure" });
  t.ok(expiry !== undefined && expiry > 0 && expiry <= 4, `expiry gauge ${expiry}s`);

  const replies = await Promise.all(Array.from({ length: 30 }, () => chat(h)));
  t.same(new Set(replies.map((r) => r.status)), new Set([200]));
  t.same(new Set(lastAuthorizations(h, 30)), new Set([`Bearer ${first.token}`]), "every request carries the cached token");
  t.equal(idp.calls, 1, "30 requests, still one identity call");

  const seenBefore = h.upstream.seen.length;
  await until(() => idp.issued.length === 2, 5000, "the timer refresh");
  t.equal(h.upstream.seen.length, seenBefore, "no request was sent meanwhile: the timer refreshed");
  const refreshedAt = idp.callTimes[1]!;
  t.ok(refreshedAt < first.expiresAt, `refreshed ${first.expiresAt - refreshedAt} ms before the first token expired`);
  // expires_on has whole seconds and MSAL re-derives the expiry from it: allow a second of slack.
  t.ok(refreshedAt >= first.expiresAt - 1500 - 1000, "not at once, but about refreshBefore ahead of expiry");
  await until(async () => (await metric(h, "tollgate_upstream_credential_refreshes_total", { upstream: "azure", result: "success" })) === 2, 2000, "the refresh to land");
  t.equal((await chat(h)).status, 200);
  t.equal(h.upstream.seen.at(-1)!.headers.authorization, `Bearer ${idp.issued[1]!.token}`, "requests carry the new token");
});

t.test("200 concurrent requests while no token exists yet share exactly one fetch", async (t) => {
  idp.reset(60, 400);
  const h = await start(t, "      refreshBefore: 5s\n      timeout: 3s");
  const replies = await Promise.all(Array.from({ length: 200 }, () => chat(h)));
  t.same(new Set(replies.map((r) => r.status)), new Set([200]), "all 200 pass");
  t.equal(idp.calls, 1, "one identity call for 200 requests");
  t.same(new Set(lastAuthorizations(h, 50)), new Set([`Bearer ${idp.latest().token}`]));
});

t.test("identity endpoint failing: cached token, backoff, failure metric; then a prompt 503; one fetch for 200 on recovery", async (t) => {
  idp.reset(5);
  const h = await start(t, "      refreshBefore: 4s\n      timeout: 2s");
  await until(() => idp.issued.length === 1, 3000, "the first token");
  const token = idp.latest();
  idp.mode = "fail";
  await until(() => idp.failureTimes.length >= 2, 4000, "two failed refreshes");
  t.ok(Date.now() < token.expiresAt, "the token is still valid");
  const during = await chat(h);
  t.equal(during.status, 200, "requests still pass while the token is valid");
  t.equal(h.upstream.seen.at(-1)!.headers.authorization, `Bearer ${token.token}`, "with the cached token");

  await until(() => idp.failureTimes.length >= 3, 5000, "a third retry");
  const [f1, f2, f3] = idp.failureTimes as [number, number, number];
  t.ok(f2 - f1 >= 900 && f3 - f2 >= 1800, `retries back off: ${f2 - f1} ms, then ${f3 - f2} ms`);
  t.ok((await metric(h, "tollgate_upstream_credential_refreshes_total", { upstream: "azure", result: "failure" }))! >= 3, "failures counted");

  await until(() => Date.now() > token.expiresAt + 50, 5000, "the token to expire");
  const refused = await chat(h);
  t.equal(refused.status, 503);
  t.match(refused.body, { error: { code: "upstream_credential_unavailable", type: "api_error", message: String } });
  // "5" when this request's own fetch failed; "1" when it came within a second of a failed attempt (the refresher
  // does not start another fetch for each request then, and tells the client when the next one may happen).
  t.match(refused.headers.get("retry-after"), /^[15]$/, "Retry-After: 5 after its own failed fetch, 1 during the pause between attempts");
  t.ok(refused.ms < 1000, `refused promptly (${refused.ms} ms)`);
  await until(async () => (await readyz(h)).body.upstreams.azure?.detail === "no valid credential (fetch_failed)", 3000, "readyz detail");
  const degraded = await readyz(h);
  t.equal(degraded.status, 503, "/readyz is 503 while no token can be had");
  t.match(degraded.body, { status: "degraded", upstreams: { azure: { ready: false } } });

  // Right after a failed attempt the next retry is at least a second away: only the burst can fetch now.
  const failures = idp.failureTimes.length;
  await until(() => idp.failureTimes.length > failures, 10_000, "another failed retry");
  await until(async () => (await readyz(h)).body.upstreams.azure?.detail === "no valid credential (fetch_failed)", 500, "that retry to settle");
  Object.assign(idp, { mode: "ok", delayMs: 300, lifetimeSec: 60 }); // a long-lived token: no timer refresh mid-burst
  // Within a second of a failure requests fail fast rather than each calling the identity endpoint.
  const fast = await chat(h);
  t.equal(fast.status, 503);
  t.ok(fast.ms < 200, `right after a failure a request is refused at once (${fast.ms} ms)`);
  await new Promise((r) => setTimeout(r, 1100));
  const callsBefore = idp.calls;
  const burst = await Promise.all(Array.from({ length: 200 }, () => chat(h)));
  t.same(new Set(burst.map((r) => r.status)), new Set([200]), "recovered without a restart");
  t.equal(idp.calls - callsBefore, 1, "200 requests on an expired token: exactly one refresh");
  t.same(new Set(lastAuthorizations(h, 50)), new Set([`Bearer ${idp.latest().token}`]));
  t.equal((await readyz(h)).status, 200, "/readyz is 200 again");
});

t.test("fallbackApiKey: api-key upstream while no token, counted; /readyz stays 200 with a detail", async (t) => {
  idp.reset(60);
  idp.mode = "fail";
  const h = await start(t, "      refreshBefore: 5s\n      timeout: 2s\n      fallbackApiKey: azure-fallback-key");
  await until(() => idp.failureTimes.length >= 1, 3000, "the failed first fetch");
  const reply = await chat(h, "api-key");
  t.equal(reply.status, 200);
  const seen = h.upstream.seen.at(-1)!;
  t.equal(seen.headers["api-key"], "azure-fallback-key", "the fallback key replaces the client's api-key");
  t.equal(seen.headers.authorization, undefined, "no Authorization without a token");
  t.notOk(JSON.stringify(seen.headers).includes(app.key), "the client's key never reaches the upstream");
  t.equal(await metric(h, "tollgate_upstream_credential_fallbacks_total", { upstream: "azure" }), 1);
  const ready = await readyz(h);
  t.equal(ready.status, 200);
  t.match(ready.body.upstreams.azure, { ready: true, detail: /^using the fallback API key: / });

  idp.mode = "ok";
  await until(async () => (await chat(h)).status === 200 && h.upstream.seen.at(-1)!.headers.authorization !== undefined, 3000, "a token");
  t.equal(h.upstream.seen.at(-1)!.headers.authorization, `Bearer ${idp.latest().token}`);
  t.equal(h.upstream.seen.at(-1)!.headers["api-key"], undefined, "no api-key next to the token");
  // Requests that arrived within a second of the last failure still used the fallback (no identity call storm);
  // once a token exists, none does.
  const fallbacks = await metric(h, "tollgate_upstream_credential_fallbacks_total", { upstream: "azure" });
  for (let i = 0; i < 3; i++) t.equal((await chat(h)).status, 200);
  t.equal(await metric(h, "tollgate_upstream_credential_fallbacks_total", { upstream: "azure" }), fallbacks, "no more fallbacks");
  t.same((await readyz(h)).body.upstreams.azure, { ready: true }, "no fallback detail once a token is held");
});

t.test("a token that lives shorter than refreshBefore is not refetched in a tight loop", async (t) => {
  idp.reset(3);
  await start(t, "      timeout: 2s"); // refreshBefore defaults to 5m, longer than the token lives
  await until(() => idp.calls >= 1, 3000, "the first token");
  await sleep(1500);
  const gaps = idp.callTimes.slice(1).map((at, i) => at - idp.callTimes[i]!);
  t.ok(idp.calls <= 3, `identity endpoint called ${idp.calls} times in ~1.5 s (gaps ${gaps.join(", ")} ms)`);
});

t.test("`tollgate check` of a workload identity policy off the pod: the webhook's variables are runtime notes, not errors", async (t) => {
  // AZURE_CLIENT_ID, AZURE_TENANT_ID and AZURE_FEDERATED_TOKEN_FILE exist only inside the AKS pod (injected by
  // the workload identity webhook), like the pod's other variables that check reports as notes.
  const saved = { AZURE_CLIENT_ID: process.env.AZURE_CLIENT_ID, AZURE_TENANT_ID: process.env.AZURE_TENANT_ID, AZURE_FEDERATED_TOKEN_FILE: process.env.AZURE_FEDERATED_TOKEN_FILE };
  for (const k of Object.keys(saved)) delete process.env[k];
  t.teardown(() => Object.assign(process.env, Object.fromEntries(Object.entries(saved).filter(([, v]) => v !== undefined))));
  const file = join(tempDir(), "wi.yaml");
  const text = policy("      credential: { type: workload_identity }").replace("      credential: { type: managed_identity }\n", "");
  writeFileSync(file, text.replace("${UPSTREAM_URL}", "https://my-resource.openai.azure.com"));
  const lines: string[] = [];
  t.equal(await check([file], (l) => lines.push(l)), 0, lines.join("\n"));
});

// Last: a getToken abandoned at `timeout` lives on inside @azure/identity, which retries it once the hung
// socket closes, so this test's identity calls can outlast its Tollgate and would blur other tests' counts.
t.test("a hanging identity endpoint: Tollgate listens, /readyz says why, requests get a 503 within about `timeout`", async (t) => {
  idp.reset(60);
  idp.mode = "hang";
  const started = Date.now();
  const h = await start(t, "      refreshBefore: 5s\n      timeout: 800ms");
  t.ok(Date.now() - started < 3000, "startup does not wait for the identity endpoint");
  const early = await readyz(h);
  t.equal(early.status, 503);
  t.match(early.body, { status: "degraded", upstreams: { azure: { ready: false, detail: /fetching credential|no valid credential/ } } });

  const first = await chat(h);
  t.equal(first.status, 503);
  t.match(first.body, { error: { code: "upstream_credential_unavailable" } });
  t.equal(first.headers.get("retry-after"), "5");
  t.ok(first.ms < 1500, `the first request joined the start-up fetch and returned in ${first.ms} ms`);
  await until(async () => (await readyz(h)).body.upstreams.azure?.detail === "no valid credential (timeout)", 3000, "readyz timeout detail");
  const second = await chat(h);
  t.equal(second.status, 503);
  t.ok(second.ms < 200, `within a second of the timeout a request is refused at once (${second.ms} ms)`);
  await new Promise((r) => setTimeout(r, 1100));
  const third = await chat(h);
  t.equal(third.status, 503);
  t.ok(third.ms < 1600, `then a request waits for at most one bounded fetch, never longer (${third.ms} ms)`);
  t.ok(idp.hung.size >= 2, "the endpoint really was hanging");

  idp.mode = "ok";
  idp.releaseHung();
  await until(async () => (await chat(h)).status === 200, 4000, "recovery");
  t.equal(h.upstream.seen.at(-1)!.headers.authorization, `Bearer ${idp.latest().token}`);
  t.equal((await readyz(h)).status, 200);
});
