import type { Logger } from "pino";
import { TollgateServer, type PolicySource } from "../server.ts";
import { fileSource, quickstartSource } from "../config/source.ts";
import { generateApiKey, hashApiKey } from "../auth/keys.ts";
import { ConfigError } from "../config/load.ts";

export interface ServeOptions {
  config?: string | undefined;
  logger: Logger;
  /** Where to print the one-time quickstart key and curl line (stderr by default; never the audit stream). */
  print?: (line: string) => void;
}

/** Starts Tollgate, wiring SIGTERM/SIGINT to a graceful drain and SIGHUP to a reload. */
export async function serve(options: ServeOptions): Promise<TollgateServer> {
  const print = options.print ?? ((line: string) => process.stderr.write(line + "\n"));
  const configFile = options.config ?? process.env.TOLLGATE_CONFIG;
  let source: PolicySource;
  let quickstartKey: string | undefined;
  if (configFile) source = fileSource(configFile);
  else {
    quickstartKey = generateApiKey();
    source = quickstartSource(hashApiKey(quickstartKey));
  }
  let server: TollgateServer;
  try {
    server = new TollgateServer({ source, logger: options.logger });
  } catch (err) {
    if (err instanceof ConfigError) {
      print(`tollgate: the policy is invalid:\n${err.message}`);
      process.exitCode = 2;
    }
    throw err;
  }
  const { port } = await server.start();
  if (quickstartKey) {
    const upstream = server.gateway.policy.upstreams.llm?.url;
    print("");
    print(`Tollgate is running on the embedded quickstart policy, in front of ${upstream}.`);
    print(`Your API key for this run (shown once, not stored): ${quickstartKey}`);
    print(`Try it:`);
    print(`  curl -s http://127.0.0.1:${port}/v1/chat/completions -H "Authorization: Bearer ${quickstartKey}" \\`);
    print(`    -H "content-type: application/json" -d '{"model":"gpt-4o-mini","messages":[{"role":"user","content":"hi"}]}'`);
    print("");
  }
  installSignals(server, options.logger);
  return server;
}

function installSignals(server: TollgateServer, logger: Logger): void {
  const stop = (signal: string) => {
    logger.info({ signal }, "shutdown requested");
    server.shutdown().then(
      (cut) => process.exit(cut > 0 ? 1 : 0),
      (err) => {
        logger.error({ err }, "shutdown failed");
        process.exit(1);
      },
    );
  };
  process.once("SIGTERM", () => stop("SIGTERM"));
  process.once("SIGINT", () => stop("SIGINT"));
  process.on("SIGHUP", () => void server.reload("SIGHUP"));
}
