/**
 * Kernel and transfer benchmarks: `deno bench -A bench/kernels_bench.ts` (or `deno task bench`).
 *
 * Measures, after validating each kernel against its CPU reference:
 * - GEMV (decode matrix-vector) weight bytes/s for f32, f16 and bf16 weights, and for Q8_0, Q4_K,
 *   Q6_K, Q5_K and Q5_0 weights dequantised in the kernel (counted in stored bytes), and Q4_K /
 *   Q5_K with llama.cpp's Q8_K activations (int8 dot products; the quantisation pass timed apart),
 * - the MoE expert GEMVs (gate/up and down through a slot table) at Mixtral's expert shape (bf16,
 *   f32) and at Qwen3-30B-A3B's (bf16, Q8_0, Q4_K: the offload experiment's model),
 * - tiled matmul (prefill) FLOP/s, portable and (where the device has subgroup matrices) on tensor
 *   cores,
 * - host->GPU upload bytes/s with `queue.writeBuffer`, with mapped staging buffers, and through the
 *   expert uploader's mapped path (parallel memcpy into a ring of staging buffers),
 * - readback latency (tiny dispatch + copy + mapAsync) and per-dispatch cost,
 * and prints each beside its ceiling, measured on the same device: the bandwidth of a streaming-read
 * kernel (for GEMV), the rate of an FMA-only kernel (for matmul), and the nominal bus figure for uploads.
 *
 * Environment: PREGATE_GPU=native|dawn|auto (default native); PREGATE_BENCH_SIZE=small|full (default:
 * small on a software adapter, full otherwise); PREGATE_BENCH_OUT=path.json writes the results;
 * PREGATE_BENCH_SECTIONS=gemv,moe (a comma list of `gemv` and `moe`) measures the ceilings and
 * those sections only.
 *
 * On Dawn run it as a script, `PREGATE_GPU=dawn deno run -A bench/kernels_bench.ts`: every figure is
 * measured at the module's top level (the `Deno.bench` cases are no-ops under `deno run`), and under
 * `deno bench` Dawn's async work stalls at random (denoland/deno#23253; docs/decisions.md).
 * @module
 */
import { type Dispatch, type Gpu, openGpu } from "../runtime/base/gpu/device.ts";
import { measureFmaRate, measureReadBandwidth } from "./ceilings.ts";
import { matmul, matmulSgmatrix, matmulVariant, matvec } from "../kernels/linear.ts";
import { matmulRef } from "../kernels/reference_linear.ts";
import { add } from "../kernels/elementwise.ts";
import { moeDown, moeGateUp } from "../kernels/moe.ts";
import { moeDownRef, moeGateUpRef } from "../kernels/reference_moe.ts";
import { packWeights, roundTo } from "../runtime/base/dtype.ts";
import { dequantize, quantize, type QuantType } from "../runtime/weights/quant.ts";
import { matvecQuant, weightGemvLayout, weightRowBytes } from "../kernels/quant_gemv.ts";
import {
  matvecQ8K,
  Q8K_WEIGHT_TYPES,
  q8kBytes,
  type Q8KWeightType,
  quantizeQ8K,
} from "../kernels/q8k_gemv.ts";
import { roundActivationsRef } from "../kernels/reference_pointwise.ts";
import { type GemvLayout, gemvLayoutName } from "../kernels/gemv.ts";
import type { DType } from "../runtime/base/dtype.ts";
import { isQuantType } from "../runtime/weights/weight_type.ts";
import { assertClose, randn } from "../kernels/check.ts";
import { createUploader } from "../runtime/experts/uploader.ts";
import {
  type GpuTime,
  gpuTime,
  type GpuTimeOptions,
  markdownTable,
  median,
  type ResultRow,
  wallTime,
} from "./harness.ts";
import { ClockSampler } from "./clock.ts";

const gpu: Gpu = await openGpu({
  gpu: (Deno.env.get("PREGATE_GPU") ?? "native") as "native" | "dawn" | "auto",
  log: (m) => console.error(m),
});
const size = Deno.env.get("PREGATE_BENCH_SIZE") ?? (gpu.isFallback ? "small" : "full");
const full = size === "full";
const rows: ResultRow[] = [];
const MB = 1 << 20;
// The SM clock while each figure is timed (nvidia-smi, where there is one): a measurement at a
// fallen clock is repeated, and each GPU row's note says the clock it ran at.
// PREGATE_BENCH_CLOCK=0 turns it off.
const clock = gpu.isFallback || Deno.env.get("PREGATE_BENCH_CLOCK") === "0"
  ? null
  : ClockSampler.start(50);
