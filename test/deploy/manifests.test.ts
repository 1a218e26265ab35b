/**
 * deploy/: the Dockerfile, the Kubernetes sidecar manifests and the Prometheus rules, checked against each other
 * and against the code they describe (policy schema, admin endpoints, metric names). Nothing here needs a
 * cluster or a Docker engine; promtool and kubectl are used when they are on PATH and reported when not.
 */
import t from "tap";
import { readFileSync, readdirSync, existsSync, statSync } from "node:fs";
import { join, relative, dirname, basename } from "node:path";
import { fileURLToPath } from "node:url";
import { spawnSync } from "node:child_process";
import { parseAllDocuments, parse } from "yaml";
import { parsePolicy, ConfigError } from "../../src/config/load.ts";
import type { Policy } from "../../src/config/schema.ts";
import { TOLLGATE_NODE_FLAGS, TOLLGATE_ENV } from "../../bench/lib/targets.ts";

// Parsed YAML is untyped by nature; the assertions below are what give it shape.
type Y = any;

const ROOT = fileURLToPath(new URL("../../", import.meta.url));
const DEPLOY = join(ROOT, "deploy");
const K8S = join(DEPLOY, "kubernetes");
const PROM = join(DEPLOY, "prometheus");
const read = (path: string) => readFileSync(path, "utf8");

function walk(dir: string): string[] {
  return readdirSync(dir).flatMap((name) => {
    const path = join(dir, name);
    return statSync(path).isDirectory() ? walk(path) : [path];
  });
}

const yamlFiles = [...walk(K8S), ...walk(PROM)].filter((f) => /\.ya?ml$/.test(f)).sort();

/** Every document of every YAML file under deploy/kubernetes and deploy/prometheus, with its file. */
const parsed = yamlFiles.map((file) => ({ file, docs: parseAllDocuments(read(file)) }));
const k8sObjects: { file: string; obj: Y }[] = parsed
  .filter(({ file }) => file.startsWith(K8S + "/"))
  .flatMap(({ file, docs }) => (Array.isArray(docs) ? docs : [docs]).map((d) => ({ file, obj: d.toJS() as Y })))
  .filter(({ obj }) => obj && typeof obj === "object" && "kind" in obj);

function find(kind: string, name?: string): Y {
  const found = k8sObjects.filter(({ obj }) => obj.kind === kind && (name === undefined || obj.metadata?.name === name));
  if (found.length !== 1) throw new Error(`expected exactly one ${kind}${name ? ` ${name}` : ""}, found ${found.length}`);
  return found[0]!.obj;
}

const deployment = find("Deployment");
const podSpec: Y = deployment.spec.template.spec;
const podLabels: Record<string, string> = deployment.spec.template.metadata.labels;
const container = (name: string): Y => {
  const c = podSpec.containers.find((x: Y) => x.name === name);
  if (!c) throw new Error(`no container ${name} in the Deployment`);
  return c;
};
const tollgate = container("tollgate");
const litellm = container("litellm");

/** A port as Kubernetes resolves it against a container: a number, or the name of one of its ports. */
function resolvePort(c: Y, port: number | string): number | undefined {
  if (typeof port === "number") return port;
  if (/^\d+$/.test(port)) return Number(port);
  return (c.ports ?? []).find((p: Y) => p.name === port)?.containerPort;
}

const selects = (selector: Record<string, string>, labels: Record<string, string>) =>
  Object.keys(selector).length > 0 && Object.entries(selector).every(([k, v]) => labels[k] === v);

// ---- the policy in the ConfigMap -------------------------------------------------------------------------------

const policyVolume = podSpec.volumes.find((v: Y) => v.name === tollgate.volumeMounts.find((m: Y) => m.mountPath === "/etc/tollgate")?.name);
const policyConfigMap = find("ConfigMap", policyVolume?.configMap?.name);
const configArg = tollgate.args[tollgate.args.indexOf("--config") + 1] as string;
const policyText: string = policyConfigMap.data[basename(configArg)];

/** ${VAR} and ${VAR:-default} references in a policy text (a `$${` is a literal, not a reference). */
function envReferences(text: string): { required: string[]; optional: string[]; files: string[] } {
  const required = new Set<string>();
  const optional = new Set<string>();
  const files = new Set<string>();
  for (const m of text.matchAll(/\$\$\{|\$\{([^}]*)\}/g)) {
    if (m[0] === "$${") continue;
    const ref = m[1]!.trim();
    if (ref.startsWith("file:")) files.add(ref.slice(5).trim());
    else if (ref.includes(":-")) optional.add(ref.slice(0, ref.indexOf(":-")));
    else required.add(ref);
  }
  return { required: [...required], optional: [...optional], files: [...files] };
}

