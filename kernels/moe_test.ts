import assert from "node:assert/strict";
import { moeCombine, moeDown, moeDownCombine, moeGateUp } from "./moe.ts";
import { moeCombineRef, moeDownCombineRef, moeDownRef, moeGateUpRef } from "./reference.ts";
import { assertClose, GPU_TEST, POISON, poisoned, randn, rejects, testGpu } from "./test_util.ts";
import { type DType, DTYPE_BYTES, packWeights, roundTo } from "../runtime/base/dtype.ts";
import { ArgumentError } from "../runtime/base/errors.ts";
import type { Gpu } from "../runtime/base/gpu/device.ts";

/** A pool of `slots` slots holding `experts` random experts at permuted slots. */
function makePool(gpu: Gpu, E: number, slots: number, rows: number, cols: number, dtype: DType) {
  const mats = Array.from({ length: E }, () => randn(rows * cols, 0.3));
  const slotBytes = Math.ceil((rows * cols * DTYPE_BYTES[dtype]) / 256) * 256;
  const buf = gpu.storage("experts", slotBytes * slots);
  // expert e -> slot (slots - 1 - e): not the identity, so the table is really used.
  const table = Uint32Array.from({ length: E }, (_, e) => slots - 1 - e);
  mats.forEach((m, e) => gpu.write(buf, packWeights(m, dtype), table[e] * slotBytes));
  return {
    mats,
    rounded: mats.map((m) => roundTo(m, dtype)),
    buf,
    table,
    slotWords: slotBytes / 4,
  };
}

for (const dtype of ["f32", "f16", "bf16"] as DType[]) {
  Deno.test({
    name: `moe gate_up + down (${dtype}) match the reference through a permuted slot table`,
    ...GPU_TEST,
    fn: async () => {
      const gpu = await testGpu();
      for (const [T, topK, H, I, E] of [[1, 2, 64, 48, 4], [3, 2, 50, 42, 5], [5, 3, 34, 70, 6]]) {
        const slots = E + 2;
        const g = makePool(gpu, E, slots, I, H, dtype);
        const u = makePool(gpu, E, slots, I, H, dtype);
        const d = makePool(gpu, E, slots, H, I, dtype);
        // Same permutation for all three pools (makePool uses one rule), so one table serves.
        const table = gpu.storage("experts", g.table);
        const ids = Uint32Array.from({ length: T * topK }, (_, p) => (p * 7 + 3) % E);
        const idsBuf = gpu.storage("activations", ids);
        const x = randn(T * H);
        const xBuf = gpu.storage("activations", x);
        const hBuf = poisoned(gpu, T * topK * I);
        const yBuf = poisoned(gpu, T * topK * H);
        const common = { table, ids: idsBuf, T, topK, hidden: H, inter: I, dtype };
        gpu.submit([
          await moeGateUp(gpu, {
            ...common,
            x: xBuf,
            gate: g.buf,
            up: u.buf,
            out: hBuf,
            slotWords: g.slotWords,
          }),
          await moeDown(gpu, {
            ...common,
            x: hBuf,
            down: d.buf,
            out: yBuf,
            slotWords: d.slotWords,
          }),
        ]);
        const h = await gpu.readF32(hBuf, 0, T * topK * I);
        const hRef = moeGateUpRef(x, g.rounded, u.rounded, ids, T, topK, H, I);
        assertClose(h, hRef, 1e-5, `gate_up ${dtype} T=${T} H=${H} I=${I}`);
        const y = await gpu.readF32(yBuf, 0, T * topK * H);
        assertClose(y, moeDownRef(h, d.rounded, ids, T * topK, H, I), 1e-5, `down ${dtype}`);
        if (dtype !== "f32") {
          const hFull = moeGateUpRef(x, g.mats, u.mats, ids, T, topK, H, I);
          assertClose(h, hFull, 1e-2, `gate_up ${dtype} vs f32 weights`);
        }
      }
    },
  });
}

Deno.test({
  name: "moe kernels write NaN for an expert without a slot",
  ...GPU_TEST,
  fn: async () => {
    const gpu = await testGpu();
    const [H, I, E] = [32, 16, 3];
    const g = makePool(gpu, E, E, I, H, "f32");
    const tableHost = g.table.slice();
    tableHost[1] = 0xffffffff; // expert 1 not resident
    const table = gpu.storage("experts", tableHost);
    const ids = gpu.storage("activations", new Uint32Array([0, 1]));
    const out = poisoned(gpu, 2 * I);
    gpu.submit([
      await moeGateUp(gpu, {
        table,
        ids,
        T: 1,
        topK: 2,
        hidden: H,
        inter: I,
        dtype: "f32",
        x: gpu.storage("activations", randn(H)),
        gate: g.buf,
        up: g.buf,
        out,
        slotWords: g.slotWords,
      }),
    ]);
    const h = await gpu.readF32(out, 0, 2 * I);
    assert.ok(h.subarray(0, I).every(Number.isFinite), "resident expert computed");
    assert.ok(h.subarray(I).every(Number.isNaN), "missing expert flagged as NaN");
  },
});

