/**
 * GGUF models (llama.cpp's files) as Pregate models: the config from the file's metadata
 * ({@linkcode ggufModelConfig}, through the architecture's {@linkcode GgufSpec}) and the weights
 * behind a {@linkcode TensorStore} that answers Pregate's checkpoint names ({@linkcode openGgufStore}),
 * so the upload, the expert store and every offloading mode read a GGUF file as they read
 * safetensors. llama.cpp's names map onto Pregate's by role ({@linkcode ggufTensorNames}):
 * `token_embd`, `output_norm`, `output` (absent: tied), and per layer `blk.N.attn_norm`,
 * `attn_q/k/v` (+ `.bias`), `attn_output`, `attn_q_norm` / `attn_k_norm`, `ffn_norm`, the router
 * `ffn_gate_inp`, the stacked experts `ffn_gate_exps` / `ffn_up_exps` / `ffn_down_exps`
 * (`[experts, out, in]`: each expert is a zero-copy slice, so experts stream from the file as
 * safetensors experts do; early Mixtral files' one tensor per expert, `ffn_gate.E`, are read too),
 * the shared expert `ffn_*_shexp` with its gate `ffn_gate_inp_shexp`, and
 * Pregate's own trained pre-gate `blk.N.ffn_pregate` (optional; llama.cpp refuses files with
 * tensors it does not know, so `convert` writes it only when asked). Where llama.cpp stores q and k
 * rows permuted (its `llama` graph's pair-wise RoPE), the store undoes it.
 *
 * Everything is checked at open: each tensor present, of a type Pregate computes with (F32, F16,
 * BF16, Q8_0, Q5_0, Q4_0, Q4_K, Q5_K, Q6_K), of the shape the metadata implies; failures are
 * {@linkcode GgufError}s naming the file and the GGUF tensor or key.
 *
 * @example
 * ```ts ignore
 * import { loadModelConfig, openModelStore } from "./gguf_model.ts";
 * const cfg = await loadModelConfig("model-Q4_K.gguf"); // or a safetensors checkpoint directory
 * const store = openModelStore("model-Q4_K.gguf", cfg);
 * console.log(store.get("model.layers.0.mlp.experts.3.down_proj.weight").dtype);
 * store.close();
 * ```
 * @module
 */
import { ConfigError, GgufError } from "../base/errors.ts";
import { type GgufFile, type GgufTensorInfo, isGgufFile, openGguf } from "../weights/gguf.ts";
import type { Advice, OpenMappedOptions } from "../weights/mmap.ts";
import {
  openCheckpoint,
  type Tensor,
  type TensorEntry,
  type TensorStore,
} from "../weights/safetensors.ts";
import { weightsToF32, type WeightType } from "../weights/weight_type.ts";
import { archOf, archOfGguf } from "./arch/mod.ts";
import { loadConfig } from "./config.ts";
import { ggufConfig } from "./gguf_spec.ts";
import type { ModelConfig } from "./model_config.ts";
import { expectedTensors, layerNames, type MlpNames, modelNames, pregateName } from "./names.ts";

/** Where a checkpoint tensor lives in a GGUF file. */
export interface GgufSource {
  /** The GGUF tensor. */
  readonly gguf: string;
  /** For a routed expert: its index in the stacked `[experts, out, in]` tensor. */
  readonly expert?: number;
  /** For q and k of an architecture that stores them permuted: the heads the rows belong to. */
  readonly heads?: number;
  /** Pregate's trained pre-gate: read when the file has it, of this shape. */
  readonly optional?: { readonly shape: readonly number[] };
}

/** The weight type of each ggml type Pregate computes with. */
const GGML_TO_WEIGHT: Readonly<Record<string, WeightType>> = {
  F32: "f32",
  F16: "f16",
  BF16: "bf16",
  Q8_0: "q8_0",
  Q5_0: "q5_0",
  Q4_0: "q4_0",
  Q4_K: "q4_k",
  Q5_K: "q5_k",
  Q6_K: "q6_k",
};

