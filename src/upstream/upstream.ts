/** One upstream, built once from its policy entry: keep-alive pool, WebSocket tunnel, credential, identity forwarding. */
import type { UpstreamConfig } from "../config/schema.ts";
import { Forwarder } from "../proxy/forward.ts";
import { WebSocketTunnel } from "../proxy/websocket.ts";
import { createUpstreamCredential, type UpstreamCredential } from "./credential.ts";
import type { CredentialDeps } from "./entra.ts";
import { compileIdentityForwarding, type IdentityForwarding } from "./identity.ts";

export interface Upstream {
  readonly name: string;
  readonly forwarder: Forwarder;
  readonly tunnel: WebSocketTunnel;
  readonly credential: UpstreamCredential;
  readonly identity: IdentityForwarding;
}

export function buildUpstream(name: string, config: UpstreamConfig, deps: Omit<CredentialDeps, "upstream">): Upstream {
  return {
    name,
    forwarder: new Forwarder(config.url, {
      connections: config.connections,
      connectTimeoutMs: config.timeouts.connect,
      headersTimeoutMs: config.timeouts.headers,
      bodyTimeoutMs: config.timeouts.idle,
    }),
    tunnel: new WebSocketTunnel(config.url, config.timeouts.connect),
    credential: createUpstreamCredential(config.credential, { ...deps, upstream: name }),
    identity: compileIdentityForwarding(config.identity),
  };
}

/** Retires an upstream: its pool finishes in-flight requests, then closes. */
export function closeUpstream(u: Upstream): Promise<unknown>[] {
  return [u.forwarder.close(), Promise.resolve(u.credential.close?.()), u.tunnel.close()];
}
