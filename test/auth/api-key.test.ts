import t from "tap";
import { ApiKeyAuthenticator } from "../../src/auth/api-key.ts";
import { extractCredential } from "../../src/auth/credential.ts";
import { generateApiKey, hashApiKey, redactKey } from "../../src/auth/keys.ts";
import { newKey } from "../../src/cli/keys.ts";
import { parsePolicy } from "../../src/config/load.ts";

const key = generateApiKey();
let now = Date.parse("2026-06-01T00:00:00Z");
const clock = { now: () => now };
const auth = new ApiKeyAuthenticator(
  {
    name: "keys",
    type: "api_key",
    prefix: "tg_",
    keys: [
      { id: "alice", hash: hashApiKey(key), user: "alice", team: "ml", groups: ["g"], roles: ["user"], models: ["gpt-4o-mini"], expires: "2026-07-01T00:00:00Z", disabled: false },
      { id: "off", hash: hashApiKey("tg_disabledkey"), groups: [], roles: [], disabled: true },
    ],
  },
  clock,
);
const req = (headers: Record<string, string>) => ({ credential: extractCredential(headers), headers, remoteAddress: "127.0.0.1" });

t.test("generated keys are unique, prefixed and high-entropy; the hash is sha256", async (t) => {
  const a = generateApiKey();
  t.match(a, /^tg_[A-Za-z0-9_-]{43}$/);
  t.not(a, generateApiKey());
  t.match(hashApiKey(a), /^sha256:[0-9a-f]{64}$/);
  // Known answers (as `printf KEY | sha256sum` gives them): the stored form of every deployed key depends on it,
  // UTF-8 included.
  t.equal(hashApiKey("tg_x"), "sha256:6a818fa0a930490c5ab015802a3b7e793d21830e4a1e9ca6dc2570da52cf4d49");
  t.equal(hashApiKey("tg_é✓"), "sha256:4c3d8573bf045d6ccc716ef995ef6aa674d30f3177b75116db8b785eff9191e2");
  t.equal(redactKey(a).length < 10, true);
  t.notOk(redactKey(a).includes(a.slice(3, -4)));
});

t.test("a valid key from any of the three headers yields the key's principal", async (t) => {
  const variants: Record<string, string>[] = [{ authorization: `Bearer ${key}` }, { "x-api-key": key }, { "api-key": key }];
  for (const headers of variants) {
    const p = auth.authenticate(req(headers));
    t.match(p, { id: "alice", kind: "key", user: "alice", team: "ml", roles: ["user"], groups: ["g"], models: ["gpt-4o-mini"], method: "api_key", authenticator: "keys" });
  }
});

t.test("unknown, disabled and expired keys are refused with distinct codes", async (t) => {
  t.throws(() => auth.authenticate(req({ authorization: `Bearer ${generateApiKey()}` })), { code: "invalid_api_key", status: 401 });
  t.throws(() => auth.authenticate(req({ "x-api-key": "tg_disabledkey" })), { code: "invalid_api_key" });
  t.throws(() => auth.authenticate(req({ "x-api-key": "anything-else" })), { code: "invalid_api_key" }, "api-key headers always carry keys");
  now = Date.parse("2026-07-01T00:00:00Z");
  t.throws(() => auth.authenticate(req({ authorization: `Bearer ${key}` })), { code: "key_expired" });
  now = Date.parse("2026-06-01T00:00:00Z");
});

t.test("bearer tokens without the key prefix are not API keys (left for other authenticators)", async (t) => {
  t.equal(auth.authenticate(req({ authorization: "Bearer eyJhbGciOiJSUzI1NiJ9.e30.sig" })), undefined);
  t.equal(auth.authenticate(req({ authorization: `Basic ${Buffer.from("a:b").toString("base64")}` })), undefined);
  t.equal(auth.authenticate(req({})), undefined);
});

t.test("credential extraction: one credential per request", async (t) => {
  t.equal(extractCredential({}), undefined);
  t.match(extractCredential({ authorization: "Bearer abc" }), { header: "authorization", scheme: "bearer", value: "abc" });
  t.match(extractCredential({ authorization: "bearer abc", "x-api-key": "abc" }), { value: "abc" }, "same value twice is one credential");
  t.throws(() => extractCredential({ authorization: "Bearer abc", "x-api-key": "def" }), { code: "multiple_credentials", status: 400 });
  t.throws(() => extractCredential({ "x-api-key": "abc", "api-key": "def" }), { code: "multiple_credentials" });
  t.match(extractCredential({ "x-api-key": "abc, abc" }), { value: "abc" }, "a header repeated with the same key (joined by Node) is one credential");
  t.throws(() => extractCredential({ "x-api-key": "abc, def" }), { code: "multiple_credentials" }, "two keys in one repeated header are two credentials");
  t.throws(() => extractCredential({ authorization: "Bearer" }), { code: "unrecognized_credential" });
  t.throws(() => extractCredential({ "x-api-key": " " }), { code: "unrecognized_credential" });
});

t.test("`keys new` prints the key once and a policy entry that validates and matches it", async (t) => {
  const made = newKey({ id: "alice-laptop", user: "alice", team: "ml", roles: ["user", "admin"], models: ["gpt-4o*"] });
  t.match(made.text, made.key);
  t.equal(made.entry.hash, hashApiKey(made.key));
  const yaml = `version: 1
upstreams: { llm: { url: "http://127.0.0.1:1" } }
authenticators:
  - name: keys
    type: api_key
    keys:
${made.text.split("\n").filter((l) => l.startsWith("      ")).join("\n")}
routes: [{ name: r, paths: [/x], upstream: llm, allow: [{ authenticated: true }] }]
`;
  const policy = parsePolicy(yaml, "p.yaml", {});
  const authenticator = policy.authenticators[0]!;
  if (authenticator.type !== "api_key") throw new Error("expected the api_key authenticator");
  const entry = authenticator.keys[0]!;
  t.match(entry, { id: "alice-laptop", user: "alice", team: "ml", roles: ["user", "admin"], models: ["gpt-4o*"], hash: hashApiKey(made.key) });
  t.notOk(JSON.stringify(policy).includes(made.key), "only the hash is stored");
});