/**
 * Every checkpoint tensor of `cfg` with its place in a GGUF file (see the module documentation),
 * in `expectedTensors` order, then the optional pre-gates.
 *
 * @throws {ConfigError} for an architecture without a GGUF form or a tensor llama.cpp has no name
 *   for (a router bias).
 * @example
 * ```ts
 * import { parseConfig } from "./config.ts";
 * import { ggufTensorNames } from "./gguf_model.ts";
 * const cfg = parseConfig({ model_type: "qwen3_moe", vocab_size: 8, hidden_size: 64,
 *   intermediate_size: 64, moe_intermediate_size: 32, num_hidden_layers: 1, num_attention_heads: 2,
 *   num_experts: 4, num_experts_per_tok: 2 });
 * console.log(ggufTensorNames(cfg).get("model.layers.0.mlp.experts.3.up_proj.weight"));
 * // { gguf: "blk.0.ffn_up_exps.weight", expert: 3 }
 * ```
 */
export function ggufTensorNames(cfg: ModelConfig): Map<string, GgufSource> {
  const spec = archOf(cfg).gguf;
  if (!spec) throw new ConfigError(`${cfg.arch} has no GGUF form in llama.cpp`);
  const out = new Map<string, GgufSource>();
  const set = (name: string | undefined, src: GgufSource) => {
    if (name !== undefined) out.set(name, src);
  };
  const m = modelNames(cfg);
  set(m.embed, { gguf: "token_embd.weight" });
  set(m.finalNorm, { gguf: "output_norm.weight" });
  if (!cfg.tieEmbeddings) set(m.lmHead, { gguf: "output.weight" });
  const mlp = (n: MlpNames, b: string, suffix: string, expert?: number) => {
    set(n.gate, { gguf: `${b}ffn_gate${suffix}.weight`, expert });
    set(n.up, { gguf: `${b}ffn_up${suffix}.weight`, expert });
    set(n.down, { gguf: `${b}ffn_down${suffix}.weight`, expert });
  };
  for (let i = 0; i < cfg.layers.length; i++) {
    const n = layerNames(cfg, i), b = `blk.${i}.`;
    set(n.inputNorm, { gguf: `${b}attn_norm.weight` });
    set(n.postNorm, { gguf: `${b}ffn_norm.weight` });
    set(n.q, { gguf: `${b}attn_q.weight`, heads: spec.permuteQk ? cfg.heads : undefined });
    set(n.k, { gguf: `${b}attn_k.weight`, heads: spec.permuteQk ? cfg.kvHeads : undefined });
    set(n.v, { gguf: `${b}attn_v.weight` });
    set(n.o, { gguf: `${b}attn_output.weight` });
    set(n.bias?.q, { gguf: `${b}attn_q.bias` });
    set(n.bias?.k, { gguf: `${b}attn_k.bias` });
    set(n.bias?.v, { gguf: `${b}attn_v.bias` });
    set(n.qkNorm?.q, { gguf: `${b}attn_q_norm.weight` });
    set(n.qkNorm?.k, { gguf: `${b}attn_k_norm.weight` });
    const f = n.ffn, lf = cfg.layers[i].ffn;
    if (f.kind === "dense") {
      mlp(f, b, "");
      continue;
    }
    if (f.routerBias !== undefined) {
      throw new ConfigError(`${f.routerBias}: llama.cpp's files have no router bias`);
    }
    set(f.router, { gguf: `${b}ffn_gate_inp.weight` });
    if (f.shared) {
      mlp(f.shared, b, "_shexp");
      set(f.shared.gateWeight, { gguf: `${b}ffn_gate_inp_shexp.weight` });
    }
    for (let e = 0; e < (lf.kind === "moe" ? lf.experts : 0); e++) mlp(f.expert(e), b, "_exps", e);
  }
  for (let i = 0; i < cfg.layers.length; i++) {
    const next = cfg.layers.slice(i + 1).find((l) => l.ffn.kind === "moe")?.ffn;
    if (cfg.layers[i].ffn.kind === "moe" && next?.kind === "moe") {
      const shape = [next.experts, cfg.hidden];
      set(pregateName(cfg, i), { gguf: `blk.${i}.ffn_pregate.weight`, optional: { shape } });
    }
  }
  return out;
}

