/**
 * Small dependency-free assertions for tests (JSR @std/assert cannot be fetched here).
 *
 * Equality is structural: primitives by value (NaN equals NaN), arrays and typed
 * arrays element by element, plain objects by own enumerable keys (a key present with the
 * value undefined differs from an absent key, as in @std/assert; null-prototype objects
 * such as node:sqlite rows equal plain objects), class instances also by constructor, Map/Set by content,
 * Date by time, RegExp by source and flags, Error by name and message.
 * A failure names the first differing path and shows a line diff.
 * @module
 */

export class AssertionError extends Error {
  override name = "AssertionError";
}

/** Throws AssertionError with `message`. */
export function fail(message: string): never {
  throw new AssertionError(message);
}

/** Asserts that `condition` is truthy. */
export function assert(condition: unknown, message = "expected a truthy value"): asserts condition {
  if (!condition) fail(message);
}

function inspect(v: unknown): string {
  return Deno.inspect(v, { depth: Infinity, sorted: true, compact: false, colors: false });
}

function isPlain(v: object): boolean {
  const proto = Object.getPrototypeOf(v);
  return proto === null || proto === Object.prototype;
}

function ownKeys(v: object): string[] {
  return Object.keys(v);
}

/** The first path where `a` and `b` differ, with a reason; undefined if equal. */
function difference(
  a: unknown,
  b: unknown,
  path: string,
  seen: Map<object, object>,
): string | undefined {
  if (a === b || (Number.isNaN(a) && Number.isNaN(b))) return undefined;
  const here = path || "value";
  if (typeof a !== "object" || typeof b !== "object" || a === null || b === null) {
    return `${here}: actual ${inspect(a)}, expected ${inspect(b)}`;
  }
  if (seen.get(a) === b) return undefined;
  seen.set(a, b);
  if (!(isPlain(a) && isPlain(b)) && a.constructor !== b.constructor) {
    return `${here}: actual is a ${a.constructor?.name}, expected a ${b.constructor?.name}`;
  }
  if (a instanceof Date) {
    return a.getTime() === (b as Date).getTime()
      ? undefined
      : `${here}: actual ${a.toISOString()}, expected ${(b as Date).toISOString()}`;
  }
  if (a instanceof RegExp) return String(a) === String(b) ? undefined : `${here}: ${a} != ${b}`;
  if (a instanceof Error && (a.name !== (b as Error).name || a.message !== (b as Error).message)) {
    return `${here}: actual ${a.name}: ${a.message}, expected ${(b as Error).name}: ${
      (b as Error).message
    }`;
  }
  if (a instanceof ArrayBuffer || ArrayBuffer.isView(a)) {
    const x = a instanceof ArrayBuffer ? new Uint8Array(a) : a as unknown as ArrayLike<unknown>;
    const y = b instanceof ArrayBuffer ? new Uint8Array(b) : b as unknown as ArrayLike<unknown>;
    if (x.length !== y.length) return `${here}: length ${x.length}, expected ${y.length}`;
    for (let i = 0; i < x.length; i++) {
      if (!Object.is(x[i], y[i])) return `${here}[${i}]: actual ${x[i]}, expected ${y[i]}`;
    }
    return undefined;
  }
  if (Array.isArray(a)) {
    const bb = b as unknown[];
    if (a.length !== bb.length) return `${here}: length ${a.length}, expected ${bb.length}`;
    for (let i = 0; i < a.length; i++) {
      const d = difference(a[i], bb[i], `${path}[${i}]`, seen);
      if (d) return d;
    }
    return undefined;
  }
  if (a instanceof Map) {
    const bm = b as Map<unknown, unknown>;
    if (a.size !== bm.size) return `${here}: size ${a.size}, expected ${bm.size}`;
    for (const [k, v] of a) {
      if (!bm.has(k)) return `${here}: unexpected key ${inspect(k)}`;
      const d = difference(v, bm.get(k), `${path}.get(${inspect(k)})`, seen);
      if (d) return d;
    }
    return undefined;
  }
  if (a instanceof Set) {
    const bs = [...(b as Set<unknown>)];
    if (a.size !== bs.length) return `${here}: size ${a.size}, expected ${bs.length}`;
    for (const v of a) {
      if (!bs.some((w) => difference(v, w, "", new Map()) === undefined)) {
        return `${here}: unexpected member ${inspect(v)}`;
      }
    }
    return undefined;
  }
  const ak = ownKeys(a);
  const bk = ownKeys(b);
  for (const k of bk) {
    if (!ak.includes(k)) return `${path}.${k}: missing, expected ${inspect((b as never)[k])}`;
  }
  for (const k of ak) {
    if (!bk.includes(k)) return `${path}.${k}: unexpected ${inspect((a as never)[k])}`;
    const d = difference((a as never)[k], (b as never)[k], `${path}.${k}`, seen);
    if (d) return d;
  }
  return undefined;
}

