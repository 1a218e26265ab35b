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

const REFERENCE = /\$\$\{|\$\{([^}]*)\}/g;
const LITELLM_ENV = /^os\.environ\/([A-Za-z_][A-Za-z0-9_]*)$/;
const ENV_NAME = /^[A-Za-z_][A-Za-z0-9_]*$/;

export interface InterpolationContext {
  env: NodeJS.ProcessEnv;
  /** Relative `${file:…}` paths resolve against the policy file's folder. */
  baseFile?: string | undefined;
}

export function interpolate(value: string, ctx: InterpolationContext): string {
  const litellm = LITELLM_ENV.exec(value);
  if (litellm) return requireEnv(litellm[1]!, ctx);
  if (!value.includes("$")) return value;
  return value.replace(REFERENCE, (whole, inner: string | undefined) => {
    if (whole === "$${") return "${";
    const ref = inner!.trim();
    if (ref.startsWith("file:")) return readSecretFile(ref.slice(5).trim(), ctx);
    const fallback = ref.indexOf(":-");
    if (fallback >= 0) {
      const envName = ref.slice(0, fallback);
      assertEnvName(envName);
      const current = ctx.env[envName];
      return current === undefined || current === "" ? ref.slice(fallback + 2) : current;
    }
    assertEnvName(ref);
    return requireEnv(ref, ctx);
  });
}

function assertEnvName(envName: string): void {
  if (!ENV_NAME.test(envName)) throw new InterpolationError(`\${${envName}} is not a valid environment variable reference`);
}

function requireEnv(envName: string, ctx: InterpolationContext): string {
  const current = ctx.env[envName];
  if (current === undefined) throw new InterpolationError(`environment variable ${envName} is not set (use \${${envName}:-default} for a default)`);
  return current;
}

function readSecretFile(path: string, ctx: InterpolationContext): string {
  if (path === "") throw new InterpolationError("${file:} needs a path");
  const full = isAbsolute(path) || !ctx.baseFile ? path : resolve(dirname(ctx.baseFile), path);
  try {
    return readFileSync(full, "utf8").replace(/\r?\n$/, "");
  } catch (err) {
    // The path is configuration, not a secret; the file's contents never appear in the message.
    throw new InterpolationError(`cannot read secret file ${full}: ${(err as NodeJS.ErrnoException).code ?? "error"}`);
  }
}
