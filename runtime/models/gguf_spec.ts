/**
 * What an architecture file says about its GGUF form (llama.cpp's files): the {@linkcode GgufSpec}
 * an {@linkcode Architecture} carries as `gguf`, and the metadata both directions share. Reading, a
 * file's metadata becomes the config.json object the architecture's own `parseConfig` checks
 * ({@linkcode ggufConfig}: the keys every llama.cpp decoder has, then the architecture's); writing,
 * a {@linkcode ModelConfig} becomes those keys ({@linkcode ggufMetadata}), refusing what llama.cpp's
 * graph of the architecture does not compute. Tensor names are mapped in `gguf_model.ts`.
 *
 * @example
 * ```ts ignore
 * import { openGguf } from "../weights/gguf.ts";
 * import { ggufConfig } from "./gguf_spec.ts";
 * const g = openGguf("model.gguf");
 * const raw = ggufConfig(g, "qwen3_moe", qwen3Moe.gguf!); // a config.json object
 * ```
 * @module
 */
import { ConfigError, GgufError } from "../base/errors.ts";
import type { GgufFile } from "../weights/gguf.ts";
import { ggufValue as v, type GgufValueToWrite } from "../weights/gguf_writer.ts";
import type { ModelConfig, MoeFfn } from "./model_config.ts";

/** An architecture's GGUF form (see the module documentation). */
export interface GgufSpec {
  /** llama.cpp's name of the architecture: `general.architecture` and the keys' prefix. */
  readonly arch: string;
  /**
   * Whether llama.cpp's graph renormalises the top-k weights (it does not read a key for it: a file
   * saying otherwise is refused, and so is writing a config that differs).
   */
  readonly renormalize: boolean;
  /**
   * llama.cpp's graph rotates adjacent pairs (RoPE "norm" mode), so its converter stores the rows of
   * q and k permuted per head; Pregate rotates halves (neox) and undoes the permutation.
   */
  readonly permuteQk?: boolean;
  /**
   * The architecture's own config.json fields from a file's metadata and tensors, beside the shared
   * ones {@linkcode ggufConfig} reads.
   */
  config(m: GgufFields): Record<string, unknown>;
  /**
   * The architecture's own metadata for `cfg` (keys without the `<arch>.` prefix) beside the shared
   * ones {@linkcode ggufMetadata} writes. Throws {@linkcode ConfigError} for what llama.cpp's graph
   * does not compute.
   */
  metadata(cfg: ModelConfig): Record<string, GgufValueToWrite>;
}

/**
 * Checked reads of an architecture's metadata (`<arch>.<key>`), each recording which config.json
 * field it fills, so that a config error can name the GGUF key behind it.
 *
 * @example
 * ```ts ignore
 * const m = new GgufFields(openGguf("m.gguf"), "qwen3moe");
 * const experts = m.uint("num_experts", "expert_count"); // reads qwen3moe.expert_count
 * ```
 */
export class GgufFields {
  /** config.json field -> the GGUF key or tensor it came from. */
  readonly origin: Map<string, string> = new Map();

  /** Reads `file`'s keys of architecture `arch` (llama.cpp's name). */
  constructor(readonly file: GgufFile, readonly arch: string) {}

  /** The full key of `key`: `<arch>.<key>`. */
  key(key: string): string {
    return `${this.arch}.${key}`;
  }

  /** Whether the file has `<arch>.<key>`. */
  has(key: string): boolean {
    return this.file.has(this.key(key));
  }

  /** A non-negative integer key for config field `field` (`fallback` when absent, if given). */
  uint(field: string, key: string, fallback?: number): number {
    this.origin.set(field, this.key(key));
    return this.file.uint(this.key(key), fallback);
  }

  /** A numeric key for config field `field` (`fallback` when absent, if given). */
  float(field: string, key: string, fallback?: number): number {
    this.origin.set(field, this.key(key));
    return this.file.float(this.key(key), fallback);
  }

  /**
   * Dimension `axis` (ggml order: 0 is a row's length) of tensor `tensor`, for config field `field`
   * when no key gives it (a typed error naming the tensor when it is missing).
   */
  dim(field: string, tensor: string, axis: number): number {
    this.origin.set(field, `tensor ${tensor}`);
    const d = this.file.describe(tensor).dims[axis];
    if (d === undefined) {
      throw new GgufError(this.file.path, `expected at least ${axis + 1} dimensions`, { tensor });
    }
    return d;
  }
}

