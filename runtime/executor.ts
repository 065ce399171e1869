/**
 * The executor: runs a forward plan, in every mode. The plan is flattened once ({@linkcode planOps})
 * into runs of GPU steps and MoE expert blocks; the executor compiles that list once per plan
 * against its expert source and replays it on every call:
 *
 * - `resident` experts (every expert in its layer's pool): each MoE block runs in line, so the
 *   whole pass and the caller's tail (sampling, the step kernel) go to the GPU in one submit with
 *   no readback.
 * - `streamed` experts (the offloading engine): each MoE block is a sync point. The executor hands
 *   the streamed source the steps queued since the previous sync point (they end with the layer's
 *   router and pre-gate) and the block; the source submits them, reads the routing back, makes the
 *   experts resident and submits the expert steps. The steps after the last MoE block and the tail
 *   go in one submit.
 *
 * @example
 * ```ts ignore
 * const exec = new Executor(gpu, engine ?? RESIDENT);
 * const plan = await buildForward(gpu, cfg, weights, state, { T: 1, logits: "last", ...engine?.planHooks() });
 * await exec.run(plan, [sample, step]); // replays the compiled plan
 * ```
 * @module
 */
import type { Gpu, Step } from "./base/gpu/device.ts";
import { type ForwardPlan, type MoeOp, planOps } from "./models/plan.ts";

/**
 * Experts that stream into GPU slots: the offloading engine's side of a MoE sync point.
 *
 * @example
 * ```ts
 * import type { StreamedExperts } from "./executor.ts";
 * const log: string[] = [];
 * const source: StreamedExperts = {
 *   kind: "streamed",
 *   beginPass: (T) => void log.push(`pass of ${T}`),
 *   moe: (op, queued) => Promise.resolve(void log.push(`${queued.length} steps, layer ${op.layer}`)),
 * };
 * console.log(source.kind);
 * ```
 */
export interface StreamedExperts {
  readonly kind: "streamed";
  /** Called before each pass over `T` tokens. */
  beginPass(T: number): void;
  /**
   * Runs MoE block `op`: submits `queued` (the steps since the previous sync point, not yet
   * submitted), makes the layer's experts resident and submits its expert steps.
   */
  moe(op: MoeOp, queued: readonly Step[]): Promise<void>;
}

/**
 * Where the executor finds the experts: all resident in their layers' pools, or streamed.
 *
 * @example
 * ```ts
 * import { type ExpertSource, RESIDENT } from "./executor.ts";
 * const source: ExpertSource = RESIDENT;
 * console.log(source.kind); // resident
 * ```
 */
export type ExpertSource = { readonly kind: "resident" } | StreamedExperts;

/**
 * The expert source of resident mode: every MoE block runs in line.
 *
 * @example
 * ```ts
 * import { RESIDENT } from "./executor.ts";
 * console.log(RESIDENT); // { kind: "resident" }
 * ```
 */
export const RESIDENT: ExpertSource = Object.freeze({ kind: "resident" });

/** A plan compiled against an expert source: sync points, each after the steps it submits. */
interface Program {
  readonly syncs: readonly { readonly queued: readonly Step[]; readonly op: MoeOp }[];
  /** The steps after the last sync point (all of them without sync points). */
  readonly last: readonly Step[];
}

/**
 * Runs forward plans on one GPU with one expert source (see the module documentation).
 *
 * @example
 * ```ts ignore
 * const exec = new Executor(gpu, RESIDENT);
 * await exec.run(plan); // one submit
 * ```
 */
export class Executor {
  readonly #gpu: Gpu;
  readonly #source: ExpertSource;
  readonly #programs = new WeakMap<ForwardPlan, Program>();

  /** An executor for plans whose MoE layers read experts from `source`. */
  constructor(gpu: Gpu, source: ExpertSource) {
    this.#gpu = gpu;
    this.#source = source;
  }

  /**
   * Runs `plan`, then `tail` (e.g. sampling), which is submitted with the plan's last steps.
   * Compiles the plan on its first run; later runs replay it without allocating when resident.
   */
  async run(plan: ForwardPlan, tail: readonly Step[] = []): Promise<void> {
    let program = this.#programs.get(plan);
    if (!program) this.#programs.set(plan, program = compile(plan, this.#source));
    const source = this.#source;
    if (source.kind === "streamed") {
      source.beginPass(plan.T);
      for (const { queued, op } of program.syncs) await source.moe(op, queued);
    }
    const gpu = this.#gpu;
    gpu.submit(program.last, tail.length ? (enc) => gpu.encode(enc, tail) : undefined);
  }
}

/** Splits the plan's flat list at its sync points (none when the experts are resident). */
function compile(plan: ForwardPlan, source: ExpertSource): Program {
  const syncs: { queued: Step[]; op: MoeOp }[] = [];
  let run: Step[] = [];
  for (const op of planOps(plan)) {
    if (op.kind === "steps") run.push(...op.steps);
    else if (source.kind === "resident") run.push(...op.experts);
    else {
      syncs.push({ queued: run, op });
      run = [];
    }
  }
  return { syncs, last: run };
}
