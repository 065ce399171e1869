/**
 * Tests of the decode GEMV layouts (`gemv.ts`) and of the kernels that use them (`matvec`,
 * `moeGateUp`, `moeDown`, `moeDownCombine`, `qkvProj`); the selection (`gemvLayout`,
 * `chooseGemvLayout` on described devices) is tested in `linear_variant_test.ts`.
 *
 * - Portable layouts (`gemv_tree.wgsl`): every kernel, dtype and the modes at ragged shapes in both
 *   layouts the rule can choose, and the long-row layout chosen by the rule itself.
 * - Subgroup layouts (`gemv_subgroup.wgsl`): on devices with 32-wide subgroups (Dawn on the GPU
 *   host) the real kernels run. Everywhere, the same kernels run with the subgroup reduction's code
 *   and `subgroupAdd` / `subgroupShuffleXor` emulated in workgroup memory (32 consecutive
 *   invocations per subgroup), and the real subgroup sources are compiled by Dawn's WGSL compiler
 *   on its null backend (when the npm package `webgpu` loads), including the uniformity analysis.
 * - Sources: the subgroup variant of each kernel differs from the portable one only in the reduction
 *   include, and only it enables `subgroups`.
 * @module
 */
import type { Dispatch, Gpu } from "../runtime/base/gpu/device.ts";
import { type DType, DTYPE_BYTES, packWeights, roundTo } from "../runtime/base/dtype.ts";
import {
  GEMV_LAYOUTS,
  GEMV_THRESHOLDS,
  type GemvLayout,
  type GemvReductionSource,
  gemvSource,
} from "./gemv.ts";
import { gemvLayout, MATVEC, matvec } from "./linear.ts";
import {
  MOE_DOWN,
  MOE_DOWN_COMBINE,
  MOE_GATE_UP,
  moeDown,
  moeDownCombine,
  moeGateUp,
} from "./moe.ts";
import { QKV, qkvProj } from "./qkv.ts";
import { MATVEC_Q8K, matvecQ8K, q8kBytes, quantizeQ8K } from "./q8k_gemv.ts";
import { roundActivationsRef } from "./reference_pointwise.ts";
import { dequantize, quantize } from "../runtime/weights/quant.ts";
import { weightRowBytes } from "../runtime/weights/weight_type.ts";
import { wgslFile } from "./registry.ts";
import { matmulRef, moeDownCombineRef, moeDownRef, moeGateUpRef, qkvRef } from "./reference.ts";
import {
  assertClose,
  bindForTest,
  dawnNullGpu,
  GPU_TEST,
  loadDawn,
  poisoned,
  randn,
  rejects,
  testGpu,
  words,
} from "./test_util.ts";

const DTYPES: DType[] = ["f32", "f16", "bf16"];
const SUBGROUP_LAYOUTS = [
  GEMV_LAYOUTS.subgroupShort,
  GEMV_LAYOUTS.subgroup,
  GEMV_LAYOUTS.subgroupLong,
];
const PORTABLE_LAYOUTS = [GEMV_LAYOUTS.portable, GEMV_LAYOUTS.portableLong];

/** K of a row of `blocks` 16-byte blocks. */
const kOf = (blocks: number, dtype: DType) => blocks * (dtype === "f32" ? 4 : 8);

// ------------------------------------------------------------------------------------ sources

const GEMV_SPECS = [MATVEC, MOE_GATE_UP, MOE_DOWN, MOE_DOWN_COMBINE, QKV, MATVEC_Q8K];

