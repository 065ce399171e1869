/**
 * Tests of the two places that choose a linear layer's kernel (`linear_variant.ts`) on described
 * devices (features, subgroup sizes, subgroup-matrix configurations, limits), with
 * `kernels: "portable"` and `PREGATE_KERNELS`, and of `linear` following them on the test device:
 * `matmulVariant` (prefill GEMM, with the subgroup-matrix kernel's default tiling per device) and
 * `gemvLayout` (decode GEMV layouts). The kernels themselves are tested in `linear_test.ts`,
 * `gemv_test.ts` and `matmul_sgmatrix_test.ts`.
 * @module
 */
import type { Gpu } from "../runtime/base/gpu/device.ts";
import { type DType, packWeights } from "../runtime/base/dtype.ts";
import {
  chooseGemvLayout,
  GEMV_LAYOUTS,
  GEMV_THRESHOLDS,
  type GemvLayout,
  gemvRowBlocks,
} from "./gemv.ts";
import {
  gemvLayout,
  linear,
  matmulSgmatrixWith,
  type MatmulShape,
  matmulVariant,
  SGMATRIX_MIN_T,
  SGMATRIX_TUNING,
  sgmatrixSharedBytes,
  sgmatrixUnsupported,
} from "./linear.ts";
import { GPU_TEST, poisoned, randn, rejects, testGpu } from "./test_util.ts";

const PREFILL: MatmulShape = { T: 512, K: 4096, N: 4096, dtype: "bf16" };
const DTYPES: DType[] = ["f32", "f16", "bf16"];
const SUBGROUP_LAYOUTS = [
  GEMV_LAYOUTS.subgroupShort,
  GEMV_LAYOUTS.subgroup,
  GEMV_LAYOUTS.subgroupLong,
];
const PORTABLE_LAYOUTS = [GEMV_LAYOUTS.portable, GEMV_LAYOUTS.portableLong];

// ------------------------------------------------------------------------------------ matmulVariant

interface Described {
  features?: Partial<Gpu["features"]>;
  workgroupStorage?: number;
  subgroups?: [number, number];
  configs?: {
    componentType: string;
    resultComponentType: string;
    M: number;
    N: number;
    K: number;
  }[];
  adapterInfo?: false;
}

const H200_CONFIGS = [
  { componentType: "f16", resultComponentType: "f16", M: 16, N: 16, K: 16 },
  { componentType: "f16", resultComponentType: "f32", M: 16, N: 16, K: 16 },
  { componentType: "f16", resultComponentType: "f32", M: 16, N: 8, K: 16 },
  { componentType: "i8", resultComponentType: "i32", M: 16, N: 16, K: 32 },
];

/** A device as matmulVariant sees it (features, limits, adapter info); H200 + Dawn by default. */
function described(d: Described = {}): Gpu {
  const features = {
    shaderF16: true,
    subgroups: true,
    timestampQuery: true,
    subgroupMatrix: true,
    ...d.features,
  };
  const [min, max] = d.subgroups ?? [32, 32];
  return {
    features,
    limits: {
      maxComputeWorkgroupStorageSize: d.workgroupStorage ?? 49152,
      maxComputeWorkgroupsPerDimension: 65535,
      maxComputeInvocationsPerWorkgroup: 1024,
      maxComputeWorkgroupSizeX: 1024,
      maxComputeWorkgroupSizeY: 1024,
    },
    device: {},
    adapterInfo: d.adapterInfo === false ? undefined : {
      subgroupMinSize: min,
      subgroupMaxSize: max,
      subgroupMatrixConfigs: d.configs ?? H200_CONFIGS,
    },
    describe: () => "described device",
  } as unknown as Gpu;
}

function expectVariant(
  gpu: Gpu,
  shape: Partial<MatmulShape>,
  variant: "portable" | "sgmatrix",
  reason: string,
  kernels: "auto" | "portable" = "auto",
) {
  const c = matmulVariant(gpu, { ...PREFILL, ...shape }, kernels);
  if (c.variant !== variant || !c.reason.includes(reason)) {
    throw new Error(
      `${JSON.stringify(shape)}${kernels ? ` kernels=${kernels}` : ""}: expected ${variant} ` +
        `('${reason}'), got ${c.variant} ('${c.reason}')`,
    );
  }
  return c;
}

