/**
 * The figures of each timed run of a benchmark, in the order run: decode tok/s and where a token's
 * time went (awaiting readbacks, issuing copies, the rest), so that runs that differ can be told
 * apart (the benches report the median run).
 *
 * @module
 */
import type { GenerateStats } from "../runtime/generate_stats.ts";

/** One timed run: decode tok/s and ms per token awaiting readbacks, issuing copies, the rest. */
export interface RunFigures {
  tokens_per_s: number;
  /** Per token: routing readbacks awaited, expert copies issued (of that: filling staging, waiting
   * for a staging buffer), everything else. */
  ms_per_token: {
    sync_wait: number;
    upload: number;
    fill: number;
    staging_wait: number;
    rest: number;
  };
  /** The SM clock's range during the run (MHz; `bench/clock.ts`), where it was sampled. */
  sm_mhz?: { min: number; max: number } | null;
  /** The process's page faults per decoded token during the run (Linux), where counted. */
  faults_per_token?: { minor: number; major: number } | null;
}

/**
 * Decodes one run of `tokens`, timing it: its ids, generation statistics (`stats()` after the
 * last token) and figures, with the SM clock's range (where `clock` samples it) and page faults.
 *
 * @example
 * ```ts ignore
 * const run = await timedRun(model.generate(prompt, { maxTokens: 64 }), () => model.lastStats!, clock);
 * ```
 */
export async function timedRun(
  tokens: AsyncIterable<number>,
  stats: () => Pick<GenerateStats, "decode_tokens_per_s" | "time_per_token">,
  clock: { range(t0: number, t1: number): { min: number; max: number } | null } | null,
): Promise<{ ids: number[]; figures: RunFigures }> {
  const ids: number[] = [], t0 = performance.now(), pf0 = pageFaults();
  for await (const id of tokens) ids.push(id);
  const sm = clock?.range(t0, performance.now()) ?? null;
  return { ids, figures: runFigures(stats(), sm, faultsPerToken(pf0, pageFaults(), ids.length)) };
}

/** The process's page-fault counts so far (`/proc/self/stat`), or null where there is none. */
export function pageFaults(): { minor: number; major: number } | null {
  try {
    const stat = Deno.readTextFileSync("/proc/self/stat");
    // Fields after the command name (which may hold spaces): state is field 3, minflt 10, majflt 12.
    const f = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
    return { minor: Number(f[7]), major: Number(f[9]) };
  } catch {
    return null;
  }
}

/** Faults per token between two {@linkcode pageFaults} readings. */
export function faultsPerToken(
  before: { minor: number; major: number } | null,
  after: { minor: number; major: number } | null,
  tokens: number,
): { minor: number; major: number } | null {
  if (!before || !after || tokens <= 0) return null;
  const per = (n: number) => Math.round(n / tokens);
  return { minor: per(after.minor - before.minor), major: per(after.major - before.major) };
}

/**
 * The figures of one run from its generation statistics.
 *
 * @example
 * ```ts ignore
 * const f = runFigures(model.lastStats!);
 * ```
 */
export function runFigures(
  st: Pick<GenerateStats, "decode_tokens_per_s" | "time_per_token">,
  sm?: { min: number; max: number } | null,
  faults?: { minor: number; major: number } | null,
): RunFigures {
  const t = st.time_per_token, ms = (s: number) => Math.round(s * 1e6) / 1e3;
  return {
    tokens_per_s: st.decode_tokens_per_s,
    ms_per_token: {
      sync_wait: ms(t.sync_wait),
      upload: ms(t.upload),
      fill: ms(t.upload_fill),
      staging_wait: ms(t.upload_staging_wait),
      rest: ms(t.compute),
    },
    ...(sm ? { sm_mhz: sm } : {}),
    ...(faults ? { faults_per_token: faults } : {}),
  };
}

/**
 * The timed runs in the order run: tok/s (ms per token awaiting readbacks / issuing copies / the rest,
 * and the SM clock's range where it was sampled).
 *
 * @example
 * ```ts
 * import { runsCell } from "./run_figures.ts";
 * const ms_per_token = { sync_wait: 3, upload: 5, fill: 4, staging_wait: 0, rest: 2 };
 * console.log(runsCell([{ tokens_per_s: 100, ms_per_token }])); // 100.0 (3.0/5.0/2.0)
 * ```
 */
export function runsCell(runs: readonly RunFigures[] | undefined): string {
  if (!runs?.length) return "-";
  return runs.map((r) => {
    const t = r.ms_per_token;
    const sm = r.sm_mhz ? ` ${r.sm_mhz.min}-${r.sm_mhz.max} MHz` : "";
    const pf = r.faults_per_token ? ` ${r.faults_per_token.minor} faults/token` : "";
    return `${r.tokens_per_s.toFixed(1)} (${t.sync_wait.toFixed(1)}/${t.upload.toFixed(1)}/${
      t.rest.toFixed(1)
    }${sm}${pf})`;
  }).join(", ");
}
