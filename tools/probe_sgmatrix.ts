/**
 * Tries tilings of the subgroup-matrix GEMM (`kernels/matmul_sgmatrix.wgsl`) at one size (default
 * 4096^3) on one device and prints TFLOP/s per tiling, each validated first; meant for one short
 * GPU-host slot:
 *
 * ```sh
 * deno run -A tools/probe_sgmatrix.ts --gpu dawn [--size 4096] [--dtype f16|bf16|f16,bf16] [--x f32|f16] [--out probe.json]
 *   [--configs '[{"SGM":2,"SGN":2,"TM":4,"TN":4,"BK":32,"STAGES":2}]'] [--no-baseline]
 * ```
 *
 * Per tiling: compile, a full check on a small ragged shape, then the large product with the output
 * poisoned (every element must be written) and 256 sampled outputs compared with a float64 reference
 * on f16-rounded operands (normwise < 1e-3), then GPU time (timestamp queries when the device has
 * them). A tiling that fails (compile error, over a limit, wrong result, GPU error) is reported and
 * the next one runs. Finally the fastest valid tiling runs once more with bf16 weights, and the
 * portable `matmul` is timed on the same product for comparison (`--no-baseline` skips it).
 *
 * Dawn flags: `PREGATE_DAWN_FLAGS` (space-separated) replaces the defaults of `runtime/gpu/device.ts`,
 * e.g. to try `enable-dawn-features=allow_unsafe_apis,vulkan_enable_f16_on_nvidia,disable_robustness`.
 *
 * `--dry-run` runs the portable `matmul` in place of the subgroup-matrix kernel, on any device (use a
 * small `--size`): it tests this script, not the kernel.
 *
 * `--ablate` then times the fastest tiling of each entry point (the file's `main` with loops, the
 * generated `main_unrolled`) again with parts of the kernel removed (results wrong by design, not
 * validated): without the global -> workgroup staging in the K loop (what the subgroup-matrix loads
 * and multiplies alone cost), without the subgroup-matrix loads and multiplies (what the staging
 * alone costs) and, unrolled only, the multiplies alone (the tensor-core rate this code reaches).
 * Whichever is close to the full kernel's time is its bound.
 *
 * Exit status: 0 when at least one tiling was valid, 1 when none was, 2 when the device has no
 * subgroup matrices (the reason is printed; nothing else runs).
 * @module
 */
import { parseArgs } from "node:util";
import { openGpu } from "../runtime/gpu/device.ts";
import {
  matmul,
  matmulSgmatrix,
  SGMATRIX_TUNING,
  sgmatrixSharedBytes,
  type SgmatrixTuning,
  sgmatrixUnsupported,
} from "../kernels/linear.ts";
import { type DType, packWeights, roundTo } from "../runtime/weights/dtype.ts";
import { POISON, randn, relError } from "../kernels/test_util.ts";
import { matmulRef } from "../kernels/reference.ts";
import { gpuTime } from "../bench/harness.ts";
import { ClockSampler } from "../bench/clock.ts";

const { values: args } = parseArgs({
  args: Deno.args,
  options: {
    gpu: { type: "string", default: "dawn" },
    size: { type: "string", default: "4096" },
    dtype: { type: "string", default: "f16" },
    x: { type: "string", default: "f32" },
    configs: { type: "string" },
    out: { type: "string" },
    "no-baseline": { type: "boolean", default: false },
    "dry-run": { type: "boolean", default: false },
    ablate: { type: "boolean", default: false },
    help: { type: "boolean", default: false },
  },
});
if (args.help) {
  console.log(
    "deno run -A tools/probe_sgmatrix.ts [--gpu dawn|native|auto] [--size N] [--dtype f16|bf16] [--x f32|f16] " +
      "[--configs JSON] [--out file.json] [--no-baseline] [--ablate] [--dry-run]",
  );
  Deno.exit(0);
}
const S = Number(args.size);
if (!Number.isInteger(S) || S < 16 || S % 8 !== 0) {
  console.error(`--size must be a multiple of 8, got ${args.size}`);
  Deno.exit(64);
}
const xDtype = args.x as "f32" | "f16";
if (xDtype !== "f32" && xDtype !== "f16") {
  console.error(`--x must be f32 or f16, got ${args.x}`);
  Deno.exit(64);
}
if (xDtype === "f16" && args["dry-run"]) {
  console.error(
    "--dry-run runs the portable matmul, which takes f32 activations only: drop --x f16",
  );
  Deno.exit(64);
}
// One weight dtype (the fastest tiling then runs once with the other too) or a list (every tiling
// with each).
const dtypes = args.dtype.split(",") as DType[];
if (!dtypes.length || dtypes.some((d) => d !== "f16" && d !== "bf16")) {
  console.error(`--dtype must be f16, bf16 or a comma-separated list of them, got ${args.dtype}`);
  Deno.exit(64);
}
const dtype0 = dtypes[0];

