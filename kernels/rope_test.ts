import type { Dispatch } from "../runtime/base/gpu/device.ts";
import { rope, ropeInvFreq, ropeKv, type RopeStyle } from "./rope.ts";
import { ropeInvFreqRef, ropeKvRef, ropeRef } from "./reference.ts";
import { assertClose, GPU_TEST, POISON, poisoned, randn, rejects, testGpu } from "./test_util.ts";
import { roundTo } from "../runtime/base/dtype.ts";

interface Case {
  T: number;
  heads: number;
  headDim: number;
  rotaryDim?: number;
  theta: number;
  pos0: number;
  style: RopeStyle;
  stride?: number;
  headStride?: number;
  offset?: number;
  /** Elements of x (default: just enough). */
  size?: number;
  /** Pass this factor's scaled table as invFreq instead of theta. */
  linearScale?: number;
}

const GUARD = 64;

// All at f32 tolerance 1e-5, large positions included: the angle is the same f32 value on both
// sides (HF's rounding of inv_freq and of pos * inv_freq) and the kernel's cos/sin are accurate to
// ~1e-7 absolute for any angle, so the error stays ~1e-7 however long the context.
const CASES: Case[] = [
  { T: 3, heads: 2, headDim: 8, theta: 10000, pos0: 0, style: "neox" },
  { T: 5, heads: 3, headDim: 64, rotaryDim: 32, theta: 10000, pos0: 7, style: "interleaved" },
  { T: 4, heads: 3, headDim: 64, rotaryDim: 16, theta: 10000, pos0: 3, style: "neox" },
  { T: 2, heads: 2, headDim: 5, rotaryDim: 4, theta: 500000, pos0: 11, style: "neox" },
  { T: 7, heads: 1, headDim: 2, theta: 10000, pos0: 123, style: "interleaved" },
  // Long contexts: large angles (up to 2^24 rad for the first pair).
  { T: 2, heads: 2, headDim: 128, theta: 1e6, pos0: 1_000_000, style: "neox" },
  { T: 3, heads: 1, headDim: 96, theta: 10000, pos0: 2 ** 24 - 3, style: "interleaved" },
  { T: 2, heads: 4, headDim: 32, theta: 10000, pos0: 123_457, style: "neox", linearScale: 4 },
  // k heads inside a fused qkv row [T, (Hq + 2 Hk) * D] with Hq = 4, Hk = 2, D = 16.
  { T: 3, heads: 2, headDim: 16, theta: 10000, pos0: 5, style: "neox", stride: 128, offset: 64 },
  // Padded heads (headStride > headDim) and rows (stride > heads * headStride).
  {
    T: 3,
    heads: 3,
    headDim: 10,
    rotaryDim: 6,
    theta: 10000,
    pos0: 40,
    style: "interleaved",
    headStride: 12,
    stride: 40,
    offset: 3,
  },
];

Deno.test("ropeInvFreq rounds like HF (f32 exponent, power and reciprocal)", () => {
  for (const [theta, d] of [[10000, 128], [1e6, 64], [500000, 6], [10000, 2]]) {
    const a = ropeInvFreq(theta, d), b = ropeInvFreqRef(theta, d);
    if (a.some((v, i) => v !== b[i])) throw new Error(`theta=${theta} d=${d}: ${a} vs ${b}`);
  }
});

Deno.test({
  name: "rope matches the CPU reference (styles, partial rotary, strides, long positions)",
  ...GPU_TEST,
  fn: async () => {
    const gpu = await testGpu();
    const runs: Dispatch[] = [];
    const checks: [GPUBuffer, Float64Array, string][] = [];
    for (const c of CASES) {
      const headStride = c.headStride ?? c.headDim;
      const stride = c.stride ?? c.heads * headStride;
      const offset = c.offset ?? 0;
      const rotaryDim = c.rotaryDim ?? c.headDim;
      const n = c.size ?? offset + (c.T - 1) * stride + c.heads * headStride;
      const x = randn(n);
      // Guard words after x must stay untouched.
      const words = new Uint32Array(n + GUARD).fill(POISON);
      words.set(new Uint32Array(x.buffer));
      const xb = gpu.storage("activations", words);
      const pos = gpu.storage("activations", new Uint32Array([c.pos0, 99, 99, 99]));
      let invFreq = ropeInvFreqRef(c.theta, rotaryDim);
      const common = { x: xb, pos, T: c.T, heads: c.heads, headDim: c.headDim, rotaryDim };
      const layout = { style: c.style, stride: c.stride, headStride: c.headStride, offset };
      if (c.linearScale) {
        invFreq = invFreq.map((v) => v / c.linearScale!);
        const table = gpu.storage("dense", invFreq);
        runs.push(await rope(gpu, { ...common, ...layout, invFreq: table }));
      } else {
        runs.push(await rope(gpu, { ...common, ...layout, theta: c.theta }));
      }
      const ref = ropeRef(x, {
        T: c.T,
        heads: c.heads,
        rotaryDim,
        stride,
        headStride,
        offset,
        pos0: c.pos0,
        invFreq,
        style: c.style,
      });
      checks.push([xb, ref, `rope ${JSON.stringify(c)}`]);
    }
    gpu.submit(runs);
    for (const [buf, ref, what] of checks) {
      const got = await gpu.readF32(buf);
      assertClose(got.subarray(0, ref.length), ref, 1e-5, what);
      const guard = new Uint32Array(got.buffer, ref.length * 4, GUARD);
      if (guard.some((w) => w !== POISON)) throw new Error(`${what}: wrote past the end of x`);
    }
  },
});