/**
 * The config.json object of a GGUF file of architecture `name` (Pregate's, HF's `model_type`) with
 * GGUF form `spec`: the shared decoder keys (`<arch>.embedding_length`, `block_count`,
 * `attention.head_count`, `head_count_kv`, `key_length`, `context_length`,
 * `attention.layer_norm_rms_epsilon`, `rope.freq_base`, `rope.dimension_count`, `expert_used_count`,
 * the vocabulary from `token_embd.weight`, tied embeddings when `output.weight` is absent) and the
 * architecture's own. Keys that change the math and that Pregate does not compute (RoPE scaling,
 * sliding windows, expert gating other than softmax, expert weight scales, a renormalisation other
 * than llama.cpp's) are {@linkcode GgufError}s naming the key. Returns the object and the origin of
 * each field.
 */
export function ggufConfig(
  file: GgufFile,
  name: string,
  spec: GgufSpec,
): { raw: Record<string, unknown>; origin: ReadonlyMap<string, string> } {
  const m = new GgufFields(file, spec.arch);
  refuseUnsupported(m, spec);
  const hidden = m.uint("hidden_size", "embedding_length");
  const heads = m.uint("num_attention_heads", "attention.head_count");
  const headDim = m.uint("head_dim", "attention.key_length", Math.floor(hidden / heads));
  const valueDim = file.uint(m.key("attention.value_length"), headDim);
  if (valueDim !== headDim) {
    throw new GgufError(file.path, `expected ${headDim} like attention.key_length`, {
      key: m.key("attention.value_length"),
      hint: "Pregate's attention has keys and values of one width",
    });
  }
  const rotated = m.uint("partial_rotary_factor", "rope.dimension_count", headDim);
  const raw: Record<string, unknown> = {
    model_type: name,
    vocab_size: m.dim("vocab_size", "token_embd.weight", 1),
    hidden_size: hidden,
    num_hidden_layers: m.uint("num_hidden_layers", "block_count"),
    num_attention_heads: heads,
    num_key_value_heads: m.uint("num_key_value_heads", "attention.head_count_kv", heads),
    head_dim: headDim,
    max_position_embeddings: m.uint("max_position_embeddings", "context_length"),
    rms_norm_eps: m.float("rms_norm_eps", "attention.layer_norm_rms_epsilon"),
    rope_theta: m.float("rope_theta", "rope.freq_base", 10000),
    num_experts_per_tok: m.uint("num_experts_per_tok", "expert_used_count"),
    norm_topk_prob: spec.renormalize,
    tie_word_embeddings: !file.hasTensor("output.weight"),
    ...(rotated === headDim ? {} : { partial_rotary_factor: rotated / headDim }),
    ...spec.config(m),
  };
  m.origin.set("tie_word_embeddings", "tensor output.weight (absent: tied)");
  return { raw, origin: m.origin };
}

/** Refuses keys that change the math in ways Pregate does not compute. */
function refuseUnsupported(m: GgufFields, spec: GgufSpec): void {
  const fail = (key: string, message: string, hint?: string): never => {
    throw new GgufError(m.file.path, message, { key: m.key(key), hint });
  };
  const scaling = m.has("rope.scaling.type") ? m.file.string(m.key("rope.scaling.type")) : "none";
  if (scaling !== "none") fail("rope.scaling.type", `RoPE scaling '${scaling}' is not supported`);
  if (m.has("attention.sliding_window")) {
    fail("attention.sliding_window", "sliding-window attention is not supported");
  }
  if (m.has("expert_gating_func") && m.file.uint(m.key("expert_gating_func")) !== 1) {
    fail("expert_gating_func", "only softmax expert gating (1) is supported");
  }
  const scale = m.has("expert_weights_scale") ? m.file.float(m.key("expert_weights_scale")) : 1;
  if (scale !== 1 && scale !== 0) {
    fail("expert_weights_scale", `a scale of ${scale} is not supported`);
  }
  if (m.has("expert_weights_norm")) {
    const norm = m.file.bool(m.key("expert_weights_norm"));
    if (norm !== spec.renormalize) {
      fail(
        "expert_weights_norm",
        `expected ${spec.renormalize}, found ${norm}`,
        `llama.cpp's ${spec.arch} graph ${spec.renormalize ? "always" : "never"} renormalises`,
      );
    }
  }
}