const refs = envReferences(policyText);
const testEnv = Object.fromEntries(refs.required.map((name) => [name, `test-value-of-${name}`]));
const policyFile = relative(ROOT, k8sObjects.find(({ obj }) => obj === policyConfigMap)!.file);
const policy: Policy = parsePolicy(policyText, `${policyFile}#${basename(configArg)}`, testEnv);
const listenPort = policy.server.listen.port;
const adminPort = policy.server.admin.port;

// ---- tests -----------------------------------------------------------------------------------------------------

t.test("every YAML file under deploy/kubernetes and deploy/prometheus parses cleanly", async (t) => {
  t.ok(yamlFiles.length >= 10, `found ${yamlFiles.length} YAML files`);
  for (const { file, docs } of parsed) {
    const list = Array.isArray(docs) ? docs : [docs];
    t.ok(list.length > 0, `${relative(ROOT, file)} has a document`);
    for (const doc of list) {
      t.same(doc.errors.map((e) => e.message), [], `${relative(ROOT, file)} has no YAML errors`);
      t.same(doc.warnings.map((e) => e.message), [], `${relative(ROOT, file)} has no YAML warnings`);
    }
  }
  for (const { file, obj } of k8sObjects) {
    if (obj.kind === "Kustomization") continue;
    t.ok(obj.apiVersion && obj.metadata?.name, `${relative(ROOT, file)}: ${obj.kind} has apiVersion and metadata.name`);
  }
});

t.test("the ConfigMap's policy.yaml is a valid Tollgate policy with its secret taken from the environment", async (t) => {
  t.ok(policyText, `the policy ConfigMap has the key ${basename(configArg)} that --config ${configArg} reads`);
  t.same(refs.required, ["LITELLM_MASTER_KEY"], "the policy references the LiteLLM master key by environment variable");
  t.same(refs.files, [], "no ${file:} references (none is mounted)");
  // Without the variable the policy must not load: the key is really read from the environment, not inline.
  t.throws(() => parsePolicy(policyText, "policy.yaml", {}), ConfigError, "the policy refuses to load without LITELLM_MASTER_KEY");
  const upstream = policy.upstreams.litellm;
  t.ok(upstream, "the policy has an upstream named litellm");
  t.same(upstream!.credential, { type: "static", header: "authorization", value: "Bearer test-value-of-LITELLM_MASTER_KEY" }, "Tollgate injects the master key as a bearer credential");
  t.equal(policy.server.listen.host, "0.0.0.0", "the data port listens on all interfaces (the Service must reach it)");
  t.equal(policy.server.admin.host, "0.0.0.0", "the admin port listens on all interfaces (the kubelet and Prometheus must reach it)");
  t.ok(policy.server.watch, "the policy file is watched, so a ConfigMap update reloads it");
  t.ok(policy.authenticators.length > 0 && policy.routes.every((r) => r.allow.every((a) => !a.public)), "every route requires an authenticated caller");
});

t.test("the policy's environment comes from the tollgate container", async (t) => {
  const envNames = new Set((tollgate.env ?? []).map((e: Y) => e.name));
  for (const name of refs.required) t.ok(envNames.has(name), `tollgate container provides ${name}`);
  const secretRefs = (c: Y) => (c.env ?? []).filter((e: Y) => e.valueFrom?.secretKeyRef).map((e: Y) => e.valueFrom.secretKeyRef.key);
  t.same(secretRefs(tollgate), ["LITELLM_MASTER_KEY"], "Tollgate holds only the credential it injects, not the provider keys");
});

t.test("container ports match the policy's listeners", async (t) => {
  t.equal(resolvePort(tollgate, "http"), listenPort, `tollgate's http port is server.listen.port ${listenPort}`);
  t.equal(resolvePort(tollgate, "admin"), adminPort, `tollgate's admin port is server.admin.port ${adminPort}`);
  t.equal(tollgate.ports.length, 2, "tollgate declares exactly its data and admin ports");
  t.notOk(litellm.ports?.length, "litellm declares no container ports: nothing outside the pod may name one");
});

t.test("the Tollgate policy is mounted as a watched folder from its ConfigMap", async (t) => {
  const mount = tollgate.volumeMounts.find((m: Y) => m.name === policyVolume.name);
  t.equal(mount.mountPath, dirname(configArg), "--config points into the policy volume");
  t.notOk(mount.subPath, "no subPath: subPath mounts never receive ConfigMap updates, so reload would never happen");
  t.equal(mount.readOnly, true, "the policy is mounted read-only");
});