Deno.test({
  name: "rope rejects bad arguments",
  ...GPU_TEST,
  fn: async () => {
    const gpu = await testGpu();
    const x = gpu.storage("activations", 4 * 2 * 4 * 16);
    const pos = gpu.storage("activations", new Uint32Array([0]));
    const ok = { x, pos, T: 2, heads: 4, headDim: 16, theta: 10000 };
    const bad = (a: Record<string, unknown>, arg: string) =>
      rejects(rope(gpu, { ...ok, ...a } as never), arg);
    await bad({ T: 0 }, "T");
    await bad({ heads: -1 }, "heads");
    await bad({ headDim: 1 }, "headDim");
    await bad({ rotaryDim: 7 }, "rotaryDim");
    await bad({ rotaryDim: 18 }, "rotaryDim");
    await bad({ theta: 0 }, "theta");
    await bad({ theta: undefined }, "theta");
    await bad({ style: "gptj" }, "style");
    await bad({ headStride: 8 }, "headStride");
    await bad({ stride: 32 }, "stride");
    await bad({ T: 3 }, "x");
    await bad({ offset: 1 }, "x");
    await bad({ pos: { buffer: pos, size: 0 } }, "pos");
    await bad({ pos: x }, "x");
    await bad({ invFreq: gpu.storage("dense", 4 * 8) }, "theta"); // both given
    await bad({ theta: undefined, invFreq: gpu.storage("dense", 4 * 4) }, "invFreq"); // too small
  },
});

interface KvCase {
  T: number;
  nHeads: number;
  nKvHeads: number;
  headDim: number;
  rotaryDim?: number;
  maxSeq: number;
  pos0: number;
  theta: number;
  style: RopeStyle;
  linearScale?: number;
}

// Ragged head counts and dims, partial rotary, both styles, tokens past the cache's end.
const KV_CASES: KvCase[] = [
  { T: 1, nHeads: 4, nKvHeads: 2, headDim: 16, maxSeq: 8, pos0: 3, theta: 10000, style: "neox" },
  { T: 5, nHeads: 3, nKvHeads: 3, headDim: 10, maxSeq: 9, pos0: 0, theta: 1e6, style: "neox" },
  {
    T: 3,
    nHeads: 6,
    nKvHeads: 2,
    headDim: 12,
    rotaryDim: 6,
    maxSeq: 20,
    pos0: 11,
    theta: 10000,
    style: "interleaved",
  },
  {
    T: 4,
    nHeads: 2,
    nKvHeads: 1,
    headDim: 14,
    rotaryDim: 8,
    maxSeq: 6,
    pos0: 4, // tokens 2 and 3 fall past maxSeq
    theta: 500000,
    style: "neox",
  },
  {
    T: 2,
    nHeads: 5,
    nKvHeads: 1,
    headDim: 8,
    maxSeq: 123_460,
    pos0: 123_457,
    theta: 10000,
    style: "neox",
    linearScale: 4,
  },
];

