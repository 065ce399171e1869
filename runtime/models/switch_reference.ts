/**
 * A float64 CPU forward of Switch Transformers, in the plainest loops, over a checkpoint read through
 * `openCheckpoint`: the ground truth the GPU path is tested against, and itself tested against HF's
 * logits (`tests/fixtures/hf/switch_tiny`). The encoder runs over the encoder ids; the decoder over
 * the decoder ids (causal self-attention, cross-attention over the encoder output); the LM head
 * gives logits for every decoder position. {@linkcode SwitchReference.greedy} decodes from
 * `decoder_start_token_id` by recomputing everything each step. Meant for tiny models.
 *
 * @example
 * ```ts ignore
 * import { SwitchReference } from "./switch_reference.ts";
 * const ref = await SwitchReference.open("tests/fixtures/hf/switch_tiny");
 * const logits = ref.logits([13, 7, 42], [0, 44]); // [2][vocab]
 * console.log(ref.greedy([13, 7, 42], 5));
 * ref.close();
 * ```
 * @module
 */
import { ConfigError, WeightFileError } from "../base/errors.ts";
import { openCheckpoint, type TensorStore } from "../weights/safetensors.ts";
import { relativePositionBucket } from "../../kernels/relative_bias.ts";
import {
  parseSwitchConfig,
  pickSwitchEmbedding,
  type SwitchAttentionNames,
  type SwitchConfig,
  type SwitchFfnNames,
  type SwitchLayerNames,
  type SwitchNames,
  switchNames,
  switchTensors,
} from "./arch/switch_config.ts";

/**
 * Where the first layer's relative position bias applies: every layer of the stack (`shared`, T5
 * and the Switch paper) or only the first (`first_layer_only`, what some transformers versions do;
 * the HF fixture records which its version does).
 */
export type PositionBiasReading = "shared" | "first_layer_only";

/** One sparse layer's routing of a run: per token, the top-1 expert and its probability. */
export interface SwitchRoute {
  readonly layer: number;
  readonly expert: number[];
  readonly prob: number[];
}

/** Rows of float64 activations, one per token. */
type Rows = Float64Array[];

/**
 * Reads `<dir>/config.json` and, when present, `<dir>/generation_config.json` into a
 * {@linkcode SwitchConfig}.
 * @throws {ConfigError} naming the file when it cannot be read or parsed, or a field is bad.
 */
export async function loadSwitchConfig(dir: string): Promise<SwitchConfig> {
  const read = async (name: string, optional: boolean) => {
    const path = `${dir.replace(/\/+$/, "")}/${name}`;
    let text: string;
    try {
      text = await Deno.readTextFile(path);
    } catch (e) {
      if (optional && e instanceof Deno.errors.NotFound) return {};
      throw new ConfigError(`${path}: cannot read it: ${(e as Error).message}`);
    }
    try {
      return JSON.parse(text) as Record<string, unknown>;
    } catch (e) {
      throw new ConfigError(`${path}: not valid JSON: ${(e as Error).message}`);
    }
  };
  const raw = await read("config.json", false);
  const where = `${dir.replace(/\/+$/, "")}/config.json`;
  return parseSwitchConfig(raw, where, await read("generation_config.json", true));
}

/** `y = W x` for `W` `[rows, cols]` row-major. */
function matvec(W: Float32Array, rows: number, cols: number, x: ArrayLike<number>): Float64Array {
  const y = new Float64Array(rows);
  for (let r = 0; r < rows; r++) {
    let acc = 0;
    for (let c = 0; c < cols; c++) acc += W[r * cols + c] * x[c];
    y[r] = acc;
  }
  return y;
}

/** T5 layer norm: `w * x / sqrt(mean(x^2) + eps)`. */
function rmsNorm(x: Float64Array, w: Float32Array, eps: number): Float64Array {
  let ss = 0;
  for (const v of x) ss += v * v;
  const inv = 1 / Math.sqrt(ss / x.length + eps);
  return x.map((v, i) => w[i] * v * inv);
}

function addInto(x: Rows, y: Rows): void {
  x.forEach((row, t) => row.forEach((_, i) => row[i] += y[t][i]));
}

/** The float64 Switch Transformers forward over a checkpoint. */
export class SwitchReference {
  /** The parsed config. */
  readonly config: SwitchConfig;
  /** The routing of the last {@linkcode encode} / {@linkcode decode} (sparse layers only). */
  readonly routes: { encoder: SwitchRoute[]; decoder: SwitchRoute[] } = {
    encoder: [],
    decoder: [],
  };
  readonly #store: TensorStore;
  readonly #names: SwitchNames;
  readonly #embed: string;
  readonly #positionBias: PositionBiasReading;
  readonly #cache = new Map<string, Float32Array>();