/**
 * Tilings tried by default: the default, its vec4 staging, one buffer, 256-thread workgroups, BK 64,
 * smaller tiles (VEC 1 = workgroup tiles as vec4<f16> arrays, 4 values per store).
 */
const CONFIGS: Partial<SgmatrixTuning>[] = [
  { ...SGMATRIX_TUNING },
  { ...SGMATRIX_TUNING, VEC: 1 },
  { ...SGMATRIX_TUNING, STAGES: 1 },
  { SGM: 2, SGN: 4, TM: 4, TN: 2, BK: 32, STAGES: 2, VEC: 0 },
  { SGM: 2, SGN: 4, TM: 4, TN: 2, BK: 32, STAGES: 2, VEC: 1 },
  { SGM: 4, SGN: 2, TM: 2, TN: 4, BK: 32, STAGES: 2, VEC: 1 },
  { SGM: 2, SGN: 2, TM: 4, TN: 4, BK: 64, STAGES: 1, VEC: 1 },
  { SGM: 2, SGN: 2, TM: 2, TN: 4, BK: 32, STAGES: 2, VEC: 1 },
  { SGM: 1, SGN: 1, TM: 4, TN: 4, BK: 32, STAGES: 2, VEC: 1 },
  // The generated entry (loops written out): the default, larger subgroup tiles, BK 64.
  { ...SGMATRIX_TUNING, UNROLLED: 1 },
  { SGM: 2, SGN: 2, TM: 4, TN: 4, BK: 32, STAGES: 2, VEC: 1, UNROLLED: 1 },
  { SGM: 2, SGN: 4, TM: 4, TN: 2, BK: 32, STAGES: 2, VEC: 1, UNROLLED: 1 },
  { SGM: 2, SGN: 2, TM: 4, TN: 4, BK: 64, STAGES: 1, VEC: 1, UNROLLED: 1 },
  { SGM: 4, SGN: 2, TM: 2, TN: 4, BK: 32, STAGES: 2, VEC: 0, UNROLLED: 1 },
];
let configs = CONFIGS;
if (args.configs) {
  try {
    configs = JSON.parse(args.configs);
    if (!Array.isArray(configs)) throw new Error("not an array");
  } catch (e) {
    console.error(`--configs: expected a JSON array of tilings: ${(e as Error).message}`);
    Deno.exit(64);
  }
}

const gpu = await openGpu({
  gpu: args.gpu as "dawn" | "native" | "auto",
  log: (m) => console.error(m),
});
const info = gpu.adapterInfo;
console.log(`device: ${gpu.describe()}`);
console.log(
  `limits: workgroup storage ${gpu.limits.maxComputeWorkgroupStorageSize} B, ` +
    `${gpu.limits.maxComputeInvocationsPerWorkgroup} invocations; subgroups ` +
    `${info?.subgroupMinSize} .. ${info?.subgroupMaxSize}`,
);
const dryRun = args["dry-run"];
const why = sgmatrixUnsupported(gpu);
if (why && !dryRun) {
  console.log(`no subgroup-matrix feature: ${why}`);
  gpu.destroy();
  Deno.exit(2);
}

