import type { Dispatch } from "../runtime/base/gpu/device.ts";
import { activation, type ActivationKind, gatedActivation } from "./activation.ts";
import { activationRef, gatedActivationRef } from "./reference.ts";
import { assertClose, GPU_TEST, poisoned, randn, rejects, testGpu } from "./test_util.ts";

const KINDS: ActivationKind[] = ["silu", "gelu", "gelu_tanh", "relu"];

// All four kinds at f32 tolerance 1e-5: silu/gelu_tanh only use exp (WGSL: 3 + 2|x| ulp), gelu's
// erfc is accurate to 2e-7 relative (checked elementwise below), relu is exact.
Deno.test({
  name: "activation matches the CPU reference for every kind (separate out and in place)",
  ...GPU_TEST,
  fn: async () => {
    const gpu = await testGpu();
    const runs: Dispatch[] = [];
    const checks: [GPUBuffer, Float64Array, string][] = [];
    for (const kind of KINDS) {
      for (const n of [1, 255, 1000, 4099]) {
        // Scale 3 reaches the tails (|x| > 6) where exp and erf saturate.
        const x = randn(n, 3);
        const ref = activationRef(x, kind);
        const out = poisoned(gpu, n);
        runs.push(await activation(gpu, { x: gpu.storage("activations", x), out, n, kind }));
        checks.push([out, ref, `${kind} n=${n}`]);
        const io = gpu.storage("activations", x);
        runs.push(await activation(gpu, { x: io, out: io, n, kind }));
        checks.push([io, ref, `${kind} in place n=${n}`]);
      }
    }
    // Extreme inputs: exp overflows in silu/gelu_tanh for very negative x (the result must be -0).
    const big = new Float32Array([-200, -90, -30, 30, 90, 200, 1e-30, -1e-30]);
    for (const kind of KINDS) {
      const out = poisoned(gpu, big.length);
      runs.push(await activation(gpu, { x: gpu.storage("activations", big), out, n: 8, kind }));
      checks.push([out, activationRef(big, kind), `${kind} extremes`]);
    }
    gpu.submit(runs);
    for (const [buf, ref, what] of checks) {
      assertClose(await gpu.readF32(buf, 0, ref.length), ref, 1e-5, what);
    }
  },
});

// Elementwise, not only normwise: the tails keep their relative accuracy (gelu is computed with
// erfc, silu and gelu_tanh as x * sigmoid, none of which cancels), so even a lone value far in the
// negative tail is right. Bound: 1e-5 relative, which covers WGSL's exp accuracy (3 + 2|arg| ulp,
// arg <= 50 here) with margin; below 1e-35 (f32 subnormals, which GPUs may flush) absolute.
// gelu_tanh only over [-5, 10]: below, its value (< 1e-10) is x sigmoid(2u) with |2u| > 17 and the
// f32 rounding of u (~2 ulp) alone moves it by |2u| * 2 ulp > 4e-6 relative (HF's f32 formula
// returns 0 or noise there).
Deno.test({
  name: "silu, gelu and gelu_tanh are accurate elementwise, negative tails included",
  ...GPU_TEST,
  fn: async () => {
    const gpu = await testGpu();
    const n = 8191;
    const r = randn(n, 0.1);
    const x = Float32Array.from({ length: n }, (_, i) => -10 + (20 * i) / (n - 1) + r[i]);
    const kinds: ActivationKind[] = ["silu", "gelu", "gelu_tanh"];
    const from: Record<string, number> = { silu: -11, gelu: -11, gelu_tanh: -5 };
    const outs = kinds.map(() => poisoned(gpu, n));
    const xb = gpu.storage("activations", x);
    gpu.submit(
      await Promise.all(kinds.map((kind, k) => activation(gpu, { x: xb, out: outs[k], n, kind }))),
    );
    for (const [k, kind] of kinds.entries()) {
      const y = await gpu.readF32(outs[k], 0, n);
      const ref = activationRef(x, kind);
      for (let i = 0; i < n; i++) {
        if (x[i] < from[kind]) continue;
        const err = Math.abs(y[i] - ref[i]);
        if (!(err <= 1e-5 * Math.abs(ref[i]) + 1e-35)) {
          throw new Error(`${kind}(${x[i]}) = ${y[i]}, expected ${ref[i]}`);
        }
      }
    }
  },
});

