/** Runs the real `tollgate` CLI (src/main.ts under tsx) as a child process, for signal and exit tests. */
import { spawn, type ChildProcess } from "node:child_process";
import { fileURLToPath } from "node:url";

export const MAIN = fileURLToPath(new URL("../../src/main.ts", import.meta.url));

export interface CliResult {
  code: number | null;
  stdout: string;
  stderr: string;
}

export function runCli(args: string[], env: NodeJS.ProcessEnv = {}, timeoutMs = 60_000): Promise<CliResult> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, ["--import=tsx", MAIN, ...args], { env: { ...process.env, ...env }, stdio: ["ignore", "pipe", "pipe"] });
    let stdout = "";
    let stderr = "";
    child.stdout.on("data", (d) => (stdout += d));
    child.stderr.on("data", (d) => (stderr += d));
    const timer = setTimeout(() => {
      child.kill("SIGKILL");
      reject(new Error(`tollgate ${args.join(" ")} timed out\n${stdout}\n${stderr}`));
    }, timeoutMs);
    child.on("exit", (code) => {
      clearTimeout(timer);
      resolve({ code, stdout, stderr });
    });
  });
}

export interface RunningTollgate {
  child: ChildProcess;
  port: number;
  adminPort: number;
  output(): string;
  exited: Promise<number | null>;
}

/** Starts `tollgate serve` and resolves once it logs its listening ports. */
export function startServe(args: string[], env: NodeJS.ProcessEnv = {}, timeoutMs = 30_000): Promise<RunningTollgate> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, ["--import=tsx", MAIN, "serve", ...args], { env: { ...process.env, ...env }, stdio: ["ignore", "pipe", "pipe"] });
    let out = "";
    const exited = new Promise<number | null>((r) => child.on("exit", (code) => r(code)));
    const timer = setTimeout(() => {
      child.kill("SIGKILL");
      reject(new Error(`tollgate serve did not start:\n${out}`));
    }, timeoutMs);
    const onData = (d: Buffer) => {
      out += d;
      const line = out.split("\n").find((l) => l.includes('"tollgate listening"'));
      if (line) {
        clearTimeout(timer);
        const parsed = JSON.parse(line) as { port: number; adminPort: number };
        resolve({ child, port: parsed.port, adminPort: parsed.adminPort, output: () => out, exited });
      }
    };
    child.stdout!.on("data", onData);
    child.stderr!.on("data", (d: Buffer) => (out += d));
    void exited.then((code) => {
      clearTimeout(timer);
      reject(new Error(`tollgate serve exited with ${code} before listening:\n${out}`));
    });
  });
}
