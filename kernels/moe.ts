/**
 * Mixture-of-experts kernels (`moe.wgsl`, `moe_combine.wgsl`). Experts are read through a slot
 * table: `table[e]` is the slot of expert `e` in a stacked pool `[slots, rows, K]` of packed weights,
 * so the same kernels serve resident experts (identity table) and the offloading engine's slots.
 *
 * A MoE block is `moeGateUp`, then either {@linkcode moeDownCombine} (the down projections, their
 * weighted sum and the shared expert added into the residual in one dispatch) or, unfused,
 * {@linkcode moeDown} + {@linkcode moeCombine}. A block whose experts do not all fit the slots at once
 * runs in rounds: `moeDownCombine` with `mode: "round"` once per set of resident experts, then with
 * `mode: "finish"`, which gives bit for bit what `mode: "combine"` gives in one pass.
 *
 * Pools may hold block-quantised experts (`dtype` `q8_0`, `q4_k`, `q5_k`, `q6_k`; each expert's
 * rows as a GGUF file stores them), decoded inside the same kernels (`quant.wgsl`; see `quant_gemv.ts`).
 *
 * Shape legend: T tokens, k = topK choices per token, P = T * k (token, choice) pairs,
 * H hidden, I expert intermediate size.
 *
 * The expert GEMVs run in the layout `gemvLayout` (`linear.ts`) picks for their row length (H for
 * gate/up, I for down) on the device: threads per row, rows per workgroup, loads in flight, and the
 * row reduction (portable tree or subgroups).
 *
 * @example
 * ```ts ignore
 * const steps = [
 *   await moeGateUp(gpu, { x: h, gate, up, table, ids, out: moeH, T, topK, hidden: H, inter: I,
 *     slotWords, dtype: "bf16" }),
 *   await moeDown(gpu, { x: moeH, down, table, ids, out: moeY, T, topK, hidden: H, inter: I,
 *     slotWords, dtype: "bf16" }),
 *   await moeCombine(gpu, { y: moeY, weights, out: x, T, topK, hidden: H }),
 * ];
 * ```
 * @module
 */
import type { Binding, Dispatch, Gpu } from "../runtime/base/gpu/device.ts";
import { ArgumentError } from "../runtime/base/errors.ts";
import { defineKernel, type KernelSpec, ParamWriter } from "./registry.ts";
import {
  checkGemvLayout,
  GEMV_QUANT_INCLUDES,
  gemvConstants,
  type GemvLayout,
  gemvSource,
} from "./gemv.ts";
import {
  argWeightRow,
  argWeightType,
  isQuantType,
  WEIGHT_CODE,
  weightGemvLayout,
  weightRowBytes,
  type WeightType,
} from "./quant_gemv.ts";
import {
  argBinding,
  argCount,
  argDistinct,
  argObject,
  argOneOf,
  type BindingRange,
  placeholder,
  vec4View,
} from "./args.ts";

/** `moe_combine.wgsl`'s workgroup size. */
const WG = 256;

/**
 * Fused expert gate/up projection + SwiGLU: `out[p] = silu(Wg[slot] x[t]) * (Wu[slot] x[t])`, or
 * with `ACT` 1 a ReLU expert's one input projection: `out[p] = relu(Wi[slot] x[t])`. The GEMV
 * kernels here get their row reduction and layout from `gemvSource` / `gemvLayout`.
 */
export const MOE_GATE_UP: KernelSpec = defineKernel({
  name: "moe_gate_up",
  file: "moe.wgsl",
  entry: "gate_up",
  includes: [...GEMV_QUANT_INCLUDES, "quant_gemv_dot.wgsl", "vec4_dot.wgsl"],
  bindings: ["params", "x", "table", "ids", "out", "gate", "up"],
  constants: { WG: 128, TPR: 32, UNROLL: 2, WDTYPE: 0, ACT: 0 },
});

