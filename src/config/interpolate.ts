/**
 * Resolves references in string values at load time:
 *   ${VAR}            environment variable, an error when unset
 *   ${VAR:-default}   environment variable, or the default when unset or empty
 *   ${file:/path}     the contents of a (secret) file, without its trailing newline
 *   os.environ/VAR    LiteLLM's form, accepted as the whole value
 *   $${...}           a literal `${...}`
 */
import { readFileSync } from "node:fs";
import { isAbsolute, resolve, dirname } from "node:path";

export class InterpolationError extends Error {
  override name = "InterpolationError";
}

const LITELLM_ENV = /^os\.environ\/([A-Za-z_][A-Za-z0-9_]*)$/;
const ENV_NAME = /^[A-Za-z_][A-Za-z0-9_]*$/;

export interface InterpolationContext {
  env: NodeJS.ProcessEnv;
  /** Relative `${file:…}` paths resolve against the policy file's folder. */
  baseFile?: string | undefined;
  /**
   * Offline checking (`tollgate check`): instead of failing on an unset variable or unreadable secret file,
   * call this with the reason and use what it returns. `serve` never sets it.
   */
  onMissing?: ((reason: string) => string) | undefined;
}

export function interpolate(value: string, ctx: InterpolationContext): string {
  const litellm = LITELLM_ENV.exec(value);
  if (litellm) return requireEnv(litellm[1]!, ctx);
  if (!value.includes("$")) return value;
  let out = "";
  let i = 0;
  while (i < value.length) {
    const at = value.indexOf("$", i);
    if (at < 0) break;
    out += value.slice(i, at);
    if (value.startsWith("$${", at)) {
      out += "${";
      i = at + 3;
      continue;
    }
    if (!value.startsWith("${", at)) {
      out += "$";
      i = at + 1;
      continue;
    }
    const close = matchingBrace(value, at + 2);
    out += resolveReference(value.slice(at + 2, close), ctx);
    i = close + 1;
  }
  return out + value.slice(i);
}

/** Index of the `}` closing a reference that starts at `from`; defaults may nest references: `${A:-${file:/x}}`. */
function matchingBrace(value: string, from: number): number {
  let depth = 1;
  for (let i = from; i < value.length; i++) {
    if (value.startsWith("${", i)) {
      depth++;
      i++;
    } else if (value[i] === "}" && --depth === 0) return i;
  }
  throw new InterpolationError(`unclosed reference in "${value.length > 60 ? value.slice(0, 60) + "…" : value}"`);
}

function resolveReference(inner: string, ctx: InterpolationContext): string {
  const ref = inner.trim();
  if (ref.startsWith("file:")) return readSecretFile(interpolate(ref.slice(5).trim(), ctx), ctx);
  const fallback = ref.indexOf(":-");
  if (fallback >= 0) {
    const envName = ref.slice(0, fallback);
    assertEnvName(envName);
    const current = ctx.env[envName];
    // The default is itself interpolated, and only when it is used (an unused secret file is never read).
    return current === undefined || current === "" ? interpolate(ref.slice(fallback + 2), ctx) : current;
  }
  assertEnvName(ref);
  return requireEnv(ref, ctx);
}

function assertEnvName(envName: string): void {
  if (!ENV_NAME.test(envName)) throw new InterpolationError(`\${${envName}} is not a valid environment variable reference`);
}

function requireEnv(envName: string, ctx: InterpolationContext): string {
  const current = ctx.env[envName];
  if (current !== undefined) return current;
  const reason = `environment variable ${envName} is not set (use \${${envName}:-default} for a default)`;
  if (ctx.onMissing) return ctx.onMissing(reason);
  throw new InterpolationError(reason);
}

function readSecretFile(path: string, ctx: InterpolationContext): string {
  if (path === "") throw new InterpolationError("${file:} needs a path");
  const full = isAbsolute(path) || !ctx.baseFile ? path : resolve(dirname(ctx.baseFile), path);
  try {
    return readFileSync(full, "utf8").replace(/\r?\n$/, "");
  } catch (err) {
    // The path is configuration, not a secret; the file's contents never appear in the message.
    const reason = `cannot read secret file ${full}: ${(err as NodeJS.ErrnoException).code ?? "error"}`;
    if (ctx.onMissing) return ctx.onMissing(reason);
    throw new InterpolationError(`cannot read secret file ${full}: ${(err as NodeJS.ErrnoException).code ?? "error"}`);
  }
}
