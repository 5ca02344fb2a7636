/**
 * `volume get` of a replicated volume on a terminal (control/cli/_members_view.ts) and
 * `volume get --watch` (control/cli/_watch.ts): the progress bar, durations and rates, the
 * member table, and the watch loop's lines, frames and exit codes, with a scripted volume,
 * a fake clock and a sleep that returns at once.
 */

import {
  formatDuration,
  formatRate,
  isHealthy,
  memberDetail,
  memberTable,
  progressBar,
  watchFrame,
  watchLine,
} from "../../../control/cli/_members_view.ts";
import { captureIo } from "../../../control/cli/mod.ts";
import { silentLogger } from "../../../control/common/mod.ts";
import { resolveConfig, serve } from "../../../control/serve/mod.ts";
import { main } from "../../../main.ts";
import { fit, WATCH_EXIT, watchVolume } from "../../../control/cli/_watch.ts";
import { NotFoundError, UnavailableError } from "../../../mod/errors.ts";
import type { MemberResync, Volume, VolumeMember } from "../../../mod/types.ts";
import { assert, assertEquals, assertRejects } from "../../_assert.ts";

const MiB = 2 ** 20;
const T0 = Date.parse("2030-01-01T12:00:00.000Z");

Deno.test("progressBar() fills whole cells by percent, clamped to 0..100", () => {
  for (
    const [percent, bar] of [
      [0, "[--------------------]"],
      [4.9, "[--------------------]"],
      [5, "[#-------------------]"],
      [45.2, "[#########-----------]"],
      [99.9, "[###################-]"],
      [100, "[####################]"],
      [150, "[####################]"],
      [-3, "[--------------------]"],
      [NaN, "[--------------------]"],
    ] as const
  ) {
    assertEquals(progressBar(percent), bar, `${percent}%`);
  }
  assertEquals(progressBar(50, 4), "[##--]");
});

Deno.test("formatDuration() and formatRate() read like people write them", () => {
  for (
    const [s, text] of [
      [0, "0s"],
      [7.4, "7s"],
      [59, "59s"],
      [60, "1m00s"],
      [125, "2m05s"],
      [3599, "59m59s"],
      [3600, "1h00m"],
      [3725, "1h02m"],
      [86_400 + 4 * 3600, "1d04h"],
      [-5, "0s"],
    ] as const
  ) {
    assertEquals(formatDuration(s), text, String(s));
  }
  assertEquals(formatRate(20 * MiB), "20 MiB/s");
  assertEquals(formatRate(1536), "1.5 KiB/s");
  assertEquals(formatRate(0), "-");
});

function resync(over: Partial<MemberResync> = {}): MemberResync {
  return {
    pass: 1,
    percent: 45.2,
    comparedBytes: 463 * MiB,
    totalBytes: 1024 * MiB,
    bytesLeft: 561 * MiB,
    sentBytes: 12 * MiB,
    zeroedBytes: 0,
    rateBytesPerSecond: 20 * MiB,
    sendRateBytesPerSecond: 0,
    etaSeconds: 29,
    startedAt: new Date(T0).toISOString(),
    ...over,
  };
}

const master: VolumeMember = { node: "n1", role: "master", state: "in-sync", lagBytes: 0 };

function volume(members: VolumeMember[], over: Partial<Volume> = {}): Volume {
  return {
    name: "r2",
    uuid: "u",
    sizeBytes: 1024 * MiB,
    replicas: 2,
    master: "n1",
    epoch: 2,
    state: "ready",
    labels: {},
    description: "",
    createdAt: new Date(T0).toISOString(),
    updatedAt: new Date(T0).toISOString(),
    members: members.map((m) => m.node),
    inSync: members.filter((m) => m.state === "in-sync").map((m) => m.node),
    down: [],
    phase: members.every((m) => m.state === "in-sync") ? "healthy" : "degraded",
    memberStatus: members,
    live: { node: "n1", observedAt: new Date(T0).toISOString() },
    ...over,
  };
}