const time = (ds: Dispatch[], o: GpuTimeOptions) => gpuTime(gpu, ds, { ...o, clock });
const clockNote = (t: GpuTime) =>
  (t.clock ? `, SM ${t.clock.min}-${t.clock.max} MHz` : "") +
  (t.attempts && t.attempts > 1 ? ` (${t.attempts} attempts)` : "");

// ------------------------------------------------------------------ ceilings, measured on this device

const stage = (m: string) => console.error(`[kernels_bench] ${m}`);
const SECTIONS = Deno.env.get("PREGATE_BENCH_SECTIONS")?.split(",").map((x) => x.trim());
for (const x of SECTIONS ?? []) {
  if (x !== "gemv" && x !== "moe") {
    throw new Error(`PREGATE_BENCH_SECTIONS: unknown section '${x}'; expected gemv, moe`);
  }
}
/** Whether section `name` runs (all of them when PREGATE_BENCH_SECTIONS is unset). */
const want = (name: "gemv" | "moe") => !SECTIONS || SECTIONS.includes(name);
stage(`measuring ceilings on ${gpu.describe()}`);
const readBw = await measureReadBandwidth(gpu, clock);
rows.push({
  name: `ceiling: streaming-read kernel (WGSL, vec4<u32>)`,
  value: readBw,
  unit: "GB/s",
});
const streamBytes = (full ? 1024 : 32) * MB;
const streamBuf = gpu.storage("other", streamBytes, "copy-src");
const copyDst = gpu.storage("other", streamBytes, "copy-dst");
const copyT = await wallTime(async () => {
  const enc = gpu.device.createCommandEncoder();
  for (let i = 0; i < 4; i++) enc.copyBufferToBuffer(streamBuf, 0, copyDst, 0, streamBytes);
  gpu.device.queue.submit([enc.finish()]);
  await gpu.sync();
}, { samples: 5 });
rows.push({
  name: `copyBufferToBuffer ${streamBytes / MB} MiB x4 (read+write bytes)`,
  value: (8 * streamBytes) / copyT / 1e9,
  unit: "GB/s",
  ceiling: readBw,
  ceilingNote: "streaming read",
  note: "wall clock incl. one sync",
});
gpu.destroyBuffer(copyDst);
gpu.destroyBuffer(streamBuf);

const peakTflops = await measureFmaRate(gpu, clock);
rows.push({ name: "ceiling: f32 FMA-only kernel", value: peakTflops, unit: "TFLOP/s" });

