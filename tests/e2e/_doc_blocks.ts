/**
 * The shell blocks of a Markdown file that are marked to be run by a test, e.g. in README.md:
 *
 *     <!-- quickstart-test: serve -->
 *     ```sh
 *     deno task start
 *     ```
 *
 * A marker is an HTML comment on its own line, `<!-- NAME -->` or `<!-- NAME: KIND -->`,
 * directly above a fenced `sh` or `bash` block (blank lines between are allowed). Markdown
 * renders the comment as nothing, so readers see the plain example. Pure: text in, blocks out.
 * @module
 */

/** One marked block. */
export interface DocBlock {
  /** File name for messages. */
  file: string;
  /** 1-based line of the opening fence. */
  line: number;
  /** The marker's KIND ("" when the marker has none). */
  kind: string;
  /** The block's lines, without the fences, ending with a newline. */
  text: string;
}

/** A marker that is not followed by a shell block, or a block that is never closed. */
export class DocBlockError extends Error {
  override name = "DocBlockError";
  constructor(message: string, readonly file: string, readonly line: number) {
    super(`${file}:${line}: ${message}`);
  }
}

const FENCE_OPEN = /^```(sh|bash)\s*$/;
const FENCE_CLOSE = /^```\s*$/;

/** Every block of `markdown` marked `<!-- marker -->` or `<!-- marker: KIND -->`, in order. */
export function markedBlocks(markdown: string, marker: string, file = "<markdown>"): DocBlock[] {
  if (!/^[\w-]+$/.test(marker)) throw new Error(`bad marker name ${JSON.stringify(marker)}`);
  const markerLine = new RegExp(`^<!--\\s*${marker}(?::\\s*([\\w-]+))?\\s*-->\\s*$`);
  const lines = markdown.split("\n");
  const blocks: DocBlock[] = [];
  for (let i = 0; i < lines.length; i++) {
    const m = markerLine.exec(lines[i]);
    if (!m) continue;
    let j = i + 1;
    while (j < lines.length && lines[j].trim() === "") j++;
    if (j >= lines.length || !FENCE_OPEN.test(lines[j])) {
      throw new DocBlockError(
        `marker "${lines[i].trim()}" is not followed by a sh block`,
        file,
        i + 1,
      );
    }
    let k = j + 1;
    while (k < lines.length && !FENCE_CLOSE.test(lines[k])) k++;
    if (k >= lines.length) throw new DocBlockError("sh block is never closed", file, j + 1);
    blocks.push({
      file,
      line: j + 1,
      kind: m[1] ?? "",
      text: lines.slice(j + 1, k).map((l) => `${l}\n`).join(""),
    });
    i = k;
  }
  return blocks;
}
