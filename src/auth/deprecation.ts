import type { DeprecationConfig } from "../config/authenticators.ts";

/** RFC 9745 Deprecation (since this policy was loaded), RFC 8594 Sunset, and a Link to the migration notes. */
export function deprecationHeaders(config: DeprecationConfig, loadedAt: number): Record<string, string> {
  const headers: Record<string, string> = {
    deprecation: `@${Math.floor(loadedAt / 1000)}`,
    sunset: new Date(config.sunset).toUTCString(),
  };
  if (config.link) headers.link = `<${config.link}>; rel="deprecation"`;
  return headers;
}
