/**
 * Layouts of the decode GEMVs (`matvec.wgsl`, the expert GEMVs of `moe.wgsl`, `qkv.wgsl`): how many
 * threads share a weight row, how many rows a workgroup holds, how many 16-byte loads each thread
 * has in flight, and how a row's partial sums are reduced (a workgroup-memory tree, portable, or
 * subgroup operations). The layouts and the thresholds come from a measured sweep (see
 * docs/decisions.md); `gemvLayout` in `linear_variant.ts` applies the rule
 * ({@linkcode chooseGemvLayout}) to a device, and the GEMV builders follow it.
 *
 * A kernel's source is the reduction include (`gemv_tree.wgsl`, listed first in the kernel's spec,
 * or in its place `gemv_subgroup.wgsl`, which starts with `enable subgroups;`) followed by the
 * kernel's own files ({@linkcode gemvSource}), so the subgroup variant differs from the portable one
 * only in the reduction, and `enable subgroups` only reaches devices that have the feature.
 * @module
 */
import type { Gpu, PipelineSource } from "../runtime/base/gpu/device.ts";
import { ArgumentError } from "../runtime/base/errors.ts";
import type { DType } from "../runtime/base/dtype.ts";
import { defineKernel, type KernelSpec, wgslFile } from "./registry.ts";

/** How a row's partial sums are added up: workgroup-memory tree (portable) or subgroup operations. */
export type GemvReduction = "tree" | "subgroup";

/** A reduction include: a name for the pipeline cache and its WGSL. */
export interface GemvReductionSource {
  /** Short name, part of the pipeline name (`matvec+subgroup`). */
  readonly name: string;
  /** The WGSL defining `struct Lanes`, `row_sum` and `row_sum2` (see `gemv_tree.wgsl`). */
  source(): Promise<string>;
}

/** One GEMV layout. */
export interface GemvLayout {
  /** The layout's name, e.g. `t32r8u2-sg` (see {@linkcode gemvLayoutName}). */
  readonly name: string;
  /** Threads per weight row, a power of two. */
  readonly TPR: number;
  /** Weight rows per workgroup (a workgroup has `TPR * ROWS` threads). */
  readonly ROWS: number;
  /** 16-byte weight loads in flight per thread (1 or 2). */
  readonly UNROLL: number;
  /** The row reduction. */
  readonly reduction: GemvReduction;
  /** Why this layout (for logs and tests). */
  readonly reason?: string;
  /**
   * @internal Another source for the reduction include (tests: the subgroup reduction with emulated
   * subgroup operations, on devices that have none).
   */
  readonly reduce?: GemvReductionSource;
}

/** The subgroup size `gemv_subgroup.wgsl` is written for (`SG`). */
export const GEMV_SUBGROUP_SIZE = 32;

/**
 * A layout's name: `t<threads per row>r<rows per workgroup>u<loads in flight>-<tree|sg>`, e.g.
 * `t32r8u2-sg`.
 */
export function gemvLayoutName(
  l: Pick<GemvLayout, "TPR" | "ROWS" | "UNROLL" | "reduction">,
): string {
  return `t${l.TPR}r${l.ROWS}u${l.UNROLL}-${l.reduction === "tree" ? "tree" : "sg"}`;
}

function layout(TPR: number, ROWS: number, UNROLL: number, reduction: GemvReduction): GemvLayout {
  const name = gemvLayoutName({ TPR, ROWS, UNROLL, reduction });
  return Object.freeze({ name, TPR, ROWS, UNROLL, reduction });
}

/**
 * The layouts {@linkcode chooseGemvLayout} picks from (why these: docs/decisions.md).
 *
 * - `subgroupShort` `t16r16u2-sg`: rows under 2 KiB.
 * - `subgroup` `t32r8u2-sg`: rows of 2 to 8 KiB.
 * - `subgroupLong` `t128r1u2-sg`: rows of 8 KiB and more.
 * - `portable` `t32r4u2-tree`: rows under 16 KiB.
 * - `portableLong` `t64r4u2-tree`: rows of 16 KiB and more.
 */
export const GEMV_LAYOUTS = Object.freeze({
  subgroupShort: layout(16, 16, 2, "subgroup"),
  subgroup: layout(32, 8, 2, "subgroup"),
  subgroupLong: layout(128, 1, 2, "subgroup"),
  portable: layout(32, 4, 2, "tree"),
  portableLong: layout(64, 4, 2, "tree"),
});

/** Row lengths (16-byte blocks) where the rule switches layout. */
export const GEMV_THRESHOLDS = Object.freeze({
  /** Subgroups: `t16r16u2-sg` below this many blocks (2 KiB), `t32r8u2-sg` from it. */
  subgroupShort: 128,
  /** Subgroups: `t128r1u2-sg` from this many blocks (8 KiB). */
  subgroupLong: 512,
  /** Portable: `t64r4u2-tree` from this many blocks (16 KiB), `t32r4u2-tree` below. */
  portableLong: 1024,
});