// ------------------------------------------------------------------ GEMV (decode)
if (want("gemv")) {
  stage("GEMV (decode)");

  const [gemvN, gemvK] = full ? [14336, 4096] : [512, 1024];
  for (const dtype of ["f32", "f16", "bf16"] as DType[]) {
    const wF = randn(gemvN * gemvK, 0.05);
    const x = randn(gemvK);
    const wBuf = gpu.storage("dense", packWeights(wF, dtype), `gemv-w-${dtype}`);
    const xBuf = gpu.storage("activations", x);
    const yBuf = gpu.storage("activations", gemvN * 4);
    const d = await matvec(gpu, { x: xBuf, w: wBuf, y: yBuf, K: gemvK, N: gemvN, dtype });
    gpu.submit([d]);
    const y = await gpu.readF32(yBuf);
    // Validate before timing (a sample of rows when the matrix is large).
    const check = Math.min(gemvN, 256);
    const ref = matmulRef(x, roundTo(wF.subarray(0, check * gemvK), dtype), 1, gemvK, check);
    assertClose(y.subarray(0, check), ref, 1e-5, `gemv ${dtype}`);
    const t = await time([d], { inner: full ? 50 : 5 });
    const bytes = wBuf.size + gemvK * 4 + gemvN * 4;
    rows.push({
      name: `GEMV ${dtype} ${gemvN}x${gemvK}`,
      value: bytes / t.seconds / 1e9,
      unit: "GB/s",
      ceiling: readBw,
      ceilingNote: "streaming read",
      note: `${(t.seconds * 1e6).toFixed(1)} us, ${t.how}${clockNote(t)}`,
    });
    Deno.bench({ name: `gemv ${dtype} ${gemvN}x${gemvK}`, n: 20, warmup: 3 }, async () => {
      gpu.submit([d]);
      await gpu.sync();
    }); // (the weights stay allocated: deno bench runs this case after the table is printed)
  }

  // Quantised weights (Q8_0, Q4_K, and Q6_K / Q5_K / Q5_0 of Q4_K_M files), dequantised in the
  // kernel: bytes/s counted in stored bytes. The matrix is 256 quantised rows repeated (the kernel
  // reads every row's own bytes either way). Then Q4_K and Q8_0 in other layouts than the one
  // chosen (threads per row, rows per workgroup, loads in flight), to see which holds the most
  // bytes in flight.
  // The weights of a quantised GEMV: 256 quantised rows repeated to gemvN rows (the kernel reads
  // every row's own bytes either way).
  const quantWeights = (type: QuantType) => {
    const rows0 = Math.min(gemvN, 256);
    const block = quantize(randn(rows0 * gemvK, 0.05), type);
    const stored = new Uint8Array(Math.ceil((gemvN * weightRowBytes(gemvK, type)) / 16) * 16);
    for (let r = 0; r < gemvN; r += rows0) {
      stored.set(
        block.subarray(0, Math.min(rows0, gemvN - r) * weightRowBytes(gemvK, type)),
        r * weightRowBytes(gemvK, type),
      );
    }
    return { rows0, block, stored };
  };
  // Times a validated quantised GEMV and records its bytes/s, logged as it comes (the layout sweep
  // is long; a cut-off run keeps what it measured). The dispatches read one copy of the weights
  // each, in turn (weightCopies); one GEMV's time is theirs over their number.
  const timeQuantGemv = async (ds: Dispatch[], name: string, bytes: number) => {
    const t = await time(ds, { inner: full ? 50 : 5 });
    const seconds = t.seconds / ds.length;
    const copies = ds.length > 1 ? `${ds.length} copies of the weights in turn, ` : "";
    const row = {
      name,
      value: bytes / seconds / 1e9,
      unit: "GB/s",
      ceiling: readBw,
      ceilingNote: "streaming read",
      note: `${(seconds * 1e6).toFixed(1)} us, ${copies}${t.how}${clockNote(t)}`,
    };
    rows.push(row);
    console.error(`[kernels_bench] ${row.name}: ${row.value.toFixed(1)} GB/s (${row.note})`);
  };
  // Quantised weights are small enough for the L2 cache (Q4_K 14336x4096: 33 MB; the H100's L2:
  // 50 MB), so the timed dispatches read copies of them that add up to 256 MiB, in turn.
  const weightCopies = (stored: Uint8Array, type: QuantType) => {
    const n = full ? Math.max(1, Math.ceil((256 * MB) / stored.byteLength)) : 1;
    return Array.from({ length: n }, (_, i) => gpu.storage("dense", stored, `gemv-w-${type}-${i}`));
  };
  const quantGemv = async (type: QuantType, layout?: GemvLayout, rowsPerLane?: 1 | 2) => {
    const { rows0, block, stored } = quantWeights(type);
    const x = randn(gemvK);
    const wBufs = weightCopies(stored, type);
    const xBuf = gpu.storage("activations", x);
    const yBuf = gpu.storage("activations", gemvN * 4);
    const ds = await Promise.all(
      wBufs.map((w) =>
        matvecQuant(gpu, { x: xBuf, w, y: yBuf, K: gemvK, N: gemvN, type, layout, rowsPerLane })
      ),
    );
    const d = ds[0];
    const how = `${layout ? `, layout ${layout.name}` : ""}${
      rowsPerLane ? `, ${rowsPerLane} row${rowsPerLane === 2 ? "s" : ""} a lane` : ""
    }`;
    gpu.submit([d]);
    const y = await gpu.readF32(yBuf);
    assertClose(
      y.subarray(0, rows0),
      matmulRef(x, dequantize(block, type), 1, gemvK, rows0),
      1e-5,
      `gemv ${type}${how}`,
    );
    const bytes = gemvN * weightRowBytes(gemvK, type) + gemvK * 4 + gemvN * 4;
    await timeQuantGemv(ds, `GEMV ${type} ${gemvN}x${gemvK} (stored bytes)${how}`, bytes);
    for (const b of [...wBufs, xBuf, yBuf]) gpu.destroyBuffer(b);
  };
  for (const type of ["q8_0", "q4_k", "q6_k", "q5_k", "q5_0", "q4_0"] as QuantType[]) {
    await quantGemv(type);
  }
  // Q4_K / Q5_K with llama.cpp's Q8_K activations (int8 dot products): the GEMV alone, counted in
  // the weights' stored bytes plus the int8 activations, and the quantisation pass before it.
  const q8kGemv = async (type: Q8KWeightType, layout?: GemvLayout) => {
    const { rows0, block, stored } = quantWeights(type);
    const x = randn(gemvK);
    const size = q8kBytes(1, gemvK);
    const wBufs = weightCopies(stored, type);
    const xBuf = gpu.storage("activations", x);
    const xq = gpu.storage("activations", size.values);
    const xd = gpu.storage("activations", size.scales);
    const yBuf = gpu.storage("activations", gemvN * 4);
    const quant = await quantizeQ8K(gpu, { x: xBuf, xq, xd, rows: 1, K: gemvK });
    const ds = await Promise.all(
      wBufs.map((w) => matvecQ8K(gpu, { xq, xd, w, y: yBuf, K: gemvK, N: gemvN, type, layout })),
    );
    const d = ds[0];
    const how = `, Q8_K activations (int8 dot products)${layout ? `, layout ${layout.name}` : ""}`;
    gpu.submit([quant, d]);
    const y = await gpu.readF32(yBuf);
    assertClose(
      y.subarray(0, rows0),
      matmulRef(roundActivationsRef(x, "q8_k"), dequantize(block, type), 1, gemvK, rows0),
      1e-5,
      `gemv ${type}${how}`,
    );
    const bytes = gemvN * weightRowBytes(gemvK, type) + size.values + size.scales + gemvN * 4;
    await timeQuantGemv(ds, `GEMV ${type} ${gemvN}x${gemvK} (stored bytes)${how}`, bytes);
    if (!layout) {
      const tq = await time([quant], { inner: full ? 50 : 5 });
      rows.push({
        name: `quantise ${gemvK} activations to Q8_K (before a ${type} GEMV)`,
        value: tq.seconds * 1e6,
        unit: "us",
        note: `${tq.how}${clockNote(tq)}`,
      });
    }
    for (const b of [...wBufs, xBuf, xq, xd, yBuf]) gpu.destroyBuffer(b);
  };
  for (const type of Q8K_WEIGHT_TYPES) await q8kGemv(type);
  const reduction = gpu.features.subgroups ? "subgroup" : "tree";
  // The other layouts; Q4_K in each with one and two rows a lane group (its default: two, in the
  // chosen layout, measured above).
  for (const type of ["q4_k", "q8_0"] as QuantType[]) {
    const chosen = weightGemvLayout(gpu, gemvK, type, "auto").name;
    for (
      const [TPR, ROWS, UNROLL] of [[8, 32, 2], [16, 16, 2], [32, 8, 2], [64, 4, 2], [128, 2, 2]]
    ) {
      const l = { TPR, ROWS, UNROLL, reduction } as const,
        layout = { name: gemvLayoutName(l), ...l };
      if (type === "q4_k") {
        await quantGemv(type, layout, 1);
        if (layout.name !== chosen) {
          await quantGemv(type, layout, 2);
          await q8kGemv(type, layout);
        }
      } else if (layout.name !== chosen) await quantGemv(type, layout);
    }
  }
}