Deno.test({
  name: "ropeKv (rope q, rope k, kv append in one pass) matches the CPU reference",
  ...GPU_TEST,
  fn: async () => {
    const gpu = await testGpu();
    const runs: Dispatch[] = [];
    const checks: (() => Promise<void>)[] = [];
    for (const c of KV_CASES) {
      const D = c.headDim, rotaryDim = c.rotaryDim ?? D;
      const nq = c.T * c.nHeads * D, nkv = c.T * c.nKvHeads * D;
      const cacheN = c.nKvHeads * c.maxSeq * D;
      const q = randn(nq), k = randn(nkv), v = randn(nkv);
      const kc = randn(cacheN), vc = randn(cacheN);
      const qWords = new Uint32Array(nq + GUARD).fill(POISON);
      qWords.set(new Uint32Array(q.buffer));
      const qb = gpu.storage("activations", qWords);
      const kb = gpu.storage("activations", k), vb = gpu.storage("activations", v);
      const kcb = gpu.storage("kv", kc), vcb = gpu.storage("kv", vc);
      const pos = gpu.storage("activations", new Uint32Array([c.pos0, 99, 99, 99]));
      let invFreq = ropeInvFreqRef(c.theta, rotaryDim);
      const args = {
        q: qb,
        k: kb,
        v: vb,
        kCache: kcb,
        vCache: vcb,
        pos,
        T: c.T,
        nHeads: c.nHeads,
        nKvHeads: c.nKvHeads,
        headDim: D,
        maxSeq: c.maxSeq,
        rotaryDim,
        style: c.style,
      };
      if (c.linearScale) {
        invFreq = invFreq.map((f) => f / c.linearScale!);
        runs.push(await ropeKv(gpu, { ...args, invFreq: gpu.storage("dense", invFreq) }));
      } else {
        runs.push(await ropeKv(gpu, { ...args, theta: c.theta }));
      }
      const ref = ropeKvRef(q, k, v, kc, vc, c.pos0, { ...c, rotaryDim, invFreq });
      const what = `ropeKv ${JSON.stringify(c)}`;
      checks.push(async () => {
        const got = await gpu.readF32(qb);
        assertClose(got.subarray(0, nq), ref.q, 1e-5, `${what} q`);
        const guard = new Uint32Array(got.buffer, nq * 4, GUARD);
        if (guard.some((w) => w !== POISON)) throw new Error(`${what}: wrote past the end of q`);
        assertClose(await gpu.readF32(kcb, 0, cacheN), ref.kCache, 1e-5, `${what} kCache`);
        // v is copied: exact.
        const vGot = await gpu.readF32(vcb, 0, cacheN);
        if (vGot.some((x, i) => x !== ref.vCache[i])) throw new Error(`${what}: vCache differs`);
        const kAfter = await gpu.readF32(kb, 0, nkv);
        if (kAfter.some((x, i) => x !== k[i])) throw new Error(`${what}: k was modified`);
      });
    }
    gpu.submit(runs);
    for (const check of checks) await check();
  },
});

Deno.test({
  name: "ropeKv with f16Cache stores the batch's keys and values rounded to f16, nothing else",
  ...GPU_TEST,
  fn: async () => {
    const gpu = await testGpu();
    const c = { T: 3, nHeads: 4, nKvHeads: 2, headDim: 16, maxSeq: 8, pos0: 2, theta: 1e4 };
    const D = c.headDim, nkv = c.T * c.nKvHeads * D, cacheN = c.nKvHeads * c.maxSeq * D;
    const q = randn(c.T * c.nHeads * D), k = randn(nkv), v = randn(nkv);
    const kc = randn(cacheN), vc = randn(cacheN);
    const kcb = gpu.storage("kv", kc), vcb = gpu.storage("kv", vc);
    gpu.submit([
      await ropeKv(gpu, {
        ...c,
        q: gpu.storage("activations", q),
        k: gpu.storage("activations", k),
        v: gpu.storage("activations", v),
        kCache: kcb,
        vCache: vcb,
        pos: gpu.storage("activations", new Uint32Array([c.pos0])),
        f16Cache: true,
      }),
    ]);
    const invFreq = ropeInvFreqRef(c.theta, D);
    const ref = ropeKvRef(q, k, v, kc, vc, c.pos0, { ...c, rotaryDim: D, invFreq, style: "neox" });
    const [kGot, vGot] = [await gpu.readF32(kcb, 0, cacheN), await gpu.readF32(vcb, 0, cacheN)];
    const written = (i: number) => {
      const at = Math.floor(i / D) % c.maxSeq;
      return at >= c.pos0 && at < c.pos0 + c.T;
    };
    const vWant = roundTo(Float32Array.from(ref.vCache), "f16");
    const kF16 = roundTo(kGot, "f16");
    for (let i = 0; i < cacheN; i++) {
      if (written(i)) {
        if (vGot[i] !== vWant[i]) throw new Error(`vCache[${i}] = ${vGot[i]}, want ${vWant[i]}`);
        if (kGot[i] !== kF16[i]) throw new Error(`kCache[${i}] = ${kGot[i]} is not an f16 value`);
      } else if (kGot[i] !== kc[i] || vGot[i] !== vc[i]) {
        throw new Error(`cache position of element ${i} was not in the batch but changed`);
      }
    }
    // Rounded from the rotated keys: within f16's half-ulp (2^-11 relative) plus rotation error.
    assertClose(kGot, ref.kCache, 2e-3, "kCache with f16Cache");
  },
});

