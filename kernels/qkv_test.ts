import type { Dispatch, Gpu } from "../runtime/base/gpu/device.ts";
import { type DType, packWeights, roundTo } from "../runtime/base/dtype.ts";
import { qkvBias, qkvClamp, qkvProj } from "./qkv.ts";
import { clampRef, qkvRef } from "./reference.ts";
import { assertClose, GPU_TEST, poisoned, randn, rejects, testGpu } from "./test_util.ts";

interface Case {
  T: number;
  K: number;
  Nq: number;
  Nkv: number;
  dtype: DType;
  /** Bind the weights as ranges at an offset inside NaN-filled buffers. */
  ranged?: boolean;
}

// Row counts that are not multiples of the 8 rows per workgroup; K aligned (rows on 16-byte
// boundaries) and not; T = 1 (decode) to 8.
const CASES: Case[] = [
  { T: 1, K: 64, Nq: 64, Nkv: 32, dtype: "f32" },
  { T: 3, K: 50, Nq: 36, Nkv: 12, dtype: "f32", ranged: true },
  { T: 1, K: 64, Nq: 48, Nkv: 16, dtype: "bf16" },
  { T: 2, K: 46, Nq: 20, Nkv: 5, dtype: "bf16", ranged: true },
  { T: 8, K: 80, Nq: 24, Nkv: 8, dtype: "f16" },
  { T: 1, K: 34, Nq: 9, Nkv: 3, dtype: "f16" },
];

function weights(gpu: Gpu, vals: Float32Array, dtype: DType, ranged: boolean) {
  const packed = packWeights(vals, dtype);
  if (!ranged) return gpu.storage("dense", packed);
  const offset = 256;
  const buffer = poisoned(gpu, (offset + packed.byteLength + 64) / 4 + 4, "w");
  gpu.write(buffer, packed, offset);
  return { buffer, offset, size: Math.ceil(packed.byteLength / 4) * 4 };
}

Deno.test({
  name: "qkvProj and qkvBias match the reference (f32, bf16, f16; ragged rows; T up to 8)",
  ...GPU_TEST,
  fn: async () => {
    const gpu = await testGpu();
    const runs: Dispatch[] = [];
    const checks: (() => Promise<void>)[] = [];
    for (const c of CASES) {
      const { T, K, Nq, Nkv, dtype } = c;
      const w = { q: randn(Nq * K, 0.3), k: randn(Nkv * K, 0.3), v: randn(Nkv * K, 0.3) };
      const rounded = { q: roundTo(w.q, dtype), k: roundTo(w.k, dtype), v: roundTo(w.v, dtype) };
      const b = { q: randn(Nq), k: randn(Nkv), v: randn(Nkv) };
      const x = randn(T * K);
      const out = [0, 1].map(() => ({
        q: poisoned(gpu, T * Nq, "q"),
        k: poisoned(gpu, T * Nkv, "k"),
        v: poisoned(gpu, T * Nkv, "v"),
      }));
      const args = {
        x: gpu.storage("activations", x),
        wq: weights(gpu, w.q, dtype, !!c.ranged),
        wk: weights(gpu, w.k, dtype, !!c.ranged),
        wv: weights(gpu, w.v, dtype, !!c.ranged),
        T,
        K,
        Nq,
        Nkv,
        dtype,
      };
      runs.push(
        await qkvProj(gpu, { ...args, ...out[0] }),
        await qkvProj(gpu, { ...args, ...out[1] }),
        await qkvBias(gpu, {
          ...out[1],
          bq: gpu.storage("dense", b.q),
          bk: gpu.storage("dense", b.k),
          bv: gpu.storage("dense", b.v),
          T,
          Nq,
          Nkv,
        }),
      );
      const what = `qkv ${JSON.stringify(c)}`;
      checks.push(async () => {
        const ref = qkvRef(x, rounded, T, K, Nq, Nkv);
        const refBias = qkvRef(x, rounded, T, K, Nq, Nkv, b);
        const full = qkvRef(x, w, T, K, Nq, Nkv);
        for (const m of ["q", "k", "v"] as const) {
          const n = T * (m === "q" ? Nq : Nkv);
          const got = await gpu.readF32(out[0][m], 0, n);
          assertClose(got, ref[m], 1e-5, `${what} ${m}`);
          if (dtype !== "f32") assertClose(got, full[m], 1e-2, `${what} ${m} vs f32 weights`);
          assertClose(await gpu.readF32(out[1][m], 0, n), refBias[m], 1e-5, `${what} ${m} + bias`);
        }
      });
    }
    gpu.submit(runs);
    for (const check of checks) await check();
  },
});

