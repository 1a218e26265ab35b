/** Small readers for provider JSON whose shape is not trusted: nothing here throws on a surprise. */

export type JsonRecord = Record<string, unknown>;

export function isRecord(value: unknown): value is JsonRecord {
  return typeof value === "object" && value !== null && !Array.isArray(value);
}

/** The object at `record[key]`, if that is one. */
export function field(record: unknown, key: string): JsonRecord | undefined {
  if (!isRecord(record)) return undefined;
  const value = record[key];
  return isRecord(value) ? value : undefined;
}

/** Length of a string, 0 for anything else. */
export function textLength(value: unknown): number {
  return typeof value === "string" ? value.length : 0;
}

/** Length of a value's JSON text (tool inputs, images): what it would cost the model to read or write. */
export function jsonLength(value: unknown): number {
  if (value === undefined) return 0;
  if (typeof value === "string") return value.length;
  try {
    return JSON.stringify(value)?.length ?? 0;
  } catch {
    return 0;
  }
}
