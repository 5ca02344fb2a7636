/**
 * Pure validation rules for volume fields, shared by the API layer and VolumeService.
 * Each check throws InvalidArgumentError naming the field and the bad value.
 * @module
 */

import { quoted, UNPRINTABLE } from "../../mod/text.ts";
import { errorMessage, InvalidArgumentError, typeName } from "../../mod/errors.ts";
import { formatSize, parseSize } from "../../mod/size.ts";

/** Volume names are also NBD export names. */
export const VOLUME_NAME = /^[a-z0-9][a-z0-9._-]{0,62}$/;
export const MIN_VOLUME_SIZE = 2 ** 20;
export const MAX_VOLUME_SIZE = 2 ** 50;
export const SECTOR = 512;
export const MAX_LABELS = 64;
const LABEL_KEY = /^[A-Za-z0-9]([A-Za-z0-9._/-]{0,62})$/;
const MAX_LABEL_VALUE = 256;
export const MAX_DESCRIPTION = 1024;

/** Checks a volume name. */
export function checkVolumeName(name: unknown, field = "name"): string {
  if (typeof name !== "string") {
    throw new InvalidArgumentError(
      `invalid volume ${field}: expected a string, got ${typeName(name)}`,
      { field },
    );
  }
  if (!VOLUME_NAME.test(name)) {
    // A name of 60,000 characters is not echoed whole.
    const shown = name.length > 80
      ? `${quoted(name.slice(0, 64))}... (${name.length} characters)`
      : quoted(name);
    throw new InvalidArgumentError(
      `invalid volume ${field} ${shown}: use 1-63 characters of a-z, 0-9, ".", "_", "-", ` +
        "starting with a letter or digit",
      { field },
    );
  }
  return name;
}

/** Parses and checks a volume size given as bytes or a string such as "10GiB". */
export function checkVolumeSize(size: unknown, field = "size"): number {
  let bytes: number;
  if (typeof size === "number") {
    bytes = size;
  } else if (typeof size === "string") {
    try {
      bytes = parseSize(size, field, MAX_VOLUME_SIZE);
    } catch (err) {
      throw new InvalidArgumentError(errorMessage(err), { field, cause: err });
    }
  } else {
    throw new InvalidArgumentError(
      `invalid ${field}: expected a number of bytes or a string such as "10GiB", got ${
        typeName(size)
      }`,
      { field },
    );
  }
  if (!Number.isInteger(bytes)) {
    throw new InvalidArgumentError(`invalid ${field} ${size}: not a whole number of bytes`, {
      field,
    });
  }
  if (bytes < MIN_VOLUME_SIZE || bytes > MAX_VOLUME_SIZE) {
    throw new InvalidArgumentError(
      `invalid ${field} ${quoted(size)}: must be between 1 MiB and 1 PiB`,
      { field },
    );
  }
  if (bytes % SECTOR !== 0) {
    const below = bytes - bytes % SECTOR;
    throw new InvalidArgumentError(
      `invalid ${field} ${quoted(size)} (${bytes} bytes): must be a multiple of 512 ` +
        `bytes, e.g. ${below} or ${below + SECTOR}`,
      { field },
    );
  }
  return bytes;
}

/** Checks a replica count (a whole number 0-8). */
export function checkReplicas(replicas: unknown, field = "replicas"): number {
  if (typeof replicas !== "number" || !Number.isInteger(replicas) || replicas < 0 || replicas > 8) {
    throw new InvalidArgumentError(
      `invalid ${field} ${quoted(replicas)}: expected a whole number from 0 to 8`,
      { field },
    );
  }
  return replicas;
}

/** Checks a failure-domain label key for `spreadBy` (same syntax as a label key). */
export function checkSpreadBy(key: unknown, field = "spreadBy"): string {
  if (typeof key !== "string" || !LABEL_KEY.test(key)) {
    throw new InvalidArgumentError(
      `invalid ${field} ${
        quoted(key)
      }: expected a node label key such as "zone" (1-63 characters of letters, digits, ".", "_", "-", "/")`,
      { field },
    );
  }
  return key;
}

/**
 * Labels written `KEY=VALUE[,KEY=VALUE...]` (`serve --label`, `volume create --label`), each
 * text of `texts` such a list, spaces around entries ignored; not checked yet (checkLabels).
 * @throws InvalidArgumentError naming an entry without "=" or a key given twice.
 */
