/**
 * llama.cpp's Q4_K_M mix: which type `llama-quantize ... Q4_K_M` gives each matrix of a model
 * (`llama_tensor_get_type_impl` and `tensor_type_fallback` in llama.cpp's `src/llama-quant.cpp`),
 * for the tensors of Pregate's decoder architectures. Matrices are Q4_K except:
 *
 * - `output.weight` (or `token_embd.weight` when the embeddings are tied): Q6_K (Q8_0 when its
 *   rows are not whole 256-value blocks);
 * - `attn_v`: Q8_0 in 8-expert models, else Q6_K in the layers `useMoreBits` picks (the first and
 *   last eighth, and every third between);
 * - `attn_k`: Q8_0 in 8-expert models; `attn_output`: Q5_K in 8-expert models;
 * - every `ffn_down` (dense, stacked experts, shared expert): Q6_K in the layers `useMoreBits`
 *   picks;
 *
 * and rows that are not whole blocks of the chosen type fall back as llama.cpp's do: Q4_K -> Q5_0,
 * Q6_K -> Q8_0, then F16 (Q5_K -> Q8_0 here, where llama.cpp writes Q5_1, which Pregate does not
 * compute with). Without an importance matrix each type's bytes are its reference quantiser's
 * (`quant.ts`), so a file Pregate writes this way is llama-quantize's.
 *
 * @example
 * ```ts
 * import { q4kmTypeOf } from "./gguf_mix.ts";
 * const model = { layers: 8, experts: 8, tiedEmbeddings: false };
 * console.log(q4kmTypeOf("blk.0.ffn_down_exps.weight", 256, model)); // q6_k
 * console.log(q4kmTypeOf("blk.1.ffn_down_exps.weight", 128, model)); // q5_0
 * console.log(q4kmTypeOf("output.weight", 256, model)); // q6_k
 * ```
 * @module
 */
import { QUANT_BLOCK, type QuantType } from "../weights/quant.ts";
import type { WeightType } from "../weights/weight_type.ts";

/** What the mix depends on besides a tensor's name and row length. */
export interface MixModel {
  /** Decoder layers (llama.cpp's `n_layer`). */
  readonly layers: number;
  /** Routed experts per MoE layer (0 or 1 for a dense model). */
  readonly experts: number;
  /** Whether the file has no `output.weight` (the embeddings are tied). */
  readonly tiedEmbeddings: boolean;
}

/**
 * llama.cpp's `use_more_bits(i, n)`: the first and last eighth of the layers and every third one
 * between them.
 */
export function useMoreBits(i: number, n: number): boolean {
  const eighth = Math.trunc(n / 8);
  return i < eighth || i >= Math.trunc((7 * n) / 8) || (i - eighth) % 3 === 2;
}

/** The layer of `blk.N.*` (llama.cpp parses it from the name for MoE models), or -1. */
function layerOf(name: string): number {
  const m = /^blk\.(\d+)\./.exec(name);
  return m ? Number(m[1]) : -1;
}

/** The Q4_K_M type of a matrix before the row-length fallback. */
function mixChoice(name: string, cols: number, model: MixModel): QuantType {
  const eightExperts = model.experts === 8;
  if (name === "output.weight" || (model.tiedEmbeddings && name === "token_embd.weight")) {
    return cols % QUANT_BLOCK.q4_k.values === 0 ? "q6_k" : "q8_0";
  }
  if (name.includes("attn_v.weight")) {
    if (eightExperts) return "q8_0";
    return useMoreBits(layerOf(name), model.layers) ? "q6_k" : "q4_k";
  }
  if (name.includes("attn_k.weight")) return eightExperts ? "q8_0" : "q4_k";
  if (name.includes("attn_output.weight")) return eightExperts ? "q5_k" : "q4_k";
  if (name.includes("ffn_down")) return useMoreBits(layerOf(name), model.layers) ? "q6_k" : "q4_k";
  return "q4_k";
}

/** Where a type goes when rows are not whole blocks of it (`tensor_type_fallback`). */
const FALLBACK: Readonly<Partial<Record<QuantType, QuantType>>> = {
  q4_k: "q5_0",
  q5_k: "q8_0",
  q6_k: "q8_0",
};

/**
 * The type `llama-quantize ... Q4_K_M` gives the matrix `name` (a GGUF tensor name) whose rows hold
 * `cols` values, in a model described by `model` (see the module documentation). Vectors and
 * routers are not matrices of the mix: the caller keeps them F32.
 *
 * @example
 * ```ts
 * import { q4kmTypeOf } from "./gguf_mix.ts";
 * const m = { layers: 24, experts: 60, tiedEmbeddings: false };
 * console.log(q4kmTypeOf("blk.2.attn_v.weight", 2048, m), q4kmTypeOf("blk.3.attn_v.weight", 2048, m)); // q6_k q4_k
 * ```
 */
export function q4kmTypeOf(name: string, cols: number, model: MixModel): WeightType {
  let t: QuantType | undefined = mixChoice(name, cols, model);
  while (t && cols % QUANT_BLOCK[t].values !== 0) t = FALLBACK[t];
  return t ?? "f16";
}