t.test("probes point at the admin port: readiness /readyz, liveness /healthz", async (t) => {
  const admin = read(join(ROOT, "src/observe/admin.ts"));
  for (const [probe, path] of [["readinessProbe", "/readyz"], ["livenessProbe", "/healthz"]] as const) {
    const get = tollgate[probe]?.httpGet;
    t.ok(get, `tollgate has an httpGet ${probe}`);
    t.equal(get.path, path, `${probe} path is ${path}`);
    t.equal(resolvePort(tollgate, get.port), adminPort, `${probe} port resolves to the admin port ${adminPort}`);
    t.not(resolvePort(tollgate, get.port), listenPort, `${probe} is not on the data port`);
    t.match(admin, `case "${path}"`, `src/observe/admin.ts serves ${path}`);
  }
  t.match(admin, `case "/metrics"`, "src/observe/admin.ts serves /metrics");
});

t.test("the Service exposes only Tollgate's data port", async (t) => {
  const service = find("Service");
  t.ok(selects(service.spec.selector, podLabels), "the Service selects the gateway pods");
  t.equal(service.spec.ports.length, 1, "one Service port");
  for (const p of service.spec.ports) {
    const target = resolvePort(tollgate, p.targetPort ?? p.port);
    t.equal(target, listenPort, `Service port ${p.port} targets tollgate's data port ${listenPort}`);
    t.not(target, adminPort, "not the admin port");
    t.not(target, 4000, "not LiteLLM's port");
    if (typeof p.targetPort === "string") t.equal(resolvePort(litellm, p.targetPort), undefined, `targetPort "${p.targetPort}" names no litellm port`);
  }
});

t.test("Prometheus annotations and the PodMonitor scrape the admin port's /metrics", async (t) => {
  const a = deployment.spec.template.metadata.annotations;
  t.equal(a["prometheus.io/scrape"], "true");
  t.equal(a["prometheus.io/port"], String(adminPort), `prometheus.io/port is the policy's admin port ${adminPort}`);
  t.equal(a["prometheus.io/path"], "/metrics");
  const podMonitor = find("PodMonitor");
  t.ok(selects(podMonitor.spec.selector.matchLabels, podLabels), "the PodMonitor selects the gateway pods");
  t.equal(podMonitor.spec.podMetricsEndpoints.length, 1);
  const endpoint = podMonitor.spec.podMetricsEndpoints[0];
  t.equal(resolvePort(tollgate, endpoint.port), adminPort, "the PodMonitor's port names tollgate's admin port");
  t.equal(endpoint.path, "/metrics");
});

t.test("the NetworkPolicy admits the data port from anywhere and the admin port from monitoring only", async (t) => {
  const np = find("NetworkPolicy");
  t.ok(selects(np.spec.podSelector.matchLabels, podLabels), "it selects the gateway pods");
  t.ok(np.spec.policyTypes.includes("Ingress"), "it restricts ingress");
  const portsOf = (rule: Y) => (rule.ports ?? []).map((p: Y) => resolvePort(tollgate, p.port));
  for (const rule of np.spec.ingress) {
    t.ok(rule.ports?.length, "every ingress rule names its ports (a rule without ports opens all of them)");
    if (!rule.from) t.same(portsOf(rule), [listenPort], "the rule open to every source admits only the data port");
    if (portsOf(rule).includes(adminPort)) {
      t.same(rule.from, [{ namespaceSelector: { matchLabels: { "kubernetes.io/metadata.name": "monitoring" } } }], "the admin port is open to the monitoring namespace only");
    }
  }
  const all = np.spec.ingress.flatMap(portsOf).sort();
  t.same(all, [listenPort, adminPort].sort(), "exactly the data and admin ports are admitted (never LiteLLM's 4000)");
});

t.test("termination grace outlasts the preStop pause plus the policy's shutdownGrace", async (t) => {
  const grace = podSpec.terminationGracePeriodSeconds;
  const preStop = tollgate.lifecycle?.preStop;
  const pause = preStop?.sleep?.seconds ?? (preStop?.exec?.command?.[0] === "sleep" ? Number(preStop.exec.command[1]) : 0);
  t.ok(Number.isFinite(pause) && pause > 0, `tollgate pauses ${pause}s before SIGTERM so endpoint removal propagates`);
  t.ok(grace > policy.server.shutdownGrace / 1000, `terminationGracePeriodSeconds ${grace} > shutdownGrace ${policy.server.shutdownGrace / 1000}s`);
  t.ok(grace > pause + policy.server.shutdownGrace / 1000, `and > preStop ${pause}s + shutdownGrace`);
  t.match(JSON.stringify(litellm.lifecycle?.preStop?.exec?.command ?? []), `127.0.0.1:${adminPort}/healthz`, "LiteLLM waits for Tollgate's admin port to close before stopping");
});

