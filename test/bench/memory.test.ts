/**
 * The bench's memory readings (bench/lib/procs.ts): where the RSS lies by mapping (/proc/PID/smaps) and what glibc's
 * malloc has in use (malloc_info through gdb). The parsers on fixed inputs, then both on live processes.
 */
import t from "tap";
import { spawn } from "node:child_process";
import { once } from "node:events";
import { readFileSync } from "node:fs";
import { HAS_GDB, gdbCalled, gdbCanCall, mallocInfo, memoryMap, parseMallocInfo, parseSmaps } from "../../bench/lib/procs.ts";

/** One smaps entry: the header line and its Rss line (the real file has more fields; the parser reads these). */
const entry = (start: number, end: number, perms: string, name: string, rssKiB: number) =>
  `${start.toString(16)}-${end.toString(16)} ${perms} 00000000 00:00 0${name ? `          ${name}` : ""}\nSize: ${(end - start) / 1024} kB\nRss:            ${rssKiB} kB\nPss: ${rssKiB} kB\n`;
const MiB = 1024 * 1024;
const ARENA = 64 * MiB;

t.test("parseSmaps sorts mappings into malloc's main arena, its other arenas, other anonymous memory and files", async (t) => {
  const text = [
    entry(0x400000, 0x400000 + 4 * MiB, "r-xp", "/usr/bin/node", 3000),
    entry(0x10000000, 0x10000000 + 8 * MiB, "rw-p", "[heap]", 7000),
    // A V8 page: anonymous, 256 KiB, not at a 64 MiB boundary.
    entry(0x2aa44fc0000, 0x2aa44fc0000 + 256 * 1024, "rw-p", "", 256),
    // A thread's arena: the read-write part at a 64 MiB boundary, the rest of its 64 MiB reserved (---p).
    entry(0x7f0000000000, 0x7f0000000000 + 2 * MiB, "rw-p", "", 1500),
    entry(0x7f0000000000 + 2 * MiB, 0x7f0000000000 + ARENA, "---p", "", 0),
    // An arena grown to its whole 64 MiB.
    entry(0x7f0004000000, 0x7f0004000000 + ARENA, "rw-p", "", 900),
    // 64 MiB-aligned but followed by nothing that completes 64 MiB: not an arena.
    entry(0x7f0010000000, 0x7f0010000000 + MiB, "rw-p", "", 100),
    // 64 MiB-aligned and followed by a reservation, but 2 MiB in all: not an arena either.
    entry(0x7f0020000000, 0x7f0020000000 + MiB, "rw-p", "", 50),
    entry(0x7f0020000000 + MiB, 0x7f0020000000 + 2 * MiB, "---p", "", 0),
    entry(0x7ffc00000000, 0x7ffc00000000 + 132 * 1024, "rw-p", "[stack]", 40),
    entry(0x7ffd00000000, 0x7ffd00000000 + 8192, "r-xp", "[vdso]", 8),
    entry(0x7fff00000000, 0x7fff00000000 + 4 * MiB, "r--p", "/usr/lib/x86_64-linux-gnu/libc.so.6", 600),
  ].join("");
  t.same(parseSmaps(text), { mallocMainKiB: 7000, mallocArenasKiB: 2400, otherAnonKiB: 256 + 100 + 50 + 40 + 8, fileKiB: 3600 });
});

t.test("parseSmaps reads this process's own map, and its parts add up to its RSS", async (t) => {
  const vmRss = () => Number(/^VmRSS:\s+(\d+) kB$/m.exec(readFileSync("/proc/self/status", "utf8"))?.[1]);
  const before = vmRss();
  const map = memoryMap(process.pid);
  const after = vmRss();
  t.ok(map, "read");
  const sum = map!.mallocMainKiB + map!.mallocArenasKiB + map!.otherAnonKiB + map!.fileKiB;
  // Reading and parsing the file allocates, so the RSS moves while it is read: the parts fall between the RSS
  // before and after, give or take 3 %.
  t.ok(sum >= before * 0.97 && sum <= after * 1.03, `parts ${sum} KiB; VmRSS ${before} KiB before, ${after} KiB after`);
  t.ok(map!.fileKiB > 10_000, "the node binary's pages are file-backed");
  t.ok(map!.mallocMainKiB > 0, "malloc's main arena is resident");
  t.equal(memoryMap(2 ** 22 + 12345), undefined, "no such process: undefined");
});

