import type { Dispatch, Gpu } from "../runtime/base/gpu/device.ts";
import { attention, type AttentionArgs, kvAppend } from "./attention.ts";
import { attentionLlamaCppRef, attentionRef, kvAppendRef } from "./reference.ts";
import { roundTo } from "../runtime/base/dtype.ts";
import { assertClose, GPU_TEST, poisoned, randn, rejects, testGpu } from "./test_util.ts";

interface Case {
  T: number;
  nHeads: number;
  nKvHeads: number;
  headDim: number;
  maxSeq: number;
  pos0: number;
  causal: boolean;
  kvLen?: number;
  /** Append the batch's k, v first (self-attention); otherwise attend to the caches as they are. */
  append?: boolean;
  bias?: boolean;
  scale?: number;
  variant?: "prefill" | "decode";
}

const name = (c: Case) =>
  `T=${c.T} h=${c.nHeads}/${c.nKvHeads} d=${c.headDim} maxSeq=${c.maxSeq} pos0=${c.pos0} ` +
  `${c.causal ? "causal" : `kvLen=${c.kvLen}`}${c.bias ? " bias" : ""}${
    c.append ? " append" : ""
  } ${c.variant ?? "auto"}`;

/** Builds one case's buffers and dispatches; `check` compares its output with the reference. */
async function build(gpu: Gpu, c: Case) {
  const D = c.headDim;
  const cacheN = c.nKvHeads * c.maxSeq * D;
  // Every cache position holds random data (earlier tokens and garbage beyond the attended range).
  const kc = randn(cacheN), vc = randn(cacheN);
  const k = randn(c.T * c.nKvHeads * D), v = randn(c.T * c.nKvHeads * D);
  const q = randn(c.T * c.nHeads * D);
  const scale = c.scale ?? 1 / Math.sqrt(D);
  const biasKeys = c.maxSeq;
  const bias = c.bias ? randn(c.nHeads * c.T * biasKeys) : undefined;
  const kCache = gpu.storage("kv", kc), vCache = gpu.storage("kv", vc);
  const pos = gpu.storage("activations", new Uint32Array([c.pos0]));
  const out = poisoned(gpu, c.T * c.nHeads * D);
  const dispatches: Dispatch[] = [];
  if (c.append) {
    dispatches.push(
      await kvAppend(gpu, {
        k: gpu.storage("activations", k),
        v: gpu.storage("activations", v),
        kCache,
        vCache,
        pos,
        T: c.T,
        nKvHeads: c.nKvHeads,
        headDim: D,
        maxSeq: c.maxSeq,
      }),
    );
  }
  dispatches.push(
    await attention(gpu, {
      q: gpu.storage("activations", q),
      kCache,
      vCache,
      out,
      pos: c.causal ? pos : undefined,
      T: c.T,
      nHeads: c.nHeads,
      nKvHeads: c.nKvHeads,
      headDim: D,
      maxSeq: c.maxSeq,
      scale,
      causal: c.causal,
      kvLen: c.kvLen,
      bias: bias ? gpu.storage("activations", bias) : undefined,
      biasKeys: bias ? biasKeys : undefined,
      variant: c.variant,
    }),
  );
  const caches = c.append ? kvAppendRef(kc, vc, k, v, c.pos0, c) : { kCache: kc, vCache: vc };
  return {
    dispatches,
    check: async () => {
      const ref = attentionRef(q, caches.kCache, caches.vCache, {
        ...c,
        scale,
        bias,
        biasKeys,
      });
      assertClose(await gpu.readF32(out, 0, ref.length), ref, 1e-5, `attention ${name(c)}`);
    },
  };
}

/** Runs all cases in one submit, then checks each. */
async function runCases(cases: Case[]) {
  const gpu = await testGpu();
  const built = [];
  for (const c of cases) built.push(await build(gpu, c));
  gpu.submit(built.flatMap((b) => b.dispatches));
  for (const b of built) await b.check();
}

