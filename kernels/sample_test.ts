import { ArgumentError } from "../runtime/base/errors.ts";
import type { Gpu, Step } from "../runtime/base/gpu/device.ts";
import { sample, SAMPLE_RNG_BYTES, sampleRng, sampleRngState } from "./sample.ts";
import { NON_FINITE_TOKEN } from "./argmax.ts";
import { sampleBitsRef, sampleRef, topPDistributionRef } from "./reference.ts";
import { freshSeed, GPU_TEST, POISON, poisoned, randn, rejects, testGpu } from "./test_util.ts";

/** Rows whose decision is closer than this (relative mass) to a boundary are not compared exactly. */
const MARGIN = 2e-5;

/** Bytes between the output slots of one test in a shared buffer (a multiple of the alignment). */
function slotBytes(gpu: Gpu, bytes: number): number {
  const a = gpu.limits.minStorageBufferOffsetAlignment;
  return Math.ceil(bytes / a) * a;
}

Deno.test({
  name: "sample matches the CPU reference (same hash, float64) at several shapes and settings",
  ...GPU_TEST,
  fn: async () => {
    const gpu = await testGpu();
    const seed = freshSeed(), counter0 = freshSeed() % 1000;
    const cases: {
      rows: number;
      V: number;
      T: number;
      topP: number;
      scale: number;
      off?: number;
    }[] = [
      { rows: 1, V: 1, T: 1, topP: 1, scale: 1 },
      { rows: 5, V: 1, T: 0.7, topP: 0.3, scale: 1 },
      { rows: 16, V: 10, T: 1, topP: 1, scale: 1 },
      { rows: 16, V: 10, T: 0.6, topP: 0.8, scale: 1 },
      { rows: 8, V: 257, T: 1.3, topP: 0.95, scale: 2, off: 1000 },
      { rows: 8, V: 1000, T: 0.8, topP: 0.5, scale: 3 },
      { rows: 4, V: 1000, T: 1, topP: 1, scale: 1 },
      { rows: 3, V: 3001, T: 0.5, topP: 0.9, scale: 2 },
      { rows: 40, V: 33, T: 2, topP: 0.05, scale: 1, off: 0xfffffff0 },
    ];
    const maxRows = Math.max(...cases.map((c) => c.rows));
    const slot = slotBytes(gpu, maxRows * 4);
    const out = poisoned(gpu, (slot / 4) * cases.length);
    const rng = sampleRng(gpu, seed, counter0);
    const steps: Step[] = [];
    const inputs: Float32Array[] = [];
    for (const [k, c] of cases.entries()) {
      const l = randn(c.rows * c.V, c.scale);
      // Masked tokens (-inf, as a causal or grammar mask leaves them) are never drawn.
      if (c.V > 1) { for (let r = 0; r < c.rows; r++) l[r * c.V + ((r * 7) % c.V)] = -Infinity; }
      inputs.push(l);
      steps.push(
        await sample(gpu, {
          logits: gpu.storage("activations", l),
          out: { buffer: out, offset: k * slot, size: c.rows * 4 },
          rows: c.rows,
          V: c.V,
          temperature: c.T,
          topP: c.topP,
          rng,
          seedOffset: c.off,
        }),
      );
    }
    gpu.submit(steps);
    const got = await gpu.readU32(out);
    let compared = 0, total = 0;
    for (const [k, c] of cases.entries()) {
      const what = `rows=${c.rows} V=${c.V} T=${c.T} topP=${c.topP} (seed ${seed})`;
      const ref = sampleRef(inputs[k], c.rows, c.V, {
        temperature: c.T,
        topP: c.topP,
        seed,
        counter: counter0 + k, // one call per case on the same rng: the counter advanced
        seedOffset: c.off,
      });
      for (let r = 0; r < c.rows; r++) {
        const t = got[(k * slot) / 4 + r];
        if (t === POISON) throw new Error(`${what}: row ${r} was never written`);
        if (t >= c.V) throw new Error(`${what}: row ${r}: token ${t} out of range`);
        const p = topPDistributionRef(inputs[k].subarray(r * c.V, (r + 1) * c.V), {
          temperature: c.T,
          topP: c.topP,
        });
        if (!(p[t] > 0) && ref.margins[r] >= MARGIN) {
          throw new Error(`${what}: row ${r}: token ${t} is outside the nucleus`);
        }
        total++;
        if (ref.margins[r] < MARGIN) continue;
        compared++;
        if (t !== ref.tokens[r]) {
          throw new Error(
            `${what}: row ${r}: GPU drew ${t}, the reference ${ref.tokens[r]} ` +
              `(margin ${ref.margins[r].toExponential(2)})`,
          );
        }
      }
    }
    if (compared < 0.8 * total) {
      throw new Error(
        `only ${compared} of ${total} rows were far enough from a boundary to compare`,
      );
    }
    const state = await gpu.readU32(rng);
    if (state[0] !== seed || state[1] !== counter0 + cases.length || state[2] !== 0) {
      throw new Error(`rng state ${state}, expected [${seed}, ${counter0 + cases.length}, 0, 0]`);
    }
  },
});