/**
 * An expert's input activation in {@linkcode moeGateUp}: `swiglu` (`silu(gate x) * (up x)`, the
 * Llama-style experts) or `relu` (`relu(wi x)`, Switch / T5 experts, whose one input matrix is
 * passed as `gate`).
 */
export type MoeActivation = "swiglu" | "relu";

/** Expert down projection: `out[p] = Wd[slot] x[p]`. */
export const MOE_DOWN: KernelSpec = defineKernel({
  name: "moe_down",
  file: "moe.wgsl",
  entry: "down",
  includes: [...GEMV_QUANT_INCLUDES, "quant_gemv_dot.wgsl", "vec4_dot.wgsl"],
  bindings: ["params", "x", "table", "ids", "out", "down"],
  constants: { WG: 128, TPR: 32, UNROLL: 2, WDTYPE: 0 },
});

/**
 * Expert down projections, their weighted sum and the sigmoid-gated shared expert added into the
 * residual, in one pass (`down_combine` of `moe.wgsl`; also its round / finish modes).
 */
export const MOE_DOWN_COMBINE: KernelSpec = defineKernel({
  name: "moe_down_combine",
  file: "moe.wgsl",
  entry: "down_combine",
  includes: [...GEMV_QUANT_INCLUDES, "quant_gemv_dot.wgsl", "vec4_dot.wgsl"],
  bindings: ["params", "x", "table", "ids", "out", "down", "weights", "shared_out", "shared_gate"],
  constants: { WG: 128, TPR: 32, UNROLL: 2, WDTYPE: 0, P: 1 },
});

/** Weighted sum of expert outputs (+ sigmoid-gated shared expert) added into the residual. */
export const MOE_COMBINE: KernelSpec = defineKernel({
  name: "moe_combine",
  file: "moe_combine.wgsl",
  bindings: ["params", "y", "weights", "out", "shared_out", "shared_gate"],
  constants: { WG },
});

/** Arguments shared by {@linkcode moeGateUp} and {@linkcode moeDown}. */
export interface MoeArgs {
  /** u32 [experts]: expert -> slot (>= slots: not resident; the pair's output becomes NaN). */
  table: Binding;
  /** u32 [T, topK]: the chosen experts. */
  ids: Binding;
  /** Tokens. */
  T: number;
  /** Experts per token. */
  topK: number;
  /** Model width H. */
  hidden: number;
  /** Expert intermediate size I. */
  inter: number;
  /**
   * Words (u32) between consecutive slots of the pool, a multiple of 4; >= one expert's projection
   * (rounded up to whole words for the quantised types).
   */
  slotWords: number;
  /** Number of experts (entries of `table`); default: table size / 4. */
  experts?: number;
  /**
   * The pool's weight type: `f32`, `f16`, `bf16`, or block-quantised (`q8_0`, `q4_k`, ...; each
   * expert's rows as stored in a GGUF file, from the slot's first byte; `hidden` and `inter` whole
   * blocks).
   */
  dtype: WeightType;
  /**
   * What a pair whose expert has no slot produces: `nan` (default; shows a missing upload) or
   * nothing (`skip`: its output row is left as it is; for layers computed in several rounds, each over
   * the experts resident then).
   */
  missing?: "nan" | "skip";
  /**
   * The GEMV layout (default: `gemvLayout` of `linear.ts` for this device, the row length and
   * `dtype`); for A/B runs and tests.
   */
  layout?: GemvLayout;
}

/** The layout of an expert GEMV with rows of `K` weights (the argument's or `gemvLayout`'s). */
function layoutOf(gpu: Gpu, a: MoeArgs, K: number, dtype: WeightType, two = false): GemvLayout {
  return a.layout === undefined
    ? weightGemvLayout(gpu, K, dtype)
    : checkGemvLayout(gpu, a.layout, "layout", 0, two);
}