Deno.test("matmulVariant: sgmatrix only for prefill shapes of 16-bit weights on capable devices", () => {
  const h200 = described();
  for (const dtype of ["f16", "bf16"] as const) {
    const c = expectVariant(h200, { dtype }, "sgmatrix", "subgroup matrices");
    if (c.tune?.STAGES !== SGMATRIX_TUNING.STAGES) {
      throw new Error(`tune ${JSON.stringify(c.tune)}`);
    }
  }
  expectVariant(h200, { T: SGMATRIX_MIN_T }, "sgmatrix", "subgroup matrices");
  expectVariant(h200, { T: 100, K: 8, N: 3 }, "sgmatrix", "subgroup matrices"); // ragged T, N
  // Decode and small batches stay portable (linear sends T <= 8 to matvec before asking).
  for (const T of [1, 2, 8, 9, 32, SGMATRIX_MIN_T - 1]) {
    expectVariant(h200, { T }, "portable", `T=${T} rows is under SGMATRIX_MIN_T`);
  }
  expectVariant(h200, { dtype: "f32" }, "portable", "f32 weights keep f32 arithmetic");
  expectVariant(h200, { K: 4100 }, "portable", "K=4100 is not a multiple of 8");
  expectVariant(h200, {}, "portable", "the caller asked for the portable kernels", "portable");
});

Deno.test("matmulVariant: the device's features, subgroups, configurations and limits", () => {
  for (
    const [f, name] of [
      ["subgroupMatrix", "chromium-experimental-subgroup-matrix"],
      ["shaderF16", "shader-f16"],
      ["subgroups", "subgroups"],
    ] as const
  ) {
    expectVariant(described({ features: { [f]: false } }), {}, "portable", `lacks ${name}`);
  }
  expectVariant(described({ adapterInfo: false }), {}, "portable", "no adapterInfo");
  expectVariant(described({ subgroups: [4, 128] }), {}, "portable", "32-wide subgroups");
  expectVariant(described({ subgroups: [64, 64] }), {}, "portable", "32-wide subgroups");
  expectVariant(described({ configs: [] }), {}, "portable", "no subgroup-matrix configuration");
  expectVariant(
    described({ configs: [H200_CONFIGS[0], H200_CONFIGS[2]] }), // f16 results, 16x8x16: not enough
    {},
    "portable",
    "f16->f16 16x16x16, f16->f32 16x8x16",
  );
  // Workgroup memory: the default's K step of 64 needs 44 KiB, 32 needs 28 KiB.
  const full = sgmatrixSharedBytes(SGMATRIX_TUNING);
  const half = sgmatrixSharedBytes({ ...SGMATRIX_TUNING, BK: 32 });
  const c = expectVariant(described({ workgroupStorage: 32768 }), {}, "sgmatrix", "K step 32");
  if (c.tune?.BK !== 32 || SGMATRIX_TUNING.BK !== 64 || half > 32768 || full <= 32768) {
    throw new Error(`expected K step 32 (${half} B) under 32768 and 64 (${full} B) over it`);
  }
  expectVariant(described({ workgroupStorage: 49152 }), {}, "sgmatrix", "K step 64");
  expectVariant(described({ workgroupStorage: 16384 }), {}, "portable", "over this device's 16384");
});

