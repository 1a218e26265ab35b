import t from "tap";
import { writeFileSync } from "node:fs";
import { join } from "node:path";
import { parsePolicy, loadPolicyFile, ConfigError } from "../../src/config/load.ts";
import { interpolate } from "../../src/config/interpolate.ts";
import { policyJsonSchema } from "../../src/config/schema.ts";
import { tempDir } from "../helpers/harness.ts";

const minimal = (extra = "") => `version: 1
upstreams:
  llm:
    url: http://127.0.0.1:4000
routes:
  - name: open
    paths: [/v1/**]
    upstream: llm
    allow: [{ public: true }]
${extra}`;

function problems(text: string, env: NodeJS.ProcessEnv = {}) {
  try {
    parsePolicy(text, "policy.yaml", env);
  } catch (err) {
    if (err instanceof ConfigError) return err.problems;
    throw err;
  }
  throw new Error("expected the policy to be rejected");
}

t.test("a minimal policy loads with defaults filled in", async (t) => {
  const policy = parsePolicy(minimal(), "policy.yaml", {});
  t.equal(policy.server.listen.port, 8080);
  t.equal(policy.server.admin.port, 9090);
  t.equal(policy.server.shutdownGrace, 30_000);
  t.equal(policy.routes[0]!.methods[0], "*");
  t.same(policy.upstreams.llm!.credential, { type: "none" });
});

t.test("an unknown key is an error naming file, line, column and key path", async (t) => {
  const text = minimal().replace("    url: http://127.0.0.1:4000", "    url: http://127.0.0.1:4000\n    urll: typo");
  const [p] = problems(text);
  t.match(p, { file: "policy.yaml", line: 5, column: 5, path: "upstreams.llm.urll", message: /unknown key "urll"/ });
});

t.test("a wrong type names the line of the value", async (t) => {
  const text = minimal().replace("paths: [/v1/**]", "paths: /v1/**");
  const [p] = problems(text);
  t.match(p, { line: 7, path: "routes.0.paths", message: /expected array/ });
});

t.test("a missing required key is reported on its parent", async (t) => {
  const [p] = problems(minimal().replace("    upstream: llm\n", ""));
  t.match(p, { line: 6, path: "routes.0.upstream", message: 'required key "upstream" is missing' });
});

t.test("references to undefined upstreams and authenticators are errors with lines", async (t) => {
  const text = minimal().replace("upstream: llm", "upstream: litellm");
  const [p] = problems(text);
  t.match(p, { line: 8, path: "routes.0.upstream", message: /upstream "litellm" is not defined/ });
  const text2 = minimal().replace("allow: [{ public: true }]", "allow: [{ roles: [admin] }]");
  t.match(problems(text2)[0], { message: /no authenticator is defined/ });
});

t.test("YAML syntax errors and duplicate keys name the line", async (t) => {
  const [p] = problems("version: 1\nupstreams:\n  a: {url: x\n");
  t.ok(p!.line >= 3, `line ${p!.line}`);
  const [d] = problems(minimal() + "version: 1\n");
  t.match(d, { message: /unique|duplicate/i, line: 10 });
});

t.test("bad durations, ports, hashes and path patterns are rejected", async (t) => {
  t.match(problems(minimal("server:\n  shutdownGrace: 30 seconds\n"))[0], { path: "server.shutdownGrace", message: /duration/ });
  t.match(problems(minimal("server:\n  listen: { port: 70000 }\n"))[0], { path: "server.listen.port" });
  t.match(problems(minimal("authenticators:\n  - name: k\n    type: api_key\n    keys: [{ id: a, hash: abc }]\n"))[0], { path: "authenticators.0.keys.0.hash", message: /sha256/ });
  t.match(problems(minimal().replace("/v1/**", "/v1/**/x"))[0], { path: "routes.0.paths.0", message: /last segment/ });
});