t.test("both containers run non-root, read-only, without capabilities, with resources", async (t) => {
  t.equal(podSpec.securityContext.runAsNonRoot, true, "pod-level runAsNonRoot");
  t.equal(podSpec.automountServiceAccountToken, false, "no API token in the pod");
  t.equal(podSpec.enableServiceLinks, false, "no service-link variables that could shadow ${TOLLGATE_…} policy references");
  for (const c of podSpec.containers) {
    const sc = c.securityContext ?? {};
    t.not(sc.runAsNonRoot, false, `${c.name}: runAsNonRoot not overridden`);
    t.ok(Number.isInteger(sc.runAsUser) && sc.runAsUser > 0, `${c.name}: numeric non-root runAsUser`);
    t.equal(sc.readOnlyRootFilesystem, true, `${c.name}: read-only root filesystem`);
    t.equal(sc.allowPrivilegeEscalation, false, `${c.name}: no privilege escalation`);
    t.ok(sc.capabilities?.drop?.includes("ALL"), `${c.name}: drops ALL capabilities`);
    t.notOk(sc.capabilities?.add?.length, `${c.name}: adds none back`);
    t.ok(c.resources?.requests?.cpu && c.resources?.requests?.memory, `${c.name}: cpu and memory requests`);
    t.ok(c.resources?.limits?.memory, `${c.name}: a memory limit`);
  }
});

t.test("LiteLLM listens on loopback only, where the policy's upstream points", async (t) => {
  const args: string[] = litellm.args;
  const arg = (flag: string): string => String(args[args.indexOf(flag) + 1]);
  t.equal(arg("--host"), "127.0.0.1", "litellm binds 127.0.0.1");
  const url = new URL(policy.upstreams.litellm!.url);
  t.equal(url.hostname, "127.0.0.1", "the policy's upstream is on loopback");
  t.equal(url.port, arg("--port"), `the policy's upstream port is litellm's --port ${arg("--port")}`);
  t.notOk(tollgate.ports.some((p: Y) => p.containerPort === Number(arg("--port"))), "tollgate does not use LiteLLM's port");

  const litellmConfigMount = litellm.volumeMounts.find((m: Y) => arg("--config").startsWith(m.mountPath + "/"));
  const litellmConfigMap = find("ConfigMap", podSpec.volumes.find((v: Y) => v.name === litellmConfigMount.name).configMap.name);
  const config = parse(litellmConfigMap.data[basename(arg("--config"))]);
  t.equal(config.general_settings.master_key, "os.environ/LITELLM_MASTER_KEY", "LiteLLM checks the master key from its environment");
  const keyRef = (c: Y, name: string) => c.env.find((e: Y) => e.name === name)?.valueFrom?.secretKeyRef;
  t.same(keyRef(litellm, "LITELLM_MASTER_KEY"), keyRef(tollgate, "LITELLM_MASTER_KEY"), "LiteLLM checks the same Secret key Tollgate sends");

  const offered = new Set(config.model_list.map((m: Y) => m.model_name));
  const allowed = policy.routes.flatMap((r) => [...(r.models ?? []), ...r.allow.flatMap((a) => a.models ?? [])]);
  t.ok(allowed.length > 0, "the policy names the models it allows");
  for (const model of allowed.filter((m) => !/[*?]/.test(m))) t.ok(offered.has(model), `model ${model} allowed by the policy is in LiteLLM's model_list`);
});

t.test("Secret references match the example Secret, which holds placeholders only", async (t) => {
  const secret = find("Secret");
  const keys = Object.keys(secret.stringData ?? secret.data ?? {});
  for (const c of podSpec.containers) {
    for (const e of (c.env ?? []).filter((x: Y) => x.valueFrom?.secretKeyRef)) {
      t.equal(e.valueFrom.secretKeyRef.name, secret.metadata.name, `${c.name}/${e.name} reads the Secret ${secret.metadata.name}`);
      t.ok(keys.includes(e.valueFrom.secretKeyRef.key), `${c.name}/${e.name}: key ${e.valueFrom.secretKeyRef.key} is in the example`);
    }
  }
  for (const value of Object.values(secret.stringData ?? {})) t.match(value, /REPLACE/, "example values are marked as placeholders");
  for (const file of walk(DEPLOY)) {
    const text = read(file);
    t.notMatch(text, /sk-[A-Za-z0-9]{20,}/, `${relative(ROOT, file)}: nothing shaped like an OpenAI/LiteLLM key`);
    t.notMatch(text, /AKIA[0-9A-Z]{16}/, `${relative(ROOT, file)}: nothing shaped like an AWS access key id`);
    t.notMatch(text, /-----BEGIN [A-Z ]*PRIVATE KEY-----/, `${relative(ROOT, file)}: no private key`);
  }
});

