// T5 / Switch attention: relative position buckets (against hand-derived values and, when the HF
// fixture is present, against transformers' own buckets), the per-stack bias table, and the
// attention kernel with that table (encoder, decoder prefill and decode) and as cross-attention,
// all with scale 1, against the float64 reference with a dense per-pair bias.
import assert from "node:assert/strict";
import type { Dispatch, Gpu } from "../runtime/base/gpu/device.ts";
import { attention, kvAppend } from "./attention.ts";
import { relativeBiasTable, relativePositionBucket } from "./relative_bias.ts";
import { attentionRef, kvAppendRef, relativeBiasDenseRef } from "./reference.ts";
import { assertClose, GPU_TEST, poisoned, randn, rejects, testGpu } from "./test_util.ts";
import { ArgumentError } from "../runtime/base/errors.ts";

const FIXTURE = new URL("../tests/fixtures/hf/switch_tiny/reference.json", import.meta.url);
const hasFixture = await Deno.stat(FIXTURE).then(() => true, () => false);

Deno.test("relativePositionBucket: T5's buckets (32 buckets, distance 128)", () => {
  const dec = (r: number) => relativePositionBucket(r, false, 32, 128);
  const enc = (r: number) => relativePositionBucket(r, true, 32, 128);
  // Causal: exact up to 15, then logarithmic: 16 + floor(log(r / 16) / log(8) * 16), last 31.
  assert.deepEqual([0, -1, -15, -16, -17, -31, -32, -63, -64, -127, -128, -5000].map(dec), [
    0,
    1,
    15,
    16,
    16,
    21,
    21,
    26,
    26,
    31,
    31,
    31,
  ]);
  assert.equal(dec(7), 0, "a future key (masked anyway) gets bucket 0");
  // Bidirectional: 16 per side, keys after the query offset by 16; r = 16 is exactly 8 + 2.
  assert.deepEqual([0, -1, -7, -8, -16, -20, -128, 1, 7, 8, 16, 128, 9999].map(enc), [
    0,
    1,
    7,
    8,
    10,
    10,
    15,
    17,
    23,
    24,
    26,
    31,
    31,
  ]);
});

Deno.test("relativePositionBucket saturates at maxDistance, so the clamped table is exact", () => {
  for (const [nb, md] of [[8, 16], [32, 128], [16, 20], [6, 4], [64, 33]]) {
    for (const bi of [true, false]) {
      const at = (r: number) => relativePositionBucket(r, bi, nb, md);
      let prevNeg = -1, prevPos = -1;
      for (let r = 0; r <= 5 * md; r++) {
        assert.equal(at(-r), at(-Math.min(r, md)), `nb=${nb} md=${md} bi=${bi} r=-${r}`);
        assert.equal(at(r), at(Math.min(r, md)), `nb=${nb} md=${md} bi=${bi} r=${r}`);
        assert.ok(at(-r) >= prevNeg && at(r) >= prevPos, "buckets grow with the distance");
        assert.ok(at(-r) < nb && at(r) < nb && at(-r) >= 0);
        [prevNeg, prevPos] = [at(-r), at(r)];
      }
    }
  }
});

Deno.test({
  name: "relativePositionBucket equals transformers' _relative_position_bucket (HF fixture)",
  ignore: !hasFixture,
  fn: async () => {
    const ref = JSON.parse(await Deno.readTextFile(FIXTURE));
    assert.ok(ref.relative_position_buckets.length >= 4);
    for (const s of ref.relative_position_buckets) {
      s.buckets.forEach((b: number, i: number) => {
        const r = s.first_relative_position + i;
        const ours = relativePositionBucket(r, s.bidirectional, s.num_buckets, s.max_distance);
        assert.equal(ours, b, `rel ${r} ${JSON.stringify({ ...s, buckets: undefined })}`);
      });
    }
  },
});