const resyncing: VolumeMember = {
  node: "n2",
  role: "replica",
  state: "resyncing",
  lagBytes: 561 * MiB,
  lagSeconds: 40,
  resync: resync(),
};
const outOfSync: VolumeMember = {
  node: "n3",
  role: "replica",
  state: "out-of-sync",
  reason: "a replicated write to it failed",
  lagBytes: 1024 * MiB,
  lagSeconds: 125,
};
const inSync = (node: string): VolumeMember => ({
  node,
  role: "replica",
  state: "in-sync",
  lagBytes: 0,
  lagSeconds: 0,
});

Deno.test("memberTable(): role, state in words, the root hash cut to 16 digits ('-' when absent), and the detail", () => {
  const withRoot = { ...inSync("n3"), rootHash: "0123456789abcdef0123456789abcdef" };
  assertEquals(
    memberTable([master, resyncing, withRoot]),
    [
      "MEMBER   ROLE      STATE       ROOT HASH          DETAIL",
      "n1       master    in sync     -                  -",
      "n2       replica   resyncing   -                  45.2% [#########-----------] 561 MiB left, 20 MiB/s, ETA 29s, sent 12 MiB",
      "n3       replica   in sync     0123456789abcdef   -",
      "",
    ].join("\n"),
  );
  assertEquals(
    memberDetail(outOfSync),
    "out of sync for 2m05s; a replicated write to it failed",
  );
  assertEquals(
    memberDetail({ ...outOfSync, state: "down", reason: "lease gone", lagSeconds: undefined }),
    "lease gone",
  );
  assertEquals(
    memberDetail({
      ...resyncing,
      resync: resync({ pass: 2, rateBytesPerSecond: 0, etaSeconds: undefined }),
    }),
    "45.2% [#########-----------] 561 MiB left, -, ETA estimating, sent 12 MiB (pass 2)",
  );
  // The differing regions the pass has still to copy, which the ETA is based on.
  assertEquals(
    memberDetail({ ...resyncing, resync: resync({ regionsToCopy: 150, regionsCopied: 20 }) }),
    "45.2% [#########-----------] 561 MiB left (130 of 150 differing regions), 20 MiB/s, " +
      "ETA 29s, sent 12 MiB",
  );
  assertEquals(
    memberDetail({ ...resyncing, resync: resync({ regionsToCopy: 1, regionsCopied: 0 }) }),
    "45.2% [#########-----------] 561 MiB left (1 of 1 differing region), 20 MiB/s, ETA 29s, " +
      "sent 12 MiB",
  );
  // What crossed the network and the master's --resync-rate, beside the compare rate.
  assertEquals(
    memberDetail({
      ...resyncing,
      resync: resync({ sendRateBytesPerSecond: 5 * MiB, rateLimitBytesPerSecond: 8 * MiB }),
    }),
    "45.2% [#########-----------] 561 MiB left, 20 MiB/s, ETA 29s, sent 12 MiB at 5 MiB/s " +
      "(limit 8 MiB/s)",
  );
  // Finished, while the master's compare-and-swap puts it in sync: not "out of sync".
  assertEquals(
    memberDetail({
      ...resyncing,
      resync: resync({ percent: 100, bytesLeft: 0, finishedAt: new Date(T0).toISOString() }),
    }),
    "100.0% [####################] done, sent 12 MiB; being marked in sync",
  );
});