t.test("the kustomization lists every manifest except the opt-in ones, with images that match", async (t) => {
  const k = find("Kustomization");
  const listed: string[] = k.resources;
  for (const r of listed) t.ok(existsSync(join(K8S, r)), `resource ${r} exists`);
  t.notOk(listed.includes("secret.example.yaml"), "the example Secret is not applied (it would overwrite the real one)");
  const optIn = new Set(["kustomization.yaml", "secret.example.yaml", "podmonitor.yaml"]);
  for (const file of readdirSync(K8S).filter((f) => f.endsWith(".yaml"))) {
    if (!optIn.has(file)) t.ok(listed.includes(file), `${file} is listed in resources`);
  }
  const imageName = (image: string) => image.replace(/@.*$/, "").replace(/:[^/:]+$/, "");
  const containerImages = podSpec.containers.map((c: Y) => imageName(c.image));
  for (const image of k.images) t.ok(containerImages.includes(image.name), `images: ${image.name} matches a container image, so the rewrite applies`);
  const namespace = find("Namespace");
  t.equal(k.namespace, namespace.metadata.name, "the kustomization's namespace is the one it creates");
});

t.test("kubectl kustomize renders the kustomization", async (t) => {
  const probe = spawnSync("kubectl", ["version", "--client"], { encoding: "utf8" });
  if (probe.error) {
    t.comment("kubectl is not on PATH: the rendering check was not run");
    return;
  }
  const run = spawnSync("kubectl", ["kustomize", K8S], { encoding: "utf8" });
  t.equal(run.status, 0, `kubectl kustomize exits 0 ${run.stderr}`);
  const objects: Y[] = parseAllDocuments(run.stdout).map((d) => d.toJS());
  const kustomization = find("Kustomization");
  t.same(objects.map((o) => o.kind).sort(), ["ConfigMap", "ConfigMap", "Deployment", "Namespace", "NetworkPolicy", "Service", "ServiceAccount"], "the rendered kinds");
  for (const o of objects.filter((x) => x.kind !== "Namespace")) t.equal(o.metadata.namespace, kustomization.namespace, `${o.kind}/${o.metadata.name} lands in ${kustomization.namespace}`);
  const rendered = objects.find((o) => o.kind === "Deployment").spec.template.spec.containers;
  const image = kustomization.images.find((i: Y) => i.name === "tollgate");
  t.equal(rendered.find((c: Y) => c.name === "tollgate").image, `${image.newName}:${image.newTag}`, "the tollgate image is rewritten");
  t.equal(objects.find((o) => o.kind === "ConfigMap" && o.metadata.name === policyConfigMap.metadata.name)?.data["policy.yaml"], policyText, "the policy ConfigMap keeps its fixed name and content (no hash suffix that would restart pods)");
});

// ---- Dockerfile ---------------------------------------------------------------------------------------------------

interface Instruction {
  op: string;
  args: string;
}
interface Stage {
  from: string;
  name: string | undefined;
  instructions: Instruction[];
}

