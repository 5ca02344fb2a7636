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

/** Refuses a label both set (--label) and removed (--remove-label) as a usage error. */
export function checkRelabel(
  spec: CommandSpec,
  set: Record<string, string>,
  remove: string[],
): void {
  const both = remove.find((k) => Object.hasOwn(set, k));
  if (both !== undefined) {
    throw new UsageError(
      `label ${both} is both set (--label) and removed (--remove-label)`,
      usageHint(spec),
    );
  }
}
