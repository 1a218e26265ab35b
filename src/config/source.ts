/** Where a policy comes from: a file (watched for reload) or the embedded quickstart. */
import { fileURLToPath } from "node:url";
import { loadPolicyFile } from "./load.ts";
import type { PolicySource } from "../server.ts";

/** policies/quickstart.yaml, found from both src/config and dist/config. */
export const QUICKSTART_FILE = fileURLToPath(new URL("../../policies/quickstart.yaml", import.meta.url));

export function fileSource(file: string, env: NodeJS.ProcessEnv = process.env): PolicySource {
  return { description: file, file, load: () => loadPolicyFile(file, env) };
}

/** The quickstart policy with a key generated for this process; the key's hash reaches it through `env`. */
export function quickstartSource(keyHash: string, env: NodeJS.ProcessEnv = process.env): PolicySource {
  const withKey = { ...env, TOLLGATE_QUICKSTART_KEY_HASH: keyHash };
  return { description: "embedded quickstart (policies/quickstart.yaml)", load: () => loadPolicyFile(QUICKSTART_FILE, withKey) };
}
