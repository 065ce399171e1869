/**
 * How big the offloading engine's buffers are: the expert slot pool (from the mode's minimum, the
 * expert cache, the GPU memory budget and the binding limit) and the uploader's staging ring. Pure
 * arithmetic; the engine allocates what these answer.
 *
 * @example
 * ```ts
 * import { poolSlots, stagingPlan } from "./pool_size.ts";
 * const slots = poolSlots({
 *   mode: "pregated", topK: 2, experts: 8, moeLayers: 4, projectionBytes: 1 << 20,
 *   usedBytes: 100 << 20, budget: 256 << 20, expertCache: "auto", maxBindingBytes: 1 << 30,
 * });
 * console.log(slots, stagingPlan(3 << 20, 2)); // 32 { stagingBytes: 6291456, buffers: 3 }
 * ```
 * @module
 */
import { ArgumentError, BudgetError } from "../base/errors.ts";
import { type OffloadMode, SlotAllocator } from "./allocator.ts";

/**
 * What {@linkcode poolSlots} sizes the pool from.
 *
 * @example
 * ```ts
 * import type { PoolSizeInput } from "./pool_size.ts";
 * const input: PoolSizeInput = {
 *   mode: "on-demand", topK: 8, experts: 128, moeLayers: 48, projectionBytes: 3 << 20,
 *   usedBytes: 4 << 30, maxBindingBytes: 2 ** 31,
 * };
 * console.log(input.mode);
 * ```
 */
export interface PoolSizeInput {
  /** The offloading mode (decides the minimum, see `SlotAllocator.minimumSlots`). */
  mode: OffloadMode;
  /** The largest top-k of the MoE layers. */
  topK: number;
  /** Experts per MoE layer. */
  experts: number;
  /** Number of MoE layers. */
  moeLayers: number;
  /** Bytes of the largest projection of one slot (each projection's slots are one binding). */
  projectionBytes: number;
  /** Projections per slot: 3 (gate, up, down; the default) or 2 (a ReLU expert's wi, wo). */
  projections?: 2 | 3;
  /**
   * Bytes of one slot, all its projections (default `projections * projectionBytes`); given when
   * they differ, e.g. a quantised file's Q4_K gate and up beside a Q8_0 down.
   */
  slotBytes?: number;
  /** Bytes already on the device that count against the budget (weights, state, fixed buffers). */
  usedBytes: number;
  /** GPU memory budget in bytes, if any. */
  budget?: number;
  /** Slots beyond the minimum, or `auto`: as many as the budget holds (default 0). */
  expertCache?: number | "auto";
  /** The largest buffer a binding may cover (each projection's slot buffer is one binding). */
  maxBindingBytes: number;
}

/**
 * The number of expert slots: the mode's minimum plus the cache, within the budget and the binding
 * limit (each projection's slot buffer is one binding).
 *
 * @throws {ArgumentError} for a bad `expertCache`, or `auto` without a budget.
 * @throws {BudgetError} when the budget cannot hold the minimum (naming the smallest budget that
 * works) or the cache, or the binding limit is below the minimum.
 *
 * @example
 * ```ts
 * import { poolSlots } from "./pool_size.ts";
 * const base = { mode: "on-demand", topK: 2, experts: 8, moeLayers: 3, projectionBytes: 100 } as const;
 * console.log(poolSlots({ ...base, usedBytes: 0, expertCache: 5, maxBindingBytes: 1e9 })); // 7
 * ```
 */