Deno.test({
  name: "ropeKv gives the bits of rope(q), rope(k) and kvAppend",
  ...GPU_TEST,
  fn: async () => {
    const gpu = await testGpu();
    const { kvAppend } = await import("./attention.ts");
    const [T, nHeads, nKvHeads, D, maxSeq, pos0] = [3, 4, 2, 16, 32, 1000];
    const q = randn(T * nHeads * D), k = randn(T * nKvHeads * D), v = randn(T * nKvHeads * D);
    const pos = gpu.storage("activations", new Uint32Array([pos0 % maxSeq, 0, 0, 0]));
    const common = { pos, T, headDim: D, theta: 1e6, rotaryDim: 12 };
    const [q1, q2] = [gpu.storage("activations", q), gpu.storage("activations", q)];
    const [k1, k2] = [gpu.storage("activations", k), gpu.storage("activations", k)];
    const vb = gpu.storage("activations", v);
    const caches = [0, 1, 2, 3].map(() => poisoned(gpu, nKvHeads * maxSeq * D, "cache"));
    const kv = { nKvHeads, maxSeq };
    gpu.submit([
      await rope(gpu, { ...common, x: q1, heads: nHeads }),
      await rope(gpu, { ...common, x: k1, heads: nKvHeads }),
      await kvAppend(gpu, {
        ...kv,
        k: k1,
        v: vb,
        kCache: caches[0],
        vCache: caches[1],
        pos,
        T,
        headDim: D,
      }),
      await ropeKv(gpu, {
        ...common,
        ...kv,
        nHeads,
        q: q2,
        k: k2,
        v: vb,
        kCache: caches[2],
        vCache: caches[3],
      }),
    ]);
    const bits = async (b: GPUBuffer) => new Uint32Array((await gpu.readF32(b)).buffer);
    const same = (a: Uint32Array, b: Uint32Array) =>
      a.length === b.length && a.every((x, i) => x === b[i]);
    if (!same(await bits(q1), await bits(q2))) throw new Error("q differs");
    if (!same(await bits(caches[0]), await bits(caches[2]))) throw new Error("kCache differs");
    if (!same(await bits(caches[1]), await bits(caches[3]))) throw new Error("vCache differs");
  },
});

Deno.test({
  name: "ropeKv rejects bad arguments",
  ...GPU_TEST,
  fn: async () => {
    const gpu = await testGpu();
    const f = (n: number) => gpu.storage("activations", n * 4);
    const pos = gpu.storage("activations", new Uint32Array([0]));
    const [T, H, G, D, S] = [2, 4, 2, 8, 16];
    const ok = {
      q: f(T * H * D),
      k: f(T * G * D),
      v: f(T * G * D),
      kCache: f(G * S * D),
      vCache: f(G * S * D),
      pos,
      T,
      nHeads: H,
      nKvHeads: G,
      headDim: D,
      maxSeq: S,
      theta: 10000,
    };
    const bad = (a: Record<string, unknown>, arg: string, text = "") =>
      rejects(ropeKv(gpu, { ...ok, ...a } as never), arg, text);
    await bad({ T: 0 }, "T");
    await bad({ nKvHeads: 0 }, "nKvHeads");
    await bad({ headDim: 1 }, "headDim");
    await bad({ rotaryDim: 5 }, "rotaryDim");
    await bad({ style: "gptj" }, "style");
    await bad({ theta: -1 }, "theta");
    await bad({ invFreq: f(4) }, "theta", "not both");
    await bad({ T: 3 }, "q");
    await bad({ nKvHeads: 3 }, "k");
    await bad({ maxSeq: 17 }, "kCache");
    await bad({ k: ok.q }, "q", "distinct from k");
    await bad({ v: ok.kCache }, "kCache", "distinct from v");
    await bad({ vCache: ok.kCache }, "vCache", "distinct from kCache");
    await bad({ vCache: pos }, "vCache");
  },
});