Deno.test({
  name: "qkvProj and qkvBias reject bad arguments",
  ...GPU_TEST,
  fn: async () => {
    const gpu = await testGpu();
    const f = (n: number) => gpu.storage("activations", n * 4);
    const [T, K, Nq, Nkv] = [2, 16, 8, 4];
    const ok = {
      x: f(T * K),
      wq: f(Nq * K),
      wk: f(Nkv * K),
      wv: f(Nkv * K),
      q: f(T * Nq),
      k: f(T * Nkv),
      v: f(T * Nkv),
      T,
      K,
      Nq,
      Nkv,
      dtype: "f32" as DType,
    };
    const bad = (a: Record<string, unknown>, arg: string, text = "") =>
      rejects(qkvProj(gpu, { ...ok, ...a } as never), arg, text);
    await bad({ T: 0 }, "T");
    await bad({ K: 1.5 }, "K");
    await bad({ Nq: 0 }, "Nq");
    await bad({ dtype: "f8" }, "dtype");
    await bad({ K: 15, dtype: "bf16" }, "K", "even");
    await bad({ T: 3 }, "x");
    await bad({ Nq: 9 }, "wq");
    await bad({ Nkv: 5 }, "wk");
    await bad({ q: ok.x }, "q", "distinct from x");
    await bad({ v: ok.wk }, "v", "distinct from wk");
    const shared = f(T * Nkv * 2);
    await bad({ k: shared, v: shared }, "v", "overlaps k");
    const okBias = {
      q: ok.q,
      k: ok.k,
      v: ok.v,
      bq: f(Nq),
      bk: f(Nkv),
      bv: f(Nkv),
      T,
      Nq,
      Nkv,
    };
    const badBias = (a: Record<string, unknown>, arg: string, text = "") =>
      rejects(qkvBias(gpu, { ...okBias, ...a } as never), arg, text);
    await badBias({ Nkv: 0 }, "Nkv");
    await badBias({ bq: f(Nq - 1) }, "bq");
    await badBias({ q: okBias.bk }, "q");
    await badBias({ bk: okBias.k }, "k", "distinct from bk");
  },
});

Deno.test({
  name:
    "qkvClamp matches the reference: every value in [-clip, clip], the rest of the buffers untouched",
  ...GPU_TEST,
  fn: async () => {
    const gpu = await testGpu();
    const runs: Dispatch[] = [];
    const checks: (() => Promise<void>)[] = [];
    // Ragged sizes; clips small enough that a good share of N(0, 2^2) values is clamped.
    for (const [T, Nq, Nkv, clip] of [[1, 64, 32, 1.5], [3, 36, 12, 0.3], [8, 20, 5, 2.7]]) {
      const spare = 7; // values past T rows that must stay as they are
      const vals = {
        q: randn(T * Nq + spare, 2),
        k: randn(T * Nkv + spare, 2),
        v: randn(T * Nkv + spare, 2),
      };
      // At least one value beyond the clip on each side, whatever the random draw.
      for (const m of ["q", "k", "v"] as const) vals[m].set([3 * clip, -3 * clip], 0);
      const bufs = {
        q: gpu.storage("activations", vals.q),
        k: gpu.storage("activations", vals.k),
        v: gpu.storage("activations", vals.v),
      };
      runs.push(await qkvClamp(gpu, { ...bufs, T, Nq, Nkv, clip }));
      checks.push(async () => {
        for (const m of ["q", "k", "v"] as const) {
          const n = T * (m === "q" ? Nq : Nkv);
          const want = Float64Array.from(vals[m]);
          want.set(clampRef(vals[m].subarray(0, n), clip));
          const got = await gpu.readF32(bufs[m], 0, n + spare);
          assertClose(got, want, 0, `qkvClamp T=${T} ${m} clip=${clip}`);
        }
      });
    }
    gpu.submit(runs);
    for (const check of checks) await check();
  },
});

Deno.test({
  name: "qkvClamp rejects bad arguments",
  ...GPU_TEST,
  fn: async () => {
    const gpu = await testGpu();
    const f = (n: number) => gpu.storage("activations", n * 4);
    const [T, Nq, Nkv] = [2, 8, 4];
    const ok = { q: f(T * Nq), k: f(T * Nkv), v: f(T * Nkv), T, Nq, Nkv, clip: 1 };
    const bad = (a: Record<string, unknown>, arg: string, text = "") =>
      rejects(qkvClamp(gpu, { ...ok, ...a } as never), arg, text);
    await bad({ clip: 0 }, "clip");
    await bad({ clip: -1 }, "clip");
    await bad({ clip: NaN }, "clip");
    await bad({ T: 0 }, "T");
    await bad({ T: 3 }, "q");
    await bad({ v: f(T * Nkv - 1) }, "v");
    const shared = f(T * Nkv * 2);
    await bad({ k: shared, v: shared }, "v", "overlaps k");
  },
});