Deno.test("matmulSgmatrix: tiling overrides start from the device's default tiling", async () => {
  // Builds up to the pipeline on a described device with 32 KiB of workgroup memory: the default
  // and { VEC: 1 } get the default's smaller K step there (64 would need 44 KiB), an explicit one
  // is kept.
  const gpu = described({ workgroupStorage: 32768 });
  const pipelines: Record<string, number>[] = [];
  const names: string[] = [];
  Object.assign(gpu, {
    byteLength: (b: GPUBuffer) => b.size,
    pipeline: (src: { name: string }, constants: Record<string, number>) => {
      pipelines.push(constants);
      names.push(src.name);
      return Promise.reject(new Error("stop"));
    },
  });
  Object.assign(gpu.limits, {
    minStorageBufferOffsetAlignment: 256,
    maxStorageBufferBindingSize: 1 << 30,
  });
  const buf = (size: number) => ({ size }) as GPUBuffer;
  const [T, K, N] = [128, 64, 128];
  const args = {
    x: buf(T * K * 4),
    w: buf(N * K * 2),
    y: buf(T * N * 4),
    T,
    K,
    N,
    dtype: "f16" as const,
  };
  for (const tune of [undefined, { VEC: 1 }, { BK: 16, STAGES: 2 }]) {
    await matmulSgmatrixWith(gpu, { ...args, tune }).catch((e) => {
      if ((e as Error).message !== "stop") throw e;
    });
  }
  const got = JSON.stringify(pipelines.map((c) => [c.BK, c.STAGES]));
  if (got !== "[[32,1],[32,1],[16,2]]" || "VEC" in pipelines[0]) {
    throw new Error(
      `expected (BK, STAGES) (32, 1), (32, 1), (16, 2) and no VEC constant, got ` +
        JSON.stringify(pipelines),
    );
  }
  await rejects(() => matmulSgmatrixWith(gpu, { ...args, tune: { STAGES: 2 } }), "tune", "32768");
  await rejects(() => matmulSgmatrixWith(gpu, { ...args, tune: { BK: 64 } }), "tune", "32768");
  await rejects(() => matmulSgmatrixWith(gpu, { ...args, K: 60 }), "K", "multiple of 8");
  await rejects(() => matmulSgmatrixWith(gpu, { ...args, tune: { BK: 24 } }), "tune.BK");
  await rejects(() => matmulSgmatrixWith(gpu, { ...args, tune: { VEC: 2 } }), "tune.VEC");
  // The multiplies-alone kernel (the bench's ceiling) is a generated entry of its own name.
  await matmulSgmatrixWith(gpu, { ...args, tune: { BK: 16 }, multipliesOnly: true }).catch((e) => {
    if ((e as Error).message !== "stop") throw e;
  });
  if (!names.at(-1)!.endsWith("_mma") || names.slice(0, -1).some((n) => n.endsWith("_mma"))) {
    throw new Error(`expected _mma in the last pipeline's name only, got ${JSON.stringify(names)}`);
  }
  // The default entry is the generated one.
  if (!names[0].includes("_u2442_32_1")) {
    throw new Error(`expected the unrolled entry, got ${names[0]}`);
  }
  await rejects(
    () => matmulSgmatrixWith(gpu, { ...args, tune: { UNROLLED: 0 }, multipliesOnly: true }),
    "multipliesOnly",
  );
  await rejects(
    () => matmulSgmatrixWith(gpu, { ...args, multipliesOnly: 1 as unknown as boolean }),
    "multipliesOnly",
  );
  await rejects(() => matmulSgmatrixWith(gpu, { ...args, tune: { UNROLLED: 2 } }), "tune.UNROLLED");
  await rejects(
    () => matmulSgmatrixWith(gpu, { ...args, xDtype: "bf16" as "f16" }),
    "xDtype",
  );
  await rejects(
    () => matmulSgmatrixWith(gpu, { ...args, xDtype: "f16", x: buf(T * K * 2 - 4) }),
    "x",
    "f16 [T=128, K=64]",
  );
});

Deno.test("matmulVariant: PREGATE_KERNELS=portable forces the portable GEMM; bad values throw", async () => {
  const h200 = described();
  const before = Deno.env.get("PREGATE_KERNELS");
  try {
    Deno.env.set("PREGATE_KERNELS", "portable");
    expectVariant(h200, {}, "portable", "PREGATE_KERNELS=portable");
    Deno.env.set("PREGATE_KERNELS", "auto");
    expectVariant(h200, {}, "sgmatrix", "subgroup matrices");
    Deno.env.set("PREGATE_KERNELS", "tensorcores");
    await rejects(() => matmulVariant(h200, PREFILL), "PREGATE_KERNELS");
  } finally {
    if (before === undefined) Deno.env.delete("PREGATE_KERNELS");
    else Deno.env.set("PREGATE_KERNELS", before);
  }
  await rejects(() => matmulVariant(h200, PREFILL, "fast" as "auto"), "kernels");
  await rejects(() => matmulVariant(h200, { ...PREFILL, T: 0 }), "T");
  await rejects(() => matmulVariant(h200, { ...PREFILL, dtype: "fp8" as DType }), "dtype");
});