interface Common {
  table: BindingRange;
  ids: BindingRange;
  T: number;
  topK: number;
  hidden: number;
  inter: number;
  slotWords: number;
  experts: number;
  dtype: WeightType;
  missingSkip: number;
}

/**
 * The checked arguments of an expert GEMV whose weight rows hold `rows` values: `hidden` (gate, up)
 * or `inter` (down). Only that projection's rows are checked against `dtype`, so a pool may store
 * gate/up and down in different types (a Q4_K gate beside a Q8_0 down whose rows are not whole
 * 256-value blocks, as llama.cpp's quantiser leaves them).
 */
function common(gpu: Gpu, a: MoeArgs, rows: "hidden" | "inter"): Common {
  argObject(a);
  const T = argCount("T", a.T);
  const topK = argCount("topK", a.topK, 1, 64);
  const hidden = argCount("hidden", a.hidden);
  const inter = argCount("inter", a.inter);
  const dtype = argWeightType("dtype", a.dtype);
  const experts = `experts (hidden=${hidden}, inter=${inter})`;
  argWeightRow(rows, rows === "hidden" ? hidden : inter, dtype, experts);
  const expertBytes = rows === "hidden"
    ? inter * weightRowBytes(hidden, dtype)
    : hidden * weightRowBytes(inter, dtype);
  const slotWords = argCount("slotWords", a.slotWords, Math.ceil(expertBytes / 4));
  if (slotWords % 4) {
    throw new ArgumentError(
      "slotWords",
      `must be a multiple of 4 (slots start on 16-byte boundaries), got ${slotWords}`,
    );
  }
  const table = argBinding(gpu, "table", a.table, 4);
  const count = a.experts === undefined
    ? table.size / 4
    : argCount("experts", a.experts, 1, table.size / 4);
  const ids = argBinding(gpu, "ids", a.ids, T * topK * 4);
  const missing = argOneOf("missing", a.missing ?? "nan", ["nan", "skip"] as const);
  return {
    table,
    ids,
    T,
    topK,
    hidden,
    inter,
    slotWords,
    experts: count,
    dtype,
    missingSkip: missing === "skip" ? 1 : 0,
  };
}

/**
 * Builds the fused expert gate/up + SwiGLU GEMV over all T * topK (token, choice) pairs:
 * `out[p, :I] = silu(gate[slot] . x[t]) * (up[slot] . x[t])` with `slot = table[ids[p]]`, or with
 * `act: "relu"` (Switch / T5 experts, no `up`) `out[p, :I] = relu(gate[slot] . x[t])`.
 * `x` is f32 [T, H]; `gate`/`up` are pools [slots, I, H]; `out` is f32 [T * topK, I].
 *
 * @example
 * ```ts ignore
 * // A Switch MoE layer's experts: wi pool as gate, top-1.
 * await moeGateUp(gpu, { x: h, gate: wiPool, act: "relu", table, ids, out: moeH, T, topK: 1,
 *   hidden: 768, inter: 3072, slotWords, dtype: "f32" });
 * ```
 * @throws {ArgumentError} naming the bad argument (`up` given with `relu`, or missing otherwise).
 */
