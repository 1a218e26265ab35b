/** Encrypted, authenticated cookie payloads: JWE (dir + A256GCM) with a key derived from the policy's secret. */
import { hkdfSync } from "node:crypto";
import { EncryptJWT, jwtDecrypt, type JWTPayload } from "jose";

export class Sealer {
  readonly #key: Uint8Array;
  readonly #purpose: string;

  /** `purpose` separates keys: a sign-in transaction can never be replayed as a session, nor the reverse. */
  constructor(secret: string, purpose: string) {
    this.#key = new Uint8Array(hkdfSync("sha256", secret, "tollgate", `tollgate ${purpose} v1`, 32));
    this.#purpose = purpose;
  }

  seal(payload: JWTPayload, expiresAt: number): Promise<string> {
    return new EncryptJWT(payload)
      .setProtectedHeader({ alg: "dir", enc: "A256GCM", typ: this.#purpose })
      .setIssuedAt()
      .setExpirationTime(Math.floor(expiresAt / 1000))
      .encrypt(this.#key);
  }

  /** The payload, or undefined for anything tampered with, expired or sealed for another purpose. */
  async open(token: string, now: number): Promise<JWTPayload | undefined> {
    try {
      const { payload } = await jwtDecrypt(token, this.#key, { typ: this.#purpose, currentDate: new Date(now), keyManagementAlgorithms: ["dir"], contentEncryptionAlgorithms: ["A256GCM"] });
      return payload;
    } catch {
      return undefined;
    }
  }
}
