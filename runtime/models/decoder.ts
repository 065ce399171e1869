/**
 * The forward pass of the Llama-style MoE decoders: Mixtral, Qwen2-MoE, Qwen3-MoE and OLMoE. They
 * share one structure (pre-norm attention with RoPE and grouped-query heads, then a pre-norm SwiGLU
 * feed-forward that is either dense or a top-k mixture of experts); their differences are the
 * marked quirks below, driven by the parsed config:
 *
 * - Qwen2-MoE: bias on q/k/v; a shared expert gated by sigmoid(w . h) beside the routed experts;
 *   some layers dense (`decoder_sparse_step`, `mlp_only_layers`).
 * - Qwen3-MoE: RMSNorm of q and k per head before RoPE; dense layers as Qwen2-MoE.
 * - OLMoE: RMSNorm of q and k over the whole projection before RoPE; top-k weights not renormalised.
 * - Mixtral: none (top-k weights renormalised).
 *
 * The pass is built as a plan: per layer an attention segment and a feed-forward segment split at
 * the router, so the layered executor can run routing, expert uploads and expert compute as it
 * needs (everything in one submit when experts are resident). Building a plan allocates uniform
 * buffers once; replaying it allocates nothing.
 *
 * Fused kernels keep the dispatch count down (a Mixtral decode layer is 10 dispatches: norm, qkv,
 * rope + KV append, attention, o_proj, norm, router, top-k, expert gate/up, expert down + combine);
 * each computes exactly what the unfused kernels compute.
 *
 * @example
 * ```ts ignore
 * const plan = await buildForward(gpu, cfg, weights, state, { T: ids.length, logits: "all" });
 * gpu.submit(flattenPlan(plan));
 * ```
 * @module
 */
import type { Gpu, Step } from "../gpu/device.ts";
import { linear } from "../../kernels/linear.ts";
import { rmsnorm } from "../../kernels/norm.ts";
import { ropeKv } from "../../kernels/rope.ts";
import { attention } from "../../kernels/attention.ts";
import { embed } from "../../kernels/embedding.ts";
import { gatedActivation } from "../../kernels/activation.ts";
import { QKV_MAX_T, qkvBias, qkvProj } from "../../kernels/qkv.ts";
import { routerTopK } from "../../kernels/router.ts";
import { moeDownCombine, moeGateUp } from "../../kernels/moe.ts";
import type { ModelConfig } from "./config.ts";
import type { GpuMatrix, GpuMlp, ModelWeights } from "./weights.ts";
import type { ForwardOptions, ForwardPlan, LayerPlan } from "./plan.ts";
export type { ForwardOptions, ForwardPlan, LayerPlan, MoePlan, PregateSpec } from "./plan.ts";
export { flattenPlan } from "./plan.ts";
import type { RunState } from "./state.ts";
import { DTYPE_BYTES } from "../weights/dtype.ts";

