/**
 * Fences between the connections of one forwarding node's client (data/proxy/forwarder.ts),
 * shared by every thread that serves the volume.
 *
 * A node forwarding a client's requests to this master names itself at negotiation with a
 * random forwarder id and a generation that grows with each connection it makes for that
 * client (handshake.ts, NBD_OPT_BALLAST_FORWARDER). When its connection breaks it sends what
 * it holds again on a new one; requests of the broken connection that this node had received
 * but not yet run must then not run after the new connection's (a WRITE run that late could
 * overwrite a newer write of the same client). So each connection registers its generation
 * here, and a change is run only while no newer generation of its forwarder has registered
 * (checked by the change itself, data/nbd/_change.ts). The check is made after the change's
 * region wait (data/replication/regions.ts): a change that passed it is in its regions, and
 * no change of another thread enters them until it is applied and replicated, so the newer
 * connection's writes cannot run in between (tests/control/group/late_frames_model_test.ts,
 * which also shows a check before the wait, or without it, would not do).
 *
 * Layout (Int32 words): a lock word, then per slot: id (two words, 0 0 for a free slot),
 * the newest generation, and the number of connections registered under it. A slot is freed
 * when its last connection ends. The table starts with FIRST_SLOTS slots (1 KiB) and doubles
 * in place when full (a growable SharedArrayBuffer: every thread's view covers the new slots
 * once it looks for them), up to MAX_SLOTS forwarders at once: one per client connection
 * attached to this volume through another node. Past that a connection registers nothing
 * (it is not fenced, as before this existed; the connection logs a warning).
 * @module
 */

const FIRST_SLOTS = 64;
const MAX_SLOTS = 4096;
const SLOT_WORDS = 4;
const LOCK = 0;
const ID_HI = 0;
const ID_LO = 1;
const GEN = 2;
const REFS = 3;
/** How long a lock holder may take before it counts as a thread that died inside. */
const STEAL_MS = 100;

/** A connection's registration: whether a newer one replaced it, and its end. */
export interface ForwarderFence {
  /** A newer connection of the same forwarder registered: run no more changes. */
  fenced(): boolean;
  /** The connection ended (once); a request of it still running is fenced from then on. */
  release(): void;
}

export class ForwarderFences {
  readonly buffer: SharedArrayBuffer;
  #w: Int32Array;

  constructor(buffer?: SharedArrayBuffer) {
    this.buffer = buffer ??
      new SharedArrayBuffer(bytesFor(FIRST_SLOTS), { maxByteLength: bytesFor(MAX_SLOTS) });
    this.#w = wordsOf(this.buffer);
  }

  /** Slots in the table now (it only grows). */
  get slots(): number {
    return (this.buffer.byteLength / 4 - 1) / SLOT_WORDS;
  }

  /**
   * Every word of the table as it is now: a fixed-length view, made again after another
   * thread grew the table (holding the lock).
   */
  #words(): Int32Array {
    if (this.#w.length * 4 !== this.buffer.byteLength) this.#w = wordsOf(this.buffer);
    return this.#w;
  }

  /**
   * Registers generation `gen` of forwarder `id` (two u32, not both 0). Undefined when the
   * table is full.
   */
  register(id: readonly [number, number], gen: number): ForwarderFence | undefined {
    const [hi, lo] = [id[0] | 0, id[1] | 0];
    let w = this.#w;
    const at = this.#locked(() => {
      w = this.#words();
      const slots = this.slots;
      let free = -1;
      for (let s = 0; s < slots; s++) {
        const b = 1 + s * SLOT_WORDS;
        if (w[b + REFS] === 0) {
          if (free < 0) free = b;
        } else if (w[b + ID_HI] === hi && w[b + ID_LO] === lo) {
          w[b + REFS]++;
          if (gen > (w[b + GEN] >>> 0)) Atomics.store(w, b + GEN, gen | 0);
          return b;
        }
      }
      if (free < 0) {
        if (slots >= MAX_SLOTS) return -1;
        this.buffer.grow(bytesFor(Math.min(MAX_SLOTS, 2 * slots)));
        w = this.#words();
        free = 1 + slots * SLOT_WORDS;
      }
      w[free + ID_HI] = hi;
      w[free + ID_LO] = lo;
      w[free + REFS] = 1;
      Atomics.store(w, free + GEN, gen | 0);
      return free;
    });
    if (at < 0) return undefined;
    let released = false;
    return {
      // Also fenced once the slot is no longer this forwarder's: the connection was released
      // (it ended) and a request of it that still runs has no one to answer to.
      fenced: () =>
        Atomics.load(w, at + ID_HI) !== hi || Atomics.load(w, at + ID_LO) !== lo ||
        (Atomics.load(w, at + GEN) >>> 0) > gen,
      release: () => {
        if (released) return;
        released = true;
        this.#locked(() => {
          if (--w[at + REFS] === 0) w[at + ID_HI] = w[at + ID_LO] = w[at + GEN] = 0;
        });
      },
    };
  }

  /**
   * Runs `f` holding the table's lock: a spin, as every holder is brief (a few array reads and
   * writes) and never waits. A holder that does not let go within STEAL_MS is taken to be a
   * thread that was terminated inside (the pool replaced it), and the lock is taken over.
   */
  #locked<T>(f: () => T): T {
    const w = this.#w;
    let since = 0;
    for (let spins = 0; Atomics.compareExchange(w, LOCK, 0, 1) !== 0; spins++) {
      if ((spins & 0x3ff) !== 0) continue;
      const now = performance.now();
      if (since === 0) since = now;
      else if (now - since > STEAL_MS) break;
    }
    try {
      return f();
    } finally {
      Atomics.store(w, LOCK, 0);
    }
  }
}

function bytesFor(slots: number): number {
  return (1 + slots * SLOT_WORDS) * 4;
}

function wordsOf(buffer: SharedArrayBuffer): Int32Array {
  return new Int32Array(buffer, 0, buffer.byteLength / 4);
}
