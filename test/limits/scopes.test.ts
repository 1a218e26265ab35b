/** Limit instances per request and their store keys: the cartesian product of dimensions, hashed values only. */
import t from "tap";
import { createHash } from "node:crypto";
import { instanceKeys, scopeInstances, scopeKey } from "../../src/limits/scopes.ts";
import type { Dimension } from "../../src/config/limits.ts";
import type { Principal } from "../../src/auth/principal.ts";

const alice: Principal = { id: "sub-1", kind: "user", user: "alice@example.com", team: "ml", groups: ["g1", "g2"], roles: [], scopes: [], authenticator: "oidc", method: "jwt", claims: {} };

t.test("one instance per combination of the dimensions' values; none when a dimension has no value", async (t) => {
  const input = { principal: alice, route: "chat", model: "gpt-4o" };
  t.same(scopeInstances(["user", "model"], input), [["user=alice@example.com", "model=gpt-4o"]]);
  t.same(scopeInstances(["team", "group"], input), [["team=ml", "group=g1"], ["team=ml", "group=g2"]]);
  t.same(scopeInstances(["model"], { ...input, model: undefined }), [], "no model, no instance");
  t.same(scopeInstances(["team"], { ...input, principal: { ...alice, team: undefined } }), [], "no team, not counted");
  t.same(scopeInstances(["global"], input), [["global=*"]]);
});

t.test("store keys: the limit's name and a digest of the values, never the values; the same every time", async (t) => {
  const instance = ["user=alice@example.com", "model=gpt-4o"];
  const expected = createHash("sha256").update(instance.join("\u0000")).digest("base64url").slice(0, 22);
  const first = scopeKey("tpm", instance);
  t.equal(first, `tpm:${expected}`);
  t.equal(scopeKey("tpm", [...instance]), first, "a remembered digest is the digest");
  t.notMatch(first, /alice|example|gpt/, "no email or model name in the key");
  t.match(first, /^tpm:[A-Za-z0-9_-]{22}$/, "no character that could break a Cluster hash tag");
  t.not(scopeKey("rpm", instance), first, "each limit has its own counters");
  t.not(scopeKey("tpm", ["user=bob"]), scopeKey("tpm", ["user=carol"]));
  // Far more callers than the memo holds: every key still matches its own digest.
  for (let i = 0; i < 12_000; i++) scopeKey("rpm", [`user=u${i}`]);
  t.equal(scopeKey("rpm", ["user=u3"]), `rpm:${createHash("sha256").update("user=u3").digest("base64url").slice(0, 22)}`);
  t.equal(scopeKey("tpm", instance), first, "still the same after the memo has turned over");
});

t.test("instanceKeys: the keys of scopeInstances, whichever path builds them (one value per dimension, several, none)", async (t) => {
  const input = { principal: alice, route: "chat", model: "gpt-4o" };
  const cases: Dimension[][] = [["user", "model"], ["team", "group"], ["group", "model", "route"], ["key"], ["global"], ["model", "team"], ["route", "user", "team", "model"]];
  for (const by of cases) t.same(instanceKeys("tpm", by, input), scopeInstances(by, input).map((i) => scopeKey("tpm", i)), by.join(","));
  t.same(instanceKeys("tpm", ["user", "model"], { ...input, model: undefined }), [], "no model, no instance");
  t.same(instanceKeys("tpm", ["group"], { ...input, principal: { ...alice, groups: [] } }), [], "no group, not counted");
  t.equal(instanceKeys("tpm", ["team", "group"], input).length, 2, "one per group");
  t.same(instanceKeys("tpm", ["user", "model"], input), [`tpm:${createHash("sha256").update("user=alice@example.com\u0000model=gpt-4o").digest("base64url").slice(0, 22)}`], "the same digest as before the fast path");
});
