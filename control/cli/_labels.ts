/**
 * Labels on the command line: `--label KEY=VALUE[,KEY=VALUE...]` (repeatable, as `serve
 * --label` takes them) and `--remove-label KEY[,...]`.
 * @module
 */

import { errorMessage } from "../../mod/errors.ts";
import { parseLabelList } from "../volumes/mod.ts";
import { type CommandSpec, UsageError, usageHint } from "./_command.ts";

/** --label KEY=VALUE[,KEY=VALUE...], repeated or not (parseLabelList, as serve reads them). */
export function parseLabels(spec: CommandSpec, items: string[]): Record<string, string> {
  try {
    return parseLabelList(items, "label");
  } catch (err) {
    throw new UsageError(`invalid --label: ${errorMessage(err)}`, usageHint(spec));
  }
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