/**
 * Permutes the rows of q or k per head between HF's order and llama.cpp's `llama` order (the
 * converter's `permute`: within each head, row `s * D/2 + j` of HF's is row `2 j + s` of
 * llama.cpp's). `toGguf` permutes HF -> llama.cpp, else back. Rows are `rowBytes` bytes each (whole
 * blocks for quantised types), so quantised rows move unchanged.
 *
 * @example
 * ```ts
 * import { permuteQkRows } from "./gguf_model.ts";
 * const rows = Uint8Array.from([0, 1, 2, 3]); // one head of 4 one-byte rows
 * console.log(permuteQkRows(rows, 4, 1, true)); // Uint8Array [0, 2, 1, 3]
 * ```
 */
export function permuteQkRows(
  bytes: Uint8Array,
  rows: number,
  heads: number,
  toGguf: boolean,
): Uint8Array {
  const D = rows / heads, rowBytes = bytes.byteLength / rows;
  const out = new Uint8Array(bytes.byteLength);
  for (let h = 0; h < heads; h++) {
    for (let s = 0; s < 2; s++) {
      for (let j = 0; j < D / 2; j++) {
        const hf = h * D + s * (D / 2) + j, gg = h * D + 2 * j + s;
        const [from, to] = toGguf ? [hf, gg] : [gg, hf];
        out.set(bytes.subarray(from * rowBytes, (from + 1) * rowBytes), to * rowBytes);
      }
    }
  }
  return out;
}

/** A checkpoint tensor of a GGUF store: its header entry and where its bytes are. */
interface Entry extends TensorEntry {
  readonly dtype: WeightType;
  readonly gguf: string;
  readonly heads?: number;
}

function squeeze(shape: readonly number[]): number[] {
  return shape.filter((d) => d !== 1);
}

function sameShape(a: readonly number[], b: readonly number[]): boolean {
  return a.length === b.length && a.every((d, i) => d === b[i]);
}

/** The checked entry of checkpoint tensor `name` of shape `shape`, from `src` in `g`. */
function entryOf(g: GgufFile, name: string, shape: readonly number[], src: GgufSource): Entry {
  const t: GgufTensorInfo = g.describe(src.gguf);
  const dtype = GGML_TO_WEIGHT[t.type];
  if (!dtype) {
    throw new GgufError(g.path, `type ${t.type} is not supported`, {
      tensor: src.gguf,
      hint:
        "Pregate computes with F32, F16, BF16, Q8_0, Q5_0, Q4_0, Q4_K, Q5_K and Q6_K tensors; " +
        "requantise the model (e.g. llama-quantize ... Q4_K_M) or convert it from safetensors with " +
        "pregate convert",
    });
  }
  const stacked = src.expert !== undefined;
  const ok = stacked
    ? t.shape.length === shape.length + 1 && sameShape(t.shape.slice(1), shape) &&
      src.expert! < t.shape[0]
    : sameShape(squeeze(t.shape), squeeze(shape));
  if (!ok) {
    throw new GgufError(
      g.path,
      `expected shape [${stacked ? "experts, " : ""}${shape.join(", ")}] (for ${name}), found ` +
        `[${t.shape.join(", ")}]`,
      { tensor: src.gguf, hint: "the file's tensors do not match its metadata" },
    );
  }
  const slice = stacked ? t.byteLength / t.shape[0] : t.byteLength;
  const offset = t.offset + (stacked ? src.expert! * slice : 0);
  return {
    name,
    gguf: src.gguf,
    heads: src.heads,
    fileDType: t.type,
    dtype,
    shape: [...shape],
    elements: shape.reduce((a, d) => a * d, 1),
    file: g.path,
    offset,
    byteLength: slice,
    alignment: offset % 4 === 0 ? 4 : offset % 2 === 0 ? 2 : 1,
  };
}

