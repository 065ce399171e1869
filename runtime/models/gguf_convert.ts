/**
 * `pregate convert`: a Hugging Face checkpoint directory of a decoder architecture written as a
 * GGUF file llama.cpp loads: the metadata of the architecture's GGUF form (`gguf_spec.ts`), the
 * vocabulary from tokenizer.json (`gguf_vocab.ts`), llama.cpp's tensor names
 * (`ggufTensorNames`; each MoE layer's experts stacked into `[experts, out, in]` tensors, q and k
 * permuted where llama.cpp's graph wants them), 32-byte alignment.
 *
 * Weight types follow llama.cpp's converter and quantiser: matrices in the requested type (f32, f16,
 * bf16, q8_0, q5_0, q4_0, q4_k, q5_k or q6_k), or in llama-quantize's Q4_K_M mix (`q4_k_m`:
 * `gguf_mix.ts`); vectors (norms, biases, the shared expert's gate) and routers in F32; a matrix
 * whose rows are not whole blocks of the type falls back (the K types -> q8_0 -> f16; in the mix,
 * llama-quantize's own fallbacks), and the result says how many did. Quantisation is llama.cpp's
 * reference one (`quant.ts`), so the bytes are llama-quantize's without an importance matrix.
 *
 * Pregate's trained pre-gates are left out unless asked for (`pregates`): llama.cpp refuses a file
 * with tensors its graph does not use.
 *
 * @example
 * ```ts ignore
 * import { convertToGguf } from "./gguf_convert.ts";
 * const r = await convertToGguf({ model: "models/demo", out: "/tmp/demo-q4_k.gguf", type: "q4_k" });
 * console.log(r.bytes, r.types); // { Q4_K: 40, Q8_0: 24, F32: 42 }
 * ```
 * @module
 */
import { ConfigError } from "../base/errors.ts";
import { packWeights } from "../base/dtype.ts";
import { type GgufTensorToWrite, ggufValue as v, writeGguf } from "../weights/gguf_writer.ts";
import { QUANT_BLOCK, QUANT_GGML_NAME } from "../weights/quant.ts";
import { QuantPool } from "../weights/quant_pool.ts";
import { openCheckpoint, type TensorStore } from "../weights/safetensors.ts";
import { isQuantType, type WeightType } from "../weights/weight_type.ts";
import { readTokenizerFiles } from "../text/tokenizer.ts";
import { ggufVocabMetadata } from "../text/gguf_vocab.ts";
import { archOf } from "./arch/mod.ts";
import { loadConfig } from "./config.ts";
import { type MixModel, q4kmTypeOf } from "./gguf_mix.ts";
import { type GgufSource, ggufTensorNames, permuteQkRows } from "./gguf_model.ts";
import { ggufMetadata } from "./gguf_spec.ts";
import type { ModelConfig } from "./model_config.ts";
import { expectedTensors, type TensorRole } from "./names.ts";

/** What `convert` writes matrices as: one weight type, or llama-quantize's Q4_K_M mix. */
export type ConvertType = WeightType | "q4_k_m";

/** Every {@linkcode ConvertType}. */
export const CONVERT_TYPES: readonly ConvertType[] = [
  "f32",
  "f16",
  "bf16",
  "q8_0",
  "q5_0",
  "q4_0",
  "q4_k",
  "q5_k",
  "q6_k",
  "q4_k_m",
];

/** Options of {@linkcode convertToGguf}. */
export interface ConvertOptions {
  /** The checkpoint directory (config.json, safetensors, tokenizer.json). */
  model: string;
  /** The GGUF file to write. */
  out: string;
  /** The matrices' weight type, or `q4_k_m` for llama-quantize's Q4_K_M mix. */
  type: ConvertType;
  /** Write Pregate's trained pre-gates too (llama.cpp then refuses the file). Default false. */
  pregates?: boolean;
  /**
   * Write no vocabulary (`tokenizer.ggml.model` `no_vocab`), e.g. for a checkpoint without
   * tokenizer.json, which is written so anyway. Default false.
   */
  noVocab?: boolean;
  /** Quantising threads (default: the machine's cores, at most 16; 1 quantises inline). */
  threads?: number;
  /** One-line notices (fallback types, a missing tokenizer). */
  log?: (message: string) => void;
  /** Progress: tensors written, tensors in all. */
  onProgress?: (done: number, total: number) => void;
}