Deno.test({
  name: "linear follows matmulVariant on the test device (decode and prefill shapes)",
  ...GPU_TEST,
  fn: async () => {
    const gpu = await testGpu();
    const capable = sgmatrixUnsupported(gpu) === undefined;
    const K = 64, N = 48;
    const expect: [number, "auto" | "portable", string][] = [
      [1, "auto", "matvec"],
      [8, "auto", "matvec"],
      [SGMATRIX_MIN_T - 1, "auto", "matmul"],
      [SGMATRIX_MIN_T, "auto", capable ? "matmul_sgmatrix" : "matmul"],
      [SGMATRIX_MIN_T, "portable", "matmul"],
    ];
    for (const [T, kernels, kernel] of expect) {
      const x = gpu.storage("activations", randn(T * K));
      const w = gpu.storage("dense", packWeights(randn(N * K), "bf16"));
      const y = poisoned(gpu, T * N);
      const d = await linear(gpu, { x, w, y, T, K, N, dtype: "bf16", kernels });
      // The subgroup-matrix kernel's name carries its tile layout and its generated entry's key
      // (`matmul_sgmatrix_vec4_u4224_32_2_x4w8`).
      if (!new RegExp(`^${kernel}(_vec4)?(_u\\w+)?[:|]`).test(d.label)) {
        throw new Error(`linear T=${T} kernels=${kernels}: expected ${kernel}, got '${d.label}'`);
      }
      for (const b of [x, w, y]) gpu.destroyBuffer(b);
    }
  },
});

// ------------------------------------------------------------------------------------ gemvLayout

/** A device as gemvLayout sees it: features and the adapter's subgroup sizes (H200 + Dawn default). */
function gemvDescribed(
  d: { subgroups?: boolean; sizes?: [number | undefined, number | undefined] | false } = {},
): Gpu {
  const [min, max] = d.sizes === false ? [undefined, undefined] : d.sizes ?? [32, 32];
  return {
    features: {
      shaderF16: true,
      subgroups: d.subgroups ?? true,
      timestampQuery: true,
      subgroupMatrix: true,
    },
    device: {},
    adapterInfo: d.sizes === false ? undefined : { subgroupMinSize: min, subgroupMaxSize: max },
  } as unknown as Gpu;
}

/** K of a row of `blocks` 16-byte blocks. */
const kOf = (blocks: number, dtype: DType) => blocks * (dtype === "f32" ? 4 : 8);

function expectLayout(l: GemvLayout, want: GemvLayout, reason: string, what: string) {
  if (l.name !== want.name || l.reduction !== want.reduction || !l.reason?.includes(reason)) {
    throw new Error(`${what}: expected ${want.name} ('${reason}'), got ${l.name} ('${l.reason}')`);
  }
}

Deno.test("gemvLayout: subgroup layouts by row length where the device has 32-wide subgroups", () => {
  const h200 = gemvDescribed();
  const T = GEMV_THRESHOLDS;
  for (const dtype of DTYPES) {
    const cases: [number, GemvLayout][] = [
      [1, GEMV_LAYOUTS.subgroupShort],
      [T.subgroupShort - 1, GEMV_LAYOUTS.subgroupShort],
      [T.subgroupShort, GEMV_LAYOUTS.subgroup],
      [T.subgroupLong - 1, GEMV_LAYOUTS.subgroup],
      [T.subgroupLong, GEMV_LAYOUTS.subgroupLong],
      [8 * T.portableLong, GEMV_LAYOUTS.subgroupLong],
    ];
    for (const [blocks, want] of cases) {
      const K = kOf(blocks, dtype);
      expectLayout(gemvLayout(h200, K, dtype), want, "subgroups", `${dtype} K=${K}`);
      // The pure rule gives the same on the same facts.
      const pure = chooseGemvLayout(
        { subgroups: true, subgroupMinSize: 32, subgroupMaxSize: 32 },
        K,
        dtype,
      );
      expectLayout(pure, want, "subgroups", `chooseGemvLayout ${dtype} K=${K}`);
    }
  }
  // The measured shapes: Mixtral 14336x4096 and 4096x14336, Qwen3-30B-A3B experts 768x2048 (K=2048)
  // and 2048x768 (K=768), 16-bit weights.
  expectLayout(gemvLayout(h200, 4096, "bf16"), GEMV_LAYOUTS.subgroupLong, "", "bf16 K=4096");
  expectLayout(gemvLayout(h200, 14336, "bf16"), GEMV_LAYOUTS.subgroupLong, "", "bf16 K=14336");
  expectLayout(gemvLayout(h200, 2048, "f16"), GEMV_LAYOUTS.subgroup, "", "f16 K=2048");
  expectLayout(gemvLayout(h200, 768, "bf16"), GEMV_LAYOUTS.subgroupShort, "", "bf16 K=768");
  expectLayout(gemvLayout(h200, 768, "f32"), GEMV_LAYOUTS.subgroup, "", "f32 K=768");
  // Ragged rows count their whole blocks.
  if (gemvRowBlocks(1030, "bf16") !== 128 || gemvRowBlocks(1023, "f32") !== 255) {
    throw new Error("gemvRowBlocks");
  }
});