/**
 * `src`, or for a routed expert of a file in llama.cpp's older layout (one tensor per expert,
 * `blk.N.ffn_gate.E.weight`, as early Mixtral files have) that expert's own tensor.
 */
function perExpert(g: GgufFile, src: GgufSource): GgufSource {
  if (src.expert === undefined || g.hasTensor(src.gguf)) return src;
  const own = src.gguf.replace(/_exps\.weight$/, `.${src.expert}.weight`);
  return g.hasTensor(own) ? { gguf: own } : src;
}

/** A GGUF file's tensors under checkpoint names (see {@linkcode openGgufStore}). */
class GgufStore implements TensorStore {
  readonly files: readonly string[];
  readonly metadata: Readonly<Record<string, string>>;
  readonly kind;
  #closed = false;

  constructor(readonly g: GgufFile, readonly entries: ReadonlyMap<string, Entry>) {
    this.files = [g.path];
    this.kind = g.kind;
    const general = g.entries().filter((e) => e.type === "string" && e.key.startsWith("general."));
    this.metadata = Object.freeze(Object.fromEntries(general.map((e) => [e.key, String(e.value)])));
  }

  names(): string[] {
    return [...this.entries.keys()];
  }
  has(name: string): boolean {
    return this.entries.has(name);
  }
  #entry(name: string): Entry {
    if (this.#closed) {
      throw new GgufError(this.g.path, "the tensor store was used after close()", { tensor: name });
    }
    const e = this.entries.get(name);
    if (!e) {
      throw new GgufError(this.g.path, `no tensor maps to ${name}`, {
        hint: "the model's config names a tensor its GGUF file does not hold",
      });
    }
    return e;
  }
  describe(name: string): TensorEntry {
    const { gguf: _g, heads: _h, ...e } = this.#entry(name);
    return { ...e, shape: [...e.shape] };
  }
  get(name: string): Tensor {
    const e = this.#entry(name);
    const view = () => this.g.mapping.bytes(e.offset, e.byteLength);
    const bytes = e.heads === undefined
      ? view
      : () => permuteQkRows(view(), e.shape[0], e.heads!, false);
    return { ...this.describe(name), dtype: e.dtype, bytes };
  }
  tensorF32(name: string): Float32Array {
    const t = this.get(name);
    return weightsToF32(t.bytes(), t.dtype, t.elements);
  }
  resident(names?: readonly string[]): number | null {
    let bytes = 0, inRam = 0;
    for (const name of names ?? this.entries.keys()) {
      const e = this.#entry(name);
      const r = this.g.mapping.resident(e.offset, e.byteLength);
      if (r === null) return null;
      bytes += e.byteLength;
      inRam += r * e.byteLength;
    }
    return bytes ? inRam / bytes : null;
  }
  advise(advice: Advice, names?: readonly string[]): boolean {
    let ok = true;
    for (const name of names ?? this.entries.keys()) {
      const e = this.#entry(name);
      ok = this.g.mapping.advise(e.offset, e.byteLength, advice) && ok;
    }
    return ok;
  }
  checkIntact(names?: readonly string[]): void {
    this.g.mapping.checkIntact(names?.length ? this.#entry(names[0]).gguf : undefined);
  }
  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    this.g.close();
  }
}

/**
 * The tensors of the GGUF file `g` under the checkpoint names of `cfg` (its config, see
 * {@linkcode ggufModelConfig}), every one checked (see the module documentation). The store owns
 * `g`: closing it closes the file. `log` hears of GGUF tensors no checkpoint name maps to.
 *
 * @throws {GgufError} naming the file and the GGUF tensor: missing, of an unsupported type, or of
 *   a shape other than the metadata implies.
 */