export async function moeGateUp(
  gpu: Gpu,
  args: MoeArgs & { x: Binding; gate: Binding; up?: Binding; out: Binding; act?: MoeActivation },
): Promise<Dispatch> {
  const c = common(gpu, args, "hidden");
  const act = argOneOf("act", args.act ?? "swiglu", ["swiglu", "relu"] as const);
  const x = vec4View("x", argBinding(gpu, "x", args.x, c.T * c.hidden * 4), c.T * c.hidden * 4);
  const gate = vec4View("gate", argBinding(gpu, "gate", args.gate, c.slotWords * 4), 16);
  let up: BindingRange | undefined;
  if (act === "relu") {
    if (args.up !== undefined) {
      throw new ArgumentError(
        "up",
        "a relu expert has one input matrix: pass it as gate and no up",
      );
    }
  } else {
    up = vec4View("up", argBinding(gpu, "up", args.up, c.slotWords * 4), 16);
  }
  const out = argBinding(gpu, "out", args.out, c.T * c.topK * c.inter * 4);
  argDistinct("out", out, { x, table: c.table, ids: c.ids, gate, up });
  const slots = Math.min(gate.size, (up ?? gate).size) / 4 / c.slotWords | 0;
  const layout = layoutOf(gpu, args, c.hidden, c.dtype, true);
  const pipeline = await gpu.pipeline(gemvSource(MOE_GATE_UP, layout), {
    ...gemvConstants(layout),
    WDTYPE: WEIGHT_CODE[c.dtype],
    ACT: act === "relu" ? 1 : 0,
  });
  const params = new ParamWriter()
    .u32(c.T, c.topK, c.hidden, c.inter, c.slotWords, slots, c.experts, c.missingSkip)
    .u32(aligned(c.hidden, c.dtype), 0, 0).bytes();
  return gpu.dispatch(
    pipeline,
    // A relu expert's second weight binding is not read: the gate pool stands in.
    [gpu.uniform(params, "moe_gate_up.params"), x, c.table, c.ids, out, gate, up ?? gate],
    [Math.ceil(c.inter / layout.ROWS), c.T * c.topK],
    act === "relu" ? "moe_up_relu" : "moe_gate_up",
  );
}

/**
 * Builds the expert down-projection GEMV over all pairs: `out[p, :H] = down[slot] . x[p]`.
 * `x` is f32 [T * topK, I]; `down` is a pool [slots, H, I]; `out` is f32 [T * topK, H].
 */
export async function moeDown(
  gpu: Gpu,
  args: MoeArgs & { x: Binding; down: Binding; out: Binding },
): Promise<Dispatch> {
  const c = common(gpu, args, "inter");
  const need = c.T * c.topK * c.inter * 4;
  const x = vec4View("x", argBinding(gpu, "x", args.x, need), need);
  const down = vec4View("down", argBinding(gpu, "down", args.down, c.slotWords * 4), 16);
  const out = argBinding(gpu, "out", args.out, c.T * c.topK * c.hidden * 4);
  argDistinct("out", out, { x, table: c.table, ids: c.ids, down });
  const slots = down.size / 4 / c.slotWords | 0;
  const layout = layoutOf(gpu, args, c.inter, c.dtype);
  const pipeline = await gpu.pipeline(gemvSource(MOE_DOWN, layout), {
    ...gemvConstants(layout),
    WDTYPE: WEIGHT_CODE[c.dtype],
  });
  const params = new ParamWriter()
    .u32(c.T, c.topK, c.inter, c.hidden, c.slotWords, slots, c.experts, c.missingSkip)
    .u32(aligned(c.inter, c.dtype), 0, 0).bytes();
  return gpu.dispatch(
    pipeline,
    [gpu.uniform(params, "moe_down.params"), x, c.table, c.ids, out, down],
    [Math.ceil(c.hidden / layout.ROWS), c.T * c.topK],
    "moe_down",
  );
}

/**
 * 1 when rows of K values start on 16-byte boundaries (the kernels' vector path), else 0 (always
 * 0 for the quantised types, which have their own path).
 */
function aligned(K: number, dtype: WeightType): number {
  if (isQuantType(dtype)) return 0;
  return (K / (dtype === "f32" ? 1 : 2)) % 4 === 0 ? 1 : 0;
}

/** What a {@linkcode moeDownCombine} dispatch does. */
export type MoeDownCombineMode = "combine" | "round" | "finish";