  /**
   * Wraps an open checkpoint, checking that it holds every tensor the config needs with the right
   * shape.
   * @throws {WeightFileError} naming the tensor that is missing or misshapen.
   */
  constructor(
    config: SwitchConfig,
    store: TensorStore,
    options: { positionBias?: PositionBiasReading } = {},
  ) {
    this.config = config;
    this.#store = store;
    this.#names = switchNames(config);
    this.#positionBias = options.positionBias ?? "shared";
    const embed = pickSwitchEmbedding(this.#names, (n) => store.has(n));
    if (!embed) {
      throw new WeightFileError(store.files[0], "no embedding tensor", {
        tensor: this.#names.embedCandidates.join(" | "),
      });
    }
    this.#embed = embed;
    for (const t of switchTensors(config)) {
      const name = t.role === "embedding" ? embed : t.name;
      const shape = store.describe(name).shape;
      if (shape.join() !== t.shape.join()) {
        throw new WeightFileError(
          store.files[0],
          `shape [${shape}], expected [${t.shape}] for this config.json`,
          { tensor: name },
        );
      }
    }
  }

  /** Opens `<dir>` (config.json, generation_config.json, safetensors). */
  static async open(
    dir: string,
    options: { positionBias?: PositionBiasReading } = {},
  ): Promise<SwitchReference> {
    const config = await loadSwitchConfig(dir);
    const store = openCheckpoint(dir);
    try {
      return new SwitchReference(config, store, options);
    } catch (e) {
      store.close();
      throw e;
    }
  }

  /** Closes the checkpoint. */
  close(): void {
    this.#store.close();
  }

  #w(name: string): Float32Array {
    let w = this.#cache.get(name);
    if (!w) {
      w = this.#store.tensorF32(name);
      this.#cache.set(name, w);
    }
    return w;
  }