const describeTune = (t: Partial<SgmatrixTuning>) => {
  const u = { ...SGMATRIX_TUNING, ...t };
  return `${u.SGM}x${u.SGN} sg, ${u.TM}x${u.TN} tiles (${16 * u.SGM * u.TM}x${
    16 * u.SGN * u.TN
  }), BK ${u.BK}, ${u.STAGES} buf, ${u.VEC ? "vec4" : "f16"} tiles${
    u.UNROLLED ? ", unrolled" : ""
  }`;
};

interface Result {
  tune: Partial<SgmatrixTuning>;
  dtype: DType;
  status: "ok" | "skipped" | "failed";
  message?: string;
  sharedBytes: number;
  smallError?: number;
  sampledError?: number;
  ms?: number;
  tflops?: number;
  timing?: string;
  /** SM clock range (MHz) during the timed runs, where nvidia-smi runs. */
  clock?: { min: number; max: number } | null;
}

// ------------------------------------------------------------------ data (generated once per dtype)

console.error(`[probe] generating ${S}x${S} inputs`);
const x = randn(S * S);
const wF = randn(S * S, 1 / Math.sqrt(S));
const x16 = roundTo(x, "f16");
const xBuf = gpu.storage("activations", x);
// The kernel's activations: x itself, or x packed as f16 (--x f16).
const xIn = xDtype === "f16" ? gpu.storage("activations", packWeights(x16, "f16")) : xBuf;
const yBuf = gpu.storage("activations", S * S * 4);
const poison = new Uint32Array(S * S).fill(POISON);
const weights = new Map<DType, { buf: GPUBuffer; w16: Float32Array }>();
function weightsOf(dtype: DType) {
  let e = weights.get(dtype);
  if (!e) {
    console.error(`[probe] packing ${dtype} weights`);
    e = {
      buf: gpu.storage("dense", packWeights(wF, dtype)),
      w16: roundTo(roundTo(wF, dtype), "f16"),
    };
    weights.set(dtype, e);
  }
  return e;
}

// 256 sampled outputs, spread over rows, columns and tile positions.
const samples = Array.from({ length: 256 }, (_, i) => {
  const t = (i * 2654435761) % S, n = (i * 40503 + 17 * i * i) % S;
  return [t >>> 0, n >>> 0] as const;
});

/** The S x S x S product's arguments with `dtype` weights. */
function fullSize(dtype: DType) {
  return { x: xIn, w: weightsOf(dtype).buf, y: yBuf, T: S, K: S, N: S, dtype, xDtype };
}

/** The kernel under test (the portable one with --dry-run). */
function build(a: Parameters<typeof matmulSgmatrix>[1]) {
  if (!dryRun) return matmulSgmatrix(gpu, a);
  const { tune: _tune, xDtype: _x, ...rest } = a;
  return matmul(gpu, rest);
}

/** Full check of one tiling on a small ragged shape. */
async function smallCheck(tune: Partial<SgmatrixTuning>, dtype: DType): Promise<number> {
  const [T, K, N] = [200, 264, 136];
  const xs = roundTo(randn(T * K), xDtype), ws = randn(N * K, 1 / Math.sqrt(K));
  const bx = gpu.storage("activations", xDtype === "f16" ? packWeights(xs, "f16") : xs);
  const bw = gpu.storage("dense", packWeights(ws, dtype));
  const by = gpu.storage("activations", new Uint32Array(T * N).fill(POISON));
  try {
    gpu.submit([await build({ x: bx, w: bw, y: by, T, K, N, dtype, tune, xDtype })]);
    const out = await gpu.readF32(by);
    const bits = new Uint32Array(out.buffer);
    const unwritten = bits.findIndex((b) => b === POISON);
    if (unwritten >= 0) throw new Error(`small check: output ${unwritten} never written`);
    const ref = matmulRef(roundTo(xs, "f16"), roundTo(roundTo(ws, dtype), "f16"), T, K, N);
    const err = relError(out, ref);
    if (!(err < 1e-3)) throw new Error(`small check (T=${T} K=${K} N=${N}): error ${err}`);
    return err;
  } finally {
    for (const b of [bx, bw, by]) gpu.destroyBuffer(b);
  }
}