Deno.test("watchLine() and watchFrame(): one line per update, or a frame with the table; the live status's trouble is said", () => {
  const v = volume([master, resyncing, outOfSync]);
  assertEquals(
    watchLine(v, T0 + 1_000),
    "2030-01-01T12:00:01.000Z r2 degraded (epoch 2, master n1): n1 master in sync; " +
      "n2 replica resyncing 45.2% 561 MiB left, 20 MiB/s, ETA 29s, sent 12 MiB; " +
      "n3 replica out of sync",
  );
  const frame = watchFrame(v, T0 + 1_000);
  assert(frame.startsWith("r2 degraded (epoch 2, master n1)   12:00:01 UTC\nMEMBER"), frame);
  assert(frame.includes("[#########-----------]"), frame);
  const lost = volume([master, outOfSync], { live: { node: "n1", error: "node n1 is down" } });
  assert(watchLine(lost, T0).endsWith("; live status unavailable: node n1 is down"));
  assert(watchFrame(lost, T0).includes("\nlive status unavailable: node n1 is down\n"));
  assertEquals(isHealthy(volume([master, inSync("n2")])), true);
  assertEquals(isHealthy(v), false);
  const single = volume([], { members: undefined, memberStatus: undefined, live: undefined });
  assertEquals(isHealthy(single), true);
  assert(
    watchLine(single, T0).endsWith(
      "r2 healthy (epoch 2, master n1): no replicas: nothing to bring in sync",
    ),
  );
  assert(watchFrame(single, T0).endsWith("UTC\nno replicas: nothing to bring in sync\n"));
});

Deno.test("watchLine() and watchFrame() show a membership change the master cannot make; the line stays the same while the absence grows", () => {
  const blocked = (s: number) =>
    volume([master, outOfSync], {
      membershipBlocked: {
        reason: `cannot replace n3 (absent for ${s} s, more than 300 s): need 1 more eligible ` +
          "node, found 0; not eligible: n4 (cordoned)",
        since: "2030-01-01T11:55:00.000Z",
      },
    });
  const line = watchLine(blocked(301), T0);
  assert(
    line.endsWith(
      "; membership blocked: cannot replace n3 (absent, more than 300 s): need 1 more " +
        "eligible node, found 0; not eligible: n4 (cordoned)",
    ),
    line,
  );
  assertEquals(watchLine(blocked(302), T0), line);
  assert(
    watchFrame(blocked(301), T0).includes(
      "\nmembership blocked since 2030-01-01T11:55:00.000Z: cannot replace n3 (absent for 301 s",
    ),
  );
});

/** A watch over `script` (one volume, or an error, per poll); the clock moves 1 s a poll. */
function scripted(script: Array<Volume | Error>, over: { tty?: boolean } = {}) {
  let now = T0;
  let polls = 0;
  const interrupts: Array<() => void> = [];
  // captureIo()'s methods write to the object it returns: extend that one.
  const io = Object.assign(captureIo(), {
    terminal: over.tty ? () => ({ columns: 200 }) : () => undefined,
    onInterrupt: (fn: () => void) => {
      interrupts.push(fn);
      return () => void interrupts.splice(interrupts.indexOf(fn), 1);
    },
  });
  const options = {
    fetch: () => {
      const next = script[Math.min(polls++, script.length - 1)];
      return next instanceof Error ? Promise.reject(next) : Promise.resolve(next);
    },
    io,
    json: false,
    intervalMs: 1000,
    now: () => now,
    sleep: (ms: number) => {
      now += ms;
      return Promise.resolve();
    },
  };
  return { io, options, interrupts, polls: () => polls };
}

Deno.test("watchVolume(): not a terminal: one line per change, exit 0 once every member is in sync", async () => {
  const degraded = volume([master, resyncing, inSync("n3")]);
  const further = volume([
    master,
    { ...resyncing, resync: resync({ percent: 80.5 }) },
    inSync("n3"),
  ]);
  const healthy = volume([master, inSync("n2"), inSync("n3")]);
  const w = scripted([degraded, degraded, further, healthy]);
  assertEquals(await watchVolume(w.options), WATCH_EXIT.healthy);
  const lines = w.io.stdout.trimEnd().split("\n");
  assertEquals(lines.length, 3, "the unchanged second poll prints nothing");
  assert(lines[0].includes("n2 replica resyncing 45.2%"), lines[0]);
  assert(lines[1].startsWith("2030-01-01T12:00:02.000Z") && lines[1].includes("80.5%"), lines[1]);
  assert(lines[2].includes("r2 healthy (epoch 2, master n1)"), lines[2]);
  assert(!w.io.stdout.includes("\x1b["), "no terminal control codes in a pipe");
  assertEquals(w.io.stderr, "");
  assertEquals(w.interrupts.length, 0, "the Ctrl-C handler is removed at the end");
});