/** What {@linkcode chooseGemvLayout} needs to know of a device. */
export interface GemvDevice {
  /** The device has the `subgroups` feature (enabled). */
  subgroups: boolean;
  /** The adapter's smallest and largest subgroup size, when it reports them. */
  subgroupMinSize?: number;
  subgroupMaxSize?: number;
}

/** {@linkcode GemvDevice} of a {@linkcode Gpu}: its features and its adapter's subgroup sizes. */
export function gemvDevice(
  gpu: Pick<Gpu, "features"> & { adapterInfo?: Gpu["adapterInfo"] },
): GemvDevice {
  const info = gpu.adapterInfo;
  return {
    subgroups: gpu.features.subgroups,
    subgroupMinSize: info?.subgroupMinSize,
    subgroupMaxSize: info?.subgroupMaxSize,
  };
}

/** 16-byte blocks in a row of `K` weights of `dtype` (rounded down). */
export function gemvRowBlocks(K: number, dtype: DType): number {
  return Math.floor(K / (dtype === "f32" ? 4 : 8));
}

/**
 * The selection rule (pure): the subgroup layouts where the device has `subgroups` with subgroups
 * of exactly {@linkcode GEMV_SUBGROUP_SIZE} lanes and `portable` is not asked for, by row length;
 * otherwise the portable (tree) layouts, by row length. See {@linkcode GEMV_LAYOUTS} and
 * {@linkcode GEMV_THRESHOLDS}. `K` is the row length in weights; `portable` is false or the reason
 * to keep to the portable layouts (the caller or `PREGATE_KERNELS` asked for them).
 */
export function chooseGemvLayout(
  dev: GemvDevice,
  K: number,
  dtype: DType,
  portable: false | string = false,
): GemvLayout {
  const blocks = gemvRowBlocks(K, dtype);
  const row = `rows of ${blocks} 16-byte blocks (K=${K} ${dtype})`;
  const pick = (l: GemvLayout, why: string): GemvLayout => Object.freeze({ ...l, reason: why });
  const portableLayout = (why: string) =>
    blocks >= GEMV_THRESHOLDS.portableLong
      ? pick(GEMV_LAYOUTS.portableLong, `${why}; ${row} >= ${GEMV_THRESHOLDS.portableLong}`)
      : pick(GEMV_LAYOUTS.portable, `${why}; ${row} < ${GEMV_THRESHOLDS.portableLong}`);
  if (portable) return portableLayout(portable);
  if (!dev.subgroups) return portableLayout("the device lacks the subgroups feature");
  const sg = GEMV_SUBGROUP_SIZE;
  if (dev.subgroupMinSize !== sg || dev.subgroupMaxSize !== sg) {
    return portableLayout(
      `the subgroup reduction needs ${sg}-wide subgroups; the device has ` +
        `${dev.subgroupMinSize ?? "?"} .. ${dev.subgroupMaxSize ?? "?"}`,
    );
  }
  if (blocks < GEMV_THRESHOLDS.subgroupShort) {
    return pick(GEMV_LAYOUTS.subgroupShort, `subgroups; ${row} < ${GEMV_THRESHOLDS.subgroupShort}`);
  }
  if (blocks < GEMV_THRESHOLDS.subgroupLong) {
    return pick(GEMV_LAYOUTS.subgroup, `subgroups; ${row} < ${GEMV_THRESHOLDS.subgroupLong}`);
  }
  return pick(GEMV_LAYOUTS.subgroupLong, `subgroups; ${row} >= ${GEMV_THRESHOLDS.subgroupLong}`);
}

/** The portable reduction include: the first include of every GEMV kernel spec. */
export const GEMV_TREE_FILE = "gemv_tree.wgsl";

/** The reduction includes, by {@linkcode GemvReduction}. */
export const GEMV_REDUCTIONS: Readonly<Record<GemvReduction, GemvReductionSource>> = Object.freeze({
  tree: Object.freeze({ name: "tree", source: () => wgslFile(GEMV_TREE_FILE) }),
  subgroup: Object.freeze({ name: "subgroup", source: () => wgslFile("gemv_subgroup.wgsl") }),
});

/**
 * The source of GEMV kernel `spec` for `layout`. A GEMV spec lists {@linkcode GEMV_TREE_FILE}
 * first, so the spec itself is the portable variant (it compiles anywhere); another reduction
 * replaces that include (named e.g. `matvec+subgroup`), the rest of the source is the same.
 * @throws {ArgumentError} naming `spec` when it does not list the tree reduction first.
 */
export function gemvSource(spec: KernelSpec, layout: GemvLayout): PipelineSource {
  if (spec.includes[0] !== GEMV_TREE_FILE) {
    throw new ArgumentError(
      "spec",
      `${spec.name}: a GEMV kernel spec must include ${GEMV_TREE_FILE} first, got ` +
        `[${spec.includes.join(", ")}]`,
    );
  }
  const reduce = layout.reduce ?? GEMV_REDUCTIONS[layout.reduction];
  if (reduce === GEMV_REDUCTIONS.tree) return spec;
  return {
    name: `${spec.name}+${reduce.name}`,
    entry: spec.entry,
    async source() {
      const rest = [...spec.includes.slice(1), spec.file].map(wgslFile);
      return [await reduce.source(), ...await Promise.all(rest)].join("\n");
    },
  };
}