// ------------------------------------------------------------------ MoE expert GEMVs (decode)
if (want("moe")) {
  stage("MoE expert GEMVs (decode)");
  // One token, top-k experts read through a slot table from a pool (Mixtral-8x7B expert shape on a
  // GPU: 14336 x 4096; small on a software adapter).
  const [I, H, k, slots] = full ? [14336, 4096, 2, 4] : [256, 512, 2, 4];
  for (const dtype of ["bf16", "f32"] as DType[]) {
    const bytes = dtype === "f32" ? 4 : 2;
    const slotBytes = Math.ceil((I * H * bytes) / 256) * 256;
    // Two random matrices, reused across pools and slots (a real-size set would need GBs of JS).
    const base = [randn(I * H, 0.02), randn(I * H, 0.02)];
    const packed = base.map((m) => packWeights(m, dtype));
    const pools = [0, 1, 2].map((p) => {
      const buf = gpu.storage("experts", slotBytes * slots);
      for (let sl = 0; sl < slots; sl++) {
        gpu.write(buf, packed[(p + sl) % 2], sl * slotBytes);
      }
      return buf;
    });
    const table = gpu.storage("experts", Uint32Array.from({ length: slots }, (_, e) => e));
    const ids = gpu.storage("activations", new Uint32Array([1, 3]));
    const x = randn(H);
    const xBuf = gpu.storage("activations", x);
    const hBuf = gpu.storage("activations", k * I * 4);
    const yBuf = gpu.storage("activations", k * H * 4);
    const common = {
      table,
      ids,
      T: 1,
      topK: k,
      hidden: H,
      inter: I,
      dtype,
      slotWords: slotBytes / 4,
    };
    const gu = await moeGateUp(gpu, {
      ...common,
      x: xBuf,
      gate: pools[0],
      up: pools[1],
      out: hBuf,
    });
    const dn = await moeDown(gpu, { ...common, x: hBuf, down: pools[2], out: yBuf });
    gpu.submit([gu, dn]);
    // Validate a sample of rows of the first pair against the reference.
    const h = await gpu.readF32(hBuf, 0, I);
    const sample = Math.min(I, 64);
    const gate1 = roundTo(base[1].subarray(0, sample * H), dtype); // pool 0, slot 1
    const up1 = roundTo(base[0].subarray(0, sample * H), dtype); // pool 1, slot 1
    const ref = moeGateUpRef(x, [gate1], [up1], new Uint32Array([0]), 1, 1, H, sample);
    assertClose(h.subarray(0, sample), ref, 1e-5, `moe gate_up ${dtype}`);
    const t = await time([gu, dn], { inner: full ? 20 : 2 });
    const moved = 3 * k * I * H * bytes;
    rows.push({
      name: `MoE gate_up+down ${dtype}, top-${k} of ${I}x${H} experts`,
      value: moved / t.seconds / 1e9,
      unit: "GB/s",
      ceiling: readBw,
      ceilingNote: "streaming read",
      note: `${(t.seconds * 1e6).toFixed(1)} us, ${t.how}${clockNote(t)}`,
    });
    pools.forEach((b) => gpu.destroyBuffer(b));
  }
}

