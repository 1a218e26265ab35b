import t from "tap";
import { compilePath, compileNames } from "../../src/policy/patterns.ts";
import { RouteTable } from "../../src/policy/routes.ts";
import { authorize } from "../../src/policy/authorize.ts";
import { parsePolicy } from "../../src/config/load.ts";
import type { Principal } from "../../src/auth/principal.ts";
import { ANONYMOUS } from "../../src/auth/principal.ts";

t.test("path patterns: literals, params, single-segment and trailing wildcards", async (t) => {
  t.same(compilePath("/v1/models").match("/v1/models"), {});
  t.equal(compilePath("/v1/models").match("/v1/models/"), undefined);
  t.same(compilePath("/openai/deployments/{deployment}/chat/completions").match("/openai/deployments/gpt4o/chat/completions"), { deployment: "gpt4o" });
  t.equal(compilePath("/openai/deployments/{deployment}/chat/completions").match("/openai/deployments/a/b/chat/completions"), undefined);
  t.same(compilePath("/v1/*/x").match("/v1/abc/x"), {});
  const rest = compilePath("/admin/**");
  t.ok(rest.match("/admin"));
  t.ok(rest.match("/admin/"));
  t.ok(rest.match("/admin/a/b/c"));
  t.equal(rest.match("/administrator"), undefined, "** does not match a longer segment");
  t.equal(compilePath("/v1.x/a").match("/v1Yx/a"), undefined, "dots are literal");
  t.throws(() => compilePath("/a/**/b"), /last segment/);
  t.throws(() => compilePath("/a/b*"), /mixes a wildcard/);
});

t.test("model name lists: exact and wildcard", async (t) => {
  const m = compileNames(["gpt-4o-mini", "claude-*", "bedrock/*"]);
  t.ok(m.matches("gpt-4o-mini"));
  t.notOk(m.matches("gpt-4o"));
  t.ok(m.matches("claude-3-5-sonnet"));
  t.ok(m.matches("bedrock/anthropic.claude-v2:1"));
  t.notOk(m.matches("xclaude-3"));
  t.ok(compileNames(["*"]).matches("anything"));
  t.notOk(compileNames(["gpt.4"]).matches("gpt-4"), "regex characters are literal");
});

const policy = parsePolicy(`version: 1
upstreams: { llm: { url: "http://127.0.0.1:1" } }
authenticators: [{ name: keys, type: api_key }]
routes:
  - name: chat
    methods: [POST]
    paths: [/v1/chat/completions]
    upstream: llm
    models: [gpt-4o, gpt-4o-mini, o1]
    allow:
      - roles: [admin]
      - groups: [ml-eng]
        models: [gpt-4o, gpt-4o-mini]
      - principals: [ci-bot]
        models: [gpt-4o-mini]
  - name: models
    methods: [GET, HEAD]
    paths: [/v1/models]
    upstream: llm
    allow: [{ authenticated: true }]
  - name: health
    paths: [/health]
    upstream: llm
    allow: [{ public: true }]
  - name: everything-else
    paths: [/v1/**]
    upstream: llm
    allow: [{ roles: [admin] }]
`, "p.yaml", {});
const table = new RouteTable(policy.routes, 1024);

const principal = (over: Partial<Principal>): Principal => ({ id: "p", kind: "user", groups: [], roles: [], scopes: [], authenticator: "keys", method: "api_key", claims: {}, ...over });

t.test("first matching route in policy order, by method and path", async (t) => {
  t.equal(table.match("POST", "/v1/chat/completions")?.route.name, "chat");
  t.equal(table.match("GET", "/v1/chat/completions")?.route.name, "everything-else", "method mismatch falls to the next route");
  t.equal(table.match("HEAD", "/v1/models")?.route.name, "models");
  t.equal(table.match("DELETE", "/health")?.route.name, "health", "no methods = any method");
  t.equal(table.match("GET", "/v2/x"), undefined, "nothing matches = no route");
  t.ok(table.match("POST", "/v1/chat/completions")!.route.restrictsModels);
  t.notOk(table.match("GET", "/v1/models")!.route.restrictsModels);
});

t.test("allow rules: any-of rules, all-of inside a rule, models narrowed per rule", async (t) => {
  const chat = table.match("POST", "/v1/chat/completions")!.route;
  t.match(authorize(chat, principal({ roles: ["admin"] }), "o1"), { allowed: true, code: "allowed" });
  t.match(authorize(chat, principal({ groups: ["ml-eng"] }), "gpt-4o"), { allowed: true });
  t.match(authorize(chat, principal({ groups: ["ml-eng"] }), "o1"), { allowed: false, code: "model_not_allowed" }, "group rule narrows models");
  t.match(authorize(chat, principal({ roles: ["admin"] }), "gpt-5"), { allowed: false, code: "model_not_allowed" }, "route list applies to everyone");
  t.match(authorize(chat, principal({ id: "ci-bot" }), "gpt-4o-mini"), { allowed: true });
  t.match(authorize(chat, principal({ id: "x", user: "ci-bot" }), "gpt-4o-mini"), { allowed: true }, "principals match the user too");
  t.match(authorize(chat, principal({ id: "ci-bot" }), "gpt-4o"), { allowed: false, code: "model_not_allowed" });
  t.match(authorize(chat, principal({ roles: ["user"] }), "gpt-4o"), { allowed: false, code: "forbidden" });
  t.match(authorize(chat, ANONYMOUS, "gpt-4o"), { allowed: false, code: "missing_credential" });
  t.match(authorize(chat, principal({ roles: ["admin"], models: ["gpt-4o-mini"] }), "o1"), { allowed: false, code: "model_not_allowed" }, "principal-level model list");
  t.match(authorize(chat, principal({ roles: ["admin"] }), undefined), { allowed: true }, "no model in request: model rules do not apply");
});

t.test("public and authenticated rules", async (t) => {
  const health = table.match("GET", "/health")!.route;
  t.ok(health.isPublic);
  t.match(authorize(health, ANONYMOUS, undefined), { allowed: true });
  const models = table.match("GET", "/v1/models")!.route;
  t.match(authorize(models, ANONYMOUS, undefined), { allowed: false, code: "missing_credential" });
  t.match(authorize(models, principal({}), undefined), { allowed: true });
});

t.test("a trace explains the decision for `explain`", async (t) => {
  const chat = table.match("POST", "/v1/chat/completions")!.route;
  const trace: string[] = [];
  authorize(chat, principal({ groups: ["ml-eng"] }), "o1", trace);
  t.match(trace.join("\n"), /rule #2 \(groups any of \[ml-eng\] and models \[gpt-4o, gpt-4o-mini\]\): matches the caller/);
  t.match(trace.join("\n"), /no rule that matches the caller allows model "o1"/);
});
