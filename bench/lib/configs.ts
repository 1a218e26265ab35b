/** The files the bench writes for the proxies it starts: Tollgate policies, an nginx and an HAProxy config. */

export type TollgateAuth = "public" | "key" | "jwt";

export interface PolicyOptions {
  upstreamUrl: string;
  /** The stand-in that holds streams open (RSS per open stream, client-disconnect abort). */
  holdUrl: string;
  auth: TollgateAuth;
  keyHash: string;
  jwt?: { issuer: string; jwksUri: string; audience: string } | undefined;
  /** With a models allow-list Tollgate must buffer and parse the body before it forwards it. */
  models?: boolean;
  /** false: no audit line per request (a diagnostic: what the audit log costs). */
  audit?: boolean;
  /** Limits in Redis: requests and tokens per user and model; `budget` adds a monthly team budget. */
  limits?: { redisUrl: string; keyPrefix: string; budget: boolean } | undefined;
}

/**
 * One policy shape for every Tollgate configuration. Identity headers and a static upstream credential are set
 * (as in the quickstart) but not `openaiUser`, which would make Tollgate rewrite every body. Two routes:
 * `/v1/chat/completions` to the measured stand-in, `/chat/completions` to the one that holds streams open.
 * Limits are high enough never to refuse: they cost what they cost, they never shorten a run.
 */
export function tollgatePolicy(o: PolicyOptions): string {
  const allow = o.auth === "public" ? "- public: true" : `- roles: [user]${o.models ? "\n        models: [gpt-4o-mini, gpt-4.1-mini]" : ""}`;
  const authenticators =
    o.auth === "key"
      ? `authenticators:
  - name: keys
    type: api_key
    keys:
      - id: bench
        hash: "${o.keyHash}"
        user: bench-user
        team: bench
        roles: [user]
`
      : o.auth === "jwt"
        ? `authenticators:
  - name: idp
    type: jwt
    issuers:
      - issuer: "${o.jwt!.issuer}"
        jwksUri: "${o.jwt!.jwksUri}"
        audiences: [${o.jwt!.audience}]
        algorithms: [RS256]
    principal:
      team: team
      roleMappings:
        - { groups: [llm-users], roles: [user] }
`
        : "";
  const limits = o.limits
    ? `limits:
  store: { type: redis, url: "${o.limits.redisUrl}", keyPrefix: "${o.limits.keyPrefix}" }
  rules:
    - name: user-rpm
      by: [user, model]
      requests: { limit: 1000000000, per: 1m }
    - name: user-tpm
      by: [user, model]
      tokens: { limit: 1000000000000, per: 1m }
${
  o.limits.budget
    ? `    - name: team-monthly
      by: [team]
      budget: { usd: 1000000, period: monthly }
`
    : ""
}`
    : "";
  const upstream = (url: string, connections: number) => `    url: "${url}"
    connections: ${connections}
    credential: { type: static, header: authorization, value: "Bearer bench-upstream-key" }
    identity:
      headers: { user: x-tollgate-user, team: x-tollgate-team, principal: x-tollgate-principal }`;
  return `version: 1
server:
  listen: { host: 127.0.0.1, port: 0 }
  admin: { host: 127.0.0.1, port: 0 }
  shutdownGrace: 1s
  watch: false
audit: { enabled: ${o.audit ?? true} }
upstreams:
  llm:
${upstream(o.upstreamUrl, 128)}
  hold:
${upstream(o.holdUrl, 2048)}
${authenticators}routes:
  - name: inference
    methods: [POST]
    paths: [/v1/chat/completions]
    upstream: llm
    allow:
      ${allow}
  - name: held-streams
    methods: [POST]
    paths: [/chat/completions]
    upstream: hold
    allow:
      ${allow}
${limits}`;
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

export interface HaproxyJwt {
  issuer: string;
  audience: string;
  /** File holding the issuer's RS256 public key (SPKI PEM), read by HAProxy when it parses the config. */
  publicKeyFile: string;
}

/**
 * HAProxy (≥ 2.5) verifying the bearer JWT in front of the stand-in: one thread (one core), upstream
 * keep-alive (`http-reuse always`), no logging. The checks mirror Tollgate's: algorithm RS256, issuer,
 * audience, expiry, signature. HAProxy has no token cache: every request is a full verification.
 */
export function haproxyConfig(listenPort: number, upstreamPort: number, jwt: HaproxyJwt): string {
  return `global
  nbthread 1
  maxconn 8000

defaults
  mode http
  option http-keep-alive
  option http-no-delay
  http-reuse always
  timeout connect 5s
  timeout client 60s
  timeout server 60s
  timeout http-keep-alive 60s

frontend bench
  bind 127.0.0.1:${listenPort}
  http-request set-var(txn.bearer) http_auth_bearer
  http-request set-var(txn.alg) var(txn.bearer),jwt_header_query('$.alg')
  http-request set-var(txn.iss) var(txn.bearer),jwt_payload_query('$.iss')
  http-request set-var(txn.aud) var(txn.bearer),jwt_payload_query('$.aud')
  http-request set-var(txn.exp) var(txn.bearer),jwt_payload_query('$.exp','int')
  http-request set-var(txn.now) date()
  http-request deny deny_status 401 unless { var(txn.alg) -m str RS256 }
  http-request deny deny_status 401 unless { var(txn.iss) -m str ${jwt.issuer} }
  http-request deny deny_status 401 unless { var(txn.aud) -m str ${jwt.audience} }
  http-request deny deny_status 401 if { var(txn.exp),sub(txn.now) -m int lt 0 }
  http-request deny deny_status 401 unless { var(txn.bearer),jwt_verify(txn.alg,"${jwt.publicKeyFile}") -m int 1 }
  default_backend standin

backend standin
  server standin 127.0.0.1:${upstreamPort} maxconn 128
`;
}
