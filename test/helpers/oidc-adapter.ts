/**
 * An in-memory storage adapter for oidc-provider in tests: it keeps what the provider stores (grants, codes,
 * sessions, tokens) across restarts of the same test provider, silences the provider's warning about its own
 * development adapter, and revokes a grant's tokens when a code is replayed.
 */
export type Stored = Map<string, { payload: Record<string, unknown>; expiresAt: number }>;
export class MemoryAdapter {
  private readonly model: string;
  private readonly store: Stored;
  constructor(model: string, store: Stored) {
    this.model = model;
    this.store = store;
  }
  private key(id: string): string {
    return `${this.model}:${id}`;
  }
  async upsert(id: string, payload: Record<string, unknown>, expiresIn?: number): Promise<void> {
    this.store.set(this.key(id), { payload, expiresAt: expiresIn ? Date.now() + expiresIn * 1000 : Infinity });
  }
  async find(id: string): Promise<Record<string, unknown> | undefined> {
    const entry = this.store.get(this.key(id));
    if (!entry) return undefined;
    if (entry.expiresAt <= Date.now()) {
      this.store.delete(this.key(id));
      return undefined;
    }
    return entry.payload;
  }
  async findByUid(uid: string): Promise<Record<string, unknown> | undefined> {
    for (const [key, entry] of this.store) {
      if (key.startsWith(`${this.model}:`) && entry.payload.uid === uid && entry.expiresAt > Date.now()) return entry.payload;
    }
    return undefined;
  }
  async findByUserCode(): Promise<undefined> {
    return undefined;
  }
  async consume(id: string): Promise<void> {
    const entry = this.store.get(this.key(id));
    if (entry) entry.payload.consumed = Math.floor(Date.now() / 1000);
  }
  async destroy(id: string): Promise<void> {
    this.store.delete(this.key(id));
  }
  async revokeByGrantId(grantId: string): Promise<void> {
    for (const [key, entry] of this.store) if (entry.payload.grantId === grantId) this.store.delete(key);
  }
}