// One token's top-8 experts at Qwen3-30B-A3B's expert shape (768 x 2048), as stored in the offload
// experiment's files; quantised rows are counted in stored bytes.
if (want("moe")) {
  const [I, H, k] = full ? [768, 2048, 8] : [256, 512, 4];
  for (const type of ["bf16", "q8_0", "q4_k"] as (DType | QuantType)[]) {
    rows.push(await moeRow(I, H, k, type));
  }
}

// PREGATE_BENCH_SECTIONS: the ceilings and the sections asked for only.
if (SECTIONS) {
  await report();
  Deno.exit(0);
}

// ------------------------------------------------------------------ matmul (prefill)
stage("matmul (prefill)");

const mm = full ? 4096 : 256;
for (const dtype of ["f32", "f16"] as DType[]) {
  const wF = randn(mm * mm, 0.05), x = randn(mm * mm);
  const wBuf = gpu.storage("dense", packWeights(wF, dtype));
  const xBuf = gpu.storage("activations", x);
  const yBuf = gpu.storage("activations", mm * mm * 4);
  const d = await matmul(gpu, { x: xBuf, w: wBuf, y: yBuf, T: mm, K: mm, N: mm, dtype });
  gpu.submit([d]);
  const y = await gpu.readF32(yBuf, 0, 8 * mm);
  const ref = matmulRef(x.subarray(0, 8 * mm), roundTo(wF, dtype), 8, mm, mm);
  assertClose(y, ref, 1e-5, `matmul ${dtype}`);
  const t = await time([d], { inner: full ? 5 : 1, samples: 5 });
  rows.push({
    name: `matmul ${dtype} weights ${mm}^3`,
    value: (2 * mm ** 3) / t.seconds / 1e12,
    unit: "TFLOP/s",
    ceiling: peakTflops,
    ceilingNote: "FMA-only kernel",
    note: `${(t.seconds * 1e3).toFixed(2)} ms, ${t.how}${clockNote(t)}`,
  });
  gpu.destroyBuffer(wBuf);
  gpu.destroyBuffer(xBuf);
  gpu.destroyBuffer(yBuf);
}

