/**
 * Checks shared by the scripts' command-line options.
 * @module
 */

/** `text` as a whole number of at least `min`, or an error naming flag `--name`. */
export function wholeNumber(name: string, text: string, min: number): number {
  const v = Number(text);
  if (!Number.isInteger(v) || v < min) {
    throw new Error(`--${name} needs a whole number of at least ${min}, got "${text}"`);
  }
  return v;
}
