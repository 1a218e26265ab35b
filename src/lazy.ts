/**
 * A value built on first use, by an async `build` (typically a dynamic import and a constructor). Success is
 * remembered; a failure is not, so the next call tries again (a credential whose certificate or token file is
 * mounted late, an import that failed once). Concurrent first calls share one build.
 */
export function lazily<T>(build: () => Promise<T>): () => Promise<T> {
  let pending: Promise<T> | undefined;
  return () =>
    (pending ??= build().catch((err: unknown) => {
      pending = undefined;
      throw err;
    }));
}