Deno.test("relativeBiasTable lays out [heads, 2 * maxDistance + 1] and checks its weights", () => {
  const [heads, buckets, maxDistance] = [3, 8, 5];
  const w = randn(buckets * heads);
  const t = relativeBiasTable(w, { heads, buckets, maxDistance, bidirectional: false });
  assert.equal(t.length, heads * 11);
  for (let h = 0; h < heads; h++) {
    for (let d = -5; d <= 5; d++) {
      const b = relativePositionBucket(d, false, buckets, maxDistance);
      assert.equal(t[h * 11 + d + 5], w[b * heads + h]);
    }
  }
  assert.throws(
    () => relativeBiasTable(w.subarray(1), { heads, buckets, maxDistance, bidirectional: true }),
    (e: unknown) => e instanceof ArgumentError && e.argument === "weights",
  );
});

interface Case {
  name: string;
  T: number;
  nHeads: number;
  headDim: number;
  maxSeq: number;
  /** Causal self-attention at pos0 (the batch appended first), or attention over kvLen keys. */
  causal: boolean;
  pos0?: number;
  kvLen?: number;
  /** Relative bias (buckets, distance); none for cross-attention. */
  rel?: [number, number];
  variant?: "prefill" | "decode";
}

async function build(gpu: Gpu, c: Case) {
  const D = c.headDim, H = c.nHeads;
  const kc = randn(H * c.maxSeq * D), vc = randn(H * c.maxSeq * D);
  const k = randn(c.T * H * D), v = randn(c.T * H * D), q = randn(c.T * H * D, 0.5);
  const pos0 = c.causal ? c.pos0 ?? 0 : 0;
  const kCache = gpu.storage("kv", kc), vCache = gpu.storage("kv", vc);
  const pos = gpu.storage("activations", new Uint32Array([pos0]));
  const out = poisoned(gpu, c.T * H * D);
  const dispatches: Dispatch[] = [];
  if (c.causal) {
    const kv = { T: c.T, nKvHeads: H, headDim: D, maxSeq: c.maxSeq };
    dispatches.push(
      await kvAppend(gpu, {
        ...kv,
        k: gpu.storage("activations", k),
        v: gpu.storage("activations", v),
        kCache,
        vCache,
        pos,
      }),
    );
  }
  let bias: Float64Array | undefined, relativeBias;
  if (c.rel) {
    const [buckets, maxDistance] = c.rel, bidirectional = !c.causal;
    const weights = randn(buckets * H, 2);
    const table = relativeBiasTable(weights, { heads: H, buckets, maxDistance, bidirectional });
    relativeBias = { table: gpu.storage("activations", table), maxDistance };
    bias = relativeBiasDenseRef(weights, {
      nHeads: H,
      T: c.T,
      keys: c.maxSeq,
      pos0,
      buckets,
      maxDistance,
      bidirectional,
    });
  }
  dispatches.push(
    await attention(gpu, {
      q: gpu.storage("activations", q),
      kCache,
      vCache,
      out,
      pos: c.causal ? pos : undefined,
      T: c.T,
      nHeads: H,
      nKvHeads: H,
      headDim: D,
      maxSeq: c.maxSeq,
      scale: 1,
      causal: c.causal,
      kvLen: c.kvLen,
      relativeBias,
      variant: c.variant,
    }),
  );
  const shape = { T: c.T, nKvHeads: H, headDim: D, maxSeq: c.maxSeq };
  const caches = c.causal ? kvAppendRef(kc, vc, k, v, pos0, shape) : { kCache: kc, vCache: vc };
  return {
    dispatches,
    check: async () => {
      const ref = attentionRef(q, caches.kCache, caches.vCache, {
        ...shape,
        nHeads: H,
        pos0,
        scale: 1,
        causal: c.causal,
        kvLen: c.kvLen,
        bias,
        biasKeys: c.maxSeq,
      });
      assertClose(await gpu.readF32(out, 0, ref.length), ref, 1e-5, c.name);
    },
  };
}

async function runCases(cases: Case[]) {
  const gpu = await testGpu();
  const built = [];
  for (const c of cases) built.push(await build(gpu, c));
  gpu.submit(built.flatMap((b) => b.dispatches));
  for (const b of built) await b.check();
}

