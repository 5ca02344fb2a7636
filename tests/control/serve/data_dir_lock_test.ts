import { LOCK_FILE, lockDataDir } from "../../../control/serve/_data_dir_lock.ts";
import { FailedPreconditionError } from "../../../mod/errors.ts";
import { assert, assertEquals, assertThrows } from "../../_assert.ts";

const LOCK_MODULE = new URL("../../../control/serve/_data_dir_lock.ts", import.meta.url).href;

Deno.test("lockDataDir(): one holder at a time; a new directory is private", () => {
  const root = Deno.makeTempDirSync();
  try {
    const dir = `${root}/a/data`;
    const lock = lockDataDir(dir);
    assertEquals(Deno.statSync(dir).mode! & 0o777, 0o700);
    assertEquals(lock.openMode, undefined);
    assertEquals(Deno.readTextFileSync(`${dir}/${LOCK_FILE}`), `${Deno.pid}\n`);
    const err = assertThrows(() => lockDataDir(dir), FailedPreconditionError);
    assert(err.message.includes(`in use by another ballast server (pid ${Deno.pid}`), err.message);
    lock.release();
    assertEquals([...Deno.readDirSync(dir)].length, 0, "the lock file is removed");
    lockDataDir(dir).release(); // and the lock can be taken again
  } finally {
    Deno.removeSync(root, { recursive: true });
  }
});

Deno.test("lockDataDir(): an existing directory that others may enter is reported", () => {
  const dir = Deno.makeTempDirSync();
  try {
    Deno.chmodSync(dir, 0o755);
    const lock = lockDataDir(dir);
    assertEquals(lock.openMode, 0o755);
    assertEquals(Deno.statSync(dir).mode! & 0o777, 0o755, "left as the operator made it");
    lock.release();
  } finally {
    Deno.removeSync(dir, { recursive: true });
  }
});

Deno.test("lockDataDir(): a lock file of an older version naming this process's pid is taken", () => {
  // A container's server is pid 1 after every restart: the file a killed one left names the
  // pid of the new process. Only a running process can hold the lock now.
  const dir = Deno.makeTempDirSync();
  try {
    Deno.writeTextFileSync(`${dir}/${LOCK_FILE}`, `${Deno.pid} ${crypto.randomUUID()}\n`);
    const lock = lockDataDir(dir);
    assertEquals(Deno.readTextFileSync(lock.path), `${Deno.pid}\n`);
    lock.release();
  } finally {
    Deno.removeSync(dir, { recursive: true });
  }
});

Deno.test("lockDataDir(): held by another process until it is killed", async () => {
  const dir = Deno.makeTempDirSync();
  const holder = new Deno.Command(Deno.execPath(), {
    args: [
      "eval",
      `import { lockDataDir } from ${JSON.stringify(LOCK_MODULE)};
       lockDataDir(${JSON.stringify(dir)});
       console.log("locked");
       setInterval(() => {}, 1000);`,
    ],
    stdout: "piped",
    stderr: "inherit",
  }).spawn();
  try {
    const reader = holder.stdout.pipeThrough(new TextDecoderStream()).getReader();
    let out = "";
    while (!out.includes("locked")) {
      const { value, done } = await reader.read();
      if (done) throw new Error(`the holder ended before taking the lock: ${out}`);
      out += value;
    }
    const err = assertThrows(() => lockDataDir(dir), FailedPreconditionError);
    assert(err.message.includes(`(pid ${holder.pid}, lock file`), err.message);
    holder.kill("SIGKILL");
    await holder.status;
    reader.releaseLock();
    // The kernel let the lock go with the process; its file is still there, naming it.
    assertEquals(Deno.readTextFileSync(`${dir}/${LOCK_FILE}`), `${holder.pid}\n`);
    const lock = lockDataDir(dir);
    assertEquals(Deno.readTextFileSync(lock.path), `${Deno.pid}\n`);
    lock.release();
  } finally {
    try {
      holder.kill("SIGKILL");
    } catch { /* ended */ }
    await holder.status;
    await holder.stdout.cancel().catch(() => {});
    Deno.removeSync(dir, { recursive: true });
  }
});