Deno.test("watchVolume(): on a terminal each frame replaces the one before", async () => {
  const w = scripted([volume([master, resyncing]), volume([master, inSync("n2")])], { tty: true });
  assertEquals(await watchVolume(w.options), WATCH_EXIT.healthy);
  const [first, second] = w.io.stdout.split("\x1b[4A\x1b[J");
  assertEquals(first.split("\n").length - 1, 4, "heading, table heading, 2 members");
  assert(second !== undefined, "the second frame moves up over the 4 lines of the first");
  assertEquals(second.split("\x1b[").length, 1, "one redraw");
  assert(w.io.stdout.endsWith("n2       replica   in sync   -           -\n"), w.io.stdout);
});

Deno.test("fit(): lines cut to the terminal's width, whole when it reports none", () => {
  const frame = `${"x".repeat(30)}\nshort\n`;
  assertEquals(fit(frame, 26), `${"x".repeat(25)}\nshort\n`);
  assertEquals(fit(frame, 5), `${"x".repeat(20)}\nshort\n`, "never narrower than 20");
  assertEquals(fit(frame, 0), frame);
});

Deno.test("watchVolume() with -o json: one JSON document per change", async () => {
  const w = scripted([volume([master, resyncing]), volume([master, inSync("n2")])]);
  assertEquals(await watchVolume({ ...w.options, json: true }), WATCH_EXIT.healthy);
  const docs = w.io.stdout.trimEnd().split("\n").map((l) => JSON.parse(l) as Volume);
  assertEquals(docs.map((d) => d.memberStatus![1].state), ["resyncing", "in-sync"]);
});

Deno.test("watchVolume() with -o json: readings that differ only by the clock (observedAt, lagSeconds) are one document", async () => {
  const down: VolumeMember = {
    node: "n2",
    role: "replica",
    state: "down",
    lagBytes: MiB,
    lagSeconds: 60,
  };
  const at = (t: string, lag: number) => ({
    ...volume([master, { ...down, lagSeconds: lag }]),
    live: { node: "n1", observedAt: t },
  });
  const w = scripted([
    at("2026-12-05T00:00:01.000Z", 60),
    at("2026-12-05T00:00:02.000Z", 61),
    at("2026-12-05T00:00:03.000Z", 62),
    volume([master, inSync("n2")]),
  ]);
  assertEquals(await watchVolume({ ...w.options, json: true }), WATCH_EXIT.healthy);
  const docs = w.io.stdout.trimEnd().split("\n").map((l) => JSON.parse(l) as Volume);
  assertEquals(docs.map((d) => d.memberStatus![1].state), ["down", "in-sync"]);
  assertEquals(docs[0].memberStatus![1].lagSeconds, 60, "the document is printed whole");
});