Deno.test({
  name: "sample draws the hash's bits exactly: uniform logits over 256 tokens give bits >>> 24",
  ...GPU_TEST,
  fn: async () => {
    const gpu = await testGpu();
    const rows = 300, V = 256, seed = freshSeed();
    const out = poisoned(gpu, rows);
    const logits = gpu.storage("activations", new Float32Array(rows * V).fill(0.25));
    const rng = sampleRng(gpu, seed, 3);
    gpu.submit([await sample(gpu, { logits, out, rows, V, temperature: 1, topP: 1, rng })]);
    const got = await gpu.readU32(out);
    for (let r = 0; r < rows; r++) {
      const want = sampleBitsRef(seed, 3, r) >>> 24;
      if (got[r] !== want) {
        throw new Error(`row ${r}: got ${got[r]}, expected ${want} (seed ${seed})`);
      }
    }
  },
});

/** Pearson's chi-square statistic of `counts` against probabilities `p` (cells with p > 0). */
function chiSquare(counts: ArrayLike<number>, p: ArrayLike<number>, n: number): number {
  let x2 = 0;
  for (let i = 0; i < p.length; i++) if (p[i] > 0) x2 += (counts[i] - n * p[i]) ** 2 / (n * p[i]);
  return x2;
}

/** Chi-square critical values at p = 0.001 for 1..9 degrees of freedom. */
const CHI2_999 = [10.83, 13.82, 16.27, 18.47, 20.52, 22.46, 24.32, 26.12, 27.88];

Deno.test({
  name: "sample frequencies match the temperature-scaled top-p distribution (chi-square)",
  ...GPU_TEST,
  fn: async () => {
    const gpu = await testGpu();
    const V = 10, rows = 1000, calls = 3; // 3000 draws per setting, one readback for all
    const base = [2.0, 1.5, 1.2, 1.0, 0.5, 0.3, 0.0, -0.5, -1.0, -3.0];
    const settings = [
      { logits: base, T: 0.8, topP: 0.9 },
      { logits: base, T: 1.5, topP: 1 },
      { logits: base, T: 1, topP: 0.3 },
      // Three tied most-probable tokens whose group reaches topP: all three kept, equally likely.
      { logits: [1, 1, 1, 0, 0, 0, 0, 0, 0, 0], T: 1, topP: 0.5 },
      // A tie at the boundary below the top token.
      { logits: [3, 1, 1, 1, 0, -1, -1, -2, -2, -5], T: 1, topP: 0.85 },
    ];
    const slot = slotBytes(gpu, rows * 4);
    const out = poisoned(gpu, (slot / 4) * settings.length * calls);
    const steps: Step[] = [];
    for (const [k, s] of settings.entries()) {
      const logits = gpu.storage(
        "activations",
        Float32Array.from({ length: rows * V }, (_, i) => s.logits[i % V]),
      );
      const rng = sampleRng(gpu, 12345 + k); // fixed seeds: the test is deterministic
      for (let call = 0; call < calls; call++) {
        steps.push(
          await sample(gpu, {
            logits,
            out: { buffer: out, offset: (k * calls + call) * slot, size: rows * 4 },
            rows,
            V,
            temperature: s.T,
            topP: s.topP,
            rng,
          }),
        );
      }
    }
    gpu.submit(steps);
    const got = await gpu.readU32(out);
    for (const [k, s] of settings.entries()) {
      const p = topPDistributionRef(s.logits, { temperature: s.T, topP: s.topP });
      const counts = new Float64Array(V);
      for (let call = 0; call < calls; call++) {
        for (let r = 0; r < rows; r++) counts[got[((k * calls + call) * slot) / 4 + r]]++;
      }
      const n = rows * calls;
      const what = `logits ${s.logits} T=${s.T} topP=${s.topP}: counts ${counts}, p ${
        Array.from(p, (v) => v.toFixed(4))
      }`;
      if (counts.reduce((a, b) => a + b, 0) !== n) throw new Error(`${what}: tokens out of range`);
      for (let i = 0; i < V; i++) {
        if (p[i] === 0 && counts[i] > 0) throw new Error(`${what}: token ${i} outside the nucleus`);
      }
      const kept = p.filter((v) => v > 0).length;
      if (kept > 1) {
        const x2 = chiSquare(counts, p, n);
        if (!(x2 < CHI2_999[kept - 2])) {
          throw new Error(`${what}: chi-square ${x2.toFixed(2)} with ${kept - 1} dof`);
        }
      }
    }
  },
});

