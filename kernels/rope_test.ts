import type { Dispatch } from "../runtime/gpu/device.ts";
import { rope, ropeInvFreq, type RopeStyle } from "./rope.ts";
import { ropeInvFreqRef, ropeRef } from "./reference.ts";
import { assertClose, GPU_TEST, POISON, randn, rejects, testGpu } from "./test_util.ts";

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
