/**
 * Activations (`activation.wgsl`) over f32 values, in f32:
 *
 * - {@linkcode activation}: `out = act(x)` (or in place, `out` = `x`).
 * - {@linkcode gatedActivation}: `out = act(gate) * up` — SwiGLU (`silu`, Llama/Mixtral/Qwen-MoE
 *   experts), GeGLU (`gelu`, `gelu_tanh`, Gemma), ReGLU (`relu`) — from separate `gate` and `up`
 *   buffers or from one fused `[rows, 2 * inter]` buffer whose rows are `[gate | up]` (HF-style
 *   `gate_up_proj` output, e.g. Phi-3's `gate, up = gate_up.chunk(2, dim=-1)`).
 *
 * Kinds, with their HF `hidden_act` names:
 * - `silu` (`silu`, `swish`): `x * sigmoid(x)`.
 * - `gelu` (`gelu`): exact `x/2 * (1 + erf(x / √2))`, evaluated as `x/2 * erfc(-x / √2)` with
 *   `erfc(z) = exp(-z²) erfcx(z)` and `erfcx` a piecewise polynomial (relative error < 2e-7), so the
 *   negative tail keeps its relative accuracy (HF's f32 `1 + erf` cancels there).
 * - `gelu_tanh` (`gelu_new`, `gelu_pytorch_tanh`): `x/2 * (1 + tanh(√(2/π) (x + 0.044715 x³)))`,
 *   evaluated as the identical `x * sigmoid(2u)` (no tanh, no cancellation, no overflow).
 * - `relu`: `max(x, 0)`.
 *
 * @example
 * ```ts
 * import { openGpu } from "../runtime/base/gpu/device.ts";
 * import { gatedActivation } from "./activation.ts";
 * const gpu = await openGpu();
 * // One token, inter = 2: fused [gate | up] row.
 * const gateUp = gpu.storage("activations", new Float32Array([1, -1, 2, 3]));
 * const out = gpu.storage("activations", 8);
 * gpu.submit([await gatedActivation(gpu, { gateUp, out, rows: 1, inter: 2, kind: "silu" })]);
 * console.log(await gpu.readF32(out)); // [silu(1) * 2, silu(-1) * 3] = [1.4621, -0.8068]
 * ```
 * @module
 */
import type { Binding, Dispatch, Gpu } from "../runtime/base/gpu/device.ts";
import { defineKernel, type KernelSpec, ParamWriter } from "./registry.ts";
import {
  argBinding,
  argCount,
  argDistinct,
  argInPlace,
  argObject,
  argOneOf,
  type BindingRange,
} from "./args.ts";

/** An activation function (see the module documentation). */
export type ActivationKind = "silu" | "gelu" | "gelu_tanh" | "relu";

/** The `ACT` override value of each kind. */
export const ACTIVATION_CODE: Readonly<Record<ActivationKind, number>> = Object.freeze({
  silu: 0,
  gelu: 1,
  gelu_tanh: 2,
  relu: 3,
});

/** HF `hidden_act` / `hidden_activation` names and the kind they mean. */
export const HF_ACTIVATIONS: Readonly<Record<string, ActivationKind>> = Object.freeze({
  silu: "silu",
  swish: "silu",
  gelu: "gelu",
  gelu_new: "gelu_tanh",
  gelu_pytorch_tanh: "gelu_tanh",
  relu: "relu",
});

const WG = 256;

/** `out = act(x)` (`activation.wgsl`). */
export const ACTIVATION: KernelSpec = defineKernel({
  name: "activation",
  file: "activation.wgsl",
  entry: "act",
  bindings: ["params", "x", "out"],
  constants: { WG, ACT: 0 },
});

/** `x = act(x)` (`activation.wgsl`). */
export const ACTIVATION_INPLACE: KernelSpec = defineKernel({
  name: "activation_inplace",
  file: "activation.wgsl",
  entry: "act_inplace",
  bindings: ["params", "x"],
  constants: { WG, ACT: 0 },
});

/** `out = act(gate) * up` over rows of strided gate and up (`activation.wgsl`). */
export const GATED_ACTIVATION: KernelSpec = defineKernel({
  name: "gated_activation",
  file: "activation.wgsl",
  entry: "gated",
  bindings: ["params", "gate", "up", "out"],
  constants: { WG, ACT: 0 },
});

/** Arguments of {@linkcode activation}. */
export interface ActivationArgs {
  /** Input, `n` f32 values. */
  x: Binding;
  /** Output, `n` f32 values: a separate buffer, or `x` itself (in place). */
  out: Binding;
  /** Values, >= 1. */
  n: number;
  /** The function. */
  kind: ActivationKind;
}

/** Arguments of {@linkcode gatedActivation} with separate gate and up buffers. */
export interface GatedActivationSplitArgs {
  /** Gate projection, `n` f32 values. */
  gate: Binding;
  /** Up projection, `n` f32 values. */
  up: Binding;
  /** Output, `n` f32 values; must not share a buffer with `gate` or `up`. */
  out: Binding;
  /** Values, >= 1. */
  n: number;
  /** The function applied to `gate`. */
  kind: ActivationKind;
}