Deno.test({
  name: "sample advances the counter on every replay; seeds give distinct, reproducible streams",
  ...GPU_TEST,
  fn: async () => {
    const gpu = await testGpu();
    const rows = 24, V = 500, replays = 6, counter0 = 41;
    const l = randn(rows * V, 0.5);
    const logits = gpu.storage("activations", l);
    const out = poisoned(gpu, rows);
    const seeds = [freshSeed(), 0, 0]; // two equal seeds: identical streams
    seeds[1] = (seeds[0] + 1) >>> 0;
    seeds[2] = seeds[0];
    const rngs = seeds.map((s) => sampleRng(gpu, s, counter0));
    const history = gpu.storage("activations", rows * 4 * replays * seeds.length);
    const plan: Step[] = [];
    for (const [j, rng] of rngs.entries()) {
      // Recorded once, replayed: the counter in rng makes every replay a fresh draw.
      const step = await sample(gpu, { logits, out, rows, V, temperature: 1, topP: 0.95, rng });
      for (let i = 0; i < replays; i++) {
        plan.push(step, {
          src: out,
          srcOffset: 0,
          dst: history,
          dstOffset: (j * replays + i) * rows * 4,
          size: rows * 4,
        });
      }
    }
    gpu.submit(plan);
    const h = await gpu.readU32(history);
    const draws = (j: number, i: number) =>
      h.subarray((j * replays + i) * rows, (j * replays + i + 1) * rows);
    for (const [j, rng] of rngs.entries()) {
      const state = await gpu.readU32(rng);
      if (state[1] !== counter0 + replays || state[2] !== 0 || state[0] !== seeds[j]) {
        throw new Error(
          `rng ${j}: state ${state}, expected [${seeds[j]}, ${counter0 + replays}, 0, 0]`,
        );
      }
      for (let i = 0; i < replays; i++) {
        const ref = sampleRef(l, rows, V, {
          temperature: 1,
          topP: 0.95,
          seed: seeds[j],
          counter: counter0 + i,
        });
        const d = draws(j, i);
        for (let r = 0; r < rows; r++) {
          if (ref.margins[r] >= MARGIN && d[r] !== ref.tokens[r]) {
            throw new Error(`seed ${seeds[j]} replay ${i} row ${r}: ${d[r]} != ${ref.tokens[r]}`);
          }
        }
        if (i > 0) {
          const same = d.filter((t, r) => t === draws(j, i - 1)[r]).length;
          if (same > rows / 2) {
            throw new Error(`replay ${i} repeats replay ${i - 1} (${same} rows)`);
          }
        }
      }
    }
    const differ = (a: Uint32Array, b: Uint32Array) => a.filter((t, r) => t !== b[r]).length;
    for (let i = 0; i < replays; i++) {
      if (differ(draws(0, i), draws(1, i)) < rows / 2) {
        throw new Error(`seeds ${seeds[0]} and ${seeds[1]} drew nearly the same tokens`);
      }
      if (differ(draws(0, i), draws(2, i)) !== 0) throw new Error("equal seeds drew differently");
    }
  },
});

