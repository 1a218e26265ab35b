/**
 * The bench's own token issuer: an RS256 key pair generated at start with jose, a tiny JWKS server on
 * 127.0.0.1 (in the load generator's process, so on CPU 0), the public key as PEM for HAProxy's jwt_verify,
 * one token that is reused (Tollgate's token cache hits) and a pool of distinct pre-signed tokens for the
 * first-seen path, signed before the run so signing is never measured.
 *
 * The pool is larger than Tollgate's token cache (10,000 entries by default) and is walked in order, so by
 * the time a token comes round again the LRU cache has evicted it: every request through it is a cache miss
 * and a full verification, exactly as for a token never seen before. The bench reads Tollgate's cache
 * hit/miss counters to show it.
 */
import { createServer, type Server } from "node:http";
import { once } from "node:events";
import { generateKeyPair, exportJWK, exportSPKI, SignJWT } from "jose";

export const AUDIENCE = "tollgate-bench";
/** Tollgate's default `cache.maxEntries` for a JWT authenticator; the pool must exceed it. */
export const TOKEN_CACHE_ENTRIES = 10_000;

export interface BenchIssuer {
  /** The `iss` of every token (the JWKS server's origin). */
  readonly issuer: string;
  readonly jwksUri: string;
  readonly publicKeyPem: string;
  /** Reused on every request (cached path). */
  readonly token: string;
  /** Distinct tokens, walked in order (first-seen path). */
  readonly pool: readonly string[];
  /** How many times the JWKS was fetched. */
  readonly fetches: () => number;
  close(): Promise<void>;
}

export async function startIssuer(poolSize: number): Promise<BenchIssuer> {
  const { privateKey, publicKey } = await generateKeyPair("RS256", { modulusLength: 2048, extractable: true });
  const kid = "bench-1";
  const jwk = { ...(await exportJWK(publicKey)), kid, alg: "RS256", use: "sig" };
  const jwks = Buffer.from(JSON.stringify({ keys: [jwk] }));
  let fetches = 0;
  const server: Server = createServer((req, res) => {
    if (req.url === "/jwks.json") {
      fetches++;
      res.writeHead(200, { "content-type": "application/json", "content-length": jwks.length }).end(jwks);
    } else res.writeHead(404, { "content-length": 0 }).end();
  });
  server.listen(0, "127.0.0.1");
  await once(server, "listening");
  const origin = `http://127.0.0.1:${(server.address() as { port: number }).port}`;

  const now = Math.floor(Date.now() / 1000);
  const sign = (jti: string) =>
    new SignJWT({ email: "bench-user@example.com", groups: ["llm-users"], team: "bench", jti })
      .setProtectedHeader({ alg: "RS256", kid, typ: "JWT" })
      .setIssuer(origin)
      .setAudience(AUDIENCE)
      .setSubject("bench-user")
      .setIssuedAt(now)
      .setExpirationTime(now + 4 * 3600)
      .sign(privateKey);
  const token = await sign("reused");
  const pool: string[] = [];
  // Batches: signing goes to libuv's thread pool, so the batch runs on every core the process may use.
  for (let i = 0; i < poolSize; i += 64) {
    pool.push(...(await Promise.all(Array.from({ length: Math.min(64, poolSize - i) }, (_, j) => sign(`pool-${i + j}`)))));
  }
  return {
    issuer: origin,
    jwksUri: `${origin}/jwks.json`,
    publicKeyPem: await exportSPKI(publicKey),
    token,
    pool,
    fetches: () => fetches,
    close: () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
}

/** A header supplier that walks the pool in order, one token per request. */
export function rotatingHeaders(base: Record<string, string>, pool: readonly string[]): () => Record<string, string> {
  const all = pool.map((t) => ({ ...base, authorization: `Bearer ${t}` }));
  let next = 0;
  return () => {
    const h = all[next]!;
    next = next + 1 === all.length ? 0 : next + 1;
    return h;
  };
}
