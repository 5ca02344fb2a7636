/**
 * Labels on the command line: `--label KEY=VALUE[,KEY=VALUE...]` (repeatable, as `serve
 * --label` takes them) and `--remove-label KEY[,...]`.
 * @module
 */

import { type CommandSpec, UsageError, usageHint } from "./_command.ts";

/** --label KEY=VALUE[,KEY=VALUE...], repeated or not; a key given twice is refused. */
export function parseLabels(spec: CommandSpec, items: string[]): Record<string, string> {
  const labels: Record<string, string> = {};
  for (const item of items.flatMap((i) => i.split(","))) {
    const i = item.indexOf("=");
    if (i <= 0) {
      throw new UsageError(`invalid --label "${item}": expected KEY=VALUE`, usageHint(spec));
    }
    const key = item.slice(0, i);
    if (Object.hasOwn(labels, key)) {
      throw new UsageError(`--label ${key} is given twice`, usageHint(spec));
    }
    labels[key] = item.slice(i + 1);
  }
  return labels;
}

/** `labels` with `set` set and `remove` removed (a key in both is refused). */
export function relabelled(
  spec: CommandSpec,
  labels: Record<string, string>,
  set: Record<string, string>,
  remove: string[],
): Record<string, string> {
  const both = remove.find((k) => Object.hasOwn(set, k));
  if (both !== undefined) {
    throw new UsageError(
      `label ${both} is both set (--label) and removed (--remove-label)`,
      usageHint(spec),
    );
  }
  const out = { ...labels, ...set };
  for (const k of remove) delete out[k];
  return out;
}
