/**
 * What Node's own per-connection objects cost in native memory (malloc), outside the JS heap the bench's held
 * streams also report: a child Node process (the same binary and environment as Tollgate's) makes N of each kind,
 * and malloc's bytes in use are read through gdb before and after (bench/lib/procs.ts `mallocInfo`).
 *
 * - `HTTPParser`: node:http's parser, one per server connection for as long as it is open (llhttp in C++, with
 *   its header slots);
 * - `socket pair`: a connected loopback TCP pair, both ends in the process (two TCPWraps and their libuv handles);
 * - `undici Client`: a connected undici Client with one request answered (its WASM llhttp lives in WASM memory,
 *   not malloc, and shows up in the RSS instead). The node:http server it talks to runs in the same process, so
 *   this figure includes the server end too: its HTTPParser and both sockets.
 *
 *   node bench/native-cost.ts [--count 1000]
 */
import { fork } from "node:child_process";
import { once } from "node:events";
import { fileURLToPath } from "node:url";
import { gdbCanCall, HAS_GDB, mallocInfo, rssKiB } from "./lib/procs.ts";
import { TOLLGATE_ENV } from "./lib/targets.ts";

const at = process.argv.indexOf("--count");
const count = at >= 0 ? Number(process.argv[at + 1]) : 1000;
if (!(count > 0)) throw new Error("usage: node bench/native-cost.ts [--count N]");
if (!HAS_GDB) throw new Error("gdb is needed to read malloc's figures (apt-get install gdb)");
if (!gdbCanCall()) throw new Error("gdb cannot call functions in a process on this machine (seen: gdb 13 on an Intel AMX CPU), so malloc's figures cannot be read");

const KINDS = ["HTTPParser", "socket pair", "undici Client"] as const;
/** How each kind is printed (the undici Client's figure includes its server end, in the same process). */
const LABELS: Record<(typeof KINDS)[number], string> = {
  HTTPParser: "HTTPParser",
  "socket pair": "socket pair",
  "undici Client": "undici Client + its node:http server end",
};
type Kind = (typeof KINDS)[number];

if (process.argv.includes("--child")) {
  // The child: makes what it is told to and keeps it alive; answers `{ made }` when done.
  const { HTTPParser } = (await import("node:_http_common" as string)) as { HTTPParser: new () => object };
  const { createServer, connect } = await import("node:net");
  const http = await import("node:http");
  const { Client } = await import("undici");
  const keep: unknown[] = [];
  const make: Record<Kind, (n: number) => Promise<void>> = {
    async HTTPParser(n) {
      for (let i = 0; i < n; i++) keep.push(new HTTPParser());
    },
    async "socket pair"(n) {
      const server = createServer((s) => keep.push(s)).listen(0, "127.0.0.1");
      await once(server, "listening");
      const { port } = server.address() as { port: number };
      for (let i = 0; i < n; i++) {
        const s = connect(port, "127.0.0.1");
        await once(s, "connect");
        keep.push(s);
      }
      keep.push(server);
    },
    async "undici Client"(n) {
      const server = http.createServer((_req, res) => res.end("ok")).listen(0, "127.0.0.1");
      await once(server, "listening");
      const { port } = server.address() as { port: number };
      for (let i = 0; i < n; i++) {
        const client = new Client(`http://127.0.0.1:${port}`, { keepAliveTimeout: 600_000 });
        await (await client.request({ method: "GET", path: "/" })).body.text();
        keep.push(client);
      }
      keep.push(server);
    },
  };
  const gc = (globalThis as { gc?: () => void }).gc!;
  process.on("message", (m: { kind: Kind; n: number }) => {
    void make[m.kind](m.n).then(() => {
      gc();
      gc();
      process.send!({ made: m.kind });
    });
  });
  process.send!({ ready: true });
} else {
  console.log(`native memory (malloc in use) per object, ${count} of each, Node ${process.version}, environment ${JSON.stringify(TOLLGATE_ENV)}`);
  for (const kind of KINDS) {
    const child = fork(fileURLToPath(import.meta.url), ["--child", "--count", String(count)], {
      execArgv: ["--expose-gc"],
      env: { ...process.env, ...TOLLGATE_ENV },
      stdio: ["ignore", "inherit", "inherit", "ipc"],
    });
    try {
      await once(child, "message");
      // A first small batch, so lazily made per-process state (the server, undici's WASM) is not counted.
      child.send({ kind, n: 10 });
      await once(child, "message");
      const before = mallocInfo(child.pid!);
      const rssBefore = rssKiB(child.pid!);
      child.send({ kind, n: count });
      await once(child, "message");
      const after = mallocInfo(child.pid!);
      const rssAfter = rssKiB(child.pid!);
      if (!before || !after) throw new Error("could not read malloc's figures through gdb (is ptrace allowed?)");
      const per = (after.inUseB - before.inUseB) / count;
      const rss = rssBefore !== undefined && rssAfter !== undefined ? `${(((rssAfter - rssBefore) * 1024) / count / 1000).toFixed(1)} KB` : "n/a";
      console.log(`${LABELS[kind].padEnd(14)} malloc in use ${(per / 1000).toFixed(1)} KB each; RSS grew ${rss} each`);
    } finally {
      child.kill();
    }
  }
}