Deno.test("the subgroup source of each GEMV kernel differs from the portable one only in the reduction", async () => {
  const tree = await wgslFile("gemv_tree.wgsl");
  const sg = await wgslFile("gemv_subgroup.wgsl");
  for (const spec of GEMV_SPECS) {
    const rest = (await Promise.all([...spec.includes.slice(1), spec.file].map(wgslFile))).join(
      "\n",
    );
    const p = await gemvSource(spec, GEMV_LAYOUTS.portable).source();
    const s = await gemvSource(spec, GEMV_LAYOUTS.subgroup).source();
    if (spec.includes[0] !== "gemv_tree.wgsl" || await spec.source() !== p) {
      throw new Error(`${spec.name}: the spec itself must be the portable variant`);
    }
    if (p !== `${tree}\n${rest}` || s !== `${sg}\n${rest}`) {
      throw new Error(`${spec.name}: the variants are not the reduction include + the same rest`);
    }
    if (/enable\s+subgroups|subgroup[A-Z]|@builtin\(subgroup/.test(p)) {
      throw new Error(`${spec.name}: the portable source uses subgroups`);
    }
    if (!s.startsWith("enable subgroups;")) {
      throw new Error(`${spec.name}: the subgroup source must start with 'enable subgroups;'`);
    }
    const names = [
      gemvSource(spec, GEMV_LAYOUTS.portable).name,
      gemvSource(spec, GEMV_LAYOUTS.subgroup).name,
    ];
    if (names[0] !== spec.name || names[1] !== `${spec.name}+subgroup`) {
      throw new Error(`${spec.name}: pipeline names ${names}`);
    }
  }
  // The body itself never names a subgroup operation.
  for (const file of ["matvec.wgsl", "moe.wgsl", "qkv.wgsl", "vec4_dot.wgsl"]) {
    if (/enable\s+subgroups|subgroup[A-Z]|@builtin\(subgroup/.test(await wgslFile(file))) {
      throw new Error(`${file} uses subgroups outside the reduction include`);
    }
  }
});

// ------------------------------------------------------------------------------------ emulation

/**
 * `gemv_subgroup.wgsl` with the subgroup operations emulated in workgroup memory: a subgroup is 32
 * consecutive local invocations (as the file assumes), `subgroupAdd` sums them, `subgroupShuffleXor`
 * reads lane `lid ^ mask`, the size builtin reads 32 and the lane id `lid % 32`. Everything else is
 * the file's own code. Each substitution must match the expected number of times.
 */
const EMULATED: GemvReductionSource = {
  name: "emulated",
  async source() {
    let src = await wgslFile("gemv_subgroup.wgsl");
    const sub = (from: string | RegExp, to: string, count: number) => {
      const re = typeof from === "string"
        ? new RegExp(from.replace(/[.*+?^${}()|[\]\\]/g, "\\$&"), "g")
        : from;
      const n = (src.match(re) ?? []).length;
      if (n !== count) {
        throw new Error(`gemv_subgroup.wgsl: expected ${count} of ${re}, found ${n}`);
      }
      src = src.replace(re, to);
    };
    sub("enable subgroups;\n", "", 1);
    sub(/ *@builtin\(subgroup_size\) sgs: u32,\n/g, "", 1);
    sub(/ *@builtin\(subgroup_invocation_id\) sgi: u32,\n/g, "", 1);
    sub("l.sgs", "emu_size", 4);
    sub("l.sgi", "(l.lid % 32u)", 2);
    sub("subgroupAdd(v)", "emu_add(l, v)", 2);
    sub("subgroupAdd(v2)", "emu_add2(l, v2)", 2);
    sub("subgroupShuffleXor(t, o)", "emu_xor(l, t, o)", 1);
    sub("subgroupShuffleXor(t2, o)", "emu_xor2(l, t2, o)", 1);
    if (/subgroup[A-Z]|@builtin\(subgroup|l\.sg/.test(src.replace(/\/\/.*$/gm, ""))) {
      throw new Error("gemv_subgroup.wgsl: a subgroup operation is left after emulation");
    }
    return `${src}
var<private> emu_size: u32 = 32u;
var<workgroup> emu_s: array<vec2<f32>, WG>;
fn emu_add2(l: Lanes, v: vec2<f32>) -> vec2<f32> {
  workgroupBarrier();
  emu_s[l.lid] = v;
  workgroupBarrier();
  let first = l.lid & ~31u;
  var s = vec2<f32>(0.0);
  for (var i = 0u; i < 32u; i++) {
    s += emu_s[first + i];
  }
  workgroupBarrier();
  return s;
}
fn emu_add(l: Lanes, v: f32) -> f32 {
  return emu_add2(l, vec2<f32>(v, 0.0)).x;
}
fn emu_xor2(l: Lanes, v: vec2<f32>, mask: u32) -> vec2<f32> {
  workgroupBarrier();
  emu_s[l.lid] = v;
  workgroupBarrier();
  let r = emu_s[l.lid ^ mask];
  workgroupBarrier();
  return r;
}
fn emu_xor(l: Lanes, v: f32, mask: u32) -> f32 {
  return emu_xor2(l, vec2<f32>(v, 0.0), mask).x;
}
`;
  },
};

// ------------------------------------------------------------------------------------ kernel cases

/**
 * Row lengths for a layout: aligned rows with whole TPR * UNROLL steps and a remainder, the same
 * plus a ragged tail (no 16-byte rows: the word-by-word path), and a row shorter than one step.
 */
function rowLengths(l: GemvLayout, dtype: DType): number[] {
  const blocks = l.TPR * l.UNROLL + Math.max(1, l.TPR / 2) + 3;
  const K = kOf(blocks, dtype);
  return [K, K + 2, dtype === "f32" ? 7 : 10];
}

/** A check run after the one submission of a suite. */
type Check = () => Promise<void>;

/** matvec cases for a layout: T 1 and 3 (TB 1 and 2), accumulate, ragged N. */
async function matvecCases(gpu: Gpu, layout: GemvLayout, made: GPUBuffer[], tag: string) {
  const steps: Dispatch[] = [];
  const checks: Check[] = [];
  let i = 0;
  for (const dtype of DTYPES) {
    for (const [j, K] of rowLengths(layout, dtype).entries()) {
      const N = 2 * layout.ROWS + 3;
      for (const [T, TB] of j === 0 ? [[1, 1], [3, 1], [3, 2]] : [[2, 1]]) {
        const accumulate = (i + j + T) % 2 === 1;
        const x = randn(T * K), wf = randn(N * K, 1 / Math.sqrt(K));
        const init = accumulate ? randn(T * N) : undefined;
        const y = init ? gpu.storage("activations", init) : poisoned(gpu, T * N);
        made.push(y);
        const tune = TB > 1 ? { TB } : undefined;
        const args = {
          x: bindForTest(gpu, x, i, made),
          w: bindForTest(gpu, packWeights(wf, dtype), i + 1, made),
          y,
          T,
          K,
          N,
          dtype,
          accumulate,
          layout,
          tune,
        };
        i++;
        const d = await matvec(gpu, args);
        if (!d.label.includes(layout.name) && !tune) {
          throw new Error(`matvec: expected layout ${layout.name} in the label, got '${d.label}'`);
        }
        steps.push(d);
        const what = `${tag} matvec ${dtype} T=${T} K=${K} N=${N} TB=${TB}${
          accumulate ? " acc" : ""
        }`;
        checks.push(async () => {
          const out = await gpu.readF32(y, 0, T * N);
          assertClose(out, matmulRef(x, roundTo(wf, dtype), T, K, N, init), 1e-5, what);
        });
      }
    }
  }
  return { steps, checks };
}

/**
 * matvecQ8K cases for a layout (Q4_K and Q5_K over Q8_K activations): rows of more than two units
 * per lane and of fewer units than lanes, T 1 and 2, accumulate, ragged N.
 */
async function q8kCases(gpu: Gpu, layout: GemvLayout, made: GPUBuffer[], tag: string) {
  const steps: Dispatch[] = [];
  const checks: Check[] = [];
  const long = 256 * Math.ceil((2 * layout.TPR + 5) / 4);
  for (const [i, [type, K, T]] of ([["q4_k", long, 1], ["q5_k", 256, 2]] as const).entries()) {
    const N = 2 * layout.ROWS + 3, accumulate = i === 1;
    const q = quantize(randn(N * K, 0.5), type);
    const x = randn(T * K);
    const init = accumulate ? randn(T * N) : undefined;
    const y = init ? gpu.storage("activations", init) : poisoned(gpu, T * N);
    const size = q8kBytes(T, K);
    const xq = gpu.storage("activations", size.values),
      xd = gpu.storage("activations", size.scales);
    made.push(y, xq, xd);
    steps.push(await quantizeQ8K(gpu, { x: bindForTest(gpu, x, i, made), xq, xd, rows: T, K }));
    const w = bindForTest(gpu, words(q), i + 1, made);
    steps.push(await matvecQ8K(gpu, { xq, xd, w, y, T, K, N, type, accumulate, layout }));
    checks.push(async () => {
      const ref = matmulRef(roundActivationsRef(x, "q8_k"), dequantize(q, type), T, K, N, init);
      const what = `${tag} matvecQ8K ${type} T=${T} K=${K} N=${N}${accumulate ? " acc" : ""}`;
      assertClose(await gpu.readF32(y, 0, T * N), ref, 1e-5, what);
    });
  }
  return { steps, checks };
}

/** A pool of `slots` slots holding `E` random experts at permuted slots (as moe_test.ts). */
function makePool(
  gpu: Gpu,
  E: number,
  rows: number,
  cols: number,
  dtype: DType,
  made: GPUBuffer[],
) {
  const slots = E + 2;
  const mats = Array.from({ length: E }, () => randn(rows * cols, 1 / Math.sqrt(cols)));
  const slotBytes = Math.ceil((rows * cols * DTYPE_BYTES[dtype]) / 256) * 256;
  const buf = gpu.storage("experts", slotBytes * slots);
  made.push(buf);
  const table = Uint32Array.from({ length: E }, (_, e) => slots - 1 - e);
  mats.forEach((m, e) => gpu.write(buf, packWeights(m, dtype), table[e] * slotBytes));
  return { rounded: mats.map((m) => roundTo(m, dtype)), buf, table, slotWords: slotBytes / 4 };
}

/**
 * moeGateUp, moeDown and moeDownCombine (combine in one pass, and round + round + finish, which
 * must give the same bits) for a layout; H and I are row lengths of the layout (ragged too).
 */
async function moeCases(gpu: Gpu, layout: GemvLayout, made: GPUBuffer[], tag: string) {
  const steps: Dispatch[] = [];
  const checks: Check[] = [];
  for (const [di, dtype] of DTYPES.entries()) {
    // One of the two row lengths of the layout (aligned or ragged) and a short ragged one, the
    // long rows for gate/up (K = H) or for down (K = I) by turns (long x long pools are slow to make
    // and check on the CPU).
    const long = rowLengths(layout, dtype)[di === 2 ? 1 : 0], short = 2 * layout.ROWS + 6;
    const [H, I] = di === 1 ? [short, long] : [long, short];
    const [T, topK, E] = [2, 3, 5];
    const store = (a: ArrayBufferView) => {
      const b = gpu.storage("activations", a);
      made.push(b);
      return b;
    };
    const g = makePool(gpu, E, I, H, dtype, made);
    const u = makePool(gpu, E, I, H, dtype, made);
    const dn = makePool(gpu, E, H, I, dtype, made);
    const table = store(g.table);
    const ids = Uint32Array.from({ length: T * topK }, (_, p) => (p * 7 + 3) % E);
    const common = { table, ids: store(ids), T, topK, hidden: H, inter: I, dtype, layout };
    const x = randn(T * H);
    const h = poisoned(gpu, T * topK * I, "h");
    const y = poisoned(gpu, T * topK * H, "y");
    made.push(h, y);
    steps.push(
      await moeGateUp(gpu, {
        ...common,
        x: store(x),
        gate: g.buf,
        up: u.buf,
        out: h,
        slotWords: g.slotWords,
      }),
    );
    // The down projections read their own random input (h is checked separately).
    const hd = randn(T * topK * I);
    const hdBuf = store(hd);
    const dcommon = { ...common, down: dn.buf, slotWords: dn.slotWords };
    steps.push(await moeDown(gpu, { ...dcommon, x: hdBuf, out: y }));
    const w = randn(T * topK), res = randn(T * H), so = randn(T * H), sgate = randn(T);
    const shared = { out: store(so), gate: store(sgate) };
    const wBuf = store(w);
    const fused = store(res);
    const half = Math.ceil(E / 2);
    const rounds = [0, 1].map((r) =>
      store(dn.table.map((s, e) => ((e < half) === (r === 0) ? s : 0xffffffff)))
    );
    const ys = poisoned(gpu, T * topK * H, "ys");
    const split = store(res);
    made.push(ys);
    steps.push(
      await moeDownCombine(gpu, { ...dcommon, x: hdBuf, weights: wBuf, out: fused, shared }),
      ...await Promise.all(
        rounds.map((t) =>
          moeDownCombine(gpu, { ...dcommon, table: t, x: hdBuf, out: ys, mode: "round" })
        ),
      ),
      await moeDownCombine(gpu, {
        ...dcommon,
        table: rounds[1],
        x: ys,
        weights: wBuf,
        out: split,
        shared,
        mode: "finish",
      }),
    );
    const what = `${tag} moe ${dtype} H=${H} I=${I}`;
    checks.push(async () => {
      const hOut = await gpu.readF32(h, 0, T * topK * I);
      assertClose(
        hOut,
        moeGateUpRef(x, g.rounded, u.rounded, ids, T, topK, H, I),
        1e-5,
        `${what} gate_up`,
      );
      const downRef = moeDownRef(hd, dn.rounded, ids, T * topK, H, I);
      assertClose(await gpu.readF32(y, 0, T * topK * H), downRef, 1e-5, `${what} down`);
      assertClose(await gpu.readF32(ys, 0, T * topK * H), downRef, 1e-5, `${what} rounds`);
      const got = await gpu.readF32(fused, 0, T * H);
      const sh = { out: so, gate: sgate };
      const ref = moeDownCombineRef(hd, dn.rounded, ids, w, res, T, topK, H, I, sh);
      assertClose(got, ref, 1e-5, `${what} down_combine`);
      const viaRounds = new Uint32Array((await gpu.readF32(split, 0, T * H)).buffer);
      const bits = new Uint32Array(got.buffer);
      if (viaRounds.some((v, k) => v !== bits[k])) {
        throw new Error(`${what}: rounds + finish differ from one pass`);
      }
    });
  }
  return { steps, checks };
}

/** qkvProj for a layout: T 2, ragged row counts, aligned and ragged K. */
async function qkvCases(gpu: Gpu, layout: GemvLayout, made: GPUBuffer[], tag: string) {
  const steps: Dispatch[] = [];
  const checks: Check[] = [];
  for (const [di, dtype] of DTYPES.entries()) {
    const K = rowLengths(layout, dtype)[di % 2];
    const [T, Nq, Nkv] = [2, 2 * layout.ROWS + 1, 3];
    const w = {
      q: randn(Nq * K, 1 / Math.sqrt(K)),
      k: randn(Nkv * K, 1 / Math.sqrt(K)),
      v: randn(Nkv * K, 1 / Math.sqrt(K)),
    };
    const x = randn(T * K);
    const out = { q: poisoned(gpu, T * Nq), k: poisoned(gpu, T * Nkv), v: poisoned(gpu, T * Nkv) };
    made.push(out.q, out.k, out.v);
    const b = (v: Float32Array) => {
      const buf = gpu.storage("dense", packWeights(v, dtype));
      made.push(buf);
      return buf;
    };
    const xBuf = gpu.storage("activations", x);
    made.push(xBuf);
    steps.push(
      await qkvProj(gpu, {
        x: xBuf,
        wq: b(w.q),
        wk: b(w.k),
        wv: b(w.v),
        ...out,
        T,
        K,
        Nq,
        Nkv,
        dtype,
        layout,
      }),
    );
    checks.push(async () => {
      const rounded = { q: roundTo(w.q, dtype), k: roundTo(w.k, dtype), v: roundTo(w.v, dtype) };
      const ref = qkvRef(x, rounded, T, K, Nq, Nkv);
      for (const m of ["q", "k", "v"] as const) {
        const got = await gpu.readF32(out[m], 0, ref[m].length);
        assertClose(got, ref[m], 1e-5, `${tag} qkv ${dtype} K=${K} ${m}`);
      }
    });
  }
  return { steps, checks };
}

/** Every GEMV kernel in `layout`, one submission, then the checks. */
async function runLayout(gpu: Gpu, layout: GemvLayout, tag = layout.name) {
  const made: GPUBuffer[] = [];
  try {
    const parts = [
      await matvecCases(gpu, layout, made, tag),
      await moeCases(gpu, layout, made, tag),
      await qkvCases(gpu, layout, made, tag),
      await q8kCases(gpu, layout, made, tag),
    ];
    gpu.submit(parts.flatMap((p) => p.steps));
    for (const p of parts) for (const check of p.checks) await check();
  } finally {
    for (const b of made) gpu.destroyBuffer(b);
  }
}

for (const layout of PORTABLE_LAYOUTS) {
  Deno.test({
    name: `portable layout ${layout.name}: matvec, moe and qkv GEMVs match the references at ` +
      "ragged shapes",
    ...GPU_TEST,
    fn: async () => await runLayout(await testGpu(), layout),
  });
}

Deno.test({
  name: "the rule's own choice runs: long rows get the long-row layout (matvec, moeDown)",
  ...GPU_TEST,
  fn: async () => {
    const gpu = await testGpu();
    const made: GPUBuffer[] = [];
    try {
      const checks: Check[] = [];
      const steps: Dispatch[] = [];
      for (const [i, dtype] of DTYPES.entries()) {
        const K = kOf(GEMV_THRESHOLDS.portableLong + 5, dtype) + (i === 1 ? 2 : 0);
        const want = gemvLayout(gpu, K, dtype);
        const N = 2 * want.ROWS + 1;
        const x = randn(K), wf = randn(N * K, 1 / Math.sqrt(K));
        const y = poisoned(gpu, N);
        made.push(y);
        const d = await matvec(gpu, {
          x: bindForTest(gpu, x, 1, made),
          w: bindForTest(gpu, packWeights(wf, dtype), 1, made),
          y,
          K,
          N,
          dtype,
        });
        if (!d.label.endsWith(`:${want.name}`)) {
          throw new Error(`matvec ${dtype} K=${K}: expected ${want.name}, got '${d.label}'`);
        }
        if (want.reduction === "tree" && want.name !== GEMV_LAYOUTS.portableLong.name) {
          throw new Error(`K=${K} ${dtype}: the rule chose ${want.name}`);
        }
        steps.push(d);
        checks.push(async () => {
          const out = await gpu.readF32(y, 0, N);
          assertClose(
            out,
            matmulRef(x, roundTo(wf, dtype), 1, K, N),
            1e-5,
            `matvec ${dtype} K=${K}`,
          );
        });
      }
      gpu.submit(steps);
      for (const c of checks) await c();
    } finally {
      for (const b of made) gpu.destroyBuffer(b);
    }
  },
});

for (const layout of SUBGROUP_LAYOUTS) {
  Deno.test({
    name: `subgroup layout ${layout.name}: the subgroup reduction's logic (emulated subgroup ` +
      "operations) in every GEMV kernel at ragged shapes",
    ...GPU_TEST,
    fn: async () => {
      await runLayout(
        await testGpu(),
        { ...layout, reduce: EMULATED },
        `${layout.name} (emulated)`,
      );
    },
  });
}

/** Whether the test device gets the subgroup layouts (32-wide subgroups). */
const SUBGROUPS = gemvLayout(await testGpu(), 4096, "bf16").reduction === "subgroup";

Deno.test({
  name: "subgroup layouts run for real where the device has 32-wide subgroups",
  ignore: !SUBGROUPS,
  ...GPU_TEST,
  fn: async () => {
    const gpu = await testGpu();
    for (const layout of SUBGROUP_LAYOUTS) await runLayout(gpu, layout);
  },
});

Deno.test({
  name: "GEMV layouts are validated (bad sizes, subgroups on a device without them)",
  ...GPU_TEST,
  fn: async () => {
    const gpu = await testGpu();
    const [T, K, N] = [1, 16, 8];
    const x = gpu.storage("activations", T * K * 4);
    const w = gpu.storage("dense", N * K * 4);
    const y = gpu.storage("activations", T * N * 4);
    const base = { x, w, y, T, K, N, dtype: "f32" as DType };
    const bad = (layout: Partial<GemvLayout>, text: string) =>
      rejects(
        matvec(gpu, { ...base, layout: { ...GEMV_LAYOUTS.portable, ...layout } as GemvLayout }),
        "layout",
        text,
      );
    await bad({ TPR: 24 }, "power of two");
    await bad({ UNROLL: 3 }, "UNROLL");
    await bad({ ROWS: 0 }, "ROWS");
    await bad({ reduction: "warp" as "tree" }, "reduction");
    await bad({ TPR: 1024, ROWS: 64 }, "threads");
    await bad({ ...GEMV_LAYOUTS.subgroup, TPR: 8, ROWS: 2, reduce: EMULATED }, "multiple of 32");
    if (!gpu.features.subgroups) {
      await bad(GEMV_LAYOUTS.subgroup, "needs the subgroups feature");
    }
    await rejects(matvec(gpu, { ...base, tune: { UNROLL: 3 } }), "tune.UNROLL");
    for (const b of [x, w, y]) gpu.destroyBuffer(b);
  },
});

// ------------------------------------------------------------------------------------ Dawn's compiler

/** Dawn (npm `webgpu`), for its WGSL compiler on the null backend; undefined where it does not load. */
const DAWN = await loadDawn();

Deno.test({
  name: "the subgroup GEMV sources compile with Dawn's WGSL compiler (null backend)",
  ignore: DAWN === undefined,
  ...GPU_TEST,
  fn: async () => {
    const gpu = await dawnNullGpu(DAWN!);
    try {
      if (!gpu.features.subgroups) {
        throw new Error(`Dawn's null backend lacks subgroups: ${gpu.describe()}`);
      }
      // Pipelines (and bind groups, submitted) for every subgroup layout, kernel, dtype and mode;
      // nothing runs on the null backend, but the WGSL is parsed, resolved and checked for uniformity.
      const made: GPUBuffer[] = [];
      const buf = (bytes: number) => {
        const b = gpu.storage("other", bytes);
        made.push(b);
        return b;
      };
      const steps: Dispatch[] = [];
      for (const layout of [...SUBGROUP_LAYOUTS, ...PORTABLE_LAYOUTS]) {
        for (const dtype of DTYPES) {
          for (const K of [64, 66]) {
            const [T, N] = [2, 8];
            const x = buf(T * K * 4), w = buf(N * K * 4), y = buf(T * N * 4);
            for (const tune of [undefined, { TB: 2 }]) {
              for (const accumulate of [false, true]) {
                steps.push(
                  await matvec(gpu, { x, w, y, T, K, N, dtype, accumulate, layout, tune }),
                );
              }
            }
          }
          for (const type of ["q4_k", "q5_k"] as const) {
            const [T, K, N] = [2, 512, 8];
            const { values, scales } = q8kBytes(T, K);
            steps.push(
              await matvecQ8K(gpu, {
                xq: buf(values),
                xd: buf(scales),
                w: buf(N * weightRowBytes(K, type)),
                y: buf(T * N * 4),
                T,
                K,
                N,
                type,
                layout,
              }),
            );
          }
          const [T, topK, H, I] = [1, 2, 32, 16];
          const table = gpu.storage("other", new Uint32Array([0, 1]));
          const ids = gpu.storage("other", new Uint32Array([0, 1]));
          made.push(table, ids);
          const slotWords = H * I;
          const common = { table, ids, T, topK, hidden: H, inter: I, slotWords, dtype, layout };
          const pool = () => buf(2 * slotWords * 4);
          steps.push(
            await moeGateUp(gpu, {
              ...common,
              x: buf(T * H * 4),
              gate: pool(),
              up: pool(),
              out: buf(T * topK * I * 4),
            }),
            await moeDown(gpu, {
              ...common,
              x: buf(T * topK * I * 4),
              down: pool(),
              out: buf(T * topK * H * 4),
            }),
            await moeDownCombine(gpu, {
              ...common,
              x: buf(T * topK * I * 4),
              down: pool(),
              weights: buf(T * topK * 4),
              out: buf(T * H * 4),
            }),
            await qkvProj(gpu, {
              x: buf(T * H * 4),
              wq: buf(8 * H * 4),
              wk: buf(4 * H * 4),
              wv: buf(4 * H * 4),
              q: buf(T * 8 * 4),
              k: buf(T * 4 * 4),
              v: buf(T * 4 * 4),
              T,
              K: H,
              Nq: 8,
              Nkv: 4,
              dtype,
              layout,
            }),
          );
        }
      }
      gpu.submit(steps);
      await gpu.sync(); // throws any validation error raised since
      for (const b of made) gpu.destroyBuffer(b);
    } finally {
      gpu.destroy();
    }
  },
});
