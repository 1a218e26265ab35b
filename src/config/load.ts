/**
 * The one config loader: YAML text → interpolated → validated Policy, with every error naming
 * file:line:column and the key path. Compiling the Policy into a Gateway happens in gateway.ts.
 */
import { readFileSync } from "node:fs";
import { LineCounter, parseDocument, isScalar, isMap, visit, type Document, type Node } from "yaml";
import type { z } from "zod";
import { policySchema, type Policy } from "./schema.ts";
import { interpolate, InterpolationError, type InterpolationContext } from "./interpolate.ts";
import { checkReferences } from "./references.ts";

export interface ConfigProblem {
  file: string;
  line: number;
  column: number;
  path: string;
  message: string;
}

export class ConfigError extends Error {
  readonly problems: ConfigProblem[];
  constructor(problems: ConfigProblem[]) {
    super(problems.map(formatProblem).join("\n"));
    this.name = "ConfigError";
    this.problems = problems;
  }
}

export function formatProblem(p: ConfigProblem): string {
  return `${p.file}:${p.line}:${p.column}: ${p.path ? `${p.path}: ` : ""}${p.message}`;
}

export interface LoadOptions {
  /**
   * Offline check: unset variables and unreadable secret files become placeholders and are listed here
   * (with file:line) instead of failing the load. For `tollgate check` only; `serve` is always strict.
   */
  unresolved?: ConfigProblem[];
}

export function loadPolicyFile(file: string, env: NodeJS.ProcessEnv = process.env, options: LoadOptions = {}): Policy {
  let text: string;
  try {
    text = readFileSync(file, "utf8");
  } catch (err) {
    throw new ConfigError([{ file, line: 0, column: 0, path: "", message: `cannot read policy file: ${(err as NodeJS.ErrnoException).code ?? String(err)}` }]);
  }
  return parsePolicy(text, file, env, options);
}

export function parsePolicy(text: string, file: string, env: NodeJS.ProcessEnv = process.env, options: LoadOptions = {}): Policy {
  const lineCounter = new LineCounter();
  const doc = parseDocument(text, { lineCounter, uniqueKeys: true, prettyErrors: false });
  const at = (offset: number | undefined, path: string, message: string): ConfigProblem => {
    const pos = offset === undefined ? { line: 0, col: 0 } : lineCounter.linePos(offset);
    return { file, line: pos.line, column: pos.col, path, message };
  };

  if (doc.errors.length > 0) {
    throw new ConfigError(doc.errors.map((e) => at(e.pos[0], "", e.message.split("\n")[0]!)));
  }

  const problems: ConfigProblem[] = [];
  const ctx: InterpolationContext = { env, baseFile: file };
  visit(doc, {
    Scalar(_key, node, ancestry) {
      if (typeof node.value !== "string") return;
      // Keys are names, not values: only values are interpolated.
      const parent = ancestry[ancestry.length - 1];
      if (parent && "key" in parent && parent.key === node) return;
      const unresolved = options.unresolved;
      if (unresolved) {
        ctx.onMissing = (reason) => {
          unresolved.push(at(node.range?.[0], pathOfNode(doc, node), reason));
          return "unresolved-at-check-time-runtime-only-value";
        };
      }
      try {
        node.value = interpolate(node.value, ctx);
      } catch (err) {
        if (!(err instanceof InterpolationError)) throw err;
        problems.push(at(node.range?.[0], pathOfNode(doc, node), err.message));
      }
    },
  });
  if (problems.length > 0) throw new ConfigError(problems);

  const result = policySchema.safeParse(doc.toJS({ maxAliasCount: 100 }) ?? {});
  if (!result.success) throw new ConfigError(result.error.issues.map((issue) => locateIssue(doc, issue, at)));

  const referenceProblems = checkReferences(result.data);
  if (referenceProblems.length > 0) {
    throw new ConfigError(referenceProblems.map((p) => at(nodeAt(doc, p.path)?.range?.[0], p.path.join("."), p.message)));
  }
  return result.data;
}

function locateIssue(
  doc: Document,
  issue: z.core.$ZodIssue,
  at: (offset: number | undefined, path: string, message: string) => ConfigProblem,
): ConfigProblem {
  const path = issue.path.map((p) => (typeof p === "symbol" ? String(p) : p));
  if (issue.code === "unrecognized_keys") {
    const parent = nodeAt(doc, path);
    const unknown = issue.keys[0]!;
    let offset = parent?.range?.[0];
    if (isMap(parent)) {
      const pair = parent.items.find((item) => isScalar(item.key) && item.key.value === unknown);
      if (pair && isScalar(pair.key)) offset = pair.key.range?.[0];
    }
    return at(offset, [...path, unknown].join("."), `unknown key${issue.keys.length > 1 ? `s ${issue.keys.map((k) => `"${k}"`).join(", ")}` : ` "${unknown}"`}`);
  }
  // Point at the deepest node that exists: a missing key is reported on its parent.
  let node: Node | undefined;
  for (let depth = path.length; depth >= 0 && !node; depth--) node = nodeAt(doc, path.slice(0, depth));
  const missing = issue.code === "invalid_type" && / received undefined$/.test(issue.message);
  return at(node?.range?.[0], path.join("."), missing ? `required key "${String(path.at(-1))}" is missing` : issue.message);
}

function nodeAt(doc: Document, path: readonly (string | number)[]): Node | undefined {
  if (path.length === 0) return (doc.contents as Node | null) ?? undefined;
  const node = doc.getIn(path, true);
  return node && typeof node === "object" && "range" in node ? (node as Node) : undefined;
}

function pathOfNode(doc: Document, target: Node): string {
  let found = "";
  visit(doc, {
    Scalar(_key, node, ancestry) {
      if (node !== target) return;
      const parts: string[] = [];
      for (let i = 0; i < ancestry.length; i++) {
        const step = ancestry[i];
        if (step && typeof step === "object" && "key" in step && "value" in step) {
          const k = (step as { key: unknown }).key;
          if (isScalar(k)) parts.push(String(k.value));
        } else if (step && typeof step === "object" && "items" in step && Array.isArray((step as { items: unknown[] }).items)) {
          const next = ancestry[i + 1] ?? node;
          const index = (step as { items: unknown[] }).items.indexOf(next);
          if (index >= 0 && !isMap(step)) parts.push(String(index));
        }
      }
      found = parts.join(".");
      return visit.BREAK;
    },
  });
  return found;
}
