import { assertEquals } from "../_assert.ts";

/** Shared helpers for the CA tests: temp dirs, openssl, a fake clock. */

/** A fresh temp dir; removed by the returned disposer. */
export async function tempDir(): Promise<{ dir: string } & AsyncDisposable> {
  const dir = await Deno.makeTempDir({ prefix: "ballast-ca-test-" });
  return { dir, [Symbol.asyncDispose]: () => Deno.remove(dir, { recursive: true }) };
}

/** Runs openssl with `args` (stdin optional); null if openssl is not installed. */
export async function openssl(
  args: string[],
  stdin?: string,
): Promise<{ code: number; stdout: string; stderr: string } | null> {
  let child;
  try {
    child = new Deno.Command("openssl", {
      args,
      stdin: stdin === undefined ? "null" : "piped",
      stdout: "piped",
      stderr: "piped",
    }).spawn();
  } catch (err) {
    if (err instanceof Deno.errors.NotFound) return null;
    throw err;
  }
  if (stdin !== undefined) {
    const w = child.stdin.getWriter();
    await w.write(new TextEncoder().encode(stdin));
    await w.close();
  }
  const out = await child.output();
  const dec = new TextDecoder();
  return { code: out.code, stdout: dec.decode(out.stdout), stderr: dec.decode(out.stderr) };
}

export const HAVE_OPENSSL = (await openssl(["version"]).catch(() => null)) !== null;
/** A test name that says why the test is skipped when openssl is missing. */
export function opensslTest(name: string): string {
  return HAVE_OPENSSL ? name : `${name} (SKIPPED: openssl is not installed)`;
}

/** A settable clock. */
export function fakeClock(start: Date): { now: () => Date; advance: (seconds: number) => void } {
  let t = start.getTime();
  return { now: () => new Date(t), advance: (s) => void (t += s * 1000) };
}

export const DAY = 86_400;

/** An operator's root and intermediate, made with openssl the way an operator would. */
export async function operatorCa(dir: string) {
  const run = async (...args: string[]) => {
    const r = await openssl(args);
    assertEquals(r?.code, 0, r?.stderr);
  };
  const ext = `${dir}/ext.cnf`;
  await Deno.writeTextFile(
    ext,
    "[v3_int]\nbasicConstraints=critical,CA:TRUE,pathlen:0\n" +
      "keyUsage=critical,keyCertSign,cRLSign\nsubjectKeyIdentifier=hash\n" +
      "authorityKeyIdentifier=keyid\n",
  );
  const ec = ["-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256"];
  await run("genpkey", ...ec, "-out", `${dir}/root.key`);
  await run(
    "req",
    "-x509",
    "-new",
    "-key",
    `${dir}/root.key`,
    "-subj",
    "/O=Example/CN=Example Root",
    "-days",
    "30",
    "-out",
    `${dir}/root.crt`,
  );
  await run("genpkey", ...ec, "-out", `${dir}/int.key`);
  await run(
    "req",
    "-new",
    "-key",
    `${dir}/int.key`,
    "-subj",
    "/O=Example/CN=Ballast Issuing CA",
    "-out",
    `${dir}/int.csr`,
  );
  await run(
    "x509",
    "-req",
    "-in",
    `${dir}/int.csr`,
    "-CA",
    `${dir}/root.crt`,
    "-CAkey",
    `${dir}/root.key`,
    "-set_serial",
    "4242",
    "-days",
    "20",
    "-extfile",
    ext,
    "-extensions",
    "v3_int",
    "-out",
    `${dir}/int.crt`,
  );
  const read = (f: string) => Deno.readTextFile(`${dir}/${f}`);
  return {
    root: await read("root.crt"),
    rootKey: await read("root.key"),
    int: await read("int.crt"),
    intKey: await read("int.key"),
  };
}
