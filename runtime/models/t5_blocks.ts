/**
 * The blocks of a T5-style encoder-decoder (Switch Transformers) that the decoder blocks
 * (`blocks.ts`) do not have, with the weights and run state they need beside {@linkcode ModelWeights}
 * and {@linkcode RunState}: self-attention without rotary embeddings, with T5's relative position
 * bias and no `1/sqrt(d)` scale (bidirectional over the encoder's tokens, causal in the decoder),
 * the decoder's cross-attention over the encoder's output, and the encoder's last step: its final
 * norm and every decoder layer's cross-attention keys and values, computed once per input.
 *
 * Layers are model layers: the encoder's first, then the decoder's (`ModelConfig.stacks`). Shape
 * legend as in `state.ts`; Te encoder tokens, Q = heads * headDim.
 *
 * @example
 * ```ts ignore
 * const t5 = new T5Blocks(gpu, cfg, weights, state, { T: 1, logits: "last", encoderLength: 20 });
 * const attention = [...await t5.selfAttention(6, true), ...await t5.crossAttention(6)];
 * ```
 * @module
 */
import type { Gpu, Step } from "../base/gpu/device.ts";
import { ArgumentError } from "../base/errors.ts";
import { linear } from "../../kernels/linear.ts";
import { rmsnorm } from "../../kernels/norm.ts";
import { attention, kvAppend } from "../../kernels/attention.ts";
import type { LayerStack, ModelConfig } from "./model_config.ts";
import type { GpuMatrix, ModelWeights } from "./gpu_weights.ts";
import type { ForwardOptions } from "./plan.ts";
import { allocState, type RunState, type StateSizes } from "./state.ts";

/** A decoder layer's cross-attention: its norm and projections (`[Q, H]`; `o` is `[H, Q]`). */
export interface CrossAttentionWeights {
  readonly norm: GPUBuffer;
  readonly q: GpuMatrix;
  readonly k: GpuMatrix;
  readonly v: GpuMatrix;
  readonly o: GpuMatrix;
}

/** An encoder-decoder's weights: the layers' as {@linkcode ModelWeights}, and these beside them. */
export interface T5Weights extends ModelWeights {
  /** f32 [H]: the encoder's final norm (ModelWeights.finalNorm is the decoder's). */
  readonly encoderFinalNorm: GPUBuffer;
  /**
   * Per model layer: the relative position bias table its self-attention adds, f32
   * `[heads, 2 * relMaxDistance + 1]` (`kernels/relative_bias.ts`; one per stack), or null.
   */
  readonly relativeBias: readonly (GPUBuffer | null)[];
  /** The distance at which the bias saturates. */
  readonly relMaxDistance: number;
  /** Per model layer: a decoder layer's cross-attention (null in the encoder). */
  readonly cross: readonly (CrossAttentionWeights | null)[];
}

/** An encoder-decoder's run state: the decoder's, and these beside it. */
export interface T5State extends RunState {
  /** Most encoder tokens (encoder layers' KV caches hold this many positions). */
  readonly maxEncoder: number;
  /** Per model layer: f32 [heads, maxEncoder, headDim] cross-attention keys / values (null in the encoder). */
  readonly crossK: readonly (GPUBuffer | null)[];
  readonly crossV: readonly (GPUBuffer | null)[];
}

/** The stack of model layer `i`. */
export function stackOf(cfg: ModelConfig, i: number): LayerStack {
  const stack = cfg.stacks?.find((s) => i >= s.first && i < s.first + s.count);
  if (!stack) {
    throw new ArgumentError("layer", `layer ${i} is in no stack of this ${cfg.arch} model`);
  }
  return stack;
}

/**
 * Allocates a {@linkcode T5State}: passes of up to max(maxT, maxEncoder) tokens (the encoder runs
 * over all its tokens at once), encoder KV caches of `maxEncoder` positions, decoder ones of
 * `maxSeq`, and each decoder layer's cross-attention keys and values.
 *
 * @example
 * ```ts ignore
 * const state = allocT5State(gpu, cfg, { maxT: 128, maxSeq: 512, maxEncoder: 512 });
 * ```
 */
export function allocT5State(
  gpu: Gpu,
  cfg: ModelConfig,
  sizes: StateSizes & { maxEncoder: number },
): T5State {
  const { maxEncoder, maxSeq } = sizes;
  const encoder = (i: number) => stackOf(cfg, i).name === "encoder";
  const base = allocState(gpu, cfg, {
    maxT: Math.max(sizes.maxT, maxEncoder),
    maxSeq,
    logitRows: sizes.logitRows ?? sizes.maxT,
    kvPositions: (i) => (encoder(i) ? maxEncoder : maxSeq),
  });
  const bytes = cfg.kvHeads * cfg.headDim * maxEncoder * 4;
  const cross = (name: string) =>
    cfg.layers.map((_, i) => (encoder(i) ? null : gpu.storage("kv", bytes, `${name}.${i}`)));
  return { ...base, maxEncoder, crossK: cross("cross_k"), crossV: cross("cross_v") };
}