Deno.test({
  name: "moe kernels with missing: skip leave the rows of an expert without a slot untouched",
  ...GPU_TEST,
  fn: async () => {
    const gpu = await testGpu();
    const [H, I, E] = [32, 16, 3];
    const g = makePool(gpu, E, E, I, H, "f32");
    const tableHost = g.table.slice();
    tableHost[2] = 0xffffffff;
    const table = gpu.storage("experts", tableHost);
    const ids = gpu.storage("activations", new Uint32Array([2, 0]));
    const out = poisoned(gpu, 2 * I);
    gpu.submit([
      await moeGateUp(gpu, {
        table,
        ids,
        T: 1,
        topK: 2,
        hidden: H,
        inter: I,
        dtype: "f32",
        x: gpu.storage("activations", randn(H)),
        gate: g.buf,
        up: g.buf,
        out,
        slotWords: g.slotWords,
        missing: "skip",
      }),
    ]);
    const h = await gpu.readF32(out, 0, 2 * I);
    const bits = new Uint32Array(h.buffer);
    assert.ok(bits.subarray(0, I).every((v) => v === POISON), "missing expert's rows untouched");
    assert.ok(h.subarray(I).some((v) => v !== 0) && h.subarray(I).every(Number.isFinite));
  },
});

Deno.test({
  name: "moe combine adds the weighted expert sum (and the gated shared expert) to the residual",
  ...GPU_TEST,
  fn: async () => {
    const gpu = await testGpu();
    for (
      const [T, topK, H, shared] of [[1, 2, 64, false], [4, 3, 33, true], [
        7,
        1,
        300,
        true,
      ]] as const
    ) {
      const y = randn(T * topK * H), w = randn(T * topK), res = randn(T * H);
      const so = randn(T * H), sg = randn(T);
      const out = gpu.storage("activations", res);
      gpu.submit([
        await moeCombine(gpu, {
          y: gpu.storage("activations", y),
          weights: gpu.storage("activations", w),
          out,
          T,
          topK,
          hidden: H,
          shared: shared
            ? { out: gpu.storage("activations", so), gate: gpu.storage("activations", sg) }
            : undefined,
        }),
      ]);
      const ref = moeCombineRef(y, w, res, T, topK, H, shared ? { out: so, gate: sg } : undefined);
      assertClose(await gpu.readF32(out, 0, T * H), ref, 1e-6, `combine T=${T} shared=${shared}`);
    }
  },
});

for (const dtype of ["f32", "bf16", "f16"] as DType[]) {
  Deno.test({
    name: `moe down + combine fused (${dtype}) matches the reference; rounds + finish give the ` +
      "same bits",
    ...GPU_TEST,
    fn: async () => {
      const gpu = await testGpu();
      // Ragged shapes: H not a multiple of the 8 rows per workgroup, I not a multiple of 4 words.
      // topK 1 .. 8: 1, 2, 4 or 8 pairs side by side, with a partial last group for 3 and 5.
      const cases: [number, number, number, number, number, boolean][] = [
        [1, 2, 64, 48, 4, false],
        [3, 2, 50, 42, 5, true],
        [4, 3, 34, 70, 6, true],
        [2, 1, 14, 22, 3, false],
        [2, 5, 30, 18, 7, true],
        [3, 8, 20, 24, 10, false],
      ];
      for (const [T, topK, H, I, E, hasShared] of cases) {
        const d = makePool(gpu, E, E + 2, H, I, dtype);
        const table = gpu.storage("experts", d.table);
        const ids = Uint32Array.from({ length: T * topK }, (_, p) => (p * 5 + 1) % E);
        const h = randn(T * topK * I), w = randn(T * topK), res = randn(T * H);
        const so = randn(T * H), sg = randn(T);
        const hBuf = gpu.storage("activations", h);
        const wBuf = gpu.storage("activations", w);
        const shared = hasShared
          ? { out: gpu.storage("activations", so), gate: gpu.storage("activations", sg) }
          : undefined;
        const common = {
          ids: gpu.storage("activations", ids),
          T,
          topK,
          hidden: H,
          inter: I,
          dtype,
          down: d.buf,
          slotWords: d.slotWords,
        };
        // One pass.
        const fused = gpu.storage("activations", res);
        // Rounds: experts 0..E/2 first, then the rest (the table of the round holds only its own).
        const half = Math.ceil(E / 2);
        const rounds = [0, 1].map((r) =>
          gpu.storage(
            "experts",
            d.table.map((s, e) => ((e < half) === (r === 0) ? s : 0xffffffff)),
          )
        );
        const y = poisoned(gpu, T * topK * H, "y");
        const split = gpu.storage("activations", res);
        gpu.submit([
          await moeDownCombine(gpu, {
            ...common,
            table,
            x: hBuf,
            weights: wBuf,
            out: fused,
            shared,
          }),
          ...await Promise.all(
            rounds.map((t) =>
              moeDownCombine(gpu, { ...common, table: t, x: hBuf, out: y, mode: "round" })
            ),
          ),
          await moeDownCombine(gpu, {
            ...common,
            table: rounds[1],
            x: y,
            weights: wBuf,
            out: split,
            shared,
            mode: "finish",
          }),
        ]);
        const what = `down_combine ${dtype} T=${T} topK=${topK} H=${H} I=${I} shared=${hasShared}`;
        const got = await gpu.readF32(fused, 0, T * H);
        const sh = hasShared ? { out: so, gate: sg } : undefined;
        const ref = moeDownCombineRef(h, d.rounded, ids, w, res, T, topK, H, I, sh);
        assertClose(got, ref, 1e-5, what);
        if (dtype !== "f32") {
          const full = moeDownCombineRef(h, d.mats, ids, w, res, T, topK, H, I, sh);
          assertClose(got, full, 1e-2, `${what} vs f32 weights`);
        }
        const ys = await gpu.readF32(y, 0, T * topK * H);
        assertClose(ys, moeDownRef(h, d.rounded, ids, T * topK, H, I), 1e-5, `${what} rounds`);
        const viaRounds = await gpu.readF32(split, 0, T * H);
        assert.deepEqual(
          new Uint32Array(viaRounds.buffer),
          new Uint32Array(got.buffer),
          `${what}: rounds + finish differ from one pass`,
        );
      }
    },
  });
}