/**
 * The metadata of a model of config `cfg` in GGUF form `spec` (without the tokenizer's): the shared
 * decoder keys and the architecture's own. Throws {@linkcode ConfigError} for what llama.cpp's
 * graph does not compute: top-k renormalisation other than its own, partial RoPE where its q/k are
 * permuted.
 */
export function ggufMetadata(
  cfg: ModelConfig,
  spec: GgufSpec,
  name: string,
): Record<string, GgufValueToWrite> {
  const moe = firstMoe(cfg);
  for (const [i, l] of cfg.layers.entries()) {
    if (l.ffn.kind === "moe" && l.ffn.renormalize !== spec.renormalize) {
      throw new ConfigError(
        `layer ${i}: norm_topk_prob ${l.ffn.renormalize} cannot be written for llama.cpp`,
        `llama.cpp's ${spec.arch} graph ${spec.renormalize ? "always" : "never"} renormalises ` +
          "the top-k weights",
      );
    }
  }
  if (spec.permuteQk && cfg.rotaryDim !== cfg.headDim) {
    throw new ConfigError(
      `${cfg.arch}: partial RoPE (${cfg.rotaryDim} of ${cfg.headDim}) cannot be written for llama.cpp`,
    );
  }
  const own = spec.metadata(cfg);
  const keys: Record<string, GgufValueToWrite> = {
    context_length: v.u32(cfg.maxPositions),
    embedding_length: v.u32(cfg.hidden),
    block_count: v.u32(cfg.layers.length),
    "attention.head_count": v.u32(cfg.heads),
    "attention.head_count_kv": v.u32(cfg.kvHeads),
    "attention.key_length": v.u32(cfg.headDim),
    "attention.value_length": v.u32(cfg.headDim),
    "attention.layer_norm_rms_epsilon": v.f32(cfg.rmsEps),
    "rope.freq_base": v.f32(cfg.ropeTheta),
    "rope.dimension_count": v.u32(cfg.rotaryDim),
    expert_count: v.u32(moe.experts),
    expert_used_count: v.u32(moe.topK),
    vocab_size: v.u32(cfg.vocabSize),
    ...own,
  };
  return {
    "general.architecture": v.string(spec.arch),
    "general.name": v.string(name),
    ...Object.fromEntries(Object.entries(keys).map(([k, x]) => [`${spec.arch}.${k}`, x])),
  };
}

/**
 * Checks that every layer of `cfg` is a MoE layer: llama.cpp's graphs of these architectures have
 * no dense feed-forward layers (`mlp_only_layers`, `decoder_sparse_step`).
 */
export function allMoeLayers(cfg: ModelConfig, arch: string): void {
  const dense = cfg.layers.findIndex((l) => l.ffn.kind !== "moe");
  if (dense >= 0) {
    throw new ConfigError(
      `layer ${dense} is a dense MLP: llama.cpp's ${arch} graph has MoE layers only`,
      "GGUF files of this architecture cannot hold dense layers (mlp_only_layers, " +
        "decoder_sparse_step)",
    );
  }
}

/**
 * The first MoE layer's feed-forward config of `cfg` (after {@linkcode allMoeLayers}: every
 * layer's).
 */
export function firstMoe(cfg: ModelConfig): MoeFfn {
  const f = cfg.layers.map((l) => l.ffn).find((x) => x.kind === "moe");
  if (!f || f.kind !== "moe") throw new ConfigError(`${cfg.arch}: a model without MoE layers`);
  return f;
}

/**
 * config.json's `intermediate_size` when it is a positive integer (a dense MLP's width, which
 * llama.cpp's files keep as `feed_forward_length` even where no layer is dense), else `fallback`.
 */
export function rawIntermediate(cfg: ModelConfig, fallback: number): number {
  const x = cfg.raw.intermediate_size;
  return typeof x === "number" && Number.isInteger(x) && x > 0 ? x : fallback;
}
