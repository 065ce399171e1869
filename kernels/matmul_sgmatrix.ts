/**
 * The subgroup-matrix (tensor-core) prefill GEMM `y[T, N] = x[T, K] · W[N, K]^T`
 * (`matmul_sgmatrix.wgsl`): f16 operands, f32 sums, on Dawn's `chromium-experimental-subgroup-matrix`.
 *
 * - {@linkcode matmulSgmatrix}: the builder (through `linear` when `matmulVariant` picks it).
 * - {@linkcode SgmatrixTuning} / {@linkcode SGMATRIX_TUNING}: the tiling, and the default one;
 *   {@linkcode sgmatrixTuneFor} adapts it to a device's workgroup memory.
 * - {@linkcode sgmatrixUnsupported}: why a device cannot run it.
 *
 * The kernel source is the staging includes (`matmul_sgmatrix_head.wgsl`, one tile layout,
 * `matmul_sgmatrix_tail.wgsl`), the file's body and, for `UNROLLED: 1`, the entry point
 * `sgmatrix_unroll.ts` generates for the tiling.
 *
 * @example
 * ```ts
 * import { SGMATRIX_TUNING, sgmatrixSharedBytes } from "./matmul_sgmatrix.ts";
 * console.log(sgmatrixSharedBytes(SGMATRIX_TUNING)); // 45056 (44 KiB of workgroup memory)
 * ```
 * @module
 */
import type { Dispatch, Gpu, PipelineSource } from "../runtime/base/gpu/device.ts";
import { ArgumentError, GpuError } from "../runtime/base/errors.ts";
import { type DType, DTYPE_CODE } from "../runtime/base/dtype.ts";
import { isQuantType } from "../runtime/weights/weight_type.ts";
import { ParamWriter, wgslFile } from "./registry.ts";
import { unrolledEntry, unrollKey } from "./sgmatrix_unroll.ts";
import { argOneOf, vec4View } from "./args.ts";
import { checkTune, checkWorkgroup, type LinearArgs, validateLinear } from "./linear_args.ts";

/**
 * Tiling of {@linkcode matmulSgmatrix} (`matmul_sgmatrix.wgsl` overrides): a workgroup of
 * `SGM x SGN` subgroups of 32 threads computes a `16*SGM*TM x 16*SGN*TN` block of `y`, each subgroup
 * `TM x TN` result tiles of 16 x 16, walking K in steps of `BK` staged in `STAGES` workgroup buffers.
 */
export interface SgmatrixTuning {
  /** Subgroups along T (rows of x), 1 .. 8. */
  SGM: number;
  /** Subgroups along N (outputs), 1 .. 8. */
  SGN: number;
  /** 16 x 16 result tiles per subgroup along T, 1 .. 4. */
  TM: number;
  /** 16 x 16 result tiles per subgroup along N, 1 .. 4. */
  TN: number;
  /** K step staged in workgroup memory: a multiple of 16, 16 .. 128. */
  BK: number;
  /** Workgroup tile buffers: 2 (double-buffered, one barrier per K step) or 1 (two barriers). */
  STAGES: number;
  /**
   * Workgroup tile layout: 0 = `array<f16>` (one f16 per store, `matmul_sgmatrix_scalar.wgsl`),
   * 1 = `array<vec4<f16>>` (four per store, `matmul_sgmatrix_vec4.wgsl`).
   */
  VEC: number;
  /**
   * 1: the generated entry point with the tiling's loops written out (`kernels/sgmatrix_unroll.ts`,
   * no arrays of matrices or loads indexed in loops); 0: the file's `main` (loops).
   */
  UNROLLED: number;
}

/**
 * The default {@linkcode SgmatrixTuning}: 128 x 128 outputs per workgroup of 8 subgroups (2 along T,
 * 4 along N, each 64 x 32: 8 f32 result tiles), K step 64 in one `vec4<f16>` buffer (44 KiB of
 * workgroup memory; K step 32, then 16, where the device allows less), the generated entry point.
 * Why this one: docs/decisions.md.
 */