/** Arguments of {@linkcode moeDownCombine}. */
export interface MoeDownCombineArgs extends Omit<MoeArgs, "missing"> {
  /**
   * `combine` (default): `out[t] += sum_j weights[t, j] * (down[slot_j] . x[t * topK + j]) (+
   * sigmoid(shared.gate[t]) * shared.out[t])`; a pair whose expert has no slot makes the row NaN.
   * `round`: `out[p] = down[slot] . x[p]` for the pairs whose expert has a slot, the others left as
   * they are (as {@linkcode moeDown} with `missing: "skip"`). `finish`: as `combine` with the expert
   * outputs read from `x` (f32 [T * topK, hidden], written by the rounds) instead of computed.
   */
  mode?: MoeDownCombineMode;
  /** `combine` / `round`: f32 [T * topK, inter] expert hidden activations; `finish`: see `mode`. */
  x: Binding;
  /** The down-projection pool [slots, hidden, inter] (bound but not read by `finish`). */
  down: Binding;
  /** `combine` / `finish`: the residual f32 [T, hidden] (added to); `round`: f32 [T * topK, hidden]. */
  out: Binding;
  /** f32 [T, topK]: the routing weights (`combine` / `finish`). */
  weights?: Binding;
  /** Qwen2-MoE's shared expert: f32 [T, hidden] output and f32 [T] gate logit. */
  shared?: { out: Binding; gate: Binding };
}

/**
 * Builds the fused expert down projection + combine: one workgroup per few output rows of one token
 * computes the rows of the token's `topK` pairs (several side by side) and adds their weighted sum,
 * in pair order, (and the gated shared expert) into the residual, without atomics and without the
 * `[T * topK, hidden]` intermediate. The `round` / `finish` modes split the same work for layers run in rounds (see
 * {@linkcode MoeDownCombineArgs.mode}); all modes share one pipeline, so the results agree bit for
 * bit.
 *
 * @example
 * ```ts ignore
 * await moeDownCombine(gpu, { x: moeH, down, table, ids, weights, out: x, T, topK, hidden: H,
 *   inter: I, slotWords, dtype: "bf16" });
 * ```
 * @throws {ArgumentError} naming the bad argument (as {@linkcode moeDown} and {@linkcode moeCombine};
 * `missing` is not an argument: `round` skips pairs without a slot, the other modes give NaN).
 */