/** Builds the forward plan of `cfg` over `opts.T` tokens at positions state.pos[0]... */
export async function buildForward(
  gpu: Gpu,
  cfg: ModelConfig,
  w: ModelWeights,
  s: RunState,
  opts: ForwardOptions,
): Promise<ForwardPlan> {
  const T = opts.T;
  const H = cfg.hidden, D = cfg.headDim;
  const Q = cfg.heads * D, KV = cfg.kvHeads * D;
  const lin = (x: GPUBuffer, m: GpuMatrix, y: GPUBuffer, accumulate = false, rows = T) =>
    linear(gpu, { x, w: m.buffer, y, T: rows, K: m.cols, N: m.rows, dtype: m.dtype, accumulate });
  const norm = (x: GPUBuffer, weight: GPUBuffer, out: GPUBuffer, rows: number, dim: number) =>
    rmsnorm(gpu, { x, weight, out, rows, dim, eps: cfg.rmsEps });

  /** SwiGLU MLP of h into `out` (accumulating when `accumulate`). */
  const mlp = async (m: GpuMlp, out: GPUBuffer, accumulate: boolean): Promise<Step[]> =>
    T <= QKV_MAX_T && m.up.dtype === m.gate.dtype
      ? [
        // Decode: gate, up and SwiGLU in one dispatch, as a one-expert MoE (expert 0 in slot 0).
        await moeGateUp(gpu, {
          table: s.zeros,
          ids: s.zeros,
          experts: 1,
          T,
          topK: 1,
          hidden: H,
          inter: m.gate.rows,
          dtype: m.gate.dtype,
          slotWords: (m.gate.rows * m.gate.cols * DTYPE_BYTES[m.gate.dtype]) / 4,
          x: s.h,
          gate: m.gate.buffer,
          up: m.up.buffer,
          out: s.mlpAct,
        }),
        await lin(s.mlpAct, m.down, out, accumulate),
      ]
      : [
        await lin(s.h, m.gate, s.mlpGate),
        await lin(s.h, m.up, s.mlpUp),
        await gatedActivation(gpu, {
          gate: s.mlpGate,
          up: s.mlpUp,
          out: s.mlpAct,
          n: T * m.gate.rows,
          kind: "silu",
        }),
        await lin(s.mlpAct, m.down, out, accumulate),
      ];

  const embedSteps: Step[] = [
    await embed(gpu, {
      table: w.embed.buffer,
      ids: s.ids,
      out: s.x,
      T,
      dim: H,
      dtype: w.embed.dtype,
      vocab: cfg.vocabSize,
    }),
  ];

  const layers: LayerPlan[] = [];
  for (let i = 0; i < cfg.layers.length; i++) {
    const lw = w.layers[i];
    // ---- attention: x += o_proj(attn(rope(q), rope(k), v)) over norm(x)
    const att: Step[] = [await norm(s.x, lw.inputNorm, s.h, T, H)];
    if (T <= QKV_MAX_T && lw.k.dtype === lw.q.dtype && lw.v.dtype === lw.q.dtype) {
      att.push(
        await qkvProj(gpu, {
          x: s.h,
          wq: lw.q.buffer,
          wk: lw.k.buffer,
          wv: lw.v.buffer,
          q: s.q,
          k: s.k,
          v: s.v,
          T,
          K: H,
          Nq: Q,
          Nkv: KV,
          dtype: lw.q.dtype,
        }),
      );
    } else { // prefill: three tiled matmuls
      att.push(await lin(s.h, lw.q, s.q), await lin(s.h, lw.k, s.k), await lin(s.h, lw.v, s.v));
    }
    if (lw.bias) { // Qwen2-MoE
      const b = lw.bias;
      att.push(
        await qkvBias(gpu, {
          q: s.q,
          k: s.k,
          v: s.v,
          bq: b.q,
          bk: b.k,
          bv: b.v,
          T,
          Nq: Q,
          Nkv: KV,
        }),
      );
    }
    if (lw.qkNorm && cfg.qkNorm === "head") { // Qwen3-MoE: per head
      att.push(
        await norm(s.q, lw.qkNorm.q, s.q, T * cfg.heads, D),
        await norm(s.k, lw.qkNorm.k, s.k, T * cfg.kvHeads, D),
      );
    } else if (lw.qkNorm) { // OLMoE: whole projection
      att.push(await norm(s.q, lw.qkNorm.q, s.q, T, Q), await norm(s.k, lw.qkNorm.k, s.k, T, KV));
    }
    att.push(
      // RoPE of q and k, k and v appended to the cache.
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
      }),
      await lin(s.attn, lw.o, s.x, true),
    );

    // ---- feed-forward: x += ffn(norm(x))
    let ffn: LayerPlan["ffn"];
    const f = lw.ffn, fc = cfg.layers[i].ffn;
    if (f.kind === "dense") {
      ffn = {
        kind: "dense",
        steps: [await norm(s.x, lw.postNorm, s.h, T, H), ...await mlp(f, s.x, true)],
      };
    } else {
      if (fc.kind !== "moe") throw new Error("unreachable: weights and config disagree");
      const pool = opts.pool?.(i) ?? f.pool;
      if (!pool) throw new Error(`layer ${i}: no expert pool (experts are not resident)`);
      const route: Step[] = [
        await norm(s.x, lw.postNorm, s.h, T, H),
        await lin(s.h, f.router, s.routerLogits),
        await routerTopK(gpu, {
          logits: s.routerLogits,
          ids: s.topIds,
          weights: s.topWeights,
          T,
          E: fc.experts,
          k: fc.topK,
          renormalize: fc.renormalize,
        }),
      ];
      const pg = opts.pregate?.(i);
      const pregate: Step[] = pg
        ? [
          await lin(s.h, pg.router, pg.logits),
          await routerTopK(gpu, {
            logits: pg.logits,
            ids: pg.ids,
            weights: pg.weights,
            T,
            E: pg.next.experts,
            k: pg.next.topK,
            renormalize: pg.next.renormalize,
          }),
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
      const gateUp = (missing: "nan" | "skip") =>
        moeGateUp(gpu, {
          ...moeArgs,
          x: s.h,
          gate: pool.gate,
          up: pool.up,
          out: s.moeH,
          slotWords: pool.bytes.gateUp / 4,
          missing,
        });
      const shared: Step[] = [];
      if (f.shared) { // Qwen2-MoE: shared expert, gated by sigmoid(w . h)
        shared.push(
          ...await mlp(f.shared, s.sharedOut, false),
          await lin(s.h, f.shared.gateWeight, s.sharedGate),
        );
      }
      const downArgs = {
        ...moeArgs,
        down: pool.down,
        slotWords: pool.bytes.down / 4,
        weights: routing.weights,
        out: s.x,
        shared: f.shared ? { out: s.sharedOut, gate: s.sharedGate } : undefined,
      };
      // One pass: x += sum_j w_j * down_j(h_j) (+ shared), without the [T * k, H] intermediate.
      const experts: Step[] = [
        await gateUp("nan"),
        ...shared,
        await moeDownCombine(gpu, { ...downArgs, x: s.moeH }),
      ];
      // In rounds: each round writes its pairs' expert outputs to moeY, finish combines them (the
      // same pipeline as the one pass, so the same bits).
      const round: Step[] = [
        await gateUp("skip"),
        await moeDownCombine(gpu, {
          ...moeArgs,
          down: pool.down,
          slotWords: pool.bytes.down / 4,
          x: s.moeH,
          out: s.moeY,
          mode: "round",
        }),
      ];
      const finish: Step[] = [
        ...shared,
        await moeDownCombine(gpu, { ...downArgs, x: s.moeY, mode: "finish" }),
      ];
      ffn = { kind: "moe", route, pregate, experts, round, finish, ffn: fc };
    }
    layers.push({ attention: att, ffn });
  }

  // ---- head: logits = lm_head(norm(x)) for every row, or for the last row only
  const head: Step[] = [];
  if (opts.logits === "all") {
    head.push(await norm(s.x, w.finalNorm, s.h, T, H), await lin(s.h, w.lmHead, s.logits));
  } else {
    head.push(
      { src: s.x, srcOffset: (T - 1) * H * 4, dst: s.last, dstOffset: 0, size: H * 4 },
      await norm(s.last, w.finalNorm, s.h, 1, H),
      await lin(s.h, w.lmHead, s.logits, false, 1),
    );
  }
  return { T, embed: embedSteps, layers, head };
}