/** What {@linkcode convertToGguf} wrote. */
export interface ConvertResult {
  /** The file. */
  path: string;
  /** Its size in bytes. */
  bytes: number;
  /** Tensors per ggml type, e.g. `{ Q4_K: 40, Q8_0: 24, F32: 42 }`. */
  types: Record<string, number>;
  /** Whether a vocabulary was written. */
  vocab: boolean;
}

/** The GGUF type of a tensor of role `role` and shape `shape` for a requested matrix type. */
export function ggufTypeOf(
  role: TensorRole | "pregate",
  shape: readonly number[],
  type: WeightType,
): WeightType {
  if (shape.length === 1 || shape[0] === 1 || role === "router" || role === "pregate") return "f32";
  const cols = shape[shape.length - 1];
  for (const t of fallbacks(type)) {
    if (!isQuantType(t) || cols % QUANT_BLOCK[t].values === 0) return t;
  }
  return "f16";
}

function fallbacks(type: WeightType): WeightType[] {
  if (type === "q4_k" || type === "q5_k" || type === "q6_k") return [type, "q8_0", "f16"];
  return isQuantType(type) ? [type, "f16"] : [type];
}

/** The GGUF type of planned tensor `p` for a requested {@linkcode ConvertType}. */
function typeOfPlanned(p: Planned, type: ConvertType, mix: MixModel): WeightType {
  if (type !== "q4_k_m") return ggufTypeOf(p.role, p.shape, type);
  const t = ggufTypeOf(p.role, p.shape, "q4_k");
  return t === "f32" ? t : q4kmTypeOf(p.gguf, p.shape[p.shape.length - 1], mix);
}

const GGML_NAME: Readonly<Record<WeightType, string>> = {
  f32: "F32",
  f16: "F16",
  bf16: "BF16",
  ...QUANT_GGML_NAME,
};

/** The bytes of `values` in weight type `t` (quantised on `pool`'s threads). */
async function encode(values: Float32Array, t: WeightType, pool: QuantPool): Promise<Uint8Array> {
  if (isQuantType(t)) return await pool.quantize(values, t);
  const words = packWeights(values, t);
  return new Uint8Array(words.buffer, words.byteOffset, values.length * (t === "f32" ? 4 : 2));
}

/**
 * The data of GGUF tensor `p` in type `t`: its checkpoint tensors (several: stacked experts)
 * encoded in order, a window of them at a time so that the pool's threads stay busy.
 */
async function* tensorData(
  p: Planned,
  t: WeightType,
  store: TensorStore,
  pool: QuantPool,
): AsyncGenerator<Uint8Array> {
  const one = async ({ name, src }: Planned["sources"][number]) => {
    const bytes = await encode(store.tensorF32(name), t, pool);
    if (src.heads === undefined) return bytes;
    return permuteQkRows(bytes, store.describe(name).shape[0], src.heads, true);
  };
  const window = Math.max(2, 2 * pool.threads), jobs: Promise<Uint8Array>[] = [];
  const start = (i: number) => {
    const job = one(p.sources[i]);
    job.catch(() => {}); // awaited in order below
    jobs.push(job);
  };
  for (let i = 0; i < Math.min(window, p.sources.length); i++) start(i);
  for (let i = 0; i < p.sources.length; i++) {
    yield await jobs[i];
    if (i + window < p.sources.length) start(i + window);
  }
}

/** One GGUF tensor: the checkpoint tensors it holds (several: stacked experts) and its form. */
interface Planned {
  gguf: string;
  sources: { name: string; src: GgufSource }[];
  shape: number[];
  role: TensorRole | "pregate";
}

/** The GGUF tensors of `cfg` in file order, each with its checkpoint tensors. */
function plan(cfg: ModelConfig, store: TensorStore, pregates: boolean): Planned[] {
  const roles = new Map(expectedTensors(cfg).map((t) => [t.name, t]));
  const byGguf = new Map<string, Planned>();
  for (const [name, src] of ggufTensorNames(cfg)) {
    if (src.optional && !(pregates && store.has(name))) continue;
    const t = roles.get(name);
    const shape = t ? [...t.shape] : [...src.optional!.shape];
    let p = byGguf.get(src.gguf);
    if (!p) {
      p = { gguf: src.gguf, sources: [], shape, role: t?.role ?? "pregate" };
      byGguf.set(src.gguf, p);
    }
    p.sources.push({ name, src });
  }
  for (const p of byGguf.values()) {
    if (p.sources[0].src.expert !== undefined) p.shape = [p.sources.length, ...p.shape];
    if (p.shape.length === 2 && p.shape[0] === 1) p.shape = [p.shape[1]]; // llama.cpp's [n] vectors
  }
  return [...byGguf.values()];
}