/** Whether `a` and `b` are structurally equal (see the module doc). */
export function equal(a: unknown, b: unknown): boolean {
  return difference(a, b, "", new Map()) === undefined;
}

/** A unified-style line diff: "-" actual only, "+" expected only. */
function lineDiff(actual: string, expected: string): string {
  const a = actual.split("\n");
  const b = expected.split("\n");
  if (a.length * b.length > 4_000_000) return `actual:\n${actual}\nexpected:\n${expected}`;
  // LCS table from the end, then walk forward.
  const lcs = Array.from({ length: a.length + 1 }, () => new Uint32Array(b.length + 1));
  for (let i = a.length - 1; i >= 0; i--) {
    for (let j = b.length - 1; j >= 0; j--) {
      lcs[i][j] = a[i] === b[j] ? lcs[i + 1][j + 1] + 1 : Math.max(lcs[i + 1][j], lcs[i][j + 1]);
    }
  }
  const out: string[] = [];
  let i = 0;
  let j = 0;
  while (i < a.length || j < b.length) {
    if (i < a.length && j < b.length && a[i] === b[j]) {
      out.push(`    ${a[i++]}`);
      j++;
    } else if (i < a.length && (j === b.length || lcs[i + 1][j] >= lcs[i][j + 1])) {
      out.push(`-   ${a[i++]}`);
    } else {
      out.push(`+   ${b[j++]}`);
    }
  }
  return out.join("\n");
}

/** Asserts structural equality; the failure shows the first difference and a line diff. */
export function assertEquals(actual: unknown, expected: unknown, message?: string): void {
  const d = difference(actual, expected, "", new Map());
  if (d === undefined) return;
  fail(
    `${message ? message + ": " : ""}values differ at ${d}\n` +
      `(- actual, + expected)\n${lineDiff(inspect(actual), inspect(expected))}`,
  );
}

/** Asserts that the values are not structurally equal. */
export function assertNotEquals(actual: unknown, expected: unknown, message?: string): void {
  if (equal(actual, expected)) {
    fail(`${message ? message + ": " : ""}expected a value other than ${inspect(expected)}`);
  }
}

// deno-lint-ignore no-explicit-any
type ErrorClass<E extends Error> = abstract new (...args: any[]) => E;

function describeError(err: unknown): string {
  return err instanceof Error ? `${err.name}: ${err.message}` : inspect(err);
}

function checkError<E extends Error>(
  err: unknown,
  what: string,
  ErrorClass?: ErrorClass<E>,
  includes?: string,
  message?: string,
): E {
  const pre = message ? message + ": " : "";
  if (ErrorClass && !(err instanceof ErrorClass)) {
    fail(`${pre}${what} ${describeError(err)}, expected an instance of ${ErrorClass.name}`);
  }
  if (!(err instanceof Error)) fail(`${pre}${what} a non-Error ${inspect(err)}`);
  if (includes !== undefined && !err.message.includes(includes)) {
    fail(
      `${pre}error message ${JSON.stringify(err.message)} does not include ${
        JSON.stringify(includes)
      }`,
    );
  }
  return err as E;
}

/** Asserts that `fn` throws (an instance of ErrorClass, with `includes` in its message). */
export function assertThrows<E extends Error = Error>(
  fn: () => unknown,
  ErrorClass?: ErrorClass<E>,
  includes?: string,
  message?: string,
): E {
  try {
    fn();
  } catch (err) {
    return checkError(err, "threw", ErrorClass, includes, message);
  }
  fail(`${message ? message + ": " : ""}expected a throw, but it returned`);
}

/** Asserts that the promise (or the one `fn` returns) rejects; resolves to the error. */
export async function assertRejects<E extends Error = Error>(
  fn: (() => PromiseLike<unknown>) | PromiseLike<unknown>,
  ErrorClass?: ErrorClass<E>,
  includes?: string,
  message?: string,
): Promise<E> {
  let value: unknown;
  try {
    value = await (typeof fn === "function" ? fn() : fn);
  } catch (err) {
    return checkError(err, "rejected with", ErrorClass, includes, message);
  }
  fail(
    `${message ? message + ": " : ""}expected a rejection, but it resolved to ${inspect(value)}`,
  );
}