// ------------------------------------------------------------------ matmul on subgroup matrices
// Tensor cores, where matmulVariant picks them for this shape. An FMA kernel cannot measure their
// peak; the ceiling is the same kernel with only its subgroup-matrix multiplies left (measured
// here), and the notes name the peer where the device is an H200: PyTorch fp16 (cuBLAS) 4096^3 on
// the same H200 (platform.md).
const PYTORCH_FP16_TFLOPS_H200 = 721;
{
  const choice = matmulVariant(gpu, { T: mm, K: mm, N: mm, dtype: "f16" });
  if (choice.variant !== "sgmatrix") {
    stage(`matmul on subgroup matrices: not run (${choice.reason})`);
  } else {
    stage(`matmul on subgroup matrices (${choice.reason})`);
    const h200 = /H200/i.test(gpu.adapterName);
    const tune = choice.tune!;
    const tiling =
      `${tune.SGM}x${tune.SGN} subgroups of ${tune.TM}x${tune.TN} tiles, BK ${tune.BK}, ` +
      `${tune.STAGES} buffer(s)${tune.UNROLLED ? ", unrolled" : ""}`;
    const wF = randn(mm * mm, 0.05), x = randn(mm * mm);
    const x16 = roundTo(x, "f16");
    const xBufs = {
      f32: gpu.storage("activations", x),
      f16: gpu.storage("activations", packWeights(x16, "f16")),
    };
    const yBuf = gpu.storage("activations", mm * mm * 4);
    // The measured ceiling: the same kernel with only its subgroup-matrix multiplies left (results
    // wrong by design): what the tensor cores reach through this implementation here.
    let mmaPeak: number | undefined;
    {
      const wBuf = gpu.storage("dense", packWeights(wF, "f16"));
      const args = { x: xBufs.f32, w: wBuf, y: yBuf, T: mm, K: mm, N: mm, dtype: "f16" as const };
      const d = await matmulSgmatrix(gpu, { ...args, tune, multipliesOnly: true });
      const t = await time([d], { inner: full ? 10 : 1, samples: 5, warmupMs: 2000 });
      mmaPeak = (2 * mm ** 3) / t.seconds / 1e12;
      rows.push({
        name: "ceiling: subgroup-matrix multiplies alone (the GEMM without its loads)",
        value: mmaPeak,
        unit: "TFLOP/s",
        note: `${(t.seconds * 1e3).toFixed(2)} ms, ${t.how}${clockNote(t)}, ${tiling}`,
      });
      gpu.destroyBuffer(wBuf);
    }
    for (const dtype of ["f16", "bf16"] as DType[]) {
      const wBuf = gpu.storage("dense", packWeights(wF, dtype));
      for (const xDtype of ["f32", "f16"] as const) {
        const args = {
          x: xBufs[xDtype],
          w: wBuf,
          y: yBuf,
          T: mm,
          K: mm,
          N: mm,
          dtype,
          tune,
          xDtype,
        };
        const d = await matmulSgmatrix(gpu, args);
        gpu.submit([d]);
        const y = await gpu.readF32(yBuf, 0, 8 * mm);
        // The kernel rounds x and W to f16: the reference does too (then only the f32 sums differ).
        const w16 = roundTo(roundTo(wF, dtype), "f16");
        const ref = matmulRef(x16.subarray(0, 8 * mm), w16, 8, mm, mm);
        assertClose(y, ref, 1e-3, `matmul ${dtype} x ${xDtype} (subgroup matrix)`);
        const t = await time([d], { inner: full ? 10 : 1, samples: 5, warmupMs: 2000 });
        rows.push({
          name: `matmul ${dtype} weights, ${xDtype} activations ${mm}^3 (subgroup matrix)`,
          value: (2 * mm ** 3) / t.seconds / 1e12,
          unit: "TFLOP/s",
          ceiling: mmaPeak,
          ceilingNote: "multiplies alone" +
            (h200 ? `; peer PyTorch fp16 ${PYTORCH_FP16_TFLOPS_H200} (platform.md)` : ""),
          note: `${(t.seconds * 1e3).toFixed(2)} ms, ${t.how}${clockNote(t)}, ${tiling}`,
        });
      }
      gpu.destroyBuffer(wBuf);
    }
    gpu.destroyBuffer(xBufs.f32);
    gpu.destroyBuffer(xBufs.f16);
    gpu.destroyBuffer(yBuf);
  }
}

// ------------------------------------------------------------------ uploads
stage("uploads");