/**
 * Writes the checkpoint directory `opts.model` as a GGUF file (see the module documentation).
 *
 * @throws {ConfigError} for an architecture without a GGUF form, or a config llama.cpp's graph does
 *   not compute (see `ggufMetadata` and the architectures' GGUF forms).
 * @throws {TokenizerError} for a tokenizer.json llama.cpp would not split the same way.
 */
export async function convertToGguf(opts: ConvertOptions): Promise<ConvertResult> {
  const cfg = await loadConfig(opts.model);
  const spec = archOf(cfg).gguf;
  if (!spec) {
    throw new ConfigError(
      `${cfg.arch} has no GGUF form in llama.cpp`,
      "convert writes the decoder architectures llama.cpp runs",
    );
  }
  const metadata = {
    ...ggufMetadata(cfg, spec, opts.model.split("/").filter(Boolean).at(-1) ?? "model"),
    "general.file_type": v.u32(FILE_TYPE[opts.type]),
    "general.quantization_version": v.u32(2),
  };
  let vocab: Record<string, ReturnType<typeof v.string>> = {
    "tokenizer.ggml.model": v.string("no_vocab"),
  };
  let hasVocab = false;
  if (!opts.noVocab) {
    const files = await readTokenizerFiles(opts.model).catch((e) => {
      opts.log?.(`pregate: ${(e as Error).message.split("\n")[0]}; writing no vocabulary`);
      return null;
    });
    if (files) {
      vocab = ggufVocabMetadata(files);
      hasVocab = true;
    }
  }
  const store = openCheckpoint(opts.model, { log: opts.log });
  const quantised = opts.type === "q4_k_m" || isQuantType(opts.type);
  const pool = new QuantPool(quantised ? opts.threads : 1);
  try {
    const planned = plan(cfg, store, opts.pregates ?? false);
    const mix: MixModel = {
      layers: cfg.layers.length,
      experts: Math.max(0, ...cfg.layers.map((l) => l.ffn.kind === "moe" ? l.ffn.experts : 0)),
      tiedEmbeddings: !planned.some((p) => p.gguf === "output.weight"),
    };
    const typeOf = (p: Planned) => typeOfPlanned(p, opts.type, mix);
    const types: Record<string, number> = {};
    let done = 0;
    const tensors: GgufTensorToWrite[] = planned.map((p) => {
      const t = typeOf(p);
      const name = GGML_NAME[t];
      types[name] = (types[name] ?? 0) + 1;
      return {
        name: p.gguf,
        type: name,
        shape: p.shape,
        data: async function* () {
          yield* tensorData(p, t, store, pool);
          opts.onProgress?.(++done, planned.length);
        },
      };
    });
    const fellBack = opts.type === "q4_k_m" ? [] : planned
      .filter((p) => typeOf(p) !== opts.type)
      .filter((p) => p.shape.length > 1 && p.role !== "router" && p.role !== "pregate");
    if (fellBack.length && opts.log) {
      opts.log(
        `pregate: ${fellBack.length} matrices kept in another type (rows not whole ` +
          `${opts.type} blocks): ${fellBack.slice(0, 3).map((p) => p.gguf).join(", ")}` +
          (fellBack.length > 3 ? ", ..." : ""),
      );
    }
    const w = await writeGguf(opts.out, { ...metadata, ...vocab }, tensors);
    return { path: w.path, bytes: w.byteLength, types, vocab: hasVocab };
  } finally {
    pool.close();
    store.close();
  }
}

/** llama.cpp's `general.file_type` (`llama_ftype`) of each requested type. */
const FILE_TYPE: Readonly<Record<ConvertType, number>> = {
  f32: 0,
  f16: 1,
  q8_0: 7,
  q5_0: 8,
  q4_0: 2,
  q4_k: 14, // MOSTLY_Q4_K_S
  q5_k: 16, // MOSTLY_Q5_K_S
  q6_k: 18,
  q4_k_m: 15,
  bf16: 32,
};
