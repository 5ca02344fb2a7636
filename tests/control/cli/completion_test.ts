import { COMMANDS } from "../../../control/cli/mod.ts";
import { bashCompletion, COMPLETION_TREE, zshCompletion } from "../../../control/cli/completion.ts";
import { main } from "../../../main.ts";
import { captureIo } from "../../../control/cli/mod.ts";
import { assert, assertEquals } from "../../_assert.ts";

/** What bash's completion function offers for the command line `words` (last = the word typed). */
async function complete(words: string[]): Promise<string[]> {
  const script = `${bashCompletion()}
COMP_WORDS=(${words.map((w) => `'${w}'`).join(" ")})
COMP_CWORD=${words.length - 1}
_ballast
printf '%s\\n' "\${COMPREPLY[@]}"
`;
  const out = await new Deno.Command("bash", {
    args: ["-c", script],
    stdin: "null",
  }).output();
  assertEquals(out.code, 0, new TextDecoder().decode(out.stderr));
  return new TextDecoder().decode(out.stdout).split("\n").filter((l) => l !== "").sort();
}

Deno.test("completion knows every top-level command", () => {
  assertEquals(Object.keys(COMPLETION_TREE).sort(), Object.keys(COMMANDS).sort());
});

Deno.test("bash completion completes commands, subcommands, flags and flag values", async () => {
  assertEquals(await complete(["ballast", "vo"]), ["volume"]);
  assertEquals(await complete(["ballast", "s"]), ["serve", "systemd-unit"]);
  const subs = await complete(["ballast", "volume", ""]);
  for (const s of ["create", "list", "get", "resize", "delete", "verify"]) {
    assert(subs.includes(s), `${s} in ${subs}`);
  }
  assertEquals(await complete(["ballast", "volume", "create", "db1", "--si"]), ["--size"]);
  // A flag's value is not taken for the command word.
  assertEquals(await complete(["ballast", "--api", "http://x", "volume", "cr"]), ["create"]);
  assertEquals(await complete(["ballast", "volume", "list", "-o", ""]), ["json", "table"]);
  assertEquals(await complete(["ballast", "serve", "--tls", ""]), ["off", "on"]);
  assert((await complete(["ballast", "serve", "--"])).includes("--data-dir"));
  assertEquals(await complete(["ballast", "completion", ""]), ["bash", "zsh"]);
  assertEquals(await complete(["ballast", "ca", "in"]), ["init"]);
});

Deno.test("ballast completion prints the scripts; an unknown shell exits 2", async () => {
  let io = captureIo();
  assertEquals(await main(["completion", "bash"], io), 0);
  assertEquals(io.stdout, bashCompletion());
  io = captureIo();
  assertEquals(await main(["completion", "zsh"], io), 0);
  assertEquals(io.stdout, zshCompletion());
  assert(io.stdout.startsWith("#compdef ballast\n"));
  io = captureIo();
  assertEquals(await main(["completion", "fish"], io), 2);
  assert(io.stderr.includes('"fish"'), io.stderr);
});

let haveZsh = false;
try {
  haveZsh = new Deno.Command("zsh", { args: ["--version"], stdout: "null" }).outputSync().success;
} catch {
  // not installed
}
Deno.test({
  name: haveZsh
    ? "zsh loads the completion script and completes with it"
    : "zsh loads the completion script [skipped: zsh not installed; scripts/setup.sh installs it]",
  ignore: !haveZsh,
  fn: async () => {
    // bashcompinit registers the function; called as zsh calls it (sh emulation, 0-based
    // arrays), it offers the volume subcommands (zsh filters by the typed prefix itself).
    const script = `autoload -U compinit && compinit -u
${zshCompletion()}
print -r -- "\${_comps[ballast]}"
() {
  emulate -L sh; setopt kshglob noshglob braceexpand
  COMP_WORDS=(ballast volume cr); COMP_CWORD=2; _ballast; print -r -- "\${COMPREPLY[@]}"
}
`;
    const out = await new Deno.Command("zsh", { args: ["-f", "-c", script], stdin: "null" })
      .output();
    const stdout = new TextDecoder().decode(out.stdout);
    assertEquals(out.code, 0, new TextDecoder().decode(out.stderr));
    const [registered, offered] = stdout.trim().split("\n");
    assert(registered.includes("-F _ballast"), `compdef: ${stdout}`);
    assert(offered.split(" ").includes("create"), `offered: ${stdout}`);
  },
});
