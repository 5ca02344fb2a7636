/**
 * Network namespaces for tests that need the machine's fixed ports (the README's 5705, 10809,
 * 10810) or only a loopback interface, without touching the host's: `ip netns add`, `lo` up,
 * commands run under `ip netns exec NAME ...`, removed afterwards.
 * @module
 */

import { run } from "./_harness.ts";

/** Why network namespaces cannot be made here (not root, no `ip`), or undefined. */
export async function netnsUnavailable(name: string): Promise<string | undefined> {
  const probe = `${name}-probe`;
  try {
    const add = await new Deno.Command("ip", { args: ["netns", "add", probe], stderr: "piped" })
      .output();
    if (!add.success) {
      return `cannot create a network namespace (ip netns add: ${
        new TextDecoder().decode(add.stderr).trim()
      })`;
    }
    await new Deno.Command("ip", { args: ["netns", "delete", probe] }).output();
    return undefined;
  } catch (err) {
    return `cannot create a network namespace (${(err as Error).message})`;
  }
}

/** A namespace with only `lo`, up; `wrap` runs a command inside it; disposing deletes it. */
export interface Netns extends AsyncDisposable {
  readonly name: string;
  /** `["ip", "netns", "exec", name]`: put it before a command line. */
  readonly wrap: string[];
}

/** Adds the namespace `name` and brings its loopback up. */
export async function loopbackNetns(name: string): Promise<Netns> {
  const add = await run("ip", ["netns", "add", name]);
  if (add.code !== 0) throw new Error(`ip netns add ${name}: ${add.stderr.trim()}`);
  const wrap = ["ip", "netns", "exec", name];
  const up = await run(wrap[0], [...wrap.slice(1), "ip", "link", "set", "lo", "up"]);
  const remove = async () => {
    await run("ip", ["netns", "delete", name]);
  };
  if (up.code !== 0) {
    await remove();
    throw new Error(`ip netns exec ${name} ip link set lo up: ${up.stderr.trim()}`);
  }
  return { name, wrap, [Symbol.asyncDispose]: remove };
}