const PCIE_GEN5_X16 = 63; // GB/s per direction, nominal
for (const chunkMB of full ? [4, 16, 64, 256] : [1, 4, 16]) {
  const bytes = chunkMB * MB;
  const src = new Uint8Array(bytes).fill(7);
  const dst = gpu.storage("staging", bytes);
  const reps = full ? 8 : 2;
  const t = await wallTime(async () => {
    for (let i = 0; i < reps; i++) gpu.write(dst, src);
    await gpu.sync();
  }, { samples: 5 });
  rows.push({
    name: `upload writeBuffer ${chunkMB} MiB chunks`,
    value: (reps * bytes) / t / 1e9,
    unit: "GB/s",
    ceiling: PCIE_GEN5_X16,
    ceilingNote: "PCIe 5 x16 nominal",
    note: `${reps} chunks per sync`,
  });
  // Mapped staging: two MAP_WRITE buffers, filled through getMappedRange, then copied on the GPU.
  // On Deno's native WebGPU getMappedRange/unmap copy the mapping through V8 and every map waits
  // >= 10 ms, so it is measured there on small chunks only (docs/decisions.md).
  const slowMaps = gpu.impl === "native" && !gpu.isFallback;
  if (slowMaps && chunkMB > 16) {
    gpu.destroyBuffer(dst);
    continue;
  }
  const mapReps = slowMaps ? 2 : reps;
  const staging = [0, 1].map(() =>
    gpu.createBuffer({
      size: bytes,
      purpose: "staging",
      usage: GPUBufferUsage.MAP_WRITE | GPUBufferUsage.COPY_SRC,
    })
  );
  const tm = await wallTime(async () => {
    for (let i = 0; i < mapReps; i++) {
      const s = staging[i % 2];
      await s.mapAsync(GPUMapMode.WRITE);
      new Uint8Array(s.getMappedRange()).set(src);
      s.unmap();
      const enc = gpu.device.createCommandEncoder();
      enc.copyBufferToBuffer(s, 0, dst, 0, bytes);
      gpu.device.queue.submit([enc.finish()]);
    }
    await gpu.sync();
  }, { samples: slowMaps ? 2 : 3, warmup: 1 });
  rows.push({
    name: `upload mapped staging x2 ${chunkMB} MiB chunks`,
    value: (mapReps * bytes) / tm / 1e9,
    unit: "GB/s",
    ceiling: PCIE_GEN5_X16,
    ceilingNote: "PCIe 5 x16 nominal",
    note: "mapAsync + getMappedRange + copyBufferToBuffer",
  });
  // The expert uploader's mapped path: a ring of 3 staging buffers filled by parallel memcpys.
  const up = createUploader(gpu, "mapped", { stagingBytes: Math.min(bytes, 64 * MB), log: stage });
  const tu = await wallTime(async () => {
    for (let i = 0; i < mapReps; i++) await up.upload(dst, 0, src);
    up.flush();
    await gpu.sync();
  }, { samples: slowMaps ? 2 : 3, warmup: 1 });
  rows.push({
    name: `upload mapped uploader ${chunkMB} MiB chunks`,
    value: (mapReps * bytes) / tu / 1e9,
    unit: "GB/s",
    ceiling: PCIE_GEN5_X16,
    ceilingNote: "PCIe 5 x16 nominal",
    note: `${up.stats.fill} x${up.stats.threads}, 3 x ${Math.min(chunkMB, 64)} MiB staging`,
  });
  await up.dispose();
  staging.forEach((s) => gpu.destroyBuffer(s));
  gpu.destroyBuffer(dst);
}

// ------------------------------------------------------------------ readback latency, dispatch cost
stage("readback latency, dispatch cost");

const one = gpu.storage("activations", new Float32Array([1, 2, 3, 4]));
const oneOut = gpu.storage("activations", 16);
const tiny = await add(gpu, { a: one, b: one, out: oneOut, n: 4 });
const lat: number[] = [];
for (let i = 0; i < 12; i++) {
  const t0 = performance.now();
  gpu.submit([tiny]);
  const r = await gpu.readF32(oneOut);
  if (r[3] !== 8) throw new Error(`readback validation failed: ${r}`);
  if (i >= 2) lat.push((performance.now() - t0) * 1e3);
}
rows.push({
  name: "readback round trip (tiny dispatch + copy + mapAsync)",
  value: median(lat),
  unit: "us",
  note: "wall clock median of 10",
});
Deno.bench({ name: "readback round trip", n: 10, warmup: 2 }, async () => {
  gpu.submit([tiny]);
  await gpu.readF32(oneOut);
});

const nDisp = full ? 2000 : 200;
const dispT = await time(Array(nDisp).fill(tiny), { inner: 1, samples: 5 });
const dispW = await wallTime(async () => {
  gpu.submit(Array(nDisp).fill(tiny));
  await gpu.sync();
}, { samples: 5 });
rows.push({
  name: `dispatch cost, ${nDisp} tiny dispatches in one pass (GPU time)`,
  value: (dispT.seconds / nDisp) * 1e6,
  unit: "us",
  note: dispT.how,
});
rows.push({
  name: `dispatch cost, ${nDisp} tiny dispatches in one pass (wall incl. encode + sync)`,
  value: (dispW / nDisp) * 1e6,
  unit: "us",
});

await report();

/**
 * The MoE row for one token's `k` experts of [I, H] (gate, up) and [H, I] (down) in `type`: each
 * expert in its own slot, and as many copies of the pools as make 256 MiB, dispatched in turn, so
 * that the timed reads come from memory, not from the L2 cache. Validated against the CPU reference
 * (every choice, the first copy) before it is timed.
 */
