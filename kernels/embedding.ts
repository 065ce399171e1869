/**
 * Embedding lookup (`embedding.wgsl`): `out[t, :] = table[ids[t], :] * scale` for `T` token ids, with
 * the table `[vocab, dim]` in its file dtype (f32, f16 or bf16 packed in u32 words, see
 * `runtime/base/dtype.ts`) and f32 output. `scale` covers models that scale the embeddings (Gemma:
 * `sqrt(hidden_size)` — HF rounds that normaliser to the activation dtype first; pass the rounded
 * value to match bit for bit).
 *
 * Token ids are a `u32` storage buffer on the GPU. They should be checked on the host (`id < vocab`);
 * an out-of-range id that reaches the kernel anyway fills its output row with NaN rather than reading
 * another row.
 *
 * @example
 * ```ts
 * import { openGpu } from "../runtime/base/gpu/device.ts";
 * import { packWeights } from "../runtime/base/dtype.ts";
 * import { embed } from "./embedding.ts";
 * const gpu = await openGpu();
 * // vocab 3, dim 2, bf16.
 * const table = gpu.storage("dense", packWeights([1, 2, 3, 4, 5, 6], "bf16"));
 * const ids = gpu.storage("activations", new Uint32Array([2, 0]));
 * const out = gpu.storage("activations", 4 * 4);
 * gpu.submit([await embed(gpu, { table, ids, out, T: 2, dim: 2, dtype: "bf16" })]);
 * console.log(await gpu.readF32(out)); // Float32Array [5, 6, 1, 2]
 * ```
 * @module
 */
import type { Binding, Dispatch, Gpu } from "../runtime/base/gpu/device.ts";
import { ArgumentError } from "../runtime/base/errors.ts";
import { isQuantType, weightRowBytes, type WeightType } from "../runtime/weights/weight_type.ts";
import { WEIGHT_CODE } from "./quant_gemv.ts";
import { defineKernel, type KernelSpec, ParamWriter } from "./registry.ts";
import {
  argBinding,
  argCount,
  argDistinct,
  argNumber,
  argObject,
  argWeightRow,
  argWeightType,
} from "./args.ts";

const WG = 256;

/** `out[t, :] = table[ids[t], :] * scale` (`embedding.wgsl`). */
export const EMBED: KernelSpec = defineKernel({
  name: "embed",
  file: "embedding.wgsl",
  entry: "embed",
  includes: ["dtype.wgsl", "quant.wgsl", "quant_values.wgsl"],
  bindings: ["params", "table", "ids", "out"],
  constants: { WG, WDTYPE: 0 },
});

/** Arguments of {@linkcode embed}. */
export interface EmbedArgs {
  /** The table `[vocab, dim]`, packed u32 words of `dtype` (quantised: rows of whole blocks). */
  table: Binding;
  /** `T` token ids, `array<u32>`. */
  ids: Binding;
  /** Output, f32 `[T, dim]`. */
  out: Binding;
  /** Tokens, >= 1. */
  T: number;
  /** Values per row, >= 1 (even for 16-bit dtypes; whole blocks for the quantised types). */
  dim: number;
  /** The table's weight type (`f32`, `f16`, `bf16`, or a quantised one: `q8_0`, `q4_k`, ...). */
  dtype: WeightType;
  /** Rows of the table; default: as many as the `table` binding holds. */
  vocab?: number;
  /** Factor applied to every value (rounded to f32); default 1. */
  scale?: number;
}

/**
 * Builds the dispatch of `out[t, :] = table[ids[t], :] * scale` for `t < T`.
 *
 * @example
 * ```ts ignore
 * gpu.submit([await embed(gpu, { table: embedTokens, ids, out: h, T, dim: 4096, dtype: "bf16" })]);
 * ```
 * @throws {ArgumentError} naming the bad argument (counts, dtype, odd `dim` for 16-bit tables,
 * bindings too small or sharing a buffer).
 */
export async function embed(gpu: Gpu, args: EmbedArgs): Promise<Dispatch> {
  argObject(args);
  const T = argCount("T", args.T);
  const dim = argCount("dim", args.dim);
  const dtype = argWeightType("dtype", args.dtype);
  argWeightRow("dim", dim, dtype, "tables");
  const scale = argNumber("scale", args.scale ?? 1);
  const rowBytes = weightRowBytes(dim, dtype);
  const table = argBinding(gpu, "table", args.table, rowBytes);
  const vocab = args.vocab === undefined
    ? Math.floor(table.size / rowBytes)
    : argCount("vocab", args.vocab);
  if (Math.ceil((vocab * rowBytes) / 4) * 4 > table.size) {
    throw new ArgumentError(
      "table",
      `needs at least ${vocab * rowBytes} bytes for vocab=${vocab} rows of ${dim} ${dtype}, ` +
        `the binding has ${table.size}`,
    );
  }
  const ids = argBinding(gpu, "ids", args.ids, T * 4);
  const out = argBinding(gpu, "out", args.out, T * dim * 4);
  argDistinct("out", out, { table, ids });
  const pipeline = await gpu.pipeline(EMBED, { WG, WDTYPE: WEIGHT_CODE[dtype] });
  const words = isQuantType(dtype) ? dim / 4 : dtype === "f32" ? dim : dim / 2;
  const params = gpu.uniform(
    new ParamWriter().u32(T, dim, words, Math.min(vocab, 0xffffffff)).f32(scale).u32(rowBytes)
      .bytes(),
    "embed.params",
  );
  return gpu.dispatch(pipeline, [params, table, ids, out], gpu.grid(Math.ceil((T * words) / WG)));
}