Deno.test({
  name: "sample: seedOffset shifts the row streams; rows without a finite distribution get " +
    "NON_FINITE_TOKEN",
  ...GPU_TEST,
  fn: async () => {
    const gpu = await testGpu();
    const V = 64, seed = freshSeed();
    const row = randn(V, 0.3);
    const logits = gpu.storage(
      "activations",
      Float32Array.from({ length: 14 * V }, (_, i) => row[i % V]),
    );
    const all = poisoned(gpu, 14);
    const part = poisoned(gpu, 4);
    const args = { temperature: 1.2, topP: 0.9 };
    const steps: Step[] = [
      await sample(gpu, { ...args, V, logits, out: all, rows: 14, rng: sampleRng(gpu, seed) }),
      await sample(gpu, {
        ...args,
        V,
        logits,
        out: part,
        rows: 4,
        rng: sampleRng(gpu, seed),
        seedOffset: 10,
      }),
    ];
    // Per vocabulary size (both workgroup variants): row 0 only -inf, row 1 a NaN, row 2 a +inf,
    // row 3 random with every other token masked by -inf (valid: never a masked token).
    const degenerate: { V: number; logits: Float32Array; out: GPUBuffer }[] = [];
    for (const v of [V, 3000]) {
      const bad = randn(4 * v);
      bad.fill(-Infinity, 0, v);
      bad[v + 5] = NaN;
      bad[2 * v + 9] = Infinity;
      for (let c = 0; c < v; c += 2) bad[3 * v + c] = -Infinity;
      const out = poisoned(gpu, 4);
      degenerate.push({ V: v, logits: bad, out });
      steps.push(
        await sample(gpu, {
          ...args,
          V: v,
          logits: gpu.storage("activations", bad),
          out,
          rows: 4,
          rng: sampleRng(gpu, seed),
        }),
      );
    }
    gpu.submit(steps);
    const a = await gpu.readU32(all), b = await gpu.readU32(part);
    for (let r = 0; r < 4; r++) {
      if (b[r] !== a[10 + r]) throw new Error(`seedOffset 10 row ${r}: ${b[r]} != ${a[10 + r]}`);
    }
    for (const d of degenerate) {
      const c = await gpu.readU32(d.out);
      const ref = sampleRef(d.logits, 4, d.V, { ...args, seed, counter: 0 });
      const none = NON_FINITE_TOKEN;
      if (c[0] !== none || c[1] !== none || c[2] !== none || !(c[3] < d.V && c[3] % 2 === 1)) {
        throw new Error(
          `V=${d.V}: rows (all -inf, a NaN, a +inf, masked) drew ${c}, expected ${none} x3 and an ` +
            "odd token",
        );
      }
      if (String(ref.tokens.subarray(0, 3)) !== String(c.subarray(0, 3))) {
        throw new Error(`V=${d.V}: the reference drew ${ref.tokens}, the GPU ${c}`);
      }
    }
  },
});

Deno.test({
  name: "sample rejects bad arguments",
  ...GPU_TEST,
  fn: async () => {
    const gpu = await testGpu();
    const logits = gpu.storage("activations", 4 * 2 * 8);
    const out = gpu.storage("activations", 16);
    const rng = sampleRng(gpu, 1);
    const ok = { logits, out, rows: 2, V: 8, temperature: 1, topP: 0.9, rng };
    await sample(gpu, ok); // the baseline is valid
    await rejects(sample(gpu, { ...ok, temperature: 0 }), "temperature");
    await rejects(sample(gpu, { ...ok, temperature: -1 }), "temperature");
    await rejects(sample(gpu, { ...ok, temperature: NaN }), "temperature");
    await rejects(sample(gpu, { ...ok, temperature: Infinity }), "temperature");
    await rejects(sample(gpu, { ...ok, temperature: 1e-300 }), "temperature");
    await rejects(sample(gpu, { ...ok, topP: 0 }), "topP");
    await rejects(sample(gpu, { ...ok, topP: -0.5 }), "topP");
    await rejects(sample(gpu, { ...ok, topP: 1.01 }), "topP");
    await rejects(sample(gpu, { ...ok, topP: NaN }), "topP");
    await rejects(sample(gpu, { ...ok, rows: 0 }), "rows");
    await rejects(sample(gpu, { ...ok, V: 2.5 }), "V");
    await rejects(sample(gpu, { ...ok, seedOffset: -1 }), "seedOffset");
    await rejects(sample(gpu, { ...ok, V: 9 }), "logits");
    await rejects(sample(gpu, { ...ok, rows: 5, V: 2 }), "out");
    await rejects(sample(gpu, { ...ok, rng: { buffer: rng, size: 8 } }), "rng");
    await rejects(sample(gpu, { ...ok, out: logits }), "out");
    await rejects(sample(gpu, { ...ok, rng: out }), "out");
    await rejects(sample(gpu, { ...ok, rng: undefined as never }), "rng");
    await rejects(sample(gpu, undefined as never), "args");
    if (SAMPLE_RNG_BYTES !== 16) throw new Error("rng state is 16 bytes");
    for (const [seed, counter] of [[-1, 0], [1.5, 0], [2 ** 32, 0], [0, -1]]) {
      const argument = seed === 0 ? "counter" : "seed";
      try {
        sampleRngState(seed, counter);
      } catch (e) {
        if (e instanceof ArgumentError && e.argument === argument) continue;
        throw e;
      }
      throw new Error(`sampleRngState(${seed}, ${counter}) did not throw`);
    }
  },
});