async function moeRow(
  I: number,
  H: number,
  k: number,
  type: DType | QuantType,
): Promise<ResultRow> {
  const quantised = isQuantType(type);
  const encode = (m: Float32Array): Uint8Array => {
    if (isQuantType(type)) return quantize(m, type);
    const w = packWeights(m, type);
    return new Uint8Array(w.buffer, w.byteOffset, w.byteLength);
  };
  const decode = (b: Uint8Array, m: Float32Array): Float32Array =>
    isQuantType(type) ? dequantize(b, type) : roundTo(m, type);
  // Two random matrices per projection, alternating over the slots.
  const make = (rows: number, cols: number) =>
    [0, 1].map(() => {
      const m = randn(rows * cols, 0.02);
      const stored = encode(m);
      return { stored, rounded: decode(stored, m) };
    });
  const gate = make(I, H), up = make(I, H), down = make(H, I);
  const slotBytes = (m: { stored: Uint8Array }[]) => Math.ceil(m[0].stored.byteLength / 256) * 256;
  const pool = (m: { stored: Uint8Array }[], shift: number) => {
    const buf = gpu.storage("experts", slotBytes(m) * k);
    for (let s = 0; s < k; s++) gpu.write(buf, m[(s + shift) % 2].stored, s * slotBytes(m));
    return buf;
  };
  const setBytes = k * (2 * slotBytes(gate) + slotBytes(down));
  const sets = Math.max(1, Math.ceil((full ? 256 * MB : setBytes) / setBytes));
  const table = gpu.storage("experts", Uint32Array.from({ length: k }, (_, e) => e));
  const idList = Uint32Array.from({ length: k }, (_, e) => e);
  const ids = gpu.storage("activations", idList);
  const x = randn(H);
  const xBuf = gpu.storage("activations", x);
  const hBuf = gpu.storage("activations", k * I * 4);
  const yBuf = gpu.storage("activations", k * H * 4);
  const common = { table, ids, T: 1, topK: k, hidden: H, inter: I, dtype: type };
  const dispatches: Dispatch[] = [], buffers = [];
  for (let c = 0; c < sets; c++) {
    const g = pool(gate, 0), u = pool(up, 1), d = pool(down, 0);
    buffers.push(g, u, d);
    dispatches.push(
      await moeGateUp(gpu, {
        ...common,
        x: xBuf,
        gate: g,
        up: u,
        out: hBuf,
        slotWords: slotBytes(gate) / 4,
      }),
      await moeDown(gpu, {
        ...common,
        x: hBuf,
        down: d,
        out: yBuf,
        slotWords: slotBytes(down) / 4,
      }),
    );
  }
  gpu.submit(dispatches.slice(0, 2));
  const h = await gpu.readF32(hBuf, 0, k * I);
  // Expert e sits in slot e, which holds matrix (e + shift) % 2.
  const bySlot = (m: { rounded: Float32Array }[], shift: number) =>
    Array.from(idList, (e) => m[(e + shift) % 2].rounded);
  const hRef = moeGateUpRef(x, bySlot(gate, 0), bySlot(up, 1), idList, 1, k, H, I);
  assertClose(h, hRef, 1e-5, `moe gate_up ${type}`);
  const y = await gpu.readF32(yBuf, 0, k * H);
  assertClose(y, moeDownRef(h, bySlot(down, 0), idList, k, H, I), 1e-5, `moe down ${type}`);
  const t = await time(dispatches, { inner: full ? 10 : 1 });
  const perToken = t.seconds / sets;
  const stored = k * (2 * gate[0].stored.byteLength + down[0].stored.byteLength);
  buffers.forEach((b) => gpu.destroyBuffer(b));
  return {
    name: `MoE gate_up+down ${type}, top-${k} of ${I}x${H} experts` +
      (quantised ? " (stored bytes)" : ""),
    value: stored / perToken / 1e9,
    unit: "GB/s",
    ceiling: readBw,
    ceilingNote: "streaming read",
    note: `${(perToken * 1e6).toFixed(1)} us a token (${sets} copies of the pools), ${t.how}` +
      clockNote(t),
  };
}

/** Prints the table (and writes PREGATE_BENCH_OUT) of the rows measured so far. */
async function report(): Promise<void> {
  const header = `Pregate kernel bench, ${new Date().toISOString().slice(0, 10)}, ` +
    `${gpu.describe()}, size=${size}`;
  console.log(`\n${header}\n\n${markdownTable(rows)}\n`);
  const out = Deno.env.get("PREGATE_BENCH_OUT");
  if (out) {
    await Deno.writeTextFile(
      out,
      JSON.stringify({ header, gpu: gpu.describe(), impl: gpu.impl, size, rows }, null, 2),
    );
  }
  await clock?.stop();
}
