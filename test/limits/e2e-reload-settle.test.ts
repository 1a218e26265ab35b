/**
 * A reload that moves the limits to another store (here: another Redis key prefix, so another connection) retires
 * the old gateway while a stream admitted on it is still running. The stream's settlement — its budget spend, its
 * concurrency lease — must land in the store it was admitted on, so the retired gateway keeps that store until its
 * requests have settled.
 */
import t from "tap";
import { writeFileSync } from "node:fs";
import { request } from "undici";
import { Redis } from "ioredis";
import { startHarness, makeKey, SERVER_BLOCK } from "../helpers/harness.ts";
import { SHARED_REDIS_URL, deleteKeys, testPrefix } from "../helpers/redis.ts";

const alice = makeKey();
const before = testPrefix("reload-old");
const after = testPrefix("reload-new");

const policy = (prefix: string) => `${SERVER_BLOCK}  watch: false
upstreams: { llm: { url: "\${UPSTREAM_URL}" } }
authenticators:
  - name: keys
    type: api_key
    keys: [{ id: alice-key, hash: "${alice.hash}", user: alice@example.com, team: ml, roles: [user] }]
routes:
  - { name: chat, methods: [POST], paths: [/v1/chat/completions], upstream: llm, allow: [{ roles: [user] }] }
pricing:
  models:
    gpt-4o-mini: { input: 1000000, output: 1000000 }
limits:
  store: { type: redis, url: "${SHARED_REDIS_URL}", keyPrefix: "${prefix}" }
  rules:
    - { name: streams-user, by: [user], concurrency: 5 }
    - { name: team-monthly, by: [team], budget: { usd: 1000000, period: monthly } }
`;

/** Every hash under `prefix` whose key ends in `:budget`, and every lease set's size. */
async function storeState(redis: Redis, prefix: string): Promise<{ spent: number; reserved: number; leases: number }> {
  let spent = 0;
  let reserved = 0;
  let leases = 0;
  let cursor = "0";
  do {
    const [next, keys] = await redis.scan(cursor, "MATCH", `${prefix}*`, "COUNT", 1000);
    cursor = next;
    for (const key of keys) {
      if (key.endsWith(":budget")) {
        spent += Number((await redis.hget(key, "spent")) ?? 0);
        reserved += Number((await redis.hget(key, "reserved")) ?? 0);
      } else if (key.endsWith(":leases")) leases += await redis.zcard(key);
    }
  } while (cursor !== "0");
  return { spent, reserved, leases };
}

t.test("a stream admitted before a reload to another store settles on the store it was admitted on", async (t) => {
  const redis = new Redis(SHARED_REDIS_URL);
  t.teardown(async () => {
    await deleteKeys(SHARED_REDIS_URL, before);
    await deleteKeys(SHARED_REDIS_URL, after);
    redis.disconnect();
  });
  const h = await startHarness(policy(before), { upstream: { events: 8, intervalMs: 60 } });
  t.teardown(() => h.stop());

  const res = await request(`${h.url}/v1/chat/completions`, {
    method: "POST",
    headers: { authorization: `Bearer ${alice.key}`, "content-type": "application/json" },
    body: JSON.stringify({ model: "gpt-4o-mini", stream: true, messages: [{ role: "user", content: "hi" }] }),
  });
  t.equal(res.statusCode, 200);
  const chunks: Buffer[] = [];
  const ended = (async () => {
    for await (const chunk of res.body) chunks.push(chunk as Buffer);
  })();
  // The stream is running: its lease and reservation are in the first store.
  const during = await storeState(redis, before);
  t.equal(during.leases, 1, "the stream holds a lease in the first store");
  t.ok(during.reserved > 0, "and a budget reservation");

  writeFileSync(h.policyFile, policy(after));
  t.ok(await h.server.reload("test"), "reloaded onto another store");
  t.equal(h.upstream.openStreams(), 1, "the stream outlives the reload");

  await ended;
  t.match(Buffer.concat(chunks).toString(), /data: \[DONE\]/, "the stream completed");
  // The settlement follows the response; give it a moment, then read the first store.
  const deadline = Date.now() + 5000;
  let settled = await storeState(redis, before);
  while ((settled.leases > 0 || settled.spent === 0) && Date.now() < deadline) {
    await new Promise((r) => setTimeout(r, 20));
    settled = await storeState(redis, before);
  }
  t.equal(settled.leases, 0, "its lease was given back in the first store");
  t.equal(settled.reserved, 0, "its reservation released");
  t.ok(settled.spent > 0, `its spend recorded there (${settled.spent} micro-dollars)`);
  t.same(await storeState(redis, after), { spent: 0, reserved: 0, leases: 0 }, "nothing of it in the new store");
  t.equal(h.logs.filter((l) => /settle/i.test(String(l.msg))).length, 0, "no settlement failure logged");
});