export const SGMATRIX_TUNING: Readonly<SgmatrixTuning> = Object.freeze({
  SGM: 2,
  SGN: 4,
  TM: 4,
  TN: 2,
  BK: 64,
  STAGES: 1,
  VEC: 1,
  UNROLLED: 1,
});

/** Smaller K steps tried, in order, where the default's workgroup memory is over the device's. */
const SGMATRIX_SMALLER_BK = [32, 16];

/** `MAX_TM`, `MAX_TN`, `MAX_XV` and `MAX_WV` of `matmul_sgmatrix.wgsl`. */
const SGMATRIX_MAX_TILE = 4, SGMATRIX_MAX_LOADS = 16;

/** The subgroup-matrix configuration `matmul_sgmatrix.wgsl` is written for. */
const SGMATRIX_CONFIG = { componentType: "f16", resultComponentType: "f32", M: 16, N: 16, K: 16 };

/**
 * Why this device cannot run {@linkcode matmulSgmatrix}, or `undefined` when it can. It needs the
 * features `shader-f16`, `subgroups` and `chromium-experimental-subgroup-matrix` (Dawn with
 * `allow_unsafe_apis`), the subgroup-matrix configuration f16 x f16 -> f32 at M = N = K = 16 in the
 * adapter's `subgroupMatrixConfigs`, and subgroups of exactly 32 lanes.
 */
export function sgmatrixUnsupported(gpu: Gpu): string | undefined {
  const needs: [keyof Gpu["features"], string][] = [
    ["shaderF16", "shader-f16"],
    ["subgroups", "subgroups"],
    ["subgroupMatrix", "chromium-experimental-subgroup-matrix"],
  ];
  const missing = needs.filter(([k]) => !gpu.features[k]).map(([, name]) => name);
  if (missing.length) return `the device lacks ${missing.join(", ")} (${gpu.describe()})`;
  // Always set on a real Gpu (taken from the adapter); absent only on described test devices.
  const info: Gpu["adapterInfo"] | undefined = gpu.adapterInfo;
  if (!info) {
    return "the device reports no adapterInfo (subgroup sizes, subgroup-matrix configurations)";
  }
  if (info.subgroupMinSize !== 32 || info.subgroupMaxSize !== 32) {
    return `the kernel needs 32-wide subgroups; the device has ${info.subgroupMinSize} .. ` +
      `${info.subgroupMaxSize}`;
  }
  const cfgs = [...(info.subgroupMatrixConfigs ?? [])];
  const c = SGMATRIX_CONFIG;
  if (
    !cfgs.some((g) =>
      g.componentType === c.componentType && g.resultComponentType === c.resultComponentType &&
      g.M === c.M && g.N === c.N && g.K === c.K
    )
  ) {
    const have = cfgs.map((g) =>
      `${g.componentType}->${g.resultComponentType} ${g.M}x${g.N}x${g.K}`
    );
    return `no subgroup-matrix configuration f16->f32 16x16x16 (the device has ` +
      `${have.length ? have.join(", ") : "none"})`;
  }
  return undefined;
}

/** Bytes of workgroup memory `matmul_sgmatrix.wgsl` uses with tiling `t`. */
export function sgmatrixSharedBytes(t: SgmatrixTuning): number {
  const rows = 16 * (t.SGM * t.TM + t.SGN * t.TN);
  return 2 * t.STAGES * rows * (t.BK + 8) + 4 * 256 * t.SGM * t.SGN;
}

/**
 * {@linkcode SGMATRIX_TUNING} for this device: with a smaller K step where its workgroup memory is
 * over the device's limit; a reason (string) if none fits.
 */
