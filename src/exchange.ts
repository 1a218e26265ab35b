/** What one request learned on its way down the corridor; the settle room turns it into metrics and the audit line. */
import type { IncomingMessage } from "node:http";
import type { Route } from "./policy/routes.ts";
import type { Principal } from "./auth/principal.ts";
import type { ForwardResult } from "./proxy/forward.ts";
import type { Admission } from "./limits/engine.ts";
import type { Usage } from "./metering/usage.ts";

/** What one request learned on its way down the corridor; turned into the audit line and metrics at the end. */
export class Exchange {
  requestId = "";
  route: Route | undefined;
  principal: Principal | undefined;
  model: string | undefined;
  reason = "allowed";
  status = 0;
  forwarded: ForwardResult | undefined;
  authMethod = "none";
  /** Extra headers for the client's response, whatever its outcome. */
  responseHeaders: Record<string, string | string[]> | undefined;
  /** Metering: whether this request is metered, its prompt estimate, and what admission reserved. */
  meters = false;
  stripUsageChunk = false;
  promptTokens = 0;
  admission: Admission | undefined;
  usage: Usage | undefined;
  costMicros: number | undefined;
  readonly req: IncomingMessage;
  readonly started: number;
  /** Captured at arrival: `req.socket` is detached once a keep-alive response finishes. */
  readonly remoteAddress: string;
  /** Adds a Set-Cookie to whatever response this request gets. */
  setCookie(cookie: string): void {
    const headers = (this.responseHeaders ??= {});
    const prior = headers["set-cookie"];
    headers["set-cookie"] = prior === undefined ? [cookie] : [...(Array.isArray(prior) ? prior : [prior]), cookie];
  }

  constructor(req: IncomingMessage, started: number) {
    this.req = req;
    this.started = started;
    this.remoteAddress = req.socket.remoteAddress ?? "";
  }
}
