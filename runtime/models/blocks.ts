/**
 * The shared building blocks of the decoder forward passes, from which each architecture file
 * (`arch/*.ts`) assembles its {@linkcode ForwardPlan}: embedding, the attention block's pieces
 * (input norm, q/k/v projections, their optional bias, q/k norms and clamp, RoPE + KV cache +
 * attention + output projection), a dense SwiGLU feed-forward block, a MoE feed-forward block split
 * where routing becomes known (route, pre-gate, experts, and the round / finish pair for batches
 * whose experts do not fit the slots at once), and the head (final norm, LM head).
 *
 * Every block returns the steps (dispatches and copies) it records; nothing is submitted here.
 * Building allocates uniform buffers once; replaying a plan allocates nothing. Fused kernels keep
 * the dispatch count down (a Mixtral decode layer is 10 dispatches: norm, qkv, rope + KV append,
 * attention, o_proj, norm, router, top-k, expert gate/up, expert down + combine); each computes
 * exactly what the unfused kernels compute.
 *
 * Shape legend (see `state.ts`): T tokens in the pass, H hidden, D head width, Q = heads * D,
 * KV = kvHeads * D.
 *
 * @example
 * ```ts ignore
 * const b = new DecoderBlocks(gpu, cfg, weights, state, { T: 1, logits: "last" });
 * const attention = [await b.attentionNorm(0), ...await b.qkv(0), ...await b.selfAttention(0)];
 * ```
 * @module
 */
import type { Dispatch, Gpu, Step } from "../base/gpu/device.ts";
import { ArgumentError } from "../base/errors.ts";
import { linear } from "../../kernels/linear.ts";
import { rmsnorm } from "../../kernels/norm.ts";
import { ropeKv } from "../../kernels/rope.ts";
import { attention } from "../../kernels/attention.ts";
import { embed } from "../../kernels/embedding.ts";
import { activation, gatedActivation } from "../../kernels/activation.ts";
import { addBias } from "../../kernels/elementwise.ts";
import { QKV_MAX_T, qkvBias, qkvClamp, qkvProj } from "../../kernels/qkv.ts";
import { routerTopK } from "../../kernels/router.ts";
import { moeDownCombine, moeGateUp } from "../../kernels/moe.ts";
import { llamaCppActivationFormat, roundActivations } from "../../kernels/round_activations.ts";
import {
  matvecQ8K,
  Q8K_MAX_ROWS,
  type Q8KWeightType,
  quantizeQ8K,
} from "../../kernels/q8k_gemv.ts";
import { DTYPE_BYTES } from "../base/dtype.ts";
import { isQuantType, type WeightType } from "../weights/weight_type.ts";
import type { ModelConfig, MoeFfn } from "./model_config.ts";
import type { GpuMatrix, GpuMlp, LayerWeights, ModelWeights } from "./gpu_weights.ts";
import type { ForwardOptions, LayerPlan, MoePlan } from "./plan.ts";
import type { RunState } from "./state.ts";

/** The weights of a MoE feed-forward block. */
export type MoeWeights = Extract<LayerWeights["ffn"], { kind: "moe" }>;

/** A shared expert (Qwen2-MoE): a SwiGLU MLP and its sigmoid gate `[1, H]`. */
export type SharedExpert = GpuMlp & { readonly gateWeight: GpuMatrix };

/**
 * The blocks of one forward pass over `opts.T` tokens of the model `cfg`, with weights `w` and run
 * state `s` (see the module documentation).
 *
 * @example
 * ```ts ignore
 * const b = new DecoderBlocks(gpu, cfg, weights, state, { T: ids.length, logits: "all" });
 * const plan = { T: ids.length, embed: await b.embed(), layers: [], head: await b.head() };
 * ```
 */
export class DecoderBlocks {
  /** Tokens in the pass. */
  readonly T: number;

  /** Blocks for one pass; `opts` carries the executor's hooks (expert pools, routing, pre-gate). */
  constructor(
    readonly gpu: Gpu,
    readonly cfg: ModelConfig,
    readonly w: ModelWeights,
    readonly s: RunState,
    readonly opts: ForwardOptions,
  ) {
    this.T = opts.T;
  }