export function sgmatrixTuneFor(gpu: Pick<Gpu, "limits">): SgmatrixTuning | string {
  const max = gpu.limits.maxComputeWorkgroupStorageSize;
  for (const BK of [SGMATRIX_TUNING.BK, ...SGMATRIX_SMALLER_BK]) {
    const t = { ...SGMATRIX_TUNING, BK };
    if (sgmatrixSharedBytes(t) <= max) return t;
  }
  const least = { ...SGMATRIX_TUNING, BK: SGMATRIX_SMALLER_BK.at(-1)! };
  return `the default tiling needs at least ${sgmatrixSharedBytes(least)} bytes of workgroup ` +
    `memory, over this device's ${max}`;
}

/**
 * Validates a (partial) tiling for {@linkcode matmulSgmatrix} on this device; fields not given come
 * from {@linkcode sgmatrixTuneFor}.
 */
function checkSgmatrixTune(gpu: Gpu, tune: unknown): SgmatrixTuning {
  const d = sgmatrixTuneFor(gpu);
  if (typeof d === "string" && tune === undefined) {
    throw new ArgumentError("tune", d, "pass a smaller tiling");
  }
  const base: SgmatrixTuning = typeof d === "string" ? { ...SGMATRIX_TUNING } : d;
  const t = checkTune(tune as Partial<SgmatrixTuning> | undefined, base, {
    SGM: [1, 8],
    SGN: [1, 8],
    TM: [1, SGMATRIX_MAX_TILE],
    TN: [1, SGMATRIX_MAX_TILE],
    BK: [16, 128],
    STAGES: [1, 2],
    VEC: [0, 1],
    UNROLLED: [0, 1],
  });
  if (t.BK % 16 !== 0) {
    throw new ArgumentError("tune.BK", `must be a multiple of 16, got ${t.BK}`);
  }
  const threads = 32 * t.SGM * t.SGN;
  // 16-byte loads per thread and K step: x is f32; W at most f32 too.
  const loads = Math.ceil((16 * Math.max(t.SGM * t.TM, t.SGN * t.TN) * t.BK) / 4 / threads);
  if (loads > SGMATRIX_MAX_LOADS) {
    throw new ArgumentError(
      "tune",
      `matmul_sgmatrix: ${loads} 16-byte loads per thread and K step, over ${SGMATRIX_MAX_LOADS}`,
      "use more subgroups, fewer tiles per subgroup or a smaller BK",
    );
  }
  checkWorkgroup(gpu, "matmul_sgmatrix", [threads, 1], sgmatrixSharedBytes(t));
  return t;
}

/** Workgroup grid of the subgroup-matrix GEMM, or the argument and message if over the limit. */
export function sgmatrixGroups(
  gpu: Pick<Gpu, "limits">,
  t: SgmatrixTuning,
  T: number,
  N: number,
): { groups: [number, number] } | { argument: string; message: string } {
  const max = gpu.limits.maxComputeWorkgroupsPerDimension;
  const groups: [number, number] = [
    Math.ceil(N / (16 * t.SGN * t.TN)),
    Math.ceil(T / (16 * t.SGM * t.TM)),
  ];
  for (const [i, argument, v] of [[0, "N", N], [1, "T", T]] as const) {
    if (groups[i] > max) {
      return {
        argument,
        message: `${argument}=${v} needs ${groups[i]} workgroups, over the limit ${max}`,
      };
    }
  }
  return { groups };
}

/** Arguments of {@linkcode matmulSgmatrix}: {@linkcode LinearArgs} and optional tiling overrides. */
export interface MatmulSgmatrixArgs extends LinearArgs {
  /** Tiling overrides (default {@linkcode SGMATRIX_TUNING}, adapted to the device); for tuning. */
  tune?: Partial<SgmatrixTuning>;
  /**
   * The dtype of `x`: `f32` (default, `[T, K]` f32) or `f16` (`[T, K]` packed two per u32 word,
   * e.g. from `packWeights(values, "f16")`; half the activation bytes to stage).
   */
  xDtype?: "f32" | "f16";
  /**
   * @internal The kernels bench's tensor-core ceiling: `true` runs the generated entry's
   * subgroup-matrix multiplies alone (operands loaded once, no staging), so the result is wrong by
   * design. Needs `tune.UNROLLED = 1`.
   */
  multipliesOnly?: boolean;
}