/** Arguments of {@linkcode gatedActivation} with a fused `[rows, 2 * inter]` gate_up buffer. */
export interface GatedActivationFusedArgs {
  /** Fused projection, f32 `[rows, 2 * inter]`: each row is `[gate (inter) | up (inter)]`. */
  gateUp: Binding;
  /** Output, f32 `[rows, inter]`; must not share a buffer with `gateUp`. */
  out: Binding;
  /** Rows (tokens), >= 1. */
  rows: number;
  /** Intermediate size (outputs per row), >= 1. */
  inter: number;
  /** The function applied to the gate half. */
  kind: ActivationKind;
}

/** Arguments of {@linkcode gatedActivation}: separate or fused gate and up. */
export type GatedActivationArgs = GatedActivationSplitArgs | GatedActivationFusedArgs;

const KINDS = Object.keys(ACTIVATION_CODE) as ActivationKind[];

function argKind(kind: unknown): ActivationKind {
  return argOneOf("kind", kind, KINDS, "activation");
}

/**
 * Builds the dispatch of `out[i] = act(x[i])` for `i < n` (f32). `out` may be `x` (in place).
 *
 * @example
 * ```ts ignore
 * gpu.submit([await activation(gpu, { x: h, out: h, n: T * inter, kind: "gelu_tanh" })]);
 * ```
 * @throws {ArgumentError} naming the bad argument (kind, count, bindings too small, shared buffer).
 */
export async function activation(gpu: Gpu, args: ActivationArgs): Promise<Dispatch> {
  argObject(args);
  const kind = argKind(args.kind);
  const n = argCount("n", args.n);
  const x = argBinding(gpu, "x", args.x, n * 4);
  const out = argBinding(gpu, "out", args.out, n * 4);
  const inplace = argInPlace(out, x) === "inplace";
  const spec = inplace ? ACTIVATION_INPLACE : ACTIVATION;
  const pipeline = await gpu.pipeline(spec, { WG, ACT: ACTIVATION_CODE[kind] });
  const params = gpu.uniform(
    new ParamWriter().u32(n, 0, 0, 0, 0, 0).bytes(),
    `${spec.name}.params`,
  );
  return gpu.dispatch(
    pipeline,
    inplace ? [params, x] : [params, x, out],
    gpu.grid(Math.ceil(n / WG)),
  );
}

/**
 * Builds the dispatch of `out = act(gate) * up` (f32), from separate `gate` and `up` buffers of `n`
 * values, or from a fused `gateUp` buffer `[rows, 2 * inter]` (rows `[gate | up]`) into `out`
 * `[rows, inter]`. `out` must not share a buffer with the inputs.
 *
 * @example
 * ```ts ignore
 * // SwiGLU of an expert's gate and up projections for T tokens.
 * gpu.submit([await gatedActivation(gpu, { gate: g, up: u, out: h, n: T * inter, kind: "silu" })]);
 * // The same from a fused gate_up projection.
 * gpu.submit([await gatedActivation(gpu, { gateUp, out: h, rows: T, inter, kind: "silu" })]);
 * ```
 * @throws {ArgumentError} naming the bad argument (kind, counts, bindings too small, shared buffer).
 */
export async function gatedActivation(gpu: Gpu, args: GatedActivationArgs): Promise<Dispatch> {
  argObject(args);
  const kind = argKind(args.kind);
  let gate: BindingRange, up: BindingRange, out: BindingRange;
  let n: number, inter: number, gateStride: number, upStride: number, upOffset: number;
  if ("gateUp" in args) {
    const rows = argCount("rows", args.rows);
    inter = argCount("inter", args.inter);
    n = rows * inter;
    gate = up = argBinding(gpu, "gateUp", args.gateUp, 2 * n * 4);
    out = argBinding(gpu, "out", args.out, n * 4);
    argDistinct("out", out, { gateUp: gate });
    gateStride = upStride = 2 * inter;
    upOffset = inter;
  } else {
    n = argCount("n", (args as GatedActivationSplitArgs).n);
    gate = argBinding(gpu, "gate", args.gate, n * 4);
    up = argBinding(gpu, "up", args.up, n * 4);
    out = argBinding(gpu, "out", args.out, n * 4);
    argDistinct("out", out, { gate, up });
    inter = gateStride = upStride = n;
    upOffset = 0;
  }
  const pipeline = await gpu.pipeline(GATED_ACTIVATION, { WG, ACT: ACTIVATION_CODE[kind] });
  const params = gpu.uniform(
    new ParamWriter().u32(n, inter, gateStride, 0, upStride, upOffset).bytes(),
    "gated_activation.params",
  );
  return gpu.dispatch(pipeline, [params, gate, up, out], gpu.grid(Math.ceil(n / WG)));
}