// The H200's SM clock climbs from ~500 MHz only after seconds of sustained work: each timing runs
// after 2 s of the same work (gpuTime's warm-up), and reports the clock range nvidia-smi saw.
const clock = ClockSampler.start(50);

/** GPU time of `d` (median of 5 samples of `inner` runs, after 2 s of warm-up) and the clock. */
async function timeAt(d: Awaited<ReturnType<typeof build>>, inner: number) {
  // A measurement at a fallen clock is repeated (gpuTime); the clock range is the timed samples'.
  const t = await gpuTime(gpu, [d], { inner, samples: 5, warmup: 1, warmupMs: 2000, clock });
  return { ...t, clock: t.clock ?? null };
}

function clockText(c: { min: number; max: number } | null | undefined): string {
  return c ? `, SM ${c.min}-${c.max} MHz` : "";
}

async function probe(tune: Partial<SgmatrixTuning>, dtype: DType): Promise<Result> {
  const full = { ...SGMATRIX_TUNING, ...tune };
  const r: Result = { tune, dtype, status: "failed", sharedBytes: sgmatrixSharedBytes(full) };
  if (r.sharedBytes > gpu.limits.maxComputeWorkgroupStorageSize) {
    return { ...r, status: "skipped", message: `needs ${r.sharedBytes} B of workgroup memory` };
  }
  try {
    r.smallError = await smallCheck(tune, dtype);
    const { w16 } = weightsOf(dtype);
    gpu.write(yBuf, poison);
    const d = await build({ ...fullSize(dtype), tune });
    const t0 = performance.now();
    gpu.submit([d]);
    const out = await gpu.readF32(yBuf);
    const firstMs = performance.now() - t0;
    const bits = new Uint32Array(out.buffer);
    const unwritten = bits.indexOf(POISON);
    if (unwritten >= 0) throw new Error(`output ${unwritten} (of ${S}x${S}) never written`);
    const got: number[] = [], ref: number[] = [];
    for (const [t, n] of samples) {
      let s = 0;
      for (let k = 0; k < S; k++) s += x16[t * S + k] * w16[n * S + k];
      got.push(out[t * S + n]);
      ref.push(s);
    }
    r.sampledError = relError(got, ref);
    if (!(r.sampledError < 1e-3)) throw new Error(`sampled error ${r.sampledError} >= 1e-3`);
    // About 50 ms of GPU work per timed sample.
    const inner = Math.max(1, Math.min(50, Math.round(50 / Math.max(firstMs / 4, 0.5))));
    const timed = await timeAt(d, inner);
    r.ms = timed.seconds * 1e3;
    r.tflops = (2 * S ** 3) / timed.seconds / 1e12;
    r.clock = timed.clock;
    r.timing = `${timed.how}, ${inner} per sample${clockText(timed.clock)}`;
    r.status = "ok";
  } catch (e) {
    r.message = (e as Error).message.split("\n").slice(0, 6).join(" | ");
  }
  return r;
}

function line(r: Result): string {
  const f = (v: number | undefined, d = 2) =>
    v === undefined ? "-" : v >= 1 ? v.toFixed(d) : v.toPrecision(3);
  const e = (v: number | undefined) => (v === undefined ? "-" : v.toExponential(1));
  return `| ${describeTune(r.tune)} | ${r.dtype} | ${r.sharedBytes} | ${r.status} | ` +
    `${e(r.smallError)} | ${e(r.sampledError)} | ${f(r.ms, 3)} | ${f(r.tflops, 1)} | ` +
    `${r.message ?? r.timing ?? ""} |`;
}

console.log(
  `\n${dryRun ? "DRY RUN (the portable matmul in place of the kernel): " : ""}` +
    `subgroup-matrix GEMM, ${S}^3, x ${xDtype}${
      xDtype === "f32" ? " -> f16" : ""
    }, W ${dtype0} (peer: PyTorch fp16 721 TFLOP/s on ` +
    `the H200, platform.md; target >= 150)\n`,
);
console.log(
  "| tiling | W | smem B | status | small err | sampled err | ms | TFLOP/s | notes |",
);
console.log("|---|---|---|---|---|---|---|---|---|");
const results: Result[] = [];
for (const tune of configs) {
  for (const dtype of dtypes) {
    const r = await probe(tune, dtype);
    results.push(r);
    console.log(line(r));
  }
}
const ok = results.filter((r) => r.status === "ok" && r.dtype === dtype0)
  .sort((a, b) => b.tflops! - a.tflops!);