Deno.test({
  name: "kvAppend writes the batch at pos[0] and leaves the rest of the caches alone",
  ...GPU_TEST,
  fn: async () => {
    const gpu = await testGpu();
    const cases = [
      { T: 1, nKvHeads: 1, headDim: 16, maxSeq: 8, pos0: 0 },
      { T: 5, nKvHeads: 2, headDim: 100, maxSeq: 20, pos0: 3 },
      { T: 7, nKvHeads: 4, headDim: 64, maxSeq: 7, pos0: 0 },
      { T: 3, nKvHeads: 2, headDim: 256, maxSeq: 11, pos0: 8 },
      // Runs past the end: the last two tokens are dropped, nothing outside the caches changes.
      { T: 4, nKvHeads: 2, headDim: 33, maxSeq: 10, pos0: 8 },
    ];
    const built = [];
    const dispatches: Dispatch[] = [];
    for (const c of cases) {
      const cacheN = c.nKvHeads * c.maxSeq * c.headDim;
      const kc = randn(cacheN), vc = randn(cacheN);
      const k = randn(c.T * c.nKvHeads * c.headDim), v = randn(c.T * c.nKvHeads * c.headDim);
      // The caches sit between guard words inside larger buffers, bound as ranges.
      const guard = 64;
      const kBuf = gpu.storage("kv", new Uint32Array(cacheN + 2 * guard).fill(0x7fbadbad));
      const vBuf = gpu.storage("kv", new Uint32Array(cacheN + 2 * guard).fill(0x7fbadbad));
      gpu.write(kBuf, kc, guard * 4);
      gpu.write(vBuf, vc, guard * 4);
      dispatches.push(
        await kvAppend(gpu, {
          k: gpu.storage("activations", k),
          v: gpu.storage("activations", v),
          kCache: { buffer: kBuf, offset: guard * 4, size: cacheN * 4 },
          vCache: { buffer: vBuf, offset: guard * 4, size: cacheN * 4 },
          pos: gpu.storage("activations", new Uint32Array([c.pos0])),
          ...c,
        }),
      );
      built.push({ c, kc, vc, k, v, kBuf, vBuf, guard, cacheN });
    }
    gpu.submit(dispatches);
    for (const { c, kc, vc, k, v, kBuf, vBuf, guard, cacheN } of built) {
      const ref = kvAppendRef(kc, vc, k, v, c.pos0, c);
      for (
        const [which, buf, want] of [["k", kBuf, ref.kCache], ["v", vBuf, ref.vCache]] as const
      ) {
        const got = new Uint32Array(await gpu.read(buf));
        const gotF = new Float32Array(got.buffer);
        for (let i = 0; i < got.length; i++) {
          const inCache = i >= guard && i < guard + cacheN;
          const ok = inCache ? gotF[i] === want[i - guard] : got[i] === 0x7fbadbad;
          if (!ok) {
            throw new Error(
              `kvAppend ${JSON.stringify(c)} ${which}Cache word ${i - guard}: got ${gotF[i]}, ` +
                `expected ${inCache ? want[i - guard] : "the guard word"}`,
            );
          }
        }
      }
    }
  },
});

Deno.test({
  name: "attention prefill matches the reference (causal, pos0 = 0 and > 0, GQA, head dims)",
  ...GPU_TEST,
  fn: () =>
    runCases([
      {
        T: 5,
        nHeads: 2,
        nKvHeads: 2,
        headDim: 16,
        maxSeq: 24,
        pos0: 0,
        causal: true,
        append: true,
      },
      {
        T: 37,
        nHeads: 4,
        nKvHeads: 2,
        headDim: 64,
        maxSeq: 64,
        pos0: 0,
        causal: true,
        append: true,
      },
      {
        T: 20,
        nHeads: 8,
        nKvHeads: 2,
        headDim: 100,
        maxSeq: 60,
        pos0: 13,
        causal: true,
        append: true,
      },
      {
        T: 9,
        nHeads: 2,
        nKvHeads: 1,
        headDim: 256,
        maxSeq: 40,
        pos0: 7,
        causal: true,
        append: true,
      },
      { T: 17, nHeads: 4, nKvHeads: 4, headDim: 128, maxSeq: 50, pos0: 30, causal: true },
      // Batch runs past maxSeq: keys are clipped to the cache.
      { T: 6, nHeads: 2, nKvHeads: 1, headDim: 24, maxSeq: 20, pos0: 17, causal: true },
      // T5-style: scale 1, additive bias.
      {
        T: 19,
        nHeads: 4,
        nKvHeads: 2,
        headDim: 32,
        maxSeq: 40,
        pos0: 3,
        causal: true,
        append: true,
        bias: true,
        scale: 1,
      },
    ]),
});

Deno.test({
  name: "attention prefill matches the reference (not causal: encoder and cross-attention)",
  ...GPU_TEST,
  fn: () =>
    runCases([
      {
        T: 17,
        nHeads: 2,
        nKvHeads: 2,
        headDim: 128,
        maxSeq: 48,
        pos0: 0,
        causal: false,
        kvLen: 33,
      },
      { T: 6, nHeads: 4, nKvHeads: 1, headDim: 64, maxSeq: 19, pos0: 0, causal: false, kvLen: 19 },
      { T: 23, nHeads: 4, nKvHeads: 2, headDim: 100, maxSeq: 30, pos0: 5, causal: false, kvLen: 1 },
      {
        T: 12,
        nHeads: 2,
        nKvHeads: 2,
        headDim: 16,
        maxSeq: 40,
        pos0: 0,
        causal: false,
        kvLen: 35,
        bias: true,
        scale: 1,
      },
    ]),
});

