/** The `tollgate` CLI as a user runs it: check, schema, keys new, serve on embedded defaults, demo. */
import t from "tap";
import { readdirSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { request } from "undici";
import { runCli, startServe } from "../helpers/process.ts";
import { tempDir } from "../helpers/harness.ts";
import { startStandInUpstream } from "../../src/demo/stand-in-upstream.ts";
import { hashApiKey } from "../../src/auth/keys.ts";

t.test("`check` passes on every example policy in policies/", async (t) => {
  const files = readdirSync("policies").filter((f) => f.endsWith(".yaml")).map((f) => join("policies", f));
  t.ok(files.length >= 1);
  const r = await runCli(["check", ...files]);
  t.equal(r.code, 0, r.stdout + r.stderr);
  for (const f of files) t.match(r.stdout, `${f}: ok`);
});

t.test("`check` names the file, line and key of a problem and exits 1", async (t) => {
  const file = join(tempDir(), "bad.yaml");
  writeFileSync(file, "version: 1\nupstreams:\n  llm: { url: http://x, retries: 3 }\nroutes: []\n");
  const r = await runCli(["check", file]);
  t.equal(r.code, 1);
  t.match(r.stdout, `${file}:3:`);
  t.match(r.stdout, /upstreams\.llm\.retries: unknown key "retries"/);
  t.match(r.stdout, /routes: .*>=1|routes: .*at least/i);
});

t.test("`check` lists runtime-only variables as notes; `--strict` fails on them like `serve` would", async (t) => {
  const file = join(tempDir(), "p.yaml");
  writeFileSync(file, 'version: 1\nupstreams:\n  llm:\n    url: http://127.0.0.1:4000\n    credential: { type: static, value: "Bearer ${TG_TEST_UNSET_MASTER}" }\nroutes: [{ name: r, paths: [/x], upstream: llm, allow: [{ public: true }] }]\n');
  const lenient = await runCli(["check", file]);
  t.equal(lenient.code, 0);
  t.match(lenient.stdout, `note: ${file}:5:40: upstreams.llm.credential.value: environment variable TG_TEST_UNSET_MASTER is not set`);
  const strict = await runCli(["check", "--strict", file]);
  t.equal(strict.code, 1);
  t.match(strict.stdout, /TG_TEST_UNSET_MASTER is not set/);
  const set = await runCli(["check", "--strict", file], { TG_TEST_UNSET_MASTER: "x" });
  t.equal(set.code, 0);
});

t.test("`schema` prints a JSON Schema", async (t) => {
  const r = await runCli(["schema"]);
  t.equal(r.code, 0);
  const schema = JSON.parse(r.stdout);
  t.equal(schema.type, "object");
  t.ok(schema.properties.routes);
});

t.test("`keys new` prints a key and the entry with its hash", async (t) => {
  const r = await runCli(["keys", "new", "--id", "alice-laptop", "--user", "alice", "--roles", "user,admin"]);
  t.equal(r.code, 0);
  const key = /^\s+(tg_[A-Za-z0-9_-]{43})$/m.exec(r.stdout)?.[1];
  t.ok(key, "the key is printed");
  t.match(r.stdout, `hash: ${hashApiKey(key!)}`);
  t.match(r.stdout, /id: alice-laptop/);
  const usage = await runCli(["keys", "new"]);
  t.equal(usage.code, 64, "missing --id is a usage error");
  t.match(usage.stderr, /needs --id/);
});

t.test("unknown commands print usage", async (t) => {
  const r = await runCli(["frobnicate"]);
  t.equal(r.code, 64);
  t.match(r.stderr, /Usage:/);
});

t.test("`serve` without a policy runs the embedded quickstart and prints a working key once", async (t) => {
  const upstream = await startStandInUpstream();
  t.teardown(() => upstream.close());
  const tg = await startServe([], { UPSTREAM_URL: upstream.url, TOLLGATE_PORT: "0", TOLLGATE_ADMIN_PORT: "0", TOLLGATE_CONFIG: "" });
  t.teardown(() => tg.child.kill("SIGKILL"));
  await new Promise((r) => setTimeout(r, 100));
  const key = /Bearer (tg_[A-Za-z0-9_-]{43})/.exec(tg.output())?.[1];
  t.ok(key, "a key is printed with a curl line");
  const res = await request(`http://127.0.0.1:${tg.port}/v1/chat/completions`, {
    method: "POST",
    headers: { authorization: `Bearer ${key}`, "content-type": "application/json" },
    body: JSON.stringify({ model: "gpt-4o-mini", messages: [{ role: "user", content: "hi" }] }),
  });
  t.equal(res.statusCode, 200);
  await res.body.dump();
  t.equal(upstream.seen.at(-1)!.headers.authorization, "Bearer no-upstream-key-configured");
  tg.child.kill("SIGTERM");
  t.equal(await tg.exited, 0);
  t.equal(tg.output().split(key!).length - 1, 2, "the key appears only in the banner (key line and curl line), never in logs");
});

t.test("`demo --exit` tours allowed, streamed, bad key and forbidden model with the openai SDK", async (t) => {
  const r = await runCli(["demo", "--exit"]);
  t.equal(r.code, 0, r.stdout + r.stderr);
  t.match(r.stdout, /✓ allowed call .*→ 200/);
  t.match(r.stdout, /✓ streamed call .*→ 200, 6 events/);
  t.match(r.stdout, /✓ bad key .*→ 401 invalid_api_key/);
  t.match(r.stdout, /✓ forbidden model .*→ 403 model_not_allowed/);
  t.match(r.stdout, /never the client's key/);
});
