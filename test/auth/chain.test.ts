/**
 * The auth chain: policy order, first recognizer decides, a refusal stops the chain and is tagged with the method
 * that refused it — whether the authenticators answer synchronously (API keys) or with a promise (JWT,
 * introspection, trusted headers), and in any mix of the two. Synchronous chains answer without a promise.
 */
import t from "tap";
import { AuthChain, refusedBy } from "../../src/auth/chain.ts";
import type { Authenticator, AuthRequest } from "../../src/auth/authenticator.ts";
import { ANONYMOUS, type Principal } from "../../src/auth/principal.ts";
import { TollgateError } from "../../src/proxy/errors.ts";

const principal = (id: string, method: string): Principal => ({ id, kind: "service", groups: [], roles: [], scopes: [], authenticator: id, method, claims: {} });

/** An authenticator answering `answer` (a Principal, undefined, or "refuse"), synchronously or through a promise. */
function fake(type: string, answer: Principal | undefined | "refuse", async: boolean, calls: string[]): Authenticator {
  return {
    name: type,
    type,
    authenticate() {
      calls.push(type);
      if (answer === "refuse") {
        const err = new TollgateError("invalid_api_key");
        if (async) return Promise.reject(err);
        throw err;
      }
      return async ? Promise.resolve(answer) : answer;
    },
  };
}

const withCredential: AuthRequest = { credential: { header: "authorization", scheme: "bearer", value: "x" }, headers: {}, remoteAddress: "127.0.0.1" };
const noCredential: AuthRequest = { credential: undefined, headers: {}, remoteAddress: "127.0.0.1" };

t.test("synchronous authenticators: the answer is the Principal itself, no promise", async (t) => {
  const calls: string[] = [];
  const alice = principal("alice", "api_key");
  const answer = new AuthChain([fake("a", undefined, false, calls), fake("api_key", alice, false, calls), fake("never", principal("x", "x"), false, calls)]).authenticate(withCredential);
  t.notOk(answer instanceof Promise, "not a promise");
  t.equal(answer, alice, "the first that recognises the credential decides");
  t.same(calls, ["a", "api_key"], "later authenticators are not asked");
});

t.test("a synchronous refusal throws at once, tagged with the refusing method, and stops the chain", async (t) => {
  const calls: string[] = [];
  const chain = new AuthChain([fake("api_key", "refuse", false, calls), fake("jwt", principal("bob", "jwt"), true, calls)]);
  let caught: unknown;
  try {
    chain.authenticate(withCredential);
  } catch (err) {
    caught = err;
  }
  t.match(caught, { code: "invalid_api_key" });
  t.equal(refusedBy.get(caught as object), "api_key");
  t.same(calls, ["api_key"]);
});

t.test("an asynchronous answer makes the chain asynchronous from there on, in order", async (t) => {
  const calls: string[] = [];
  const carol = principal("carol", "api_key");
  const answer = new AuthChain([fake("jwt", undefined, true, calls), fake("introspection", undefined, true, calls), fake("api_key", carol, false, calls)]).authenticate(withCredential);
  t.ok(answer instanceof Promise, "a promise once an authenticator answered with one");
  t.equal(await answer, carol);
  t.same(calls, ["jwt", "introspection", "api_key"]);
});

t.test("refusals after an asynchronous 'not mine' reject, tagged with the method that refused", async (t) => {
  const calls: string[] = [];
  // A later synchronous refusal.
  const syncLater = new AuthChain([fake("jwt", undefined, true, calls), fake("api_key", "refuse", false, calls), fake("never", principal("x", "x"), false, calls)]).authenticate(withCredential);
  const err1 = await (syncLater as Promise<Principal>).then(() => undefined, (err: unknown) => err);
  t.match(err1, { code: "invalid_api_key" });
  t.equal(refusedBy.get(err1 as object), "api_key");
  // An asynchronous refusal.
  const asyncRefusal = new AuthChain([fake("api_key", undefined, false, calls), fake("jwt", "refuse", true, calls)]).authenticate(withCredential);
  const err2 = await (asyncRefusal as Promise<Principal>).then(() => undefined, (err: unknown) => err);
  t.equal(refusedBy.get(err2 as object), "jwt");
  t.same(calls, ["jwt", "api_key", "api_key", "jwt"], "nothing after a refusal is asked");
});

t.test("nobody recognises it: a credential is refused as unrecognized (method none); no credential is anonymous", async (t) => {
  const calls: string[] = [];
  const chain = new AuthChain([fake("api_key", undefined, false, calls), fake("jwt", undefined, true, calls)]);
  const err = await Promise.resolve()
    .then(() => chain.authenticate(withCredential))
    .then(() => undefined, (e: unknown) => e);
  t.match(err, { code: "unrecognized_credential" });
  t.equal(refusedBy.get(err as object), "none");
  t.equal(await chain.authenticate(noCredential), ANONYMOUS);
  const syncOnly = new AuthChain([fake("api_key", undefined, false, calls)]);
  t.equal(syncOnly.authenticate(noCredential), ANONYMOUS, "synchronously, when every authenticator answers synchronously");
  t.throws(() => syncOnly.authenticate(withCredential), { code: "unrecognized_credential" });
});