Deno.test({
  name: "gatedActivation matches the CPU reference (separate and fused gate_up)",
  ...GPU_TEST,
  fn: async () => {
    const gpu = await testGpu();
    const runs: Dispatch[] = [];
    const checks: [GPUBuffer, Float64Array, string][] = [];
    for (const kind of KINDS) {
      for (const n of [1, 300, 2049]) {
        const g = randn(n, 2), u = randn(n);
        const out = poisoned(gpu, n);
        runs.push(
          await gatedActivation(gpu, {
            gate: gpu.storage("activations", g),
            up: gpu.storage("activations", u),
            out,
            n,
            kind,
          }),
        );
        checks.push([out, gatedActivationRef(g, u, kind), `${kind}-glu n=${n}`]);
      }
      for (const [rows, inter] of [[1, 1], [3, 7], [5, 200]]) {
        const gu = randn(rows * 2 * inter, 2);
        const g = new Float32Array(rows * inter), u = new Float32Array(rows * inter);
        for (let r = 0; r < rows; r++) {
          g.set(gu.subarray(r * 2 * inter, r * 2 * inter + inter), r * inter);
          u.set(gu.subarray(r * 2 * inter + inter, (r + 1) * 2 * inter), r * inter);
        }
        const out = poisoned(gpu, rows * inter);
        const gateUp = gpu.storage("activations", gu);
        runs.push(await gatedActivation(gpu, { gateUp, out, rows, inter, kind }));
        checks.push([out, gatedActivationRef(g, u, kind), `${kind}-glu fused ${rows}x${inter}`]);
      }
    }
    gpu.submit(runs);
    for (const [buf, ref, what] of checks) {
      assertClose(await gpu.readF32(buf, 0, ref.length), ref, 1e-5, what);
    }
  },
});

Deno.test({
  name: "activation builders reject bad arguments",
  ...GPU_TEST,
  fn: async () => {
    const gpu = await testGpu();
    const a = gpu.storage("activations", 4 * 64), b = gpu.storage("activations", 4 * 64);
    const c = gpu.storage("activations", 4 * 64);
    const act = (x: Record<string, unknown>) =>
      activation(gpu, { x: a, out: b, n: 64, kind: "silu", ...x } as never);
    await rejects(act({ kind: "gelu_fast" }), "kind");
    await rejects(act({ kind: undefined }), "kind");
    await rejects(act({ n: 0 }), "n");
    await rejects(act({ n: 65 }), "x");
    await rejects(act({ out: { buffer: a, offset: 0, size: 16 } }), "out");
    const big = gpu.storage("activations", 4096);
    await rejects(act({ x: big, out: { buffer: big, offset: 256 } }), "out");
    const gated = (x: Record<string, unknown>) =>
      gatedActivation(gpu, { gate: a, up: b, out: c, n: 64, kind: "silu", ...x } as never);
    await rejects(gated({ out: a }), "out");
    await rejects(gated({ out: b }), "out");
    await rejects(gated({ n: 100 }), "gate");
    await rejects(gated({ kind: "tanh" }), "kind");
    const fused = (x: Record<string, unknown>) =>
      gatedActivation(gpu, { gateUp: a, out: c, rows: 2, inter: 16, kind: "gelu", ...x } as never);
    await rejects(fused({ inter: 17 }), "gateUp");
    await rejects(fused({ rows: 1.5 }), "rows");
    await rejects(fused({ out: a }), "out");
  },
});