export function parseLabelList(texts: readonly string[], field = "labels"): Record<string, string> {
  const labels: Record<string, string> = {};
  for (const entry of texts.flatMap((t) => t.split(","))) {
    const item = entry.trim();
    const i = item.indexOf("=");
    if (i <= 0) {
      throw new InvalidArgumentError(
        `entry ${quoted(item)} is not KEY=VALUE (e.g. zone=a,rack=r1)`,
        { field },
      );
    }
    const key = item.slice(0, i);
    if (Object.hasOwn(labels, key)) {
      throw new InvalidArgumentError(`label ${quoted(key)} is given twice`, { field });
    }
    labels[key] = item.slice(i + 1);
  }
  return labels;
}

/** Checks a label map: at most 64 entries, keys like "team" or "example.com/tier", short values. */
export function checkLabels(labels: unknown, field = "labels"): Record<string, string> {
  if (typeof labels !== "object" || labels === null || Array.isArray(labels)) {
    throw new InvalidArgumentError(
      `invalid ${field}: expected an object of string values, got ${typeName(labels)}`,
      { field },
    );
  }
  const entries = Object.entries(labels);
  if (entries.length > MAX_LABELS) {
    throw new InvalidArgumentError(`invalid ${field}: at most ${MAX_LABELS} labels`, { field });
  }
  const out: Record<string, string> = {};
  for (const [k, v] of entries) {
    if (!LABEL_KEY.test(k)) {
      throw new InvalidArgumentError(
        `invalid label key ${
          quoted(k)
        }: use 1-63 characters of letters, digits, ".", "_", "-", "/", starting with a letter or digit`,
        { field: `${field}.${k}` },
      );
    }
    if (typeof v !== "string") {
      throw new InvalidArgumentError(
        `invalid label ${quoted(k)}: value must be a string, got ${typeName(v)}`,
        { field: `${field}.${k}` },
      );
    }
    if (v.length > MAX_LABEL_VALUE || UNPRINTABLE.test(v)) {
      throw new InvalidArgumentError(
        `invalid label ${
          quoted(k)
        }: value must be at most ${MAX_LABEL_VALUE} characters with no control, ` +
          "bidirectional-override or line-separator characters",
        { field: `${field}.${k}` },
      );
    }
    out[k] = v;
  }
  return out;
}

/**
 * What an update does to a volume's labels (UpdateVolumeRequest), checked now: a function of
 * the labels the record has when the change is made, or undefined when they stay as they are.
 * `labels` replaces them; `setLabels` and `removeLabels` edit them inside the record's
 * compare-and-swap, so two clients changing different keys at once both keep theirs.
 */
export function labelChange(
  r: { labels?: unknown; setLabels?: unknown; removeLabels?: unknown },
): ((current: Record<string, string>) => Record<string, string>) | undefined {
  const edits = r.setLabels !== undefined || r.removeLabels !== undefined;
  if (r.labels !== undefined && edits) {
    throw new InvalidArgumentError(
      "give labels (the whole set) or setLabels/removeLabels (changes to it), not both",
      { field: "labels" },
    );
  }
  if (r.labels !== undefined) {
    const all = checkLabels(r.labels);
    return () => all;
  }
  if (!edits) return undefined;
  const set = checkLabels(r.setLabels ?? {}, "setLabels");
  const remove = r.removeLabels ?? [];
  if (!Array.isArray(remove) || remove.some((k) => typeof k !== "string" || !LABEL_KEY.test(k))) {
    throw new InvalidArgumentError(
      "invalid removeLabels: expected an array of label keys",
      { field: "removeLabels" },
    );
  }
  const both = remove.find((k) => Object.hasOwn(set, k));
  if (both !== undefined) {
    throw new InvalidArgumentError(`label ${quoted(both)} is both set and removed`, {
      field: "removeLabels",
    });
  }
  return (current) => {
    const out = { ...current, ...set };
    for (const k of remove) delete out[k];
    return checkLabels(out);
  };
}

/** Checks a description: a string of at most 1024 characters, no control characters but tab. */
export function checkDescription(description: unknown, field = "description"): string {
  if (typeof description !== "string") {
    throw new InvalidArgumentError(
      `invalid ${field}: expected a string, got ${typeName(description)}`,
      { field },
    );
  }
  if (description.length > MAX_DESCRIPTION || UNPRINTABLE.test(description.replace(/\t/g, ""))) {
    throw new InvalidArgumentError(
      `invalid ${field}: at most ${MAX_DESCRIPTION} characters, no control (but tab), ` +
        "bidirectional-override or line-separator characters",
      { field },
    );
  }
  return description;
}

/** "10 GiB (10737418240 bytes)" for messages. */
export function describeSize(bytes: number): string {
  return `${formatSize(bytes)} (${bytes} bytes)`;
}