Deno.test({
  name: "attention with T5's relative bias table matches the dense-bias reference",
  ...GPU_TEST,
  fn: () =>
    runCases([
      // Encoder: bidirectional, longer than the saturation distance.
      {
        name: "encoder prefill",
        T: 21,
        nHeads: 3,
        headDim: 12,
        maxSeq: 24,
        causal: false,
        kvLen: 21,
        rel: [8, 16],
      },
      {
        name: "encoder decode variant",
        T: 3,
        nHeads: 4,
        headDim: 20,
        maxSeq: 40,
        causal: false,
        kvLen: 3,
        rel: [8, 16],
        variant: "decode",
      },
      {
        name: "encoder, few buckets",
        T: 9,
        nHeads: 2,
        headDim: 7,
        maxSeq: 9,
        causal: false,
        kvLen: 9,
        rel: [6, 4],
      },
      // Decoder: causal buckets, decode steps before and past the saturation distance.
      {
        name: "decoder step 0",
        T: 1,
        nHeads: 4,
        headDim: 12,
        maxSeq: 32,
        causal: true,
        pos0: 0,
        rel: [8, 16],
      },
      {
        name: "decoder step 5",
        T: 1,
        nHeads: 4,
        headDim: 12,
        maxSeq: 32,
        causal: true,
        pos0: 5,
        rel: [8, 16],
      },
      {
        name: "decoder step 25",
        T: 1,
        nHeads: 4,
        headDim: 12,
        maxSeq: 32,
        causal: true,
        pos0: 25,
        rel: [8, 16],
      },
      {
        name: "decoder prefill",
        T: 9,
        nHeads: 3,
        headDim: 16,
        maxSeq: 30,
        causal: true,
        pos0: 0,
        rel: [8, 16],
      },
      {
        name: "decoder prefill at 20",
        T: 7,
        nHeads: 2,
        headDim: 12,
        maxSeq: 30,
        causal: true,
        pos0: 20,
        rel: [8, 16],
        variant: "prefill",
      },
      // Switch-Base's head shape and buckets, past distance 128.
      {
        name: "base-like step 200",
        T: 1,
        nHeads: 12,
        headDim: 64,
        maxSeq: 260,
        causal: true,
        pos0: 200,
        rel: [32, 128],
      },
    ]),
});

Deno.test({
  name:
    "cross-attention (decoder queries over encoder K/V, scale 1, no bias) matches the reference",
  ...GPU_TEST,
  fn: () =>
    runCases([
      { name: "cross decode", T: 1, nHeads: 4, headDim: 12, maxSeq: 20, causal: false, kvLen: 13 },
      {
        name: "cross decode, 3 rows",
        T: 3,
        nHeads: 4,
        headDim: 12,
        maxSeq: 20,
        causal: false,
        kvLen: 20,
      },
      {
        name: "cross prefill",
        T: 6,
        nHeads: 4,
        headDim: 12,
        maxSeq: 20,
        causal: false,
        kvLen: 13,
        variant: "prefill",
      },
      {
        name: "cross prefill long",
        T: 18,
        nHeads: 2,
        headDim: 64,
        maxSeq: 300,
        causal: false,
        kvLen: 256,
      },
    ]),
});

Deno.test({
  name: "attention rejects a bad relativeBias",
  ...GPU_TEST,
  fn: async () => {
    const gpu = await testGpu();
    const buf = (n: number) => gpu.storage("activations", n * 4);
    const base = {
      q: buf(64),
      kCache: buf(64 * 8),
      vCache: buf(64 * 8),
      out: buf(64),
      T: 1,
      nHeads: 4,
      nKvHeads: 4,
      headDim: 16,
      maxSeq: 8,
      scale: 1,
      causal: false,
      kvLen: 8,
    };
    await rejects(
      attention(gpu, { ...base, relativeBias: { table: buf(4 * 9), maxDistance: 5 } }),
      "relativeBias.table",
    );
    await rejects(
      attention(gpu, { ...base, relativeBias: { table: buf(4 * 9), maxDistance: 0 } }),
      "relativeBias.maxDistance",
    );
    await rejects(
      attention(gpu, {
        ...base,
        bias: buf(4 * 8),
        biasKeys: 8,
        relativeBias: { table: buf(4 * 9), maxDistance: 4 },
      }),
      "relativeBias",
    );
  },
});