export function ggufStore(g: GgufFile, cfg: ModelConfig, log?: (m: string) => void): TensorStore {
  const names = ggufTensorNames(cfg);
  const shapes = new Map(expectedTensors(cfg).map((t) => [t.name, t.shape]));
  const entries = new Map<string, Entry>();
  const used = new Set<string>();
  for (const [name, stacked] of names) {
    const src = perExpert(g, stacked);
    used.add(src.gguf);
    if (!g.hasTensor(src.gguf)) {
      if (src.optional) continue;
      throw new GgufError(g.path, `missing tensor (Pregate reads it as ${name})`, {
        tensor: src.gguf,
        hint: "the file may be incomplete, or its metadata may not match its tensors",
      });
    }
    const shape = shapes.get(name) ?? src.optional?.shape ?? [];
    entries.set(name, entryOf(g, name, shape, src));
  }
  const unused = g.names().filter((n) => !used.has(n));
  if (unused.length && log) {
    log(
      `pregate: warning: ${g.path}: ${unused.length} tensor(s) not used: ` +
        `${unused.slice(0, 5).join(", ")}${unused.length > 5 ? ", ..." : ""}`,
    );
  }
  return new GgufStore(g, entries);
}

/**
 * The config of an open GGUF file: its architecture from `general.architecture`, the config.json
 * object its metadata gives (`ggufConfig`), checked by the architecture's own `parseConfig`. A
 * config error becomes a {@linkcode GgufError} naming the GGUF keys behind the fields it names.
 */
export function ggufModelConfig(g: GgufFile): ModelConfig {
  const arch = archOfGguf(g.string("general.architecture"), g.path);
  const { raw, origin } = ggufConfig(g, arch.name, arch.gguf!);
  const where = `${g.path} (config from its metadata)`;
  try {
    return arch.parseConfig(raw, where);
  } catch (e) {
    if (!(e instanceof ConfigError)) throw e;
    // The field the error is about comes first ('field'), then any other it names.
    const keys = [...origin].filter(([field]) => e.message.includes(field))
      .sort(([a], [b]) =>
        Number(e.message.includes(`'${b}'`)) - Number(e.message.includes(`'${a}'`))
      );
    const message = e.message.startsWith(`${where}: `)
      ? e.message.slice(where.length + 2)
      : e.message;
    throw new GgufError(g.path, message, {
      key: keys[0]?.[1],
      hint: keys.length
        ? `config fields from the file: ${keys.map(([f, k]) => `${f} <- ${k}`).join(", ")}`
        : undefined,
    });
  }
}

/**
 * Opens a GGUF model's tensors under the checkpoint names of `cfg` (its {@linkcode ggufModelConfig}).
 *
 * @example
 * ```ts ignore
 * const store = openGgufStore("m.gguf", cfg, { log: console.error });
 * ```
 */
export function openGgufStore(
  path: string,
  cfg: ModelConfig,
  options: OpenMappedOptions = {},
): TensorStore {
  const g = openGguf(path, options);
  try {
    return ggufStore(g, cfg, options.log);
  } catch (e) {
    g.close();
    throw e;
  }
}

/**
 * The config of a model: a GGUF file's (from its metadata) or a checkpoint directory's
 * (config.json).
 *
 * @example
 * ```ts
 * import { loadModelConfig } from "./gguf_model.ts";
 * console.log((await loadModelConfig("tests/fixtures/hf/olmoe")).arch); // olmoe
 * ```
 */
export async function loadModelConfig(path: string): Promise<ModelConfig> {
  if (!isGgufFile(path)) return await loadConfig(path);
  const g = openGguf(path);
  try {
    return ggufModelConfig(g);
  } finally {
    g.close();
  }
}

/**
 * The tensors of a model under checkpoint names: a GGUF file's ({@linkcode openGgufStore}) or a
 * checkpoint directory's (`openCheckpoint`).
 */
export function openModelStore(
  path: string,
  cfg: ModelConfig,
  options: OpenMappedOptions = {},
): TensorStore {
  return isGgufFile(path) ? openGgufStore(path, cfg, options) : openCheckpoint(path, options);
}
