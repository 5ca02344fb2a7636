/**
 * Duplicate keys in JSON text. JSON.parse keeps the last of two equal keys without a word;
 * the API refuses such bodies instead, so `{"size": "1GiB", "size": "1TiB"}` cannot mean
 * something other than what a reviewer of the request read.
 * @module
 */

interface Frame {
  kind: "object" | "array";
  keys: Set<string>;
  /** Object frames: the next string is a key. */
  expectKey: boolean;
  /** The key this frame's value is under in its parent, for the path. */
  name: string;
}

/**
 * The first key that appears twice in one object of `text` (which must be valid JSON),
 * with the dotted path of that object ("" at the top); undefined if there is none.
 */
export function duplicateKey(text: string): { key: string; path: string } | undefined {
  const stack: Frame[] = [];
  let lastKey = "";
  for (let i = 0; i < text.length; i++) {
    const ch = text[i];
    const top = stack.at(-1);
    if (ch === "{" || ch === "[") {
      const name = top?.kind === "array" ? `${top.name}[]` : lastKey;
      stack.push({ kind: ch === "{" ? "object" : "array", keys: new Set(), expectKey: true, name });
    } else if (ch === "}" || ch === "]") {
      stack.pop();
    } else if (ch === ",") {
      if (top?.kind === "object") top.expectKey = true;
    } else if (ch === ":") {
      if (top) top.expectKey = false;
    } else if (ch === '"') {
      let j = i + 1;
      while (text[j] !== '"') j += text[j] === "\\" ? 2 : 1;
      if (top?.kind === "object" && top.expectKey) {
        const key = JSON.parse(text.slice(i, j + 1)) as string;
        if (top.keys.has(key)) {
          return { key, path: stack.slice(1).map((f) => f.name).join(".") };
        }
        top.keys.add(key);
        lastKey = key;
      }
      i = j;
    }
  }
  return undefined;
}