/**
 * Builds the subgroup-matrix (tensor-core) GEMM `y[T, N] = x[T, K] · W[N, K]^T` (`+=` with
 * `accumulate`) for any T and N and K a multiple of 8, with f32, f16 or bf16 weights. `x` and `W`
 * are rounded to f16 in the kernel (bf16 and f32 values beyond the f16 range, +-65504, become inf);
 * products are summed in f32. Expect a normwise relative error of a few 1e-4 against f32
 * arithmetic. `linear` uses it where `matmulVariant` says so.
 *
 * @throws {GpuError} when the device cannot run it ({@linkcode sgmatrixUnsupported} says why).
 * @throws {ArgumentError} naming the bad argument (as `matmul`; `K` not a multiple of 8; tiling
 *   overrides out of range or over the device's limits).
 * @example
 * ```ts ignore
 * import { openGpu } from "../runtime/base/gpu/device.ts";
 * import { packWeights } from "../runtime/base/dtype.ts";
 * import { matmulSgmatrix } from "./matmul_sgmatrix.ts";
 * const gpu = await openGpu({ gpu: "dawn" }); // a device with subgroup matrices
 * const [T, K, N] = [256, 1024, 512];
 * const x = gpu.storage("activations", new Float32Array(T * K).fill(0.5));
 * const w = gpu.storage("dense", packWeights(new Float32Array(N * K).fill(0.25), "f16"));
 * const y = gpu.storage("activations", T * N * 4);
 * gpu.submit([await matmulSgmatrix(gpu, { x, w, y, T, K, N, dtype: "f16" })]);
 * console.log((await gpu.readF32(y, 0, 1))[0]); // 128
 * ```
 */
export async function matmulSgmatrix(gpu: Gpu, args: MatmulSgmatrixArgs): Promise<Dispatch> {
  const unsupported = sgmatrixUnsupported(gpu);
  if (unsupported) {
    throw new GpuError(
      `matmul_sgmatrix cannot run on this device: ${unsupported}`,
      "use linear() (matmulVariant picks the portable matmul here) or matmul()",
    );
  }
  return await matmulSgmatrixWith(gpu, args);
}

/**
 * How the kernel body (`matmul_sgmatrix.wgsl`, plus the generated entry point when `UNROLLED`)
 * becomes a module: the staging includes before it (`matmul_sgmatrix_head.wgsl`, one tile layout,
 * `matmul_sgmatrix_tail.wgsl`), or, in tests, an emulated stand-in. `name` goes into the kernel's name.
 * @internal Tests pass their own (`matmul_sgmatrix_test.ts` emulates the subgroup matrices).
 */
export interface SgmatrixStaging {
  readonly name: string;
  join(body: string): string | Promise<string>;
}

/** The real staging, prepended: the shared head, the tile layout `layout`, the shared tail. */
function staging(name: string, layout: string): SgmatrixStaging {
  return {
    name,
    async join(body) {
      const files = ["matmul_sgmatrix_head.wgsl", layout, "matmul_sgmatrix_tail.wgsl"];
      const parts = await Promise.all(files.map(wgslFile));
      return [...parts, body].join("\n");
    },
  };
}

/** Workgroup tiles as `array<f16>` (`VEC: 0`) and as `array<vec4<f16>>` (`VEC: 1`). */
const STAGING_SCALAR = staging("", "matmul_sgmatrix_scalar.wgsl");
const STAGING_VEC4 = staging("vec4", "matmul_sgmatrix_vec4.wgsl");

const sgmatrixSources = new Map<string, PipelineSource>();

/**
 * The kernel source for tiling `t` (the file's `main`, or the generated `main_unrolled`), cached by
 * name: `matmul_sgmatrix[_STAGING][_UNROLLKEY]`.
 */
