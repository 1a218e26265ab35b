/** Operations: hot reload (file change, SIGHUP, invalid file kept out) and SIGTERM drain of an open stream. */
import t from "tap";
import { writeFileSync } from "node:fs";
import { join } from "node:path";
import { request } from "undici";
import { startHarness, makeKey, SERVER_BLOCK, tempDir, until } from "../helpers/harness.ts";
import { startServe } from "../helpers/process.ts";
import { startStandInUpstream } from "../../src/demo/stand-in-upstream.ts";

const policyWith = (hash: string, extra = "") => `${SERVER_BLOCK}
upstreams:
  llm: { url: "\${UPSTREAM_URL}" }
authenticators:
  - name: keys
    type: api_key
    keys: [{ id: k1, hash: "${hash}", roles: [user] }]
routes:
  - name: chat
    paths: [/v1/**]
    upstream: llm
    allow: [{ roles: [user] }]
${extra}`;

const chat = (url: string, key: string) =>
  request(`${url}/v1/chat/completions`, { method: "POST", headers: { authorization: `Bearer ${key}`, "content-type": "application/json" }, body: '{"model":"gpt-4o-mini","messages":[]}' });

t.test("a changed policy file is reloaded; an invalid one keeps the old policy running", async (t) => {
  const first = makeKey();
  const second = makeKey();
  const h = await startHarness(policyWith(first.hash));
  t.teardown(() => h.stop());
  t.equal((await (await chat(h.url, first.key)).body.dump(), (await chat(h.url, first.key)).statusCode), 200);

  writeFileSync(h.policyFile, policyWith(second.hash));
  await until(async () => (await chat(h.url, second.key)).statusCode === 200, 5000, "reload to the second key");
  t.equal((await chat(h.url, first.key)).statusCode, 401, "the first key is gone");

  writeFileSync(h.policyFile, policyWith(first.hash).replace("paths: [/v1/**]", "pathz: [/v1/**]"));
  await until(() => h.logs.some((l) => l.msg === "policy reload failed; keeping the running policy"), 5000, "reload failure log");
  t.equal((await chat(h.url, second.key)).statusCode, 200, "the running policy still serves");
  const failure = h.logs.find((l) => l.msg === "policy reload failed; keeping the running policy")!;
  const problems = failure.problems as { line: number; message: string }[];
  t.ok(problems.some((p) => p.line === 15 && /unknown key "pathz"/.test(p.message)), "the log names the line of the unknown key");
  t.ok(problems.some((p) => p.line === 14 && /required key "paths" is missing/.test(p.message)), "and the missing key");
  const metrics = await (await request(`${h.adminUrl}/metrics`)).body.text();
  t.match(metrics, /tollgate_config_reloads_total\{result="failure"\} 1/);
  t.match(metrics, /tollgate_config_reloads_total\{result="success"\} 1/);
});

t.test("SIGHUP reloads; SIGTERM drains an open stream, refuses new connections and exits 0", async (t) => {
  const upstream = await startStandInUpstream({ events: 8, intervalMs: 100 });
  t.teardown(() => upstream.close());
  const key = makeKey();
  const other = makeKey();
  const dir = tempDir();
  const file = join(dir, "policy.yaml");
  writeFileSync(file, policyWith(key.hash).replace("shutdownGrace: 2s", "shutdownGrace: 10s\n  watch: false"));
  const tg = await startServe(["--config", file], { UPSTREAM_URL: upstream.url });
  t.teardown(() => tg.child.kill("SIGKILL"));
  const url = `http://127.0.0.1:${tg.port}`;

  writeFileSync(file, policyWith(other.hash).replace("shutdownGrace: 2s", "shutdownGrace: 10s\n  watch: false"));
  tg.child.kill("SIGHUP");
  await until(async () => (await chat(url, other.key)).statusCode === 200, 5000, "SIGHUP reload");

  const res = await request(`${url}/v1/chat/completions`, {
    method: "POST",
    headers: { authorization: `Bearer ${other.key}`, "content-type": "application/json" },
    body: '{"model":"gpt-4o-mini","stream":true,"messages":[]}',
  });
  t.equal(res.statusCode, 200);
  let text = "";
  let signalled = false;
  for await (const chunk of res.body) {
    text += chunk;
    if (!signalled) {
      signalled = true;
      tg.child.kill("SIGTERM");
      // Readiness flips to draining at once, so load balancers stop sending.
      await until(async () => (await request(`http://127.0.0.1:${tg.adminPort}/readyz`).then((r) => r.statusCode, () => 0)) === 503, 3000, "readyz 503");
      await t.rejects(request(`${url}/v1/models`, { headers: { authorization: `Bearer ${other.key}` } }), "new connections are refused while draining");
    }
  }
  t.match(text, /data: \[DONE\]/, "the open stream finished in full");
  t.equal(text.split("tok").length - 1, 8, "every event arrived");
  t.equal(await tg.exited, 0, "exit 0 after a complete drain");
  t.match(tg.output(), /"msg":"draining"/);
});