/** One arena's section of malloc_info's XML, as glibc writes it (size lists trimmed). */
const arena = (nr: number, fast: number, rest: number, current: number) =>
  `<heap nr="${nr}">\n<sizes>\n</sizes>\n<total type="fast" count="1" size="${fast}"/>\n<total type="rest" count="9" size="${rest}"/>\n` +
  `<system type="current" size="${current}"/>\n<system type="max" size="${current}"/>\n<aspace type="total" size="${current}"/>\n` +
  `<aspace type="mprotect" size="${current}"/>\n</heap>\n`;
const INFO =
  `<malloc version="1">\n` +
  arena(0, 0, 103466, 4972544) +
  arena(1, 128, 1078537, 1163264) +
  `<total type="fast" count="4" size="128"/>\n<total type="rest" count="57" size="1182003"/>\n<total type="mmap" count="2" size="270336"/>\n` +
  `<system type="current" size="6135808"/>\n<system type="max" size="6135808"/>\n<aspace type="total" size="6135808"/>\n` +
  `<aspace type="mprotect" size="6135808"/>\n</malloc>\n`;

t.test("parseMallocInfo takes the totals after the last arena: in use = system - free + mmapped", async (t) => {
  t.same(parseMallocInfo(INFO), { freeB: 128 + 1182003, inUseB: 6135808 - (128 + 1182003) + 270336 });
  t.equal(parseMallocInfo("<malloc></malloc>"), undefined, "no arenas: undefined");
  t.equal(parseMallocInfo(INFO.replace(/<system type="current" size="6135808"\/>\n<system type="max"[^\n]*\n<aspace type="total" size="6135808"\/>\n<aspace type="mprotect" size="6135808"\/>\n<\/malloc>/, "</malloc>")), undefined, "totals cut off: undefined");
});

t.test("gdbCalled reads gdb's answer to `call (int)getpid()`: the pid itself, not a longer number, not an error", async (t) => {
  // Recorded: gdb 13 where the call works, and on an Intel AMX CPU where it cannot be set up.
  const works = "0x00007f3a in epoll_wait () from /lib/x86_64-linux-gnu/libc.so.6\n$1 = 4242\n[Inferior 1 (process 4242) detached]\n";
  const amx = "0x00007fbf in __GI___wait4 (pid=-1) at ../sysdeps/unix/sysv/linux/wait4.c:30\nCouldn't write extended state status: Bad address.\n[Inferior 1 (process 4242) detached]\n";
  t.equal(gdbCalled(works, 4242), true);
  t.equal(gdbCalled(amx, 4242), false, "the AMX failure mentions the pid, but not as the call's answer");
  t.equal(gdbCalled("$1 = 42421\n", 4242), false, "a longer number is not the pid");
  t.equal(gdbCalled("$1 = 424\n", 4242), false);
  t.equal(gdbCalled("", 4242), false);
});

t.test("mallocInfo reads a live process's malloc through gdb, and sees what it allocates", async (t) => {
  // A child that keeps 20 MB of 10 KB Buffers (malloc'd by Node's ArrayBuffer allocator) once told to.
  const code = `const keep = []; process.on("message", () => { for (let i = 0; i < 2000; i++) keep.push(Buffer.alloc(10_000, 1)); process.send("done"); }); process.send("ready");`;
  const child = spawn(process.execPath, ["-e", code], { stdio: ["ignore", "ignore", "inherit", "ipc"] });
  t.teardown(() => void child.kill());
  await once(child, "message");
  const before = mallocInfo(child.pid!);
  if (!gdbCanCall()) {
    // No gdb, or a gdb that cannot call into a process on this machine (gdb 13 on an Intel AMX CPU): no reading,
    // rather than a wrong one.
    t.comment(HAS_GDB ? "gdb cannot call functions in a process on this machine" : "no gdb on this machine");
    t.equal(before, undefined, "no reading where gdb cannot take one");
    return;
  }
  t.ok(before && before.inUseB > 0, "in use before");
  child.send("go");
  await once(child, "message");
  const after = mallocInfo(child.pid!);
  t.ok(after, "in use after");
  const grew = after!.inUseB - before!.inUseB;
  t.ok(grew >= 20_000_000 && grew < 24_000_000, `20 MB of Buffers: in use grew by ${grew} B`);
  t.equal(mallocInfo(2 ** 22 + 12345), undefined, "no such process: undefined");
});
