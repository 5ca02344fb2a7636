// deno-lint-ignore-file no-console
/**
 * One bench run's lifetime for the --data-workers and --replicas modes of scripts/bench.ts:
 * a temp directory, cleanups that run in reverse order at the end, on failure and on Ctrl-C
 * (SIGINT/SIGTERM), and the admin API client of a TLS node.
 * @module
 */

import { BallastClient } from "../mod/mod.ts";

export class BenchRun {
  readonly dir: string;
  #cleanups: (() => Promise<void> | void)[] = [];
  #closing?: Promise<void>;
  #interrupted = false;
  readonly #onSignal = () => {
    if (this.#interrupted) return;
    this.#interrupted = true;
    console.error("\nbench: interrupted, stopping servers");
    this.close().finally(() => Deno.exit(130));
  };

  private constructor(dir: string, keep: boolean) {
    this.dir = dir;
    if (!keep) this.defer(() => Deno.remove(dir, { recursive: true }).catch(() => {}));
    Deno.addSignalListener("SIGINT", this.#onSignal);
    Deno.addSignalListener("SIGTERM", this.#onSignal);
  }

  static async start(opts: { dir?: string; keep: boolean }): Promise<BenchRun> {
    if (opts.dir) await Deno.mkdir(opts.dir, { recursive: true }); // --dir made if missing
    const dir = await Deno.makeTempDir({ prefix: "ballast-bench-", dir: opts.dir });
    return new BenchRun(dir, opts.keep);
  }

  get interrupted(): boolean {
    return this.#interrupted;
  }

  /** Runs `fn` when the run ends (last registered, first run). */
  defer(fn: () => Promise<void> | void): void {
    this.#cleanups.push(fn);
  }

  close(): Promise<void> {
    return this.#closing ??= (async () => {
      Deno.removeSignalListener("SIGINT", this.#onSignal);
      Deno.removeSignalListener("SIGTERM", this.#onSignal);
      for (const fn of this.#cleanups.reverse()) {
        try {
          await fn();
        } catch (err) {
          console.error(`bench: cleanup: ${(err as Error).message}`);
        }
      }
    })();
  }
}

/** An API client with the admin credentials of the TLS node whose data dir is `dataDir`. */
export function adminClient(api: string, dataDir: string): BallastClient {
  const pki = `${dataDir}/pki`;
  return new BallastClient(api, {
    caCertPem: Deno.readTextFileSync(`${pki}/ca-bundle.crt`),
    certPem: Deno.readTextFileSync(`${pki}/admin.crt`),
    keyPem: Deno.readTextFileSync(`${pki}/admin.key`),
    timeoutMs: 15_000,
  });
}

/** The value of an unlabelled gauge or counter in Prometheus text, NaN when absent. */
export function metricValue(text: string, name: string): number {
  const m = new RegExp(`^${name} (\\S+)$`, "m").exec(text);
  return m ? Number(m[1]) : NaN;
}