function parseDockerfile(text: string): { args: Map<string, string>; stages: Stage[] } {
  const lines = text.split("\n").filter((l) => !/^\s*#/.test(l));
  const joined = lines.join("\n").replace(/\\\n/g, " ");
  const args = new Map<string, string>();
  const stages: Stage[] = [];
  for (const line of joined.split("\n").map((l) => l.trim()).filter(Boolean)) {
    const [, op, rest] = /^(\S+)\s+(.*)$/.exec(line) ?? [];
    if (!op || rest === undefined) throw new Error(`unparsed Dockerfile line: ${line}`);
    const upper = op.toUpperCase();
    if (upper === "FROM") {
      const [, image, name] = /^(\S+)(?:\s+AS\s+(\S+))?$/i.exec(rest) ?? [];
      stages.push({ from: image!.replace(/\$\{(\w+)\}/g, (_, a: string) => args.get(a) ?? `\${${a}}`), name, instructions: [] });
    } else if (stages.length === 0 && upper === "ARG") {
      const [name, value] = rest.split("=");
      args.set(name!, value ?? "");
    } else {
      stages.at(-1)?.instructions.push({ op: upper, args: rest });
    }
  }
  return { args, stages };
}

const dockerfile = parseDockerfile(read(join(DEPLOY, "Dockerfile")));
const runtime = dockerfile.stages.at(-1)!;
const instr = (stage: Stage, op: string) => stage.instructions.filter((i) => i.op === op);

t.test("the Dockerfile builds on node:24 and runs on a slim image as a numeric non-root user", async (t) => {
  t.ok(dockerfile.stages.length >= 2, "multi-stage");
  t.match(dockerfile.stages[0]!.from, /^node:24(\.[\d.]+)?(-[a-z]+)?$/, "the build stage is a node:24 image");
  t.match(runtime.from, /^(node:24(\.[\d.]+)?-(bookworm-|trixie-)?slim|gcr\.io\/distroless\/nodejs24\S*)$/, "the runtime is node:24-slim or distroless nodejs24");
  const users = instr(runtime, "USER");
  t.equal(users.length, 1, "the runtime stage sets USER once");
  const [uid, gid] = users[0]!.args.split(":");
  t.match(uid, /^\d+$/, "USER is numeric (runAsNonRoot can verify it)");
  t.ok(Number(uid) > 0, "USER is not root");
  if (gid !== undefined) t.ok(Number(gid) > 0, "the group is not root");
  t.equal(tollgate.securityContext.runAsUser, Number(uid), "the Deployment runs tollgate as the image's USER");
  const last = runtime.instructions.map((i) => i.op);
  t.ok(last.lastIndexOf("USER") > last.lastIndexOf("COPY") && last.lastIndexOf("USER") > last.lastIndexOf("RUN"), "USER comes after every COPY and RUN");
});

t.test("the Dockerfile's entrypoint, command and ports match the manifests", async (t) => {
  t.same(JSON.parse(instr(runtime, "ENTRYPOINT")[0]!.args), ["node", "dist/main.js"]);
  const cmd = JSON.parse(instr(runtime, "CMD")[0]!.args);
  t.same(cmd, ["serve", "--config", "/etc/tollgate/policy.yaml"]);
  t.same(tollgate.args, cmd, "the Deployment's args are the image's CMD");
  const exposed = instr(runtime, "EXPOSE").flatMap((i) => i.args.split(/\s+/)).map((p) => Number(p.replace(/\/tcp$/, "")));
  t.same(exposed.sort(), [listenPort, adminPort].sort(), "EXPOSE lists the data and admin ports");
  t.equal(instr(runtime, "HEALTHCHECK").length, 0, "no HEALTHCHECK (Kubernetes probes the admin port instead)");
  t.equal(instr(runtime, "WORKDIR").at(-1)?.args, "/app");
});

t.test("the image, `npm start` and the bench run Node with the same flags and environment", async (t) => {
  // Every NAME=value of the runtime stage's ENV lines, quotes removed; a later assignment wins, as in Docker.
  const env = new Map<string, string>();
  for (const { args } of instr(runtime, "ENV")) {
    for (const m of args.matchAll(/(?:^|\s)([A-Za-z_][A-Za-z0-9_]*)=(?:"([^"]*)"|(\S*))/g)) env.set(m[1]!, m[2] ?? m[3] ?? "");
  }
  t.ok(env.has("NODE_OPTIONS"), "the runtime stage sets NODE_OPTIONS");
  const imageFlags = (env.get("NODE_OPTIONS") ?? "").split(/\s+/).filter(Boolean);
  t.same(imageFlags, TOLLGATE_NODE_FLAGS, "the image's NODE_OPTIONS are the flags the bench measures");
  const shipped = Object.entries(TOLLGATE_ENV);
  t.ok(shipped.length > 0, "the bench names the environment Tollgate ships with");
  for (const [name, value] of shipped) t.equal(env.get(name), value, `the runtime stage sets ${name}=${value}`);
  const start = (JSON.parse(read(join(ROOT, "package.json"))) as { scripts: Record<string, string> }).scripts.start!;
  const command = `${shipped.map(([name, value]) => `${name}=${value}`).join(" ")} node ${TOLLGATE_NODE_FLAGS.join(" ")} dist/main.js serve`;
  t.ok(start === command || start.endsWith(` ${command}`), `npm start runs \`${command}\``);
});

t.test("the runtime image gets production dependencies only, plus dist/, policies/ and package.json", async (t) => {
  const copies = instr(runtime, "COPY").map((i) => i.args.split(/\s+/));
  const fromStage = (src: string) => copies.find((c) => c.some((w) => w.startsWith("--from=")) && c.includes(src))?.find((w) => w.startsWith("--from="))?.slice(7);
  const depsStage = dockerfile.stages.find((s) => s.name === fromStage("/app/node_modules"));
  t.ok(depsStage, "node_modules is copied from a stage of its own");
  const installs = instr(depsStage!, "RUN").filter((r) => /\bnpm ci\b/.test(r.args));
  t.equal(installs.length, 1, "that stage runs npm ci once");
  t.match(installs[0]!.args, /--omit=dev/, "without dev dependencies");
  t.match(installs[0]!.args, /--ignore-scripts/, "without lifecycle scripts (postinstall: tap build needs a dev dependency)");
  const buildStage = dockerfile.stages.find((s) => s.name === fromStage("/src/dist"));
  t.ok(buildStage, "dist/ is copied from the build stage");
  t.ok(instr(buildStage!, "RUN").some((r) => /\bnpm ci\b/.test(r.args)) && instr(buildStage!, "RUN").some((r) => /npm run build/.test(r.args)), "the build stage runs npm ci and npm run build");
  t.notOk(copies.some((c) => c.includes(`--from=${buildStage!.name}`) && c.some((w) => w.includes("node_modules"))), "no node_modules from the build stage (it has the dev dependencies)");
  const contextCopies = copies.filter((c) => !c.some((w) => w.startsWith("--from="))).map((c) => c.slice(0, -1)).flat();
  t.ok(contextCopies.includes("policies"), "policies/ is in the image (the quickstart is read from ../../policies)");
  t.ok(contextCopies.includes("package.json"), "package.json is in the image (\"type\": \"module\")");
  t.ok(existsSync(join(ROOT, "policies/quickstart.yaml")), "policies/quickstart.yaml exists");
});

/** .dockerignore semantics: a pattern matches a path or any of its parent folders; the last match wins. */
function ignoredBy(patterns: string[], path: string): boolean {
  const toRegExp = (glob: string) =>
    new RegExp("^" + glob.replace(/[.+^${}()|[\]\\]/g, "\\$&").replace(/\*\*/g, "\0").replace(/\*/g, "[^/]*").replace(/\?/g, "[^/]").replace(/\0/g, ".*") + "$");
  const parts = path.split("/");
  let ignored = false;
  for (const raw of patterns) {
    const negated = raw.startsWith("!");
    const re = toRegExp((negated ? raw.slice(1) : raw).replace(/^\/+|\/+$/g, ""));
    if (parts.some((_, i) => re.test(parts.slice(0, i + 1).join("/")))) ignored = !negated;
  }
  return ignored;
}

t.test("the Dockerfile's ignore file sends what the build copies and nothing sensitive", async (t) => {
  t.equal(ignoredBy(["*", "!src"], "src/main.ts"), false, "matcher: a re-included folder's files are sent");
  t.equal(ignoredBy(["*"], "src/main.ts"), true, "matcher: a folder's files follow the folder");
  const patterns = read(join(DEPLOY, "Dockerfile.dockerignore")).split("\n").map((l) => l.trim()).filter((l) => l && !l.startsWith("#"));
  const sources = dockerfile.stages.flatMap((s) => instr(s, "COPY")).map((i) => i.args.split(/\s+/)).filter((c) => !c.some((w) => w.startsWith("--from="))).flatMap((c) => c.slice(0, -1));
  t.ok(sources.length >= 4, `the Dockerfile copies ${sources.join(", ")} from the context`);
  for (const src of sources) {
    t.ok(existsSync(join(ROOT, src)), `${src} exists in the repository`);
    t.equal(ignoredBy(patterns, src), false, `${src} is sent in the build context`);
  }
  for (const needed of ["src/main.ts", "src/config/load.ts", "policies/quickstart.yaml", "tsconfig.json", "package-lock.json"]) {
    t.equal(ignoredBy(patterns, needed), false, `${needed} is sent`);
  }
  for (const secretOrBulk of [".git/HEAD", "node_modules/yaml/package.json", "dist/main.js", ".env", ".env.local", "test/e2e/openai-sdk.test.ts", ".tap/x", "deploy/kubernetes/secret.example.yaml"]) {
    t.equal(ignoredBy(patterns, secretOrBulk), true, `${secretOrBulk} is left out`);
  }
});

// ---- Prometheus rules -----------------------------------------------------------------------------------------

const metricsSource = read(join(ROOT, "src/observe/metrics.ts"));
const declaredMetrics = [...metricsSource.matchAll(/new (Counter|Gauge|Histogram|Summary)\(\{\s*name:\s*"([a-zA-Z_:][a-zA-Z0-9_:]*)"/g)].map((m) => ({ type: m[1]!, name: m[2]! }));
/** Series names Prometheus can hold for Tollgate: the declared ones (histograms as _bucket/_sum/_count) and `up`. */
const knownSeries = new Set(
  declaredMetrics.flatMap(({ type, name }) => (type === "Histogram" || type === "Summary" ? [`${name}_bucket`, `${name}_sum`, `${name}_count`, name] : [name])).concat(["up"]),
);

const PROMQL_KEYWORDS = new Set(["and", "or", "unless", "by", "without", "on", "ignoring", "group_left", "group_right", "offset", "bool", "inf", "nan", "atan2"]);

/** Metric names in a PromQL expression: identifiers that are not strings, labels, durations, keywords or functions. */
function metricNamesIn(expr: string): string[] {
  const s = expr
    .replace(/"(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*'|`[^`]*`/g, " ")
    .replace(/#.*$/gm, " ")
    .replace(/\{[^}]*\}/g, " ")
    .replace(/\[[^\]]*\]/g, " ")
    .replace(/\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)/gi, " ");
  const names = new Set<string>();
  for (const m of s.matchAll(/\d[\w.]*|([A-Za-z_:][A-Za-z0-9_:]*)(?![A-Za-z0-9_:])(?!\s*\()/g)) {
    if (m[1] && !PROMQL_KEYWORDS.has(m[1].toLowerCase())) names.add(m[1]);
  }
  return [...names];
}

const rulesFile = join(PROM, "tollgate-rules.yaml");
const rules: Y[] = (parse(read(rulesFile)).groups as Y[]).flatMap((g) => g.rules);

t.test("metric names are read from src/observe/metrics.ts", async (t) => {
  for (const name of ["tollgate_requests_total", "tollgate_request_duration_seconds", "tollgate_upstream_ttfb_seconds", "tollgate_auth_failures_total", "tollgate_config_reloads_total", "tollgate_inflight_requests", "tollgate_upstream_errors_total"]) {
    t.ok(declaredMetrics.some((m) => m.name === name), `${name} is declared`);
  }
  t.ok(knownSeries.has("tollgate_upstream_ttfb_seconds_bucket"), "histograms contribute their _bucket series");
  t.same(
    metricNamesIn('sum by (namespace) (rate(foo_total{a="b(c)", le="+Inf"}[5m])) / on (x) group_left(y) bar offset 15m > 0.5 and absent(baz) or histogram_quantile(0.99, qux_bucket)'),
    ["foo_total", "bar", "baz", "qux_bucket"],
    "the expression scanner finds metric names and skips functions, labels, strings, durations and keywords",
  );
});

t.test("alert rules reference only metrics Tollgate exports", async (t) => {
  const alerts = rules.map((r) => r.alert).filter(Boolean);
  for (const wanted of ["TollgateHigh5xxRatio", "TollgateAuthFailureSpike", "TollgateConfigReloadFailed", "TollgateUpstreamTTFBHigh", "TollgateNoTargetsUp"]) {
    t.ok(alerts.includes(wanted), `alert ${wanted} is defined`);
  }
  for (const rule of rules) {
    const names = metricNamesIn(String(rule.expr));
    t.ok(names.length > 0, `${rule.alert ?? rule.record}: references a metric`);
    for (const name of names) t.ok(knownSeries.has(name), `${rule.alert ?? rule.record}: ${name} exists in src/observe/metrics.ts`);
    t.ok(rule.labels?.severity, `${rule.alert}: has a severity`);
    t.ok(rule.annotations?.summary && rule.annotations?.description, `${rule.alert}: has a summary and a description`);
  }
});

t.test("the rule unit tests feed real metric names and cover every alert", async (t) => {
  const tests: Y = parse(read(join(PROM, "tollgate-rules.test.yaml")));
  t.same(tests.rule_files, [basename(rulesFile)], "the unit tests load the rules file");
  for (const c of tests.tests) {
    for (const s of c.input_series) {
      const name = String(s.series).split("{")[0]!.trim();
      t.ok(knownSeries.has(name), `${c.name}: input series ${name} is a Tollgate metric`);
    }
  }
  const firing = new Set(tests.tests.flatMap((c: Y) => c.alert_rule_test.filter((a: Y) => a.exp_alerts.length > 0).map((a: Y) => a.alertname)));
  for (const rule of rules) t.ok(firing.has(rule.alert), `${rule.alert} has a unit test in which it fires`);
});

t.test("promtool accepts the rules and their unit tests pass", async (t) => {
  const probe = spawnSync("promtool", ["--version"], { encoding: "utf8" });
  if (probe.error) {
    // .ci/run installs promtool, so in CI its absence is a failure rather than a skip.
    if (process.env.CI) return void t.fail("promtool is not installed in CI");
    t.comment("promtool is not on PATH: `promtool check rules` and `promtool test rules` were NOT run");
    return;
  }
  const check = spawnSync("promtool", ["check", "rules", rulesFile], { encoding: "utf8" });
  t.equal(check.status, 0, `promtool check rules\n${check.stdout}${check.stderr}`);
  t.match(check.stdout, `SUCCESS: ${rules.length} rules found`, "promtool sees every rule");
  const unit = spawnSync("promtool", ["test", "rules", join(PROM, "tollgate-rules.test.yaml")], { encoding: "utf8" });
  t.equal(unit.status, 0, `promtool test rules\n${unit.stdout}${unit.stderr}`);
});
