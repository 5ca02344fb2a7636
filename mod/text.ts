/**
 * Showing text from outside (a client's export name, a label from a request) in messages
 * without letting it rearrange what a terminal or a table shows.
 * @module
 */

/**
 * Characters never shown raw: C0 and C1 controls, format characters (Cf: bidirectional
 * overrides and isolates, zero-width ones, soft hyphens, tags) and line and paragraph
 * separators. Labels and descriptions refuse them (control/volumes/rules.ts).
 */
export const UNPRINTABLE = /[\p{Cc}\p{Cf}\p{Zl}\p{Zp}]/u;
const ALL_UNPRINTABLE = new RegExp(UNPRINTABLE.source, "gu");

/** `s` as a JSON string for a message, every UNPRINTABLE character escaped (`\u202e`). */
export function quoted(s: unknown): string {
  return String(JSON.stringify(s)).replace(ALL_UNPRINTABLE, (c) => {
    const n = c.codePointAt(0)!;
    return n > 0xffff ? `\\u{${n.toString(16)}}` : `\\u${n.toString(16).padStart(4, "0")}`;
  });
}