  /**
   * The input of a product with weights of `type`: `x` itself, or with `activations: "llama.cpp"`
   * `x` [rows, K] rounded as llama.cpp rounds activations for `type`, in `state.rounded` (each
   * product rounds its own input: the buffer is reused by the next one).
   */
  async #input(
    x: GPUBuffer,
    rows: number,
    K: number,
    type: WeightType,
  ): Promise<{ steps: Step[]; x: GPUBuffer }> {
    const format = this.opts.activations === "llama.cpp" ? llamaCppActivationFormat(type) : null;
    if (!format) return { steps: [], x };
    const out = this.s.rounded;
    return { steps: [await roundActivations(this.gpu, { x, out, rows, K, format })], x: out };
  }

  /** `y (+)= x m^T` over `rows` rows (its input rounded first, see `#input`). */
  #linear(
    x: GPUBuffer,
    m: GpuMatrix,
    y: GPUBuffer,
    accumulate = false,
    rows = this.T,
  ): Promise<Step[]> {
    return this.#linears(x, [{ m, y }], accumulate, rows);
  }

  /**
   * `y (+)= x m^T` for several matrices of the same input (q, k, v; gate, up): the input is
   * rounded once when their weight types round it alike, else before each product.
   */
  async #linears(
    x: GPUBuffer,
    products: readonly { m: GpuMatrix; y: GPUBuffer }[],
    accumulate = false,
    rows = this.T,
  ): Promise<Step[]> {
    if (this.#q8kProducts(products, rows)) return this.#linearsQ8K(x, products, accumulate, rows);
    const format = llamaCppActivationFormat(products[0].m.dtype);
    const shared = products.every(({ m }) => llamaCppActivationFormat(m.dtype) === format);
    const steps: Step[] = [];
    let input: { steps: Step[]; x: GPUBuffer } | null = null;
    for (const { m, y } of products) {
      if (!input || !shared) {
        input = await this.#input(x, rows, m.cols, m.dtype);
        steps.push(...input.steps);
      }
      steps.push(
        await linear(this.gpu, {
          x: input.x,
          w: m.buffer,
          y,
          T: rows,
          K: m.cols,
          N: m.rows,
          dtype: m.dtype,
          accumulate,
        }),
      );
    }
    return steps;
  }

  /**
   * Whether these products run on llama.cpp's Q8_K activations as integer dot products: with
   * `activations: "llama.cpp"`, when decoding (`rows` <= 8) with Q4_K / Q5_K weights only.
   */
  #q8kProducts(products: readonly { m: GpuMatrix }[], rows: number): boolean {
    return this.opts.activations === "llama.cpp" && rows <= Q8K_MAX_ROWS &&
      products.every(({ m }) => m.dtype === "q4_k" || m.dtype === "q5_k");
  }

  /** `y (+)= x m^T` for Q4_K / Q5_K matrices of one input, quantised once to Q8_K. */
  async #linearsQ8K(
    x: GPUBuffer,
    products: readonly { m: GpuMatrix; y: GPUBuffer }[],
    accumulate: boolean,
    rows: number,
  ): Promise<Step[]> {
    const { q8kValues: xq, q8kScales: xd } = this.s, K = products[0].m.cols;
    const steps: Step[] = [await quantizeQ8K(this.gpu, { x, xq, xd, rows, K })];
    for (const { m, y } of products) {
      const type = m.dtype as Q8KWeightType;
      steps.push(
        await matvecQ8K(this.gpu, {
          xq,
          xd,
          w: m.buffer,
          y,
          T: rows,
          K,
          N: m.rows,
          type,
          accumulate,
        }),
      );
    }
    return steps;
  }

  /** `out = rmsnorm(x) * weight` over `rows` rows of `dim` values. */
  #norm(x: GPUBuffer, weight: GPUBuffer, out: GPUBuffer, rows: number, dim: number) {
    return rmsnorm(this.gpu, { x, weight, out, rows, dim, eps: this.cfg.rmsEps });
  }

  /** The weights of layer `i`'s MoE block (a typed error when the layer is dense). */
  moeWeights(i: number): MoeWeights {
    const f = this.w.layers[i].ffn;
    if (f.kind !== "moe") {
      throw new ArgumentError("weights", `layer ${i} has dense weights where its config says MoE`);
    }
    return f;
  }

  /** x [T, H] = embedding rows of state.ids. */
  async embed(): Promise<Step[]> {
    const { w, s } = this;
    return [
      await embed(this.gpu, {
        table: w.embed.buffer,
        ids: s.ids,
        out: s.x,
        T: this.T,
        dim: this.cfg.hidden,
        dtype: w.embed.dtype,
        vocab: this.cfg.vocabSize,
      }),
    ];
  }

  /** h [T, H] = rmsnorm(x) with layer `i`'s input norm. */
  attentionNorm(i: number): Promise<Dispatch> {
    return this.#norm(this.s.x, this.w.layers[i].inputNorm, this.s.h, this.T, this.cfg.hidden);
  }

  /**
   * q [T, Q], k [T, KV], v [T, KV] = h Wq^T, h Wk^T, h Wv^T: one fused GEMV when decoding (T <= 8,
   * one dtype), three tiled matmuls for prefill.
   */
  async qkv(i: number): Promise<Step[]> {
    const lw = this.w.layers[i], s = this.s, T = this.T, dtype = lw.q.dtype;
    if (
      T <= QKV_MAX_T && !isQuantType(dtype) && lw.k.dtype === dtype && lw.v.dtype === dtype
    ) {
      const input = await this.#input(s.h, T, this.cfg.hidden, dtype);
      return [
        ...input.steps,
        await qkvProj(this.gpu, {
          x: input.x,
          wq: lw.q.buffer,
          wk: lw.k.buffer,
          wv: lw.v.buffer,
          q: s.q,
          k: s.k,
          v: s.v,
          T,
          K: this.cfg.hidden,
          Nq: lw.q.rows,
          Nkv: lw.k.rows,
          dtype,
        }),
      ];
    }
    return this.#linears(s.h, [{ m: lw.q, y: s.q }, { m: lw.k, y: s.k }, { m: lw.v, y: s.v }]);
  }

  /** q += bq, k += bk, v += bv (layer `i`'s projection biases). */
  qkvBias(i: number): Promise<Dispatch> {
    const b = this.w.layers[i].bias;
    if (!b) throw new ArgumentError("weights", `layer ${i} has no q/k/v biases`);
    const { s, cfg } = this;
    return qkvBias(this.gpu, {
      q: s.q,
      k: s.k,
      v: s.v,
      bq: b.q,
      bk: b.k,
      bv: b.v,
      T: this.T,
      Nq: cfg.heads * cfg.headDim,
      Nkv: cfg.kvHeads * cfg.headDim,
    });
  }

  /** q, k = rmsnorm of each head of q and of k over D (layer `i`'s q/k norms of width D). */
  async qkNormPerHead(i: number): Promise<Step[]> {
    const n = this.#qkNorm(i), { s, cfg, T } = this;
    return [
      await this.#norm(s.q, n.q, s.q, T * cfg.heads, cfg.headDim),
      await this.#norm(s.k, n.k, s.k, T * cfg.kvHeads, cfg.headDim),
    ];
  }

  /** q, k = rmsnorm of each token's whole q [Q] and k [KV] (layer `i`'s q/k norms of width Q, KV). */
  async qkNormFull(i: number): Promise<Step[]> {
    const n = this.#qkNorm(i), { s, cfg, T } = this;
    return [
      await this.#norm(s.q, n.q, s.q, T, cfg.heads * cfg.headDim),
      await this.#norm(s.k, n.k, s.k, T, cfg.kvHeads * cfg.headDim),
    ];
  }

  #qkNorm(i: number) {
    const n = this.w.layers[i].qkNorm;
    if (!n) throw new ArgumentError("weights", `layer ${i} has no q/k norm weights`);
    return n;
  }

  /** q, k, v = clamp(q, k, v, -clip, clip). */
  qkvClamp(clip: number): Promise<Dispatch> {
    const { s, cfg } = this;
    return qkvClamp(this.gpu, {
      q: s.q,
      k: s.k,
      v: s.v,
      T: this.T,
      Nq: cfg.heads * cfg.headDim,
      Nkv: cfg.kvHeads * cfg.headDim,
      clip,
    });
  }

  /**
   * x += o_proj(attention(rope(q), rope(k), v)): RoPE (neox, the first rotaryDim dims of each head)
   * on q and k with k and v appended to layer `i`'s cache, causal grouped-query attention over the
   * cache (scale 1/sqrt(D)), the output projection accumulated into the residual stream.
   */
  async selfAttention(i: number): Promise<Step[]> {
    const { gpu, cfg, s, T } = this;
    const D = cfg.headDim;
    // llama.cpp's f16 KV cache and CPU flash attention, with its activation rounding.
    const llamaCpp = this.opts.activations === "llama.cpp";
    return [
      await ropeKv(gpu, {
        q: s.q,
        k: s.k,
        v: s.v,
        kCache: s.kCache[i],
        vCache: s.vCache[i],
        pos: s.pos,
        T,
        nHeads: cfg.heads,
        nKvHeads: cfg.kvHeads,
        headDim: D,
        maxSeq: s.maxSeq,
        rotaryDim: cfg.rotaryDim,
        theta: cfg.ropeTheta,
        f16Cache: llamaCpp,
      }),
      await attention(gpu, {
        q: s.q,
        kCache: s.kCache[i],
        vCache: s.vCache[i],
        out: s.attn,
        pos: s.pos,
        T,
        nHeads: cfg.heads,
        nKvHeads: cfg.kvHeads,
        headDim: D,
        maxSeq: s.maxSeq,
        scale: 1 / Math.sqrt(D),
        causal: true,
        ...(llamaCpp ? { variant: "llama.cpp" as const } : {}),
      }),
      ...await this.#linear(s.attn, this.w.layers[i].o, s.x, true),
    ];
  }

  /**
   * `out (+)= down(silu(gate(h)) * up(h))`, or `out (+)= wo(relu(wi(h)))` for a ReLU MLP (no up):
   * decode as a one-expert MoE, prefill as matmuls.
   */
  async #mlp(m: GpuMlp, out: GPUBuffer, accumulate: boolean): Promise<Step[]> {
    const s = this.s, T = this.T, up = m.up, dtype = m.gate.dtype;
    // (Block-quantised weights take the matmul path: their GEMVs are the linear ones.)
    if (T <= QKV_MAX_T && !isQuantType(dtype) && (!up || up.dtype === dtype)) {
      const input = await this.#input(s.h, T, this.cfg.hidden, dtype);
      return [
        // gate, up and SwiGLU (or wi and ReLU) in one dispatch: expert 0 in slot 0 of a one-expert MoE.
        ...input.steps,
        await moeGateUp(this.gpu, {
          table: s.zeros,
          ids: s.zeros,
          experts: 1,
          T,
          topK: 1,
          hidden: this.cfg.hidden,
          inter: m.gate.rows,
          dtype,
          slotWords: (m.gate.rows * m.gate.cols * DTYPE_BYTES[dtype]) / 4,
          x: input.x,
          gate: m.gate.buffer,
          up: up?.buffer,
          act: up ? "swiglu" : "relu",
          out: s.mlpAct,
        }),
        ...await this.#linear(s.mlpAct, m.down, out, accumulate),
      ];
    }
    const n = T * m.gate.rows;
    const gate = { m: m.gate, y: s.mlpGate };
    const act = up
      ? gatedActivation(this.gpu, { gate: s.mlpGate, up: s.mlpUp, out: s.mlpAct, n, kind: "silu" })
      : activation(this.gpu, { x: s.mlpGate, out: s.mlpAct, n, kind: "relu" });
    return [
      ...await this.#linears(s.h, up ? [gate, { m: up, y: s.mlpUp }] : [gate]),
      await act,
      ...await this.#linear(s.mlpAct, m.down, out, accumulate),
    ];
  }

  /** x += mlp(rmsnorm(x)): layer `i`'s dense SwiGLU feed-forward block. */
  async denseFfn(i: number): Promise<LayerPlan["ffn"]> {
    const lw = this.w.layers[i], s = this.s;
    if (lw.ffn.kind !== "dense") {
      throw new ArgumentError("weights", `layer ${i} has MoE weights where its config says dense`);
    }
    return {
      kind: "dense",
      steps: [
        await this.#norm(s.x, lw.postNorm, s.h, this.T, this.cfg.hidden),
        ...await this.#mlp(lw.ffn, s.x, true),
      ],
    };
  }

  /**
   * x += sum_j w_j expert_j(h) (+ sigmoid(h . g) shared(h) when `shared` is given), h = rmsnorm(x):
   * layer `i`'s MoE feed-forward block in the segments the executors run (see {@linkcode MoePlan}).
   * The experts are read through the expert pool the executor hands over (`opts.pool`, default the
   * layer's resident pool); the routing is the layer's own router's unless `opts.routing` replaces
   * it; `opts.pregate` adds the next MoE layer's predicted routing.
   */
  async moeFfn(i: number, extra: { shared?: SharedExpert } = {}): Promise<LayerPlan["ffn"]> {
    const { gpu, s, T, opts } = this;
    const H = this.cfg.hidden;
    const lw = this.w.layers[i], f = this.moeWeights(i), fc = this.cfg.layers[i].ffn;
    if (fc.kind !== "moe") {
      throw new ArgumentError("cfg", `layer ${i} is dense: it has no MoE block`);
    }
    const pool = opts.pool?.(i) ?? f.pool;
    if (!pool) {
      throw new ArgumentError(
        "pool",
        `layer ${i}: no expert pool (the experts were not uploaded and no pool was given)`,
      );
    }
    // ---- route: h = rmsnorm(x); router logits; top-k ids and weights
    const route: Step[] = [
      await this.#norm(s.x, lw.postNorm, s.h, T, H),
      ...await this.#linear(s.h, f.router, s.routerLogits),
      ...(f.routerBias
        ? [await addBias(gpu, { x: s.routerLogits, bias: f.routerBias, rows: T, n: fc.experts })]
        : []),
      await this.#topK(s.routerLogits, s.topIds, s.topWeights, fc),
    ];
    // ---- pre-gate: the next MoE layer's routing predicted from this layer's h
    const pg = opts.pregate?.(i);
    const pregate: Step[] = pg
      ? [
        ...await this.#linear(s.h, pg.router, pg.logits),
        await this.#topK(pg.logits, pg.ids, pg.weights, pg.next),
      ]
      : [];
    const routing = opts.routing?.(i) ?? { ids: s.topIds, weights: s.topWeights };
    const moeArgs = {
      table: pool.table,
      ids: routing.ids,
      T,
      topK: fc.topK,
      hidden: H,
      inter: fc.inter,
      dtype: pool.dtype,
    };
    const gateUp = async (missing: "nan" | "skip"): Promise<Step[]> => {
      const input = await this.#input(s.h, T, H, pool.dtype);
      return [
        ...input.steps,
        await moeGateUp(gpu, {
          ...moeArgs,
          x: input.x,
          gate: pool.gate,
          up: pool.up ?? undefined,
          act: pool.up ? "swiglu" : "relu",
          out: s.moeH,
          slotWords: pool.bytes.gateUp / 4,
          missing,
        }),
      ];
    };

    const shared: Step[] = [];
    if (extra.shared) {
      shared.push(
        ...await this.#mlp(extra.shared, s.sharedOut, false),
        ...await this.#linear(s.h, extra.shared.gateWeight, s.sharedGate),
      );
    }
    const downArgs = {
      ...moeArgs,
      dtype: pool.downDtype,
      down: pool.down,
      slotWords: pool.bytes.down / 4,
      weights: routing.weights,
      out: s.x,
      shared: extra.shared ? { out: s.sharedOut, gate: s.sharedGate } : undefined,
    };
    // ---- experts, one pass: x += sum_j w_j * down_j(h_j) (+ shared), no [T * k, H] intermediate
    // The expert outputs' input: moeH [T * k, I], rounded for the down projections.
    const down = await this.#input(s.moeH, T * fc.topK, fc.inter, pool.downDtype);
    const experts: Step[] = [
      ...await gateUp("nan"),
      ...shared,
      ...down.steps,
      await moeDownCombine(gpu, { ...downArgs, x: down.x }),
    ];
    // ---- in rounds: each round writes its pairs' expert outputs to moeY, finish combines them
    // (the same pipeline as the one pass, so the same bits)
    const round: Step[] = [
      ...await gateUp("skip"),
      ...down.steps,
      await moeDownCombine(gpu, {
        ...moeArgs,
        dtype: pool.downDtype,
        down: pool.down,
        slotWords: pool.bytes.down / 4,
        x: down.x,
        out: s.moeY,
        mode: "round",
      }),
    ];
    const finish: Step[] = [
      ...shared,
      await moeDownCombine(gpu, { ...downArgs, x: s.moeY, mode: "finish" }),
    ];
    const plan: MoePlan = { route, pregate, experts, round, finish, ffn: fc };
    return { kind: "moe", ...plan };
  }

  /** Softmax top-k of `logits` [T, E] into `ids` / `weights` [T, k]. */
  #topK(logits: GPUBuffer, ids: GPUBuffer, weights: GPUBuffer, m: MoeFfn) {
    return routerTopK(this.gpu, {
      logits,
      ids,
      weights,
      T: this.T,
      E: m.experts,
      k: m.topK,
      renormalize: m.renormalize,
    });
  }

  /** logits = lm_head(rmsnorm(x)) for every row, or for the last row only (`opts.logits`). */
  async head(): Promise<Step[]> {
    const { w, s, T } = this;
    const H = this.cfg.hidden;
    if (this.opts.logits === "all") {
      return [
        await this.#norm(s.x, w.finalNorm, s.h, T, H),
        ...await this.#linear(s.h, w.lmHead, s.logits),
      ];
    }
    return [
      { src: s.x, srcOffset: (T - 1) * H * 4, dst: s.last, dstOffset: 0, size: H * 4 },
      await this.#norm(s.last, w.finalNorm, s.h, 1, H),
      ...await this.#linear(s.h, w.lmHead, s.logits, false, 1),
    ];
  }
}
