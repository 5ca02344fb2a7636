import { captureIo } from "../../../control/cli/mod.ts";
import { main } from "../../../main.ts";
import { systemdUnit, UNIT_DEFAULTS } from "../../../control/cli/systemd_unit.ts";
import { assert, assertEquals, assertThrows } from "../../_assert.ts";

const REPO_UNIT = new URL("../../../packaging/ballast.service", import.meta.url);

function haveSystemdAnalyze(): boolean {
  try {
    return new Deno.Command("systemd-analyze", { args: ["--version"], stdout: "null" })
      .outputSync().success;
  } catch {
    return false;
  }
}

Deno.test("ballast systemd-unit prints packaging/ballast.service exactly", async () => {
  const io = captureIo();
  assertEquals(await main(["systemd-unit"], io), 0);
  assertEquals(io.stdout, await Deno.readTextFile(REPO_UNIT));
});

Deno.test("ballast systemd-unit takes the program, user and data directory", async () => {
  const io = captureIo();
  const args = ["systemd-unit", "--bin", "/opt/b/ballast", "--user", "storage", "--data-dir"];
  assertEquals(await main([...args, "/var/lib/storage/node1"], io), 0);
  const unit = io.stdout;
  for (
    const line of [
      "ExecStart=/opt/b/ballast serve",
      "User=storage",
      "Group=storage",
      "StateDirectory=storage/node1",
      "Environment=BALLAST_DATA_DIR=/var/lib/storage/node1",
    ]
  ) assert(unit.split("\n").includes(line), `${line} in:\n${unit}`);
});

Deno.test("systemdUnit() rejects a relative program, a bad user, a data dir outside /var/lib", () => {
  assertThrows(() => systemdUnit({ ...UNIT_DEFAULTS, bin: "ballast" }), Error, '"ballast"');
  assertThrows(() => systemdUnit({ ...UNIT_DEFAULTS, user: "a b" }), Error, '"a b"');
  assertThrows(() => systemdUnit({ ...UNIT_DEFAULTS, dataDir: "/srv/x" }), Error, '"/srv/x"');
});

Deno.test("ballast systemd-unit with a bad flag value exits 2 naming it", async () => {
  const io = captureIo();
  assertEquals(await main(["systemd-unit", "--data-dir", "/srv/ballast"], io), 2);
  assert(io.stderr.includes("/srv/ballast"), io.stderr);
});

Deno.test({
  name: haveSystemdAnalyze()
    ? "systemd-analyze verify accepts the unit without a warning"
    : "systemd-analyze verify accepts the unit [skipped: systemd-analyze not installed]",
  ignore: !haveSystemdAnalyze(),
  fn: async () => {
    const dir = await Deno.makeTempDir({ prefix: "ballast-unit-" });
    try {
      // verify checks that ExecStart's program exists: point it at one that does.
      const unit = systemdUnit({ ...UNIT_DEFAULTS, bin: Deno.execPath() });
      await Deno.writeTextFile(`${dir}/ballast.service`, unit);
      const out = await new Deno.Command("systemd-analyze", {
        args: ["verify", `${dir}/ballast.service`],
        cwd: dir,
        stdin: "null",
      }).output();
      const err = new TextDecoder().decode(out.stderr).trim();
      assertEquals(out.code, 0, err);
      assertEquals(err, "", "systemd-analyze verify printed warnings");
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  },
});