t.test("a stream longer than the grace period is cut and the exit code says so", async (t) => {
  const upstream = await startStandInUpstream({ events: 50, intervalMs: 100 });
  t.teardown(() => upstream.close());
  const key = makeKey();
  const file = join(tempDir(), "policy.yaml");
  writeFileSync(file, policyWith(key.hash).replace("shutdownGrace: 2s", "shutdownGrace: 300ms"));
  const tg = await startServe(["--config", file], { UPSTREAM_URL: upstream.url });
  t.teardown(() => tg.child.kill("SIGKILL"));
  const res = await request(`http://127.0.0.1:${tg.port}/v1/chat/completions`, {
    method: "POST",
    headers: { authorization: `Bearer ${key.key}`, "content-type": "application/json" },
    body: '{"model":"gpt-4o-mini","stream":true,"messages":[]}',
  });
  tg.child.kill("SIGTERM");
  await t.rejects(res.body.text(), "the stream is cut at the deadline");
  t.equal(await tg.exited, 1);
  t.match(tg.output(), /grace period over/);
  await until(() => upstream.openStreams() === 0, 3000, "upstream stream aborted");
  t.equal(upstream.abortedStreams(), 1, "cutting the client aborted the upstream request");
});

t.test("audit lines are written in batches: each shows up while serving, and none is lost at SIGTERM", async (t) => {
  const upstream = await startStandInUpstream({});
  t.teardown(() => upstream.close());
  const key = makeKey();
  const file = join(tempDir(), "policy.yaml");
  writeFileSync(file, policyWith(key.hash));
  const tg = await startServe(["--config", file], { UPSTREAM_URL: upstream.url });
  t.teardown(() => tg.child.kill("SIGKILL"));
  const url = `http://127.0.0.1:${tg.port}`;
  const auditLines = () => tg.output().split("\n").filter((l) => l.includes('"log":"audit"'));

  const send = async (id: string) => {
    const res = await request(`${url}/v1/chat/completions`, {
      method: "POST",
      headers: { authorization: `Bearer ${key.key}`, "content-type": "application/json", "x-request-id": id },
      body: '{"model":"gpt-4o-mini","messages":[]}',
    });
    await res.body.text();
    t.equal(res.statusCode, 200);
  };
  await send("audit-first");
  // Batched lines are flushed every 250 ms while the process runs; a generous wait, this is not a timing test.
  await until(() => auditLines().some((l) => l.includes('"requestId":"audit-first"')), 5000, "the first audit line on stdout");

  const ids = Array.from({ length: 40 }, (_, i) => `audit-${i}`);
  for (const id of ids) await send(id);
  tg.child.kill("SIGTERM");
  t.equal(await tg.exited, 0);
  const lines = auditLines();
  t.equal(lines.length, 41, "one audit line per request, the buffered ones flushed at exit");
  t.same(ids.filter((i) => !lines.some((l) => l.includes(`"requestId":"${i}"`))), [], "every request id is in the audit log");
});