export function poolSlots(p: PoolSizeInput): number {
  const min = SlotAllocator.minimumSlots(p.topK, p.mode, p.experts);
  const cache = p.expertCache ?? 0;
  if (cache !== "auto" && (!Number.isInteger(cache) || cache < 0)) {
    throw new ArgumentError(
      "expertCache",
      `expected a non-negative integer or 'auto', got ${cache}`,
    );
  }
  if (cache === "auto" && p.budget === undefined) {
    throw new ArgumentError(
      "expertCache",
      "'auto' sizes the cache from the GPU memory budget, and no budget was given",
      "add --budget SIZE (e.g. --budget 8GiB), or give a number of extra slots",
    );
  }
  const bindLimit = Math.floor(p.maxBindingBytes / p.projectionBytes);
  const allExperts = p.experts * p.moeLayers;
  let slots = cache === "auto" ? allExperts : min + cache;
  if (p.budget !== undefined) {
    const fit = Math.floor((p.budget - p.usedBytes) / slotBytes(p));
    if (fit < min) throw budgetTooSmall(p, min);
    slots = cache === "auto" ? Math.min(fit, allExperts) : Math.min(slots, fit);
    if (cache !== "auto" && min + cache > fit) {
      throw new BudgetError(
        `--expert-cache ${cache} needs ${min + cache} slots; the budget ${
          fmt(p.budget)
        } holds ${fit}`,
        p.usedBytes + (min + cache) * slotBytes(p),
        `use --expert-cache ${fit - min} or auto`,
      );
    }
  }
  slots = Math.min(Math.max(slots, min), Math.max(bindLimit, 0));
  if (slots < min) {
    throw new BudgetError(
      `${p.mode} mode needs ${min} expert slots but this GPU binds at most ${bindLimit} ` +
        `(maxStorageBufferBindingSize ${p.maxBindingBytes})`,
    );
  }
  return slots;
}

function slotBytes(p: PoolSizeInput): number {
  return p.slotBytes ?? (p.projections ?? 3) * p.projectionBytes;
}

function budgetTooSmall(p: PoolSizeInput, min: number): BudgetError {
  const need = p.usedBytes + min * slotBytes(p);
  return new BudgetError(
    `a GPU memory budget of ${fmt(p.budget!)} cannot hold ${p.mode} mode: the dense weights, KV ` +
      `cache and activations take ${fmt(p.usedBytes)} and the mode needs at least ${min} expert ` +
      `slots of ${fmt(slotBytes(p))}; the smallest budget that works is ${
        fmt(need)
      } (${need} bytes)`,
    need,
    `use --budget ${Math.ceil(need / 2 ** 20)}MiB or more, or a smaller --context`,
  );
}

/**
 * Staging ring for the mapped uploader: buffers that hold one MoE layer's copies (`perLayer`
 * experts) each, 4-aligned, 64 KiB to 128 MiB; at least 3 and, beyond 3, at most 256 MiB in all, so
 * that a layer's copies are one map/unmap cycle and no buffer is reused while the copies of the same
 * layer are still queued behind GPU work.
 *
 * Why whole layers: a staging map/unmap cycle grows costly once a process has run many of them
 * (seen on Dawn; the figures are in `docs/decisions.md`), so fewer, larger cycles copy faster.
 *
 * @example
 * ```ts
 * import { stagingPlan } from "./pool_size.ts";
 * console.log(stagingPlan(9 << 20, 8)); // { stagingBytes: 75497472, buffers: 3 }
 * ```
 */
export function stagingPlan(
  bytesPerExpert: number,
  perLayer: number,
): { stagingBytes: number; buffers: number } {
  const layer = perLayer * bytesPerExpert;
  const stagingBytes = Math.min(128 << 20, Math.max(1 << 16, Math.ceil(layer / 4) * 4));
  const need = Math.ceil(layer / stagingBytes) + 1;
  const cap = Math.max(3, Math.floor((256 << 20) / stagingBytes));
  return { stagingBytes, buffers: Math.max(3, Math.min(need, cap)) };
}

/** Bytes as MiB or GiB, for messages. */
export function fmt(bytes: number): string {
  return bytes >= 2 ** 30
    ? `${(bytes / 2 ** 30).toFixed(2)} GiB`
    : `${(bytes / 2 ** 20).toFixed(1)} MiB`;
}
