/**
 * The GPU's SM clock, sampled in the background from `nvidia-smi` (where there is one) while a
 * benchmark runs: the GPU host's clock climbs from ~500 MHz to its maximum only after seconds of
 * sustained work, and a decode run's speed follows it, so benchmarks warm the GPU up and report the
 * clock seen during their timed runs.
 * @module
 */

/** One clock sample: `performance.now()` time and SM clock in MHz. */
export interface ClockSample {
  readonly t: number;
  readonly mhz: number;
}

/** A background `nvidia-smi` reading the SM clock every `periodMs`. */
export class ClockSampler {
  /** Samples so far. */
  readonly samples: ClockSample[] = [];
  /** The SM clock's maximum (MHz), once read. */
  maxMhz: number | null = null;
  #child: Deno.ChildProcess;
  #done: Promise<void>;

  private constructor(child: Deno.ChildProcess) {
    this.#child = child;
    this.#done = this.#read();
  }

  /** Starts sampling; null where `nvidia-smi` cannot run (no NVIDIA GPU, no permission). */
  static start(periodMs = 100): ClockSampler | null {
    try {
      const child = new Deno.Command("nvidia-smi", {
        args: [
          "--query-gpu=clocks.sm,clocks.max.sm",
          "--format=csv,noheader,nounits",
          `--loop-ms=${periodMs}`,
        ],
        stdout: "piped",
        stderr: "null",
      }).spawn();
      return new ClockSampler(child);
    } catch {
      return null;
    }
  }

  async #read(): Promise<void> {
    let rest = "";
    const dec = new TextDecoder();
    try {
      for await (const chunk of this.#child.stdout) {
        const lines = (rest + dec.decode(chunk, { stream: true })).split("\n");
        rest = lines.pop()!;
        for (const line of lines) {
          const [sm, max] = line.split(",").map(Number);
          if (!Number.isFinite(sm)) continue;
          this.samples.push({ t: performance.now(), mhz: sm });
          if (Number.isFinite(max)) this.maxMhz = max;
        }
      }
    } catch { /* the process ended */ }
  }

  /** Min and max SM clock over samples taken in [t0, t1] (`performance.now()` times), or null. */
  range(t0: number, t1: number): { min: number; max: number } | null {
    const xs = this.samples.filter((s) => s.t >= t0 && s.t <= t1).map((s) => s.mhz);
    return xs.length ? { min: Math.min(...xs), max: Math.max(...xs) } : null;
  }

  /** Stops the sampler. */
  async stop(): Promise<void> {
    try {
      this.#child.kill("SIGTERM");
    } catch { /* already gone */ }
    await this.#done;
    await this.#child.status;
  }
}

/**
 * Runs `work` repeatedly for at least `seconds` (and at least once), so the GPU's clock has climbed
 * before timed runs; returns how many times it ran.
 */
export async function warmUp(work: () => Promise<unknown>, seconds: number): Promise<number> {
  const t0 = performance.now();
  let runs = 0;
  do {
    await work();
    runs++;
  } while (performance.now() - t0 < seconds * 1e3);
  return runs;
}
