/** The files the bench writes for the proxies it starts: Tollgate policies and an nginx config. */

export interface PolicyOptions {
  upstreamUrl: string;
  keyHash: string;
  /** With a models allow-list Tollgate must buffer and parse the body before it forwards it. */
  models: boolean;
  /** false: no audit line per request (a diagnostic: what the audit log costs). */
  audit?: boolean;
}

/**
 * The API-key path. Identity headers and a static upstream credential are set (as in the quickstart) but not
 * `openaiUser`, which would make Tollgate read and rewrite every body: the plain config forwards the client's
 * body as a stream; the models config reads and checks it.
 */
export function tollgatePolicy(o: PolicyOptions): string {
  const models = o.models ? "\n        models: [gpt-4o-mini, gpt-4.1-mini]" : "";
  return `version: 1
server:
  listen: { host: 127.0.0.1, port: 0 }
  admin: { host: 127.0.0.1, port: 0 }
  shutdownGrace: 1s
  watch: false
audit: { enabled: ${o.audit ?? true} }
upstreams:
  llm:
    url: "${o.upstreamUrl}"
    credential: { type: static, header: authorization, value: "Bearer bench-upstream-key" }
    identity:
      headers: { user: x-tollgate-user, team: x-tollgate-team, principal: x-tollgate-key-id }
authenticators:
  - name: keys
    type: api_key
    keys:
      - id: bench
        hash: "${o.keyHash}"
        user: bench-user
        team: bench
        roles: [user]
routes:
  - name: inference
    methods: [POST]
    paths: [/v1/chat/completions]
    upstream: llm
    allow:
      - roles: [user]${models}
`;
}

/** nginx as a plain reverse proxy: one worker (one core), upstream keep-alive, no buffering, no access log. */
export function nginxConfig(dir: string, listenPort: number, upstreamPort: number): string {
  return `worker_processes 1;
pid ${dir}/nginx.pid;
error_log ${dir}/error.log warn;
events { worker_connections 4096; }
http {
  access_log off;
  client_body_temp_path ${dir}/client_body;
  proxy_temp_path ${dir}/proxy;
  fastcgi_temp_path ${dir}/fastcgi;
  uwsgi_temp_path ${dir}/uwsgi;
  scgi_temp_path ${dir}/scgi;
  keepalive_requests 1000000;
  upstream standin {
    server 127.0.0.1:${upstreamPort};
    keepalive 128;
    keepalive_requests 1000000;
  }
  server {
    listen 127.0.0.1:${listenPort};
    location / {
      proxy_pass http://standin;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_buffering off;
      proxy_request_buffering off;
      proxy_read_timeout 60s;
    }
  }
}
`;
}
