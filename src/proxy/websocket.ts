/** WebSocket upgrades (OpenAI Realtime, `/v1/realtime`) tunnelled with http-proxy-3 after the corridor admits them. */
import type { IncomingMessage } from "node:http";
import { Agent as HttpAgent } from "node:http";
import { Agent as HttpsAgent } from "node:https";
import type { Duplex } from "node:stream";
import type { ProxyServer } from "http-proxy-3";
import { lazily } from "../lazy.ts";

/**
 * http-proxy-3 is imported with the first upgrade (~15 MB of resident memory that a sidecar without WebSocket
 * traffic should not carry). Until a tunnel exists the upgraded socket is not read from, so the client's first
 * frames wait in the socket's buffer for the few milliseconds the import takes.
 */
export class WebSocketTunnel {
  readonly #proxy = lazily(() => this.#create());
  #created = false;
  readonly #upstreamUrl: string;
  readonly #connectTimeoutMs: number;

  constructor(upstreamUrl: string, connectTimeoutMs: number) {
    this.#upstreamUrl = upstreamUrl;
    this.#connectTimeoutMs = connectTimeoutMs;
  }

  /** `headers` are the sanitized headers (credentials stripped, Tollgate's added); they replace the client's. */
  async open(req: IncomingMessage, socket: Duplex, head: Buffer, path: string, headers: Record<string, string | string[]>): Promise<void> {
    req.headers = headers;
    req.url = path;
    const proxy = await this.#proxy();
    if (socket.destroyed) return;
    proxy.ws(req, socket, head);
  }

  async #create(): Promise<ProxyServer> {
    const { createProxyServer } = await import("http-proxy-3");
    const url = new URL(this.#upstreamUrl);
    const agent = url.protocol === "https:" ? new HttpsAgent({ keepAlive: false }) : new HttpAgent({ keepAlive: false });
    const proxy = createProxyServer({ target: this.#upstreamUrl, ws: true, changeOrigin: true, agent, proxyTimeout: 0, timeout: this.#connectTimeoutMs });
    // Mandatory: without an error handler http-proxy-3 rethrows and the process dies.
    proxy.on("error", (_err, _req, res) => {
      if (res && "destroy" in res && typeof res.destroy === "function") res.destroy();
    });
    this.#created = true;
    return proxy;
  }

  /** Stops new tunnels; open sessions keep running (a reload must not cut them; shutdown closes them). */
  async close(): Promise<void> {
    if (this.#created) (await this.#proxy()).close();
  }
}