Deno.test("gemvLayout: portable layouts without subgroups, other subgroup sizes, or when asked", () => {
  const T = GEMV_THRESHOLDS;
  const devices: [Gpu, string][] = [
    [gemvDescribed({ subgroups: false }), "lacks the subgroups feature"],
    [gemvDescribed({ sizes: [4, 128] }), "32-wide subgroups; the device has 4 .. 128"],
    [gemvDescribed({ sizes: [64, 64] }), "the device has 64 .. 64"],
    [gemvDescribed({ sizes: [16, 32] }), "the device has 16 .. 32"],
    [gemvDescribed({ sizes: false }), "the device has ? .. ?"],
  ];
  for (const dtype of DTYPES) {
    for (const [gpu, reason] of devices) {
      for (
        const [blocks, want] of [
          [1, GEMV_LAYOUTS.portable],
          [T.subgroupLong, GEMV_LAYOUTS.portable],
          [T.portableLong - 1, GEMV_LAYOUTS.portable],
          [T.portableLong, GEMV_LAYOUTS.portableLong],
        ] as const
      ) {
        const K = kOf(blocks, dtype);
        expectLayout(gemvLayout(gpu, K, dtype), want, reason, `${dtype} K=${K} (${reason})`);
      }
    }
    const K = kOf(T.subgroupLong, dtype);
    expectLayout(
      gemvLayout(gemvDescribed(), K, dtype, "portable"),
      GEMV_LAYOUTS.portable,
      "the caller asked for the portable kernels",
      `${dtype} kernels=portable`,
    );
    expectLayout(
      chooseGemvLayout({ subgroups: false }, K, dtype),
      GEMV_LAYOUTS.portable,
      "lacks the subgroups feature",
      "chooseGemvLayout without subgroups",
    );
  }
  for (const l of PORTABLE_LAYOUTS) {
    if (l.reduction !== "tree") throw new Error(`${l.name} is not portable`);
  }
  for (const l of SUBGROUP_LAYOUTS) {
    if (l.reduction !== "subgroup") throw new Error(`${l.name} is not a subgroup layout`);
  }
});

Deno.test("gemvLayout: PREGATE_KERNELS=portable forces the portable layouts; bad values throw", async () => {
  const h200 = gemvDescribed();
  const before = Deno.env.get("PREGATE_KERNELS");
  try {
    Deno.env.set("PREGATE_KERNELS", "portable");
    expectLayout(gemvLayout(h200, 4096, "bf16"), GEMV_LAYOUTS.portable, "PREGATE_KERNELS", "env");
    Deno.env.set("PREGATE_KERNELS", "auto");
    expectLayout(gemvLayout(h200, 4096, "bf16"), GEMV_LAYOUTS.subgroupLong, "subgroups", "auto");
    Deno.env.set("PREGATE_KERNELS", "fast");
    await rejects(() => gemvLayout(h200, 4096, "bf16"), "PREGATE_KERNELS");
  } finally {
    if (before === undefined) Deno.env.delete("PREGATE_KERNELS");
    else Deno.env.set("PREGATE_KERNELS", before);
  }
  await rejects(() => gemvLayout(h200, 64, "f32", "fast" as "auto"), "kernels");
  await rejects(() => gemvLayout(h200, 0, "f32"), "K");
  await rejects(() => gemvLayout(h200, 64, "fp8" as DType), "dtype");
});
