import t from "tap";
import { lazily } from "../../src/lazy.ts";

t.test("lazily: concurrent first calls share one build, success is kept, a failure is tried again", async (t) => {
  let builds = 0;
  let fail = true;
  const value = lazily(async () => {
    builds++;
    await new Promise((r) => setTimeout(r, 5));
    if (fail) throw new Error(`build ${builds} failed`);
    return { built: builds };
  });
  const first = await Promise.allSettled([value(), value()]);
  t.equal(builds, 1, "two concurrent calls, one build");
  t.match(first, [{ status: "rejected" }, { status: "rejected" }]);
  fail = false;
  t.same(await value(), { built: 2 }, "the failure was not remembered: the next call builds again");
  t.equal(await value(), await value(), "the success is remembered");
  t.equal(builds, 2);
});