Deno.test({
  name:
    "moe down + combine: an expert without a slot makes its token's rows NaN (a round skips it)",
  ...GPU_TEST,
  fn: async () => {
    const gpu = await testGpu();
    const [H, I, E, T, topK] = [24, 16, 3, 2, 2];
    const d = makePool(gpu, E, E, H, I, "f32");
    const tableHost = d.table.slice();
    tableHost[1] = 0xffffffff; // expert 1 not resident: only token 1 chose it
    const common = {
      table: gpu.storage("experts", tableHost),
      ids: gpu.storage("activations", new Uint32Array([0, 2, 1, 0])),
      T,
      topK,
      hidden: H,
      inter: I,
      dtype: "f32" as DType,
      down: d.buf,
      slotWords: d.slotWords,
      x: gpu.storage("activations", randn(T * topK * I)),
    };
    const out = gpu.storage("activations", randn(T * H));
    const y = poisoned(gpu, T * topK * H);
    gpu.submit([
      await moeDownCombine(gpu, {
        ...common,
        weights: gpu.storage("activations", randn(T * topK)),
        out,
      }),
      await moeDownCombine(gpu, { ...common, out: y, mode: "round" }),
    ]);
    const o = await gpu.readF32(out, 0, T * H);
    assert.ok(o.subarray(0, H).every(Number.isFinite), "token 0's experts are resident");
    assert.ok(o.subarray(H).every(Number.isNaN), "token 1's missing expert shows as NaN");
    const bits = new Uint32Array((await gpu.readF32(y, 0, T * topK * H)).buffer);
    assert.ok(bits.subarray(2 * H, 3 * H).every((v) => v === POISON), "round skips pair 2");
    assert.ok(bits.subarray(0, 2 * H).every((v) => v !== POISON), "round writes pairs 0, 1");
    assert.ok(bits.subarray(3 * H).every((v) => v !== POISON), "round writes pair 3");
  },
});

Deno.test({
  name: "moe builders reject bad arguments",
  ...GPU_TEST,
  fn: async () => {
    const gpu = await testGpu();
    const b = gpu.storage("activations", 1024);
    const base = { table: b, ids: b, T: 1, topK: 2, hidden: 8, inter: 8, dtype: "f32" as DType };
    await assert.rejects(
      () => moeDown(gpu, { ...base, x: b, down: b, out: b, slotWords: 4 }),
      (e) => e instanceof ArgumentError && e.argument === "slotWords",
    );
    await assert.rejects(
      () =>
        moeDown(gpu, { ...base, inter: 7, dtype: "bf16", x: b, down: b, out: b, slotWords: 64 }),
      (e) => e instanceof ArgumentError && e.argument === "inter",
    );
    await assert.rejects(
      () => moeCombine(gpu, { y: b, weights: b, out: b, T: 1, topK: 2, hidden: 8 }),
      (e) => e instanceof ArgumentError && e.argument === "out",
    );
    const o = gpu.storage("activations", 1024);
    const fused = { ...base, x: b, down: b, out: o, weights: b, slotWords: 64 };
    await rejects(moeDownCombine(gpu, { ...fused, out: b }), "out", "distinct from x");
    await rejects(moeDownCombine(gpu, { ...fused, weights: undefined }), "weights");
    await rejects(moeDownCombine(gpu, { ...fused, mode: "rounds" as never }), "mode");
    await rejects(moeDownCombine(gpu, { ...fused, mode: "round" }), "weights", "round");
    await rejects(moeDownCombine(gpu, { ...fused, missing: "skip" } as never), "missing");
    await rejects(moeDownCombine(gpu, { ...fused, T: 200 }), "ids");
    await rejects(
      moeDownCombine(gpu, { ...fused, shared: { out: b, gate: { buffer: b, size: 0 } } }),
      "shared.gate",
    );
  },
});
