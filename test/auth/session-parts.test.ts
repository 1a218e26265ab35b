import t from "tap";
import { parseCookies, serializeCookie, chunkedCookies, readChunked, clearCookies, stripCookies } from "../../src/auth/session/cookies.ts";
import { safeNext, isBrowserNavigation } from "../../src/auth/session/redirect.ts";
import { Sealer } from "../../src/auth/session/seal.ts";

const attrs = { path: "/", secure: true, maxAge: 3600 };

t.test("post-login redirects stay on this site", async (t) => {
  for (const ok of ["/ui/", "/ui/logs?x=1#top", "/"]) t.equal(safeNext(ok), ok);
  for (const evil of ["//evil.example", "https://evil.example", "/\\evil.example", "\\\\evil.example", "javascript:alert(1)", "evil.example", "/\tevil", "", null, undefined]) {
    t.equal(safeNext(evil as string), "/", `refused: ${JSON.stringify(evil)}`);
  }
  t.equal(safeNext("/ui/../../x"), "/x", "dot segments resolve on this site");
});

t.test("browser navigations are GET/HEAD accepting HTML", async (t) => {
  t.ok(isBrowserNavigation("GET", "text/html,application/xhtml+xml"));
  t.notOk(isBrowserNavigation("GET", "application/json"));
  t.notOk(isBrowserNavigation("POST", "text/html"));
  t.notOk(isBrowserNavigation("GET", undefined));
});

t.test("cookies: attributes, chunking, clearing, stripping", async (t) => {
  t.equal(serializeCookie("s", "v", attrs), "s=v; Path=/; HttpOnly; SameSite=Lax; Max-Age=3600; Secure");
  t.same(parseCookies("a=1; b=2;c=3; a=ignored"), new Map([["a", "1"], ["b", "2"], ["c", "3"]]));
  const big = "x".repeat(9000);
  const set = chunkedCookies("s", big, attrs, new Set(["s"]));
  t.equal(set.filter((c) => c.startsWith("s.")).length, 3, "three chunks");
  t.ok(set.some((c) => c.startsWith("s=;") && c.includes("Max-Age=0")), "the unchunked leftover is deleted");
  const jar = new Map(set.filter((c) => !c.includes("Max-Age=0")).map((c) => [c.slice(0, c.indexOf("=")), c.slice(c.indexOf("=") + 1, c.indexOf(";"))]));
  t.equal(readChunked(jar, "s"), big);
  const small = chunkedCookies("s", "tiny", attrs, new Set(["s.0", "s.1", "s.2"]));
  t.equal(small.filter((c) => c.includes("Max-Age=0")).length, 3, "old chunks are deleted when the value shrinks");
  t.equal(clearCookies("s", ["s.0", "s.1", "other"], attrs).length, 2);
  t.equal(stripCookies("ui=1; tollgate_session=abc; tollgate_session.0=x; theme=dark", (n) => n.startsWith("tollgate_session")), "ui=1; theme=dark");
  t.equal(stripCookies("tollgate_session=abc", (n) => n === "tollgate_session"), undefined);
});

t.test("sealed payloads: tamper-evident, expiring, bound to their purpose and secret", async (t) => {
  const secret = "s".repeat(40);
  const session = new Sealer(secret, "session");
  const now = Date.now();
  const sealed = await session.seal({ sid: "abc" }, now + 60_000);
  t.match(await session.open(sealed, now), { sid: "abc" });
  const flipped = sealed.slice(0, -5) + (sealed.at(-5) === "A" ? "B" : "A") + sealed.slice(-4);
  t.equal(await session.open(flipped, now), undefined, "a flipped byte");
  t.equal(await session.open(sealed.slice(0, -10), now), undefined, "truncated");
  t.equal(await session.open(sealed, now + 120_000), undefined, "expired");
  t.equal(await new Sealer(secret, "sign-in").open(sealed, now), undefined, "another purpose cannot open it");
  t.equal(await new Sealer("t".repeat(40), "session").open(sealed, now), undefined, "another secret cannot open it");
});
