#!/usr/bin/env node
/** The `tollgate` CLI: thin — parse arguments, call the rooms. */
import { parseArgs } from "node:util";
import { writeFileSync } from "node:fs";
import { createLogger } from "./observe/audit.ts";
import { policyJsonSchema } from "./config/schema.ts";
import { serve } from "./cli/serve.ts";
import { check } from "./cli/check.ts";
import { newKey } from "./cli/keys.ts";
import { demo } from "./cli/demo.ts";
import { explainCommand } from "./cli/explain.ts";
import { VERSION } from "./observe/metrics.ts";

const USAGE = `tollgate ${VERSION} — auth, policy and metering sidecar for LLM gateways

Usage:
  tollgate serve [--config FILE]      run (policy from --config or TOLLGATE_CONFIG; none: embedded quickstart)
  tollgate check [--strict] FILE...   validate policy files (exit 1 if any is invalid); unset variables and
                                      missing secret files are notes unless --strict
  tollgate schema [--out FILE]        print the policy JSON Schema (for editor completion)
  tollgate keys new --id ID [--user U] [--team T] [--roles a,b] [--groups g] [--models m1,m2] [--expires ISO]
                                      make a virtual API key and the policy entry holding its hash
  tollgate explain --config FILE [--token T [--offline] | --claims FILE [--authenticator NAME] | --key K]
                   [--method POST] --path /v1/chat/completions [--model gpt-4o]
                                      why a request would be allowed or denied (no upstream is called)
  tollgate demo [--exit]              stand-in upstream + Tollgate + the openai SDK: a thirty-second tour
  tollgate version`;

const list = (v: string | undefined) => (v ? v.split(",").map((s) => s.trim()).filter(Boolean) : undefined);
const print = (line: string) => process.stdout.write(line + "\n");

async function main(argv: string[]): Promise<number> {
  const [command, ...rest] = argv;
  switch (command) {
    case "serve": {
      const { values } = parseArgs({ args: rest, options: { config: { type: "string", short: "c" } } });
      await serve({ config: values.config, logger: createLogger() });
      return -1; // keep running until a signal
    }
    case "check": {
      const { positionals, values } = parseArgs({ args: rest, allowPositionals: true, options: { strict: { type: "boolean" } } });
      if (positionals.length === 0) throw new UsageError("check needs at least one policy file");
      return (await check(positionals, print, values.strict)) > 0 ? 1 : 0;
    }
    case "schema": {
      const { values } = parseArgs({ args: rest, options: { out: { type: "string" } } });
      const text = JSON.stringify({ $id: "https://tollgate.dev/policy.schema.json", title: "Tollgate policy", ...(policyJsonSchema() as object) }, null, 2) + "\n";
      if (values.out) writeFileSync(values.out, text);
      else process.stdout.write(text);
      return 0;
    }
    case "keys": {
      const [sub, ...args] = rest;
      if (sub !== "new") throw new UsageError("keys supports: keys new --id ID …");
      const { values } = parseArgs({
        args,
        options: { id: { type: "string" }, user: { type: "string" }, team: { type: "string" }, roles: { type: "string" }, groups: { type: "string" }, models: { type: "string" }, expires: { type: "string" }, prefix: { type: "string" } },
      });
      if (!values.id) throw new UsageError("keys new needs --id (a name for the key, e.g. alice-laptop)");
      print(newKey({ id: values.id, user: values.user, team: values.team, roles: list(values.roles), groups: list(values.groups), models: list(values.models), expires: values.expires, prefix: values.prefix }).text);
      return 0;
    }
    case "explain": {
      const { values } = parseArgs({
        args: rest,
        options: {
          config: { type: "string", short: "c" }, token: { type: "string" }, key: { type: "string" }, claims: { type: "string" },
          authenticator: { type: "string" }, offline: { type: "boolean" }, method: { type: "string" }, path: { type: "string" }, model: { type: "string" },
        },
      });
      const config = values.config ?? process.env.TOLLGATE_CONFIG;
      if (!config || !values.path) throw new UsageError("explain needs --config (or TOLLGATE_CONFIG) and --path");
      return explainCommand(
        { config, method: values.method ?? "POST", path: values.path, model: values.model, credential: values.token ?? values.key, offline: values.offline, claimsFile: values.claims, authenticator: values.authenticator },
        print,
      );
    }
    case "demo": {
      const { values } = parseArgs({ args: rest, options: { exit: { type: "boolean" }, port: { type: "string" } } });
      const keepRunning = !values.exit;
      const result = await demo({ logger: createLogger(undefined, process.env.TOLLGATE_LOG_LEVEL ?? "warn"), print, keepRunning, port: values.port ? Number(values.port) : undefined });
      const failed = result.outcomes.filter((o) => !o.ok).length;
      if (!keepRunning) {
        await result.stop();
        return failed > 0 ? 1 : 0;
      }
      const stop = () => void result.stop().then(() => process.exit(0));
      process.once("SIGINT", stop);
      process.once("SIGTERM", stop);
      return -1;
    }
    case "version":
    case "--version":
      print(VERSION);
      return 0;
    case undefined:
    case "help":
    case "--help":
    case "-h":
      print(USAGE);
      return 0;
    default:
      throw new UsageError(`unknown command "${command}"`);
  }
}

class UsageError extends Error {}

// A last line of defence: a promise nobody awaited is logged, never a silent crash of every open stream.
process.on("unhandledRejection", (reason) => {
  process.stderr.write(`tollgate: unhandled rejection: ${reason instanceof Error ? reason.message : String(reason)}\n`);
});

main(process.argv.slice(2)).then(
  (code) => {
    if (code >= 0) process.exit(code);
  },
  (err: unknown) => {
    if (err instanceof UsageError || (err as { code?: string }).code?.startsWith("ERR_PARSE_ARGS")) {
      process.stderr.write(`tollgate: ${(err as Error).message}\n\n${USAGE}\n`);
      process.exit(64);
    }
    if (process.exitCode === 2) process.exit(2); // invalid policy, already explained
    process.stderr.write(`tollgate: ${(err as Error).stack ?? String(err)}\n`);
    process.exit(1);
  },
);