Deno.test({
  name: "attention decode matches the reference (T = 1 at several positions, GQA, not causal)",
  ...GPU_TEST,
  fn: () =>
    runCases([
      {
        T: 1,
        nHeads: 4,
        nKvHeads: 4,
        headDim: 64,
        maxSeq: 16,
        pos0: 0,
        causal: true,
        append: true,
      },
      {
        T: 1,
        nHeads: 4,
        nKvHeads: 2,
        headDim: 100,
        maxSeq: 16,
        pos0: 1,
        causal: true,
        append: true,
      },
      {
        T: 1,
        nHeads: 8,
        nKvHeads: 2,
        headDim: 128,
        maxSeq: 64,
        pos0: 37,
        causal: true,
        append: true,
      },
      // Crosses several key chunks (256 keys each).
      {
        T: 1,
        nHeads: 2,
        nKvHeads: 1,
        headDim: 16,
        maxSeq: 700,
        pos0: 600,
        causal: true,
        append: true,
      },
      { T: 1, nHeads: 2, nKvHeads: 1, headDim: 256, maxSeq: 300, pos0: 256, causal: true },
      {
        T: 1,
        nHeads: 4,
        nKvHeads: 1,
        headDim: 48,
        maxSeq: 300,
        pos0: 0,
        causal: false,
        kvLen: 270,
      },
      {
        T: 1,
        nHeads: 2,
        nKvHeads: 2,
        headDim: 32,
        maxSeq: 50,
        pos0: 20,
        causal: true,
        bias: true,
        scale: 1,
      },
      // Small batches on the decode variant, and T = 1 forced onto the prefill variant.
      {
        T: 3,
        nHeads: 4,
        nKvHeads: 2,
        headDim: 64,
        maxSeq: 40,
        pos0: 10,
        causal: true,
        append: true,
      },
      {
        T: 7,
        nHeads: 2,
        nKvHeads: 1,
        headDim: 100,
        maxSeq: 40,
        pos0: 4,
        causal: true,
        append: true,
        variant: "decode",
      },
      {
        T: 1,
        nHeads: 4,
        nKvHeads: 2,
        headDim: 64,
        maxSeq: 300,
        pos0: 290,
        causal: true,
        append: true,
        variant: "prefill",
      },
    ]),
});

Deno.test({
  name: "a recorded decode step replays at successive positions written to pos",
  ...GPU_TEST,
  fn: async () => {
    const gpu = await testGpu();
    const [nHeads, nKvHeads, headDim, maxSeq] = [4, 2, 32, 12];
    const kvN = nKvHeads * headDim;
    let kc: ArrayLike<number> = randn(nKvHeads * maxSeq * headDim);
    let vc: ArrayLike<number> = randn(nKvHeads * maxSeq * headDim);
    const kCache = gpu.storage("kv", kc as Float32Array);
    const vCache = gpu.storage("kv", vc as Float32Array);
    const pos = gpu.storage("activations", new Uint32Array(1));
    const q = gpu.storage("activations", nHeads * headDim * 4);
    const k = gpu.storage("activations", kvN * 4), v = gpu.storage("activations", kvN * 4);
    const out = gpu.storage("activations", nHeads * headDim * 4);
    const shape = { T: 1, nHeads, nKvHeads, headDim, maxSeq };
    const step = [
      await kvAppend(gpu, { k, v, kCache, vCache, pos, ...shape }),
      await attention(gpu, { q, kCache, vCache, out, pos, ...shape, scale: 0.3, causal: true }),
    ];
    for (let p = 0; p < 5; p++) {
      const qs = randn(nHeads * headDim), ks = randn(kvN), vs = randn(kvN);
      gpu.write(pos, new Uint32Array([p]));
      gpu.write(q, qs);
      gpu.write(k, ks);
      gpu.write(v, vs);
      gpu.write(out, new Uint32Array(nHeads * headDim).fill(0x7fbadbad));
      gpu.submit(step);
      ({ kCache: kc, vCache: vc } = kvAppendRef(kc, vc, ks, vs, p, shape));
      const ref = attentionRef(qs, kc, vc, { ...shape, pos0: p, scale: 0.3, causal: true });
      assertClose(await gpu.readF32(out), ref, 1e-5, `replayed decode at pos ${p}`);
    }
  },
});