function sgmatrixSource(
  t: SgmatrixTuning,
  dtype: DType,
  xDtype: "f32" | "f16",
  multipliesOnly: boolean,
  stage: SgmatrixStaging = t.VEC ? STAGING_VEC4 : STAGING_SCALAR,
): PipelineSource {
  const shape = { ...t, wPerLoad: dtype === "f32" ? 4 : 8, xPerLoad: xDtype === "f32" ? 4 : 8 };
  const key = t.UNROLLED ? unrollKey(shape, multipliesOnly) : "";
  const name = ["matmul_sgmatrix", stage.name, key].filter((p) => p).join("_");
  let src = sgmatrixSources.get(name);
  if (!src) {
    src = {
      name,
      entry: t.UNROLLED ? "main_unrolled" : "main",
      async source() {
        const body = await wgslFile("matmul_sgmatrix.wgsl");
        return await stage.join(
          t.UNROLLED ? `${body}\n${unrolledEntry(shape, multipliesOnly)}` : body,
        );
      },
    };
    sgmatrixSources.set(name, src);
  }
  return src;
}

/**
 * {@linkcode matmulSgmatrix} without the device check, and with another staging include when
 * `staging` is given (instead of the one `tune.VEC` picks).
 * @internal For tests: `matmul_sgmatrix_test.ts` runs the kernel's logic with emulated subgroup
 * matrices on devices that have none, and compiles it with Dawn's null backend.
 */
export async function matmulSgmatrixWith(
  gpu: Gpu,
  args: MatmulSgmatrixArgs,
  staging?: SgmatrixStaging,
): Promise<Dispatch> {
  const xDtype = argOneOf(
    "xDtype",
    args.xDtype ?? "f32",
    ["f32", "f16"] as const,
    "activation dtype",
  );
  const a = validateLinear(gpu, args, xDtype);
  if (isQuantType(a.dtype)) {
    throw new ArgumentError(
      "dtype",
      `matmul_sgmatrix reads f32, f16 or bf16 weights, got ${a.dtype}`,
      "linear picks matmul (portable) for block-quantised weights",
    );
  }
  if (a.K % 8 !== 0) {
    throw new ArgumentError(
      "K",
      `matmul_sgmatrix needs a multiple of 8, got K=${a.K}`,
      "matmul (portable) takes any K; linear picks it for such shapes",
    );
  }
  const t = checkSgmatrixTune(gpu, args.tune);
  const multipliesOnly = args.multipliesOnly ?? false;
  if (typeof multipliesOnly !== "boolean" || (multipliesOnly && !t.UNROLLED)) {
    throw new ArgumentError(
      "multipliesOnly",
      `expected true (with tune.UNROLLED = 1) or false, got ${args.multipliesOnly}`,
    );
  }
  const grid = sgmatrixGroups(gpu, t, a.T, a.N);
  if ("message" in grid) {
    throw new ArgumentError(grid.argument, grid.message, "split the rows into several calls");
  }
  const { VEC: _vec, UNROLLED: _unrolled, ...tiling } = t;
  const pipeline = await gpu.pipeline(sgmatrixSource(t, a.dtype, xDtype, multipliesOnly, staging), {
    ...tiling,
    WG: 32 * t.SGM * t.SGN,
    WDTYPE: DTYPE_CODE[a.dtype],
    ...(xDtype === "f16" ? { XDTYPE: 1 } : {}),
    ACC: a.accumulate ? 1 : 0,
  });
  const params = gpu.uniform(
    new ParamWriter().u32(a.T, a.K, a.N).bytes(),
    "matmul_sgmatrix.params",
  );
  const x = vec4View("x", a.x, a.T * a.K * (xDtype === "f32" ? 4 : 2));
  const w = vec4View("w", a.w, a.N * a.K * (a.dtype === "f32" ? 4 : 2));
  return gpu.dispatch(pipeline, [params, x, w, a.y], grid.groups);
}