/** The override constants of a layout (`TPR`, `WG`, `UNROLL`). */
export function gemvConstants(l: GemvLayout): { TPR: number; WG: number; UNROLL: number } {
  return { TPR: l.TPR, WG: l.TPR * l.ROWS, UNROLL: l.UNROLL };
}

/** Bytes of workgroup memory the reduction of `l` uses (`row_sum2` when `two`). */
export function gemvSharedBytes(l: GemvLayout, two = false): number {
  return (two ? 8 : 4) * l.TPR * l.ROWS; // gemv_subgroup.wgsl sizes its array as the tree's
}

/**
 * Validates a layout given to a GEMV builder (`argument` names it in errors): sizes, the device's
 * workgroup limits (with `extraShared` bytes of the kernel's own workgroup memory), and for the
 * subgroup reduction the feature (unless its source is replaced) and the shape it needs.
 *
 * @throws {ArgumentError} naming `argument`.
 */
export function checkGemvLayout(
  gpu: Gpu,
  l: GemvLayout,
  argument: string,
  extraShared = 0,
  two = false,
): GemvLayout {
  if (l === null || typeof l !== "object") {
    throw new ArgumentError(argument, `expected a GEMV layout object, got ${l}`);
  }
  const bad = (message: string, hint?: string): never => {
    throw new ArgumentError(argument, `${l.name ?? "GEMV layout"}: ${message}`, hint);
  };
  for (const k of ["TPR", "ROWS", "UNROLL"] as const) {
    if (!Number.isInteger(l[k]) || l[k] < 1) bad(`${k} must be a positive integer, got ${l[k]}`);
  }
  if ((l.TPR & (l.TPR - 1)) !== 0) bad(`TPR must be a power of two, got ${l.TPR}`);
  if (l.UNROLL > 2) bad(`UNROLL must be 1 or 2, got ${l.UNROLL}`);
  if (l.reduction !== "tree" && l.reduction !== "subgroup") {
    bad(`reduction must be 'tree' or 'subgroup', got ${l.reduction}`);
  }
  const wg = l.TPR * l.ROWS;
  if (l.reduction === "subgroup") {
    if (!l.reduce && !gpu.features.subgroups) {
      bad("the subgroup reduction needs the subgroups feature", "use the portable layout");
    }
    if (wg % GEMV_SUBGROUP_SIZE !== 0) {
      bad(
        `the subgroup reduction needs workgroups of a multiple of ${GEMV_SUBGROUP_SIZE} threads, ` +
          `got ${l.TPR} x ${l.ROWS}`,
      );
    }
  }
  const lim = gpu.limits;
  if (wg > lim.maxComputeInvocationsPerWorkgroup || wg > lim.maxComputeWorkgroupSizeX) {
    bad(
      `workgroup of ${wg} threads, over this device's limits (${lim.maxComputeInvocationsPerWorkgroup}` +
        `, ${lim.maxComputeWorkgroupSizeX})`,
    );
  }
  const shared = gemvSharedBytes(l, two) + extraShared;
  if (shared > lim.maxComputeWorkgroupStorageSize) {
    bad(
      `${shared} bytes of workgroup memory, over this device's limit of ` +
        `${lim.maxComputeWorkgroupStorageSize}`,
    );
  }
  return l;
}

/**
 * The first includes of a GEMV kernel over any weight type: the portable row reduction (swapped by
 * `gemvSource`), the dtype words, the quantised block layouts and the decode GEMVs' unit layouts.
 */
export const GEMV_QUANT_INCLUDES: readonly string[] = Object.freeze([
  GEMV_TREE_FILE,
  "dtype.wgsl",
  "quant.wgsl",
  "quant_gemv.wgsl",
]);

/**
 * GEMV `y[t, n] (+)= W[n, :] · x[t, :]` for `t < T` (`matvec.wgsl`). The weights are bound twice: as
 * `array<vec4<u32>>` (`wv`, the aligned body of each row) and as `array<u32>` (`wu`, row edges).
 * The row reduction comes before it in the source (`gemvSource`: `gemv_tree.wgsl` or
 * `gemv_subgroup.wgsl`).
 */
export const MATVEC: KernelSpec = defineKernel({
  name: "matvec",
  file: "matvec.wgsl",
  includes: [...GEMV_QUANT_INCLUDES, "quant_gemv_dot.wgsl", "qk_load.wgsl"],
  bindings: ["params", "x", "wv", "wu", "y", "xv"],
  constants: { TPR: 32, WG: 128, UNROLL: 2, TB: 1, WDTYPE: 0, ACC: 0 },
});