export async function moeDownCombine(gpu: Gpu, args: MoeDownCombineArgs): Promise<Dispatch> {
  argObject(args);
  if ((args as { missing?: unknown }).missing !== undefined) {
    throw new ArgumentError(
      "missing",
      "moeDownCombine takes no 'missing' argument",
      "mode 'round' skips pairs whose expert has no slot; 'combine' and 'finish' make them NaN",
    );
  }
  const mode = argOneOf(
    "mode",
    args.mode ?? "combine",
    ["combine", "round", "finish"] as const,
    "moeDownCombine mode",
  );
  const c = common(gpu, { ...args, missing: mode === "round" ? "skip" : "nan" }, "inter");
  const pairs = c.T * c.topK;
  const xNeed = pairs * (mode === "finish" ? c.hidden : c.inter) * 4;
  const x = vec4View("x", argBinding(gpu, "x", args.x, xNeed), xNeed);
  const down = vec4View("down", argBinding(gpu, "down", args.down, c.slotWords * 4), 16);
  const outRows = mode === "round" ? pairs : c.T;
  const out = argBinding(
    gpu,
    "out",
    args.out,
    outRows * c.hidden * 4,
    `f32 [${mode === "round" ? "T * topK" : "T"}=${outRows}, hidden=${c.hidden}]`,
  );
  let weights: BindingRange | undefined;
  let shared: { out: BindingRange; gate: BindingRange } | undefined;
  if (mode === "round") {
    if (args.weights !== undefined || args.shared !== undefined) {
      throw new ArgumentError(
        args.weights !== undefined ? "weights" : "shared",
        "mode 'round' only computes the expert outputs; give weights and shared to 'finish'",
      );
    }
  } else {
    weights = argBinding(gpu, "weights", args.weights, pairs * 4, `f32 [T=${c.T}, topK=${c.topK}]`);
    shared = args.shared && {
      out: argBinding(gpu, "shared.out", args.shared.out, c.T * c.hidden * 4),
      gate: argBinding(gpu, "shared.gate", args.shared.gate, c.T * 4),
    };
  }
  argDistinct("out", out, {
    x,
    table: c.table,
    ids: c.ids,
    down,
    weights,
    "shared.out": shared?.out,
    "shared.gate": shared?.gate,
  });
  const slots = down.size / 4 / c.slotWords | 0;
  const layout = layoutOf(gpu, args, c.inter, c.dtype);
  // Pairs side by side: as many of the token's topK as fit (a power of two dividing the layout's
  // rows per workgroup), so a workgroup holds ROWS / P rows and the grid has about as many
  // workgroups as moeDown's.
  let P = 1;
  while (P * 2 <= Math.min(c.topK, layout.ROWS) && layout.ROWS % (P * 2) === 0) P *= 2;
  const pipeline = await gpu.pipeline(gemvSource(MOE_DOWN_COMBINE, layout), {
    ...gemvConstants(layout),
    WDTYPE: WEIGHT_CODE[c.dtype],
    P,
  });
  const modeCode = { combine: 0, round: 1, finish: 2 }[mode];
  const params = new ParamWriter()
    .u32(c.T, c.topK, c.inter, c.hidden, c.slotWords, slots, c.experts, c.missingSkip)
    .u32(aligned(c.inter, c.dtype), modeCode, shared ? 1 : 0).bytes();
  const none = placeholder(gpu);
  return gpu.dispatch(
    pipeline,
    [
      gpu.uniform(params, `moe_down_combine.params`),
      x,
      c.table,
      c.ids,
      out,
      down,
      weights ?? none,
      shared?.out ?? none,
      shared?.gate ?? none,
    ],
    [Math.ceil(c.hidden / (layout.ROWS / P)), c.T],
    `moe_down_combine.${mode}`,
  );
}

/**
 * Builds `out[t, :] += sum_j weights[t, j] * y[t * topK + j, :] (+ sigmoid(shared.gate[t]) *
 * shared.out[t, :])`: the routed experts' weighted sum (and Qwen2-MoE's gated shared expert) added
 * into the residual stream `out` (f32 [T, H]).
 */
export async function moeCombine(
  gpu: Gpu,
  args: {
    y: Binding;
    weights: Binding;
    out: Binding;
    T: number;
    topK: number;
    hidden: number;
    shared?: { out: Binding; gate: Binding };
  },
): Promise<Dispatch> {
  argObject(args);
  const T = argCount("T", args.T), topK = argCount("topK", args.topK, 1, 64);
  const H = argCount("hidden", args.hidden);
  const y = argBinding(gpu, "y", args.y, T * topK * H * 4);
  const weights = argBinding(gpu, "weights", args.weights, T * topK * 4);
  const out = argBinding(gpu, "out", args.out, T * H * 4);
  const shared = args.shared && {
    out: argBinding(gpu, "shared.out", args.shared.out, T * H * 4),
    gate: argBinding(gpu, "shared.gate", args.shared.gate, T * 4),
  };
  argDistinct("out", out, { y, weights, "shared.out": shared?.out, "shared.gate": shared?.gate });
  let sOut: Binding, sGate: Binding;
  if (shared) {
    [sOut, sGate] = [shared.out, shared.gate];
  } else {
    const d = placeholder(gpu);
    sOut = sGate = d;
  }
  const pipeline = await gpu.pipeline(MOE_COMBINE, { WG });
  const params = new ParamWriter().u32(T, topK, H, shared ? 1 : 0).bytes();
  return gpu.dispatch(
    pipeline,
    [gpu.uniform(params, "moe_combine.params"), y, weights, out, sOut, sGate],
    gpu.grid(Math.ceil((T * H) / WG)),
    "moe_combine",
  );
}
