/**
 * How a bench peer tells the bench it is listening: an IPC message when started by bench/run.ts, a line on
 * stderr when started by hand. A peer whose parent goes away exits, so a crashed bench leaves nothing behind.
 */
export function announce(info: Record<string, unknown>): void {
  if (process.send) {
    process.send({ ready: true, ...info });
    process.once("disconnect", () => process.exit(0));
  } else {
    process.stderr.write(`ready ${JSON.stringify(info)}\n`);
  }
  process.once("SIGTERM", () => process.exit(0));
  process.once("SIGINT", () => process.exit(0));
}

/** `--name value` from argv, or the default. */
export function arg(name: string, fallback?: string): string {
  const i = process.argv.indexOf(`--${name}`);
  const value = i >= 0 ? process.argv[i + 1] : undefined;
  if (value !== undefined) return value;
  if (fallback !== undefined) return fallback;
  throw new Error(`missing --${name}`);
}

/** A module of Tollgate's build (dist/), typed from its source. Run `npm run build` first. */
export function distUrl(path: string): string {
  return new URL(`../../dist/${path}`, import.meta.url).href;
}