/**
 * The T5 blocks of one pass over `opts.T` tokens (see the module documentation). Every block
 * returns the steps it records; nothing is submitted here.
 *
 * @example
 * ```ts ignore
 * const t5 = new T5Blocks(gpu, cfg, weights, state, { T: 20, logits: "last" });
 * const last = await t5.crossKeysValues(); // the encoder pass's end
 * ```
 */
export class T5Blocks {
  /** Tokens in the pass. */
  readonly T: number;

  /** Blocks for one pass over `opts.T` tokens. */
  constructor(
    readonly gpu: Gpu,
    readonly cfg: ModelConfig,
    readonly w: T5Weights,
    readonly s: T5State,
    readonly opts: ForwardOptions,
  ) {
    this.T = opts.T;
  }

  #linear(x: GPUBuffer, m: GpuMatrix, y: GPUBuffer, accumulate = false) {
    return linear(this.gpu, {
      x,
      w: m.buffer,
      y,
      T: this.T,
      K: m.cols,
      N: m.rows,
      dtype: m.dtype,
      accumulate,
    });
  }

  #cross(i: number): CrossAttentionWeights {
    const c = this.w.cross[i];
    if (!c) {
      throw new ArgumentError("layer", `layer ${i} has no cross-attention (an encoder layer)`);
    }
    return c;
  }

  /**
   * x += o(attention(q, k, v) + bias): k and v (state.k, state.v) appended to layer `i`'s cache,
   * attention with scale 1 and the layer's relative position bias, if it has one; `causal` (the
   * decoder: query t at position pos[0] + t sees the cache up to itself) or not (the encoder: every
   * token of the pass sees every other, at positions 0..T-1).
   */
  async selfAttention(i: number, causal: boolean): Promise<Step[]> {
    const { gpu, cfg, s, T } = this;
    const maxSeq = causal ? s.maxSeq : s.maxEncoder;
    const pos = causal ? s.pos : s.zeros; // the encoder's tokens start at position 0
    const table = this.w.relativeBias[i];
    const shape = { nKvHeads: cfg.kvHeads, headDim: cfg.headDim, maxSeq };
    return [
      await kvAppend(gpu, {
        k: s.k,
        v: s.v,
        kCache: s.kCache[i],
        vCache: s.vCache[i],
        pos,
        T,
        ...shape,
      }),
      await attention(gpu, {
        q: s.q,
        kCache: s.kCache[i],
        vCache: s.vCache[i],
        out: s.attn,
        pos,
        T,
        nHeads: cfg.heads,
        ...shape,
        scale: 1, // Quirk (T5): no 1/sqrt(d) scaling of the scores
        causal,
        kvLen: causal ? undefined : T,
        relativeBias: table ? { table, maxDistance: this.w.relMaxDistance } : undefined,
      }),
      await this.#linear(s.attn, this.w.layers[i].o, s.x, true),
    ];
  }

  /**
   * x += o(attention(q(rmsnorm(x)), K, V)): decoder layer `i`'s cross-attention over the encoder's
   * `opts.encoderLength` tokens (keys and values from {@linkcode crossKeysValues}), scale 1, no
   * bias.
   */
  async crossAttention(i: number): Promise<Step[]> {
    const { gpu, cfg, s, T } = this;
    const c = this.#cross(i);
    const kvLen = this.opts.encoderLength;
    if (kvLen === undefined) {
      throw new ArgumentError("encoderLength", "the decoder's pass needs the encoder's length");
    }
    return [
      await rmsnorm(gpu, {
        x: s.x,
        weight: c.norm,
        out: s.h,
        rows: T,
        dim: cfg.hidden,
        eps: cfg.rmsEps,
      }),
      await this.#linear(s.h, c.q, s.q),
      await attention(gpu, {
        q: s.q,
        kCache: s.crossK[i]!,
        vCache: s.crossV[i]!,
        out: s.attn,
        T,
        nHeads: cfg.heads,
        nKvHeads: cfg.kvHeads,
        headDim: cfg.headDim,
        maxSeq: s.maxEncoder,
        scale: 1,
        causal: false,
        kvLen,
      }),
      await this.#linear(s.attn, c.o, s.x, true),
    ];
  }

  /**
   * The encoder pass's end: h = rmsnorm(x) with the encoder's final norm (the encoder's output),
   * then every decoder layer's cross-attention keys and values, `h Wk^T` and `h Wv^T`, into its
   * cross caches at positions 0..T-1.
   */
  async crossKeysValues(): Promise<Step[]> {
    const { gpu, cfg, s, T } = this;
    const steps: Step[] = [
      await rmsnorm(gpu, {
        x: s.x,
        weight: this.w.encoderFinalNorm,
        out: s.h,
        rows: T,
        dim: cfg.hidden,
        eps: cfg.rmsEps,
      }),
    ];
    for (let i = 0; i < cfg.layers.length; i++) {
      const c = this.w.cross[i];
      if (!c) continue;
      steps.push(
        await this.#linear(s.h, c.k, s.k),
        await this.#linear(s.h, c.v, s.v),
        await kvAppend(gpu, {
          k: s.k,
          v: s.v,
          kCache: s.crossK[i]!,
          vCache: s.crossV[i]!,
          pos: s.zeros,
          T,
          nKvHeads: cfg.kvHeads,
          headDim: cfg.headDim,
          maxSeq: s.maxEncoder,
        }),
      );
    }
    return steps;
  }
}