Deno.test({
  name: "kvAppend and attention reject bad arguments, naming them",
  ...GPU_TEST,
  fn: async () => {
    const gpu = await testGpu();
    const buf = (bytes: number) => gpu.storage("activations", bytes);
    const [nHeads, nKvHeads, headDim, maxSeq, T] = [4, 2, 16, 8, 2];
    const cache = () => buf(nKvHeads * maxSeq * headDim * 4);
    const base: AttentionArgs = {
      q: buf(T * nHeads * headDim * 4),
      kCache: cache(),
      vCache: cache(),
      out: buf(T * nHeads * headDim * 4),
      pos: buf(4),
      T,
      nHeads,
      nKvHeads,
      headDim,
      maxSeq,
      scale: 0.25,
      causal: true,
    };
    await attention(gpu, base); // valid
    await rejects(attention(gpu, { ...base, nKvHeads: 3 }), "nKvHeads", "divisor");
    await rejects(attention(gpu, { ...base, headDim: 300 }), "headDim", "300");
    await rejects(attention(gpu, { ...base, T: 0 }), "T", "got 0");
    await rejects(attention(gpu, { ...base, T: 2.5 }), "T", "2.5");
    await rejects(attention(gpu, { ...base, T: 3 }), "q", "expected at least 768 bytes");
    await rejects(attention(gpu, { ...base, kCache: buf(100) }), "kCache", "got a binding");
    await rejects(attention(gpu, { ...base, out: base.q }), "out", "distinct from q");
    await rejects(attention(gpu, { ...base, pos: undefined }), "pos", "got undefined");
    await rejects(attention(gpu, { ...base, causal: false }), "kvLen", "got undefined");
    await rejects(attention(gpu, { ...base, causal: false, kvLen: 9 }), "kvLen", "got 9");
    await rejects(attention(gpu, { ...base, scale: NaN }), "scale", "NaN");
    await rejects(
      attention(gpu, { ...base, bias: buf(16), biasKeys: 8 }),
      "bias",
      "expected at least 256 bytes",
    );
    await rejects(attention(gpu, { ...base, bias: buf(4096) }), "biasKeys", "undefined");
    await rejects(
      attention(gpu, { ...base, variant: "fast" as "decode" }),
      "variant",
      "fast",
    );
    const app = {
      k: buf(T * nKvHeads * headDim * 4),
      v: buf(T * nKvHeads * headDim * 4),
      kCache: base.kCache,
      vCache: base.vCache,
      pos: base.pos!,
      T,
      nKvHeads,
      headDim,
      maxSeq,
    };
    await kvAppend(gpu, app); // valid
    await rejects(kvAppend(gpu, { ...app, v: buf(8) }), "v", "expected at least 256 bytes");
    await rejects(kvAppend(gpu, { ...app, maxSeq: 0 }), "maxSeq", "got 0");
    await rejects(kvAppend(gpu, { ...app, vCache: app.kCache }), "kCache", "vCache");
  },
});

Deno.test({
  name: "attention's llama.cpp variant matches its CPU reference and differs from f32 attention",
  ...GPU_TEST,
  fn: async () => {
    const gpu = await testGpu();
    const cases = [
      { T: 1, nHeads: 4, nKvHeads: 2, headDim: 64, maxSeq: 40, pos0: 37, causal: true },
      { T: 6, nHeads: 2, nKvHeads: 1, headDim: 48, maxSeq: 16, pos0: 3, causal: true },
      // More keys than one chunk (CH = 2 * WG): the recurrence carries across chunks.
      { T: 1, nHeads: 1, nKvHeads: 1, headDim: 32, maxSeq: 300, pos0: 299, causal: true },
      { T: 2, nHeads: 2, nKvHeads: 2, headDim: 16, maxSeq: 9, pos0: 0, causal: false, kvLen: 9 },
    ];
    for (const c of cases) {
      const D = c.headDim, cacheN = c.nKvHeads * c.maxSeq * D;
      // The caches hold f16 values, as llama.cpp's does.
      const kc = roundTo(randn(cacheN), "f16"), vc = roundTo(randn(cacheN), "f16");
      const q = randn(c.T * c.nHeads * D), scale = 1 / Math.sqrt(D);
      const out = poisoned(gpu, q.length);
      gpu.submit([
        await attention(gpu, {
          ...c,
          q: gpu.storage("activations", q),
          kCache: gpu.storage("kv", kc),
          vCache: gpu.storage("kv", vc),
          out,
          pos: gpu.storage("activations", new Uint32Array([c.pos0])),
          scale,
          variant: "llama.cpp",
        }),
      ]);
      const got = await gpu.readF32(out, 0, q.length);
      const what = `llama.cpp attention ${JSON.stringify(c)}`;
      // An f16 rounding may land on the other side of a tie: within a few f16 ulps.
      assertClose(got, attentionLlamaCppRef(q, kc, vc, { ...c, scale }), 2e-3, what);
      const exact = attentionRef(q, kc, vc, { ...c, scale });
      const worst = Math.max(...got.map((x, i) => Math.abs(x - exact[i])));
      if (!(worst > 1e-5)) throw new Error(`${what}: equals f32 attention (${worst}), not rounded`);
    }
  },
});