Deno.test("watchVolume(): exit 3 after --timeout, 130 on Ctrl-C, the control plane away only warns, other errors end it", async () => {
  const stuck = volume([master, outOfSync]);
  const t = scripted([stuck]);
  assertEquals(await watchVolume({ ...t.options, timeoutMs: 5_000 }), WATCH_EXIT.timeout);
  assertEquals(t.polls(), 6, "polled at 0..5 s");
  assert(t.io.stderr.includes("not healthy within 5 s"), t.io.stderr);

  const c = scripted([stuck]);
  const sleeps = { n: 0 };
  const code = await watchVolume({
    ...c.options,
    sleep: () => {
      if (++sleeps.n === 3) c.interrupts.forEach((fn) => fn());
      return Promise.resolve();
    },
  });
  assertEquals(code, WATCH_EXIT.interrupted);
  assertEquals(c.polls(), 3);

  // A poll that never answers does not hold up Ctrl-C.
  const hung = scripted([stuck]);
  const pending = watchVolume({ ...hung.options, fetch: () => new Promise(() => {}) });
  await Promise.resolve();
  hung.interrupts.forEach((fn) => fn());
  assertEquals(await pending, WATCH_EXIT.interrupted);

  const u = scripted([new UnavailableError("cannot reach the Ballast API"), volume([master])]);
  assertEquals(await watchVolume(u.options), WATCH_EXIT.healthy);
  assert(u.io.stderr.startsWith("warning: cannot reach the Ballast API; still watching"));

  const gone = scripted([stuck, new NotFoundError("volume", "r2")]);
  await assertRejects(() => watchVolume(gone.options), NotFoundError);
  assertEquals(gone.interrupts.length, 0);
});

Deno.test("cli: volume get --watch of a volume without replicas exits 0 at once; its flags without --watch are usage errors", async () => {
  const dir = await Deno.makeTempDir({ prefix: "ballast-watch-" });
  const config = resolveConfig(
    { "data-dir": dir, "api-listen": "127.0.0.1:0", "nbd-listen": "127.0.0.1:0", tls: "off" },
    {},
    {},
    { hostname: () => "watch-node" },
  );
  const server = await serve(config, { logger: silentLogger() });
  const cli = async (...args: string[]) => {
    const io = captureIo({ BALLAST_API: server.apiUrl });
    return { code: await main(args, io), out: io.stdout, err: io.stderr };
  };
  try {
    assertEquals((await cli("volume", "create", "w1", "--size", "8MiB")).code, 0);
    const watched = await cli("volume", "get", "w1", "--watch", "--interval", "1s");
    assertEquals([watched.code, watched.err], [0, ""]);
    assert(
      watched.out.endsWith(
        "w1 healthy (epoch 1, master watch-node): no replicas: nothing to bring in sync\n",
      ),
      watched.out,
    );
    const json = await cli("volume", "get", "w1", "-w", "-o", "json");
    assertEquals((JSON.parse(json.out) as Volume).name, "w1");
    for (const flag of ["--interval", "--timeout"]) {
      const r = await cli("volume", "get", "w1", flag, "5s");
      assertEquals(r.code, 2, flag);
      assert(r.err.startsWith(`error: ${flag} goes with --watch`), r.err);
    }
    const bad = await cli("volume", "get", "w1", "--watch", "--timeout", "soon");
    assertEquals(bad.code, 2);
    assert(bad.err.includes('invalid --timeout "soon"'), bad.err);
    // Durations below a second and with fractions; zero, negatives and garbage are usage errors.
    for (const interval of ["500ms", "1.5s", "2s", "1m"]) {
      const r = await cli("volume", "get", "w1", "--watch", "--interval", interval);
      assertEquals([r.code, r.err], [0, ""], interval);
    }
    for (
      const [interval, why] of [
        ["0", "expected 100 ms to 3650 days (got zero)"],
        ["-1s", "a duration cannot be negative"],
        ["fast", "expected a duration such as 500ms"],
        ["10ms", "expected 100 ms to 3650 days"],
      ]
    ) {
      const r = await cli("volume", "get", "w1", "--watch", "--interval", interval);
      assertEquals(r.code, 2, interval);
      assert(r.err.startsWith(`error: invalid --interval "${interval}": ${why}`), r.err);
    }
    const missing = await cli("volume", "get", "nope", "--watch");
    assertEquals(missing.code, 1);
    assert(missing.err.includes("not found"), missing.err);
  } finally {
    await server.shutdown();
    await Deno.remove(dir, { recursive: true });
  }
});
