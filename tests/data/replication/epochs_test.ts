/**
 * CopyEpochs (data/replication/epochs.ts): raises of one copy at once (a new master's FENCE
 * and a request of the same copy, handled side by side) all succeed and leave the newest
 * epoch on disk; raises of different copies do not wait for each other.
 */

import { assertEquals, assertRejects } from "../../_assert.ts";
import { CopyEpochs } from "../../../data/replication/mod.ts";

Deno.test("CopyEpochs: concurrent raises of one copy keep the newest epoch, on disk too", async () => {
  const dir = await Deno.makeTempDir();
  try {
    const epochs = new CopyEpochs();
    const path = `${dir}/c`;
    const raised = await Promise.all([3, 5, 4, 5, 2].map((e) => epochs.raise(path, e)));
    assertEquals(raised.filter((r) => r).length >= 2, true, "3 and then 5 at least were new");
    assertEquals(await epochs.get(path), 5);
    assertEquals((await Deno.readTextFile(`${path}.epoch`)).trim(), "5");
    assertEquals(await new CopyEpochs().get(path), 5, "read back from disk by a new instance");
    const others = await Promise.all(
      Array.from({ length: 20 }, (_, i) => epochs.raise(`${dir}/o${i}`, 7)),
    );
    assertEquals(others.every((r) => r), true);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("CopyEpochs: an epoch file that holds no epoch (damaged) is refused, not taken as 0 (no fencing)", async () => {
  const dir = await Deno.makeTempDir();
  try {
    const path = `${dir}/c`;
    assertEquals(await new CopyEpochs().get(path), 0, "no file: no epoch yet");
    for (const bad of ["", "\n", "abc\n", "5x\n", "-3\n"]) {
      await Deno.writeTextFile(`${path}.epoch`, bad);
      await assertRejects(
        () => new CopyEpochs().get(path),
        Error,
        "holds no epoch",
        JSON.stringify(bad),
      );
    }
    await Deno.writeTextFile(`${path}.epoch`, "12\n");
    assertEquals(await new CopyEpochs().get(path), 12);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
