/** WebSocket upgrades (OpenAI Realtime, `/v1/realtime`) tunnelled with http-proxy-3 after the corridor admits them. */
import type { IncomingMessage } from "node:http";
import { Agent as HttpAgent } from "node:http";
import { Agent as HttpsAgent } from "node:https";
import type { Duplex } from "node:stream";
import { createProxyServer, type ProxyServer } from "http-proxy-3";

export class WebSocketTunnel {
  readonly #proxy: ProxyServer;
  readonly #url: URL;

  constructor(upstreamUrl: string, connectTimeoutMs: number) {
    this.#url = new URL(upstreamUrl);
    const agent = this.#url.protocol === "https:" ? new HttpsAgent({ keepAlive: false }) : new HttpAgent({ keepAlive: false });
    this.#proxy = createProxyServer({ target: upstreamUrl, ws: true, changeOrigin: true, agent, proxyTimeout: 0, timeout: connectTimeoutMs });
    // Mandatory: without an error handler http-proxy-3 rethrows and the process dies.
    this.#proxy.on("error", (_err, _req, res) => {
      if (res && "destroy" in res && typeof res.destroy === "function") res.destroy();
    });
  }

  /** `headers` are the sanitized headers (credentials stripped, Tollgate's added); they replace the client's. */
  open(req: IncomingMessage, socket: Duplex, head: Buffer, path: string, headers: Record<string, string | string[]>): void {
    req.headers = headers;
    req.url = path;
    this.#proxy.ws(req, socket, head);
  }

  /** Stops new tunnels; open sessions keep running (a reload must not cut them; shutdown closes them). */
  async close(): Promise<void> {
    this.#proxy.close();
  }
}