  #embedRows(ids: readonly number[]): Rows {
    const { vocabSize: V, dModel: d } = this.config;
    const E = this.#w(this.#embed);
    return ids.map((id) => {
      if (!Number.isInteger(id) || id < 0 || id >= V) {
        throw new RangeError(`token id ${id} is outside the vocabulary [0, ${V})`);
      }
      return Float64Array.from(E.subarray(id * d, (id + 1) * d));
    });
  }

  /** The stack's bias for query position q, key position k, head h (0 where it does not apply). */
  #bias(layer: readonly SwitchLayerNames[], i: number, bidirectional: boolean) {
    if (i > 0 && this.#positionBias === "first_layer_only") return undefined;
    const table = this.#w(layer[0].relBias!);
    const { relBuckets: nb, relMaxDistance: md, heads } = this.config;
    return (h: number, q: number, k: number) =>
      table[relativePositionBucket(k - q, bidirectional, nb, md) * heads + h];
  }

  /** T5 attention of `xq` over `xkv`, no 1/sqrt(d) scale, optional bias, causal or not. */
  #attention(
    a: SwitchAttentionNames,
    xq: Rows,
    xkv: Rows,
    bias: ((h: number, q: number, k: number) => number) | undefined,
    causal: boolean,
  ): Rows {
    const { dModel: d, heads, dKv } = this.config;
    const inner = heads * dKv;
    const q = xq.map((x) => matvec(this.#w(a.q), inner, d, x));
    const k = xkv.map((x) => matvec(this.#w(a.k), inner, d, x));
    const v = xkv.map((x) => matvec(this.#w(a.v), inner, d, x));
    return q.map((qt, t) => {
      const ctx = new Float64Array(inner);
      for (let h = 0; h < heads; h++) {
        const n = causal ? t + 1 : k.length;
        const s = new Float64Array(n);
        for (let j = 0; j < n; j++) {
          let dot = 0;
          for (let c = 0; c < dKv; c++) dot += qt[h * dKv + c] * k[j][h * dKv + c];
          s[j] = dot + (bias ? bias(h, t, j) : 0);
        }
        const max = Math.max(...s);
        let sum = 0;
        for (let j = 0; j < n; j++) sum += s[j] = Math.exp(s[j] - max);
        for (let j = 0; j < n; j++) {
          for (let c = 0; c < dKv; c++) ctx[h * dKv + c] += (s[j] / sum) * v[j][h * dKv + c];
        }
      }
      return matvec(this.#w(a.o), d, inner, ctx);
    });
  }

  /** A ReLU MLP `wo relu(wi x)`. */
  #mlp(wi: string, wo: string, x: Float64Array): Float64Array {
    const { dModel: d, dFf: f } = this.config;
    const h = matvec(this.#w(wi), f, d, x).map((v) => Math.max(v, 0));
    return matvec(this.#w(wo), d, f, h);
  }

  /** The feed-forward block's output (without the residual); records a sparse layer's routing. */
  #ffn(ffn: SwitchFfnNames, x: Rows, layer: number, routes: SwitchRoute[]): Rows {
    const n = x.map((r) => rmsNorm(r, this.#w(ffn.norm), this.config.eps));
    if (ffn.kind === "dense") return n.map((r) => this.#mlp(ffn.wi, ffn.wo, r));
    const { experts: E, dModel: d } = this.config;
    const route: SwitchRoute = { layer, expert: [], prob: [] };
    const out = n.map((r) => {
      const logits = matvec(this.#w(ffn.router), E, d, r);
      if (ffn.routerBias) logits.forEach((_, e) => logits[e] += this.#w(ffn.routerBias!)[e]);
      let best = 0;
      for (let e = 1; e < E; e++) if (logits[e] > logits[best]) best = e;
      let sum = 0;
      for (let e = 0; e < E; e++) sum += Math.exp(logits[e] - logits[best]);
      const p = 1 / sum;
      route.expert.push(best);
      route.prob.push(p);
      const y = this.#mlp(ffn.expert(best).wi, ffn.expert(best).wo, r);
      return y.map((v) => v * p);
    });
    routes.push(route);
    return out;
  }

  /** The encoder's output `[T][dModel]` (after its final norm) for `ids`. */
  encode(ids: readonly number[]): Rows {
    this.routes.encoder = [];
    const layers = this.#names.encoder;
    const x = this.#embedRows(ids);
    layers.forEach((l, i) => {
      const n = x.map((r) => rmsNorm(r, this.#w(l.selfNorm), this.config.eps));
      addInto(x, this.#attention(l.self, n, n, this.#bias(layers, i, true), false));
      addInto(x, this.#ffn(l.ffn, x, i, this.routes.encoder));
    });
    return x.map((r) => rmsNorm(r, this.#w(this.#names.encoderFinalNorm), this.config.eps));
  }

  /** The logits `[T_dec][vocab]` of the decoder over `ids` (teacher-forced) given the encoder output. */
  decode(encoderOut: Rows, ids: readonly number[]): Rows {
    this.routes.decoder = [];
    const layers = this.#names.decoder;
    const eps = this.config.eps;
    const y = this.#embedRows(ids);
    layers.forEach((l, i) => {
      let n = y.map((r) => rmsNorm(r, this.#w(l.selfNorm), eps));
      addInto(y, this.#attention(l.self, n, n, this.#bias(layers, i, false), true));
      n = y.map((r) => rmsNorm(r, this.#w(l.crossNorm!), eps));
      addInto(y, this.#attention(l.cross!, n, encoderOut, undefined, false));
      addInto(y, this.#ffn(l.ffn, y, i, this.routes.decoder));
    });
    const { vocabSize: V, dModel: d, headScale } = this.config;
    const head = this.#w(this.#names.lmHead ?? this.#embed);
    return y.map((r) => {
      const h = rmsNorm(r, this.#w(this.#names.decoderFinalNorm), eps).map((v) => v * headScale);
      return matvec(head, V, d, h);
    });
  }

  /** Teacher-forced logits `[T_dec][vocab]` for the decoder ids given the encoder ids. */
  logits(encoderIds: readonly number[], decoderIds: readonly number[]): number[][] {
    return this.decode(this.encode(encoderIds), decoderIds).map((r) => Array.from(r));
  }

  /**
   * Greedy decoding from `decoder_start_token_id`: up to `maxTokens` tokens (argmax, the lowest id
   * on ties), ending after the first EOS when `stopAtEos`. The start token is not returned.
   * @throws {ConfigError} when the config names no decoder start token.
   */
  greedy(encoderIds: readonly number[], maxTokens: number, stopAtEos = true): number[] {
    const start = this.config.decoderStartTokenId;
    if (start === null) {
      throw new ConfigError(
        "config.json: 'decoder_start_token_id' is not set (nor bos_token_id): cannot generate",
        "Switch checkpoints start from the pad token: set decoder_start_token_id to 0",
      );
    }
    const enc = this.encode(encoderIds);
    const seq = [start];
    for (let i = 0; i < maxTokens; i++) {
      const last = this.decode(enc, seq).at(-1)!;
      let best = 0;
      for (let v = 1; v < last.length; v++) if (last[v] > last[best]) best = v;
      seq.push(best);
      if (stopAtEos && this.config.eosTokenIds.includes(best)) break;
    }
    return seq.slice(1);
  }
}