t.test("interpolation: env, defaults, LiteLLM form, secret files, escapes", async (t) => {
  const env = { A: "alpha", EMPTY: "" };
  t.equal(interpolate("x-${A}-y", { env }), "x-alpha-y");
  t.equal(interpolate("${MISSING:-fallback}", { env }), "fallback");
  t.equal(interpolate("${EMPTY:-fallback}", { env }), "fallback");
  t.equal(interpolate("os.environ/A", { env }), "alpha");
  t.equal(interpolate("$${A}", { env }), "${A}");
  t.throws(() => interpolate("${MISSING}", { env }), { name: "InterpolationError", message: /MISSING is not set/ });
  t.throws(() => interpolate("os.environ/MISSING", { env }), /MISSING is not set/);
  t.throws(() => interpolate("${not valid}", { env }), /not a valid/);
  const dir = tempDir();
  writeFileSync(join(dir, "secret"), "s3cr3t-value\n");
  t.equal(interpolate("Bearer ${file:secret}", { env, baseFile: join(dir, "policy.yaml") }), "Bearer s3cr3t-value");
  t.equal(interpolate(`\${file:${join(dir, "secret")}}`, { env }), "s3cr3t-value");
  t.throws(() => interpolate("${file:/nonexistent/secret}", { env }), /cannot read secret file .*ENOENT/);
});

t.test("interpolation errors point at the line; secrets never appear in errors", async (t) => {
  const text = minimal().replace("url: http://127.0.0.1:4000", "url: ${UPSTREAM_URL}\n    credential: { type: static, value: \"Bearer ${MASTER}\" }");
  const list = problems(text, { MASTER: "super-secret-master" });
  t.match(list[0], { line: 4, path: "upstreams.llm.url", message: /UPSTREAM_URL is not set/ });
  const bad = minimal("server:\n  listen: { port: \"${PORT}\" }\n");
  const [p] = problems(bad, { PORT: "eighty" });
  t.match(p, { path: "server.listen.port", message: /port/ });
  t.notOk(JSON.stringify(list).includes("super-secret-master"));
});

t.test("ports may come from the environment as strings", async (t) => {
  const policy = parsePolicy(minimal("server:\n  listen: { port: \"${PORT:-8081}\" }\n"), "p.yaml", {});
  t.equal(policy.server.listen.port, 8081);
});

t.test("loadPolicyFile reports an unreadable file", async (t) => {
  try {
    loadPolicyFile("/nonexistent/policy.yaml");
    t.fail("expected an error");
  } catch (err) {
    t.match((err as ConfigError).problems[0], { file: "/nonexistent/policy.yaml", message: /ENOENT/ });
  }
});

t.test("the JSON Schema describes the policy for editors", async (t) => {
  const schema = policyJsonSchema() as { properties: Record<string, unknown>; required: string[]; additionalProperties: boolean };
  t.ok(schema.properties.routes && schema.properties.upstreams && schema.properties.authenticators);
  t.equal(schema.additionalProperties, false, "unknown keys are errors in editors too");
  t.ok(schema.required.includes("routes"));
});

t.test("interpolation: nested defaults are resolved lazily", async (t) => {
  const dir = tempDir();
  writeFileSync(join(dir, "key"), "from-file\n");
  const ctx = { env: { SET: "from-env" } as NodeJS.ProcessEnv, baseFile: join(dir, "p.yaml") };
  t.equal(interpolate("Bearer ${UNSET:-${file:key}}", ctx), "Bearer from-file");
  t.equal(interpolate("Bearer ${SET:-${file:/nonexistent}}", ctx), "Bearer from-env", "an unused default is never read");
  t.equal(interpolate("${UNSET:-${ALSO_UNSET:-deep}}-tail", ctx), "deep-tail");
  t.equal(interpolate("cost: $5 and ${SET}", ctx), "cost: $5 and from-env", "a lone $ is literal");
  t.throws(() => interpolate("${UNSET:-${file:key}", ctx), /unclosed reference/);
});