if (ok.length && dtypes.length === 1) {
  const other: DType = dtype0 === "f16" ? "bf16" : "f16";
  const r = await probe(ok[0].tune, other);
  results.push(r);
  console.log(line(r));
}
let baseline: { ms: number; tflops: number } | undefined;
if (!args["no-baseline"]) {
  try {
    const { xDtype: _x, ...f32Args } = fullSize(dtype0);
    const d = await matmul(gpu, { ...f32Args, x: xBuf });
    const t = await gpuTime(gpu, [d], { inner: 2, samples: 3, warmup: 1 });
    baseline = { ms: t.seconds * 1e3, tflops: (2 * S ** 3) / t.seconds / 1e12 };
    console.log(
      `| portable matmul (matmul.wgsl, f32 math) | ${dtype0} | - | ok | - | - | ` +
        `${baseline.ms.toFixed(3)} | ${baseline.tflops.toFixed(1)} | not validated here |`,
    );
  } catch (e) {
    console.log(`portable matmul baseline failed: ${(e as Error).message}`);
  }
}
const ablations: {
  tune: Partial<SgmatrixTuning>;
  ablate: 1 | 2 | 3;
  what: string;
  ms?: number;
  tflops?: number;
  clock?: { min: number; max: number } | null;
  error?: string;
}[] = [];
if (args.ablate && ok.length && !dryRun) {
  // The fastest tiling of each entry point (loops, unrolled); the multiplies alone only unrolled.
  const fastest = [0, 1].map((u) => ok.find((r) => (r.tune.UNROLLED ?? 0) === u))
    .filter((r) => r !== undefined);
  for (const best of fastest) {
    const steps = [
      [1, "no global -> workgroup staging (subgroup-matrix loads + multiplies only)"],
      [2, "no subgroup-matrix loads or multiplies (staging only)"],
      ...(best.tune.UNROLLED ? [[3, "the multiplies alone (no staging, no loads)"] as const] : []),
    ] as const;
    for (const [ablate, what] of steps) {
      const a: (typeof ablations)[number] = { tune: best.tune, ablate, what };
      try {
        const d = await matmulSgmatrix(gpu, { ...fullSize(dtype0), tune: best.tune, ablate });
        const t = await timeAt(d, 10);
        a.ms = t.seconds * 1e3;
        a.tflops = (2 * S ** 3) / t.seconds / 1e12;
        a.clock = t.clock;
      } catch (e) {
        a.error = (e as Error).message.split("\n")[0];
      }
      ablations.push(a);
      console.log(
        `| ablation of ${describeTune(best.tune)}: ${what} | ${dtype0} | - | ${
          a.error ? "failed" : "ok"
        } | - | - | ${a.ms?.toFixed(3) ?? "-"} | ${a.tflops?.toFixed(1) ?? "-"} | ${
          a.error ??
            "not validated (wrong by design); full kernel " + best.ms!.toFixed(3) + " ms" +
              clockText(a.clock)
        } |`,
      );
    }
  }
}
if (ok.length) {
  console.log(
    `\nfastest: ${describeTune(ok[0].tune)}: ${ok[0].tflops!.toPrecision(4)} TFLOP/s ` +
      `(${JSON.stringify({ ...SGMATRIX_TUNING, ...ok[0].tune })})`,
  );
} else {
  console.log("\nno tiling produced a valid result");
}
if (args.out) {
  await Deno.writeTextFile(
    args.out,
    JSON.stringify(
      { device: gpu.describe(), size: S, x: xDtype, results, baseline, ablations },
      null,
      2,
    ),
  );
}
await clock?.stop();
gpu.destroy();
Deno.exit(ok.length ? 0 : 1);
