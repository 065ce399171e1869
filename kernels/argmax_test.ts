import type { Dispatch } from "../runtime/base/gpu/device.ts";
import { argmax, type ArgmaxArgs, NON_FINITE_TOKEN } from "./argmax.ts";
import { argmaxRef } from "./reference.ts";
import { GPU_TEST, POISON, poisoned, randn, rejects, rng, testGpu } from "./test_util.ts";

Deno.test({
  name:
    "argmax matches the reference exactly (ties, -Infinity masks, vocab-sized rows); NaN, +Infinity " +
    "and all -Infinity rows give NON_FINITE_TOKEN",
  ...GPU_TEST,
  fn: async () => {
    const gpu = await testGpu();
    const shapes = [
      { rows: 1, cols: 1 },
      { rows: 3, cols: 7 },
      { rows: 5, cols: 255 },
      { rows: 2, cols: 256 },
      { rows: 4, cols: 1000 },
      { rows: 6, cols: 300 },
      { rows: 3, cols: 50_257 },
      { rows: 1, cols: 262_144 },
    ];
    const cases = [];
    const dispatches: Dispatch[] = [];
    for (const { rows, cols } of shapes) {
      const x = randn(rows * cols);
      const r = rng(rows * 7919 + cols);
      // Row 1: an exact tie of the maximum at two places; row 2: NaNs; row 3: -Infinity entries
      // (masked, valid); row 4: a +Infinity; row 5: only -Infinity.
      if (rows > 1 && cols > 1) {
        const a = Math.floor(r() * cols), b = (a + 1 + Math.floor(r() * (cols - 1))) % cols;
        x[cols + a] = x[cols + b] = 10;
      }
      if (rows > 2) {
        x[2 * cols + Math.floor(r() * cols)] = NaN;
        x[2 * cols + Math.floor(r() * cols)] = NaN;
      }
      if (rows > 3) {
        for (let c = 0; c < cols; c += 3) x[3 * cols + c] = -Infinity;
      }
      if (rows > 4) x[4 * cols + Math.floor(r() * cols)] = Infinity;
      if (rows > 5) x.fill(-Infinity, 5 * cols, 6 * cols);
      // The default workgroup, and the widest (the default on a GPU): 4 loads per step, ragged.
      for (const threads of [undefined, 32, 1024]) {
        const out = poisoned(gpu, rows);
        const xb = gpu.storage("activations", x);
        dispatches.push(await argmax(gpu, { x: xb, out, rows, cols, threads }));
        cases.push({ rows, cols, x, out, threads });
      }
    }
    gpu.submit(dispatches);
    for (const { rows, cols, x, out, threads } of cases) {
      const got = await gpu.readU32(out, 0, rows);
      const want = argmaxRef(x, rows, cols);
      for (let i = 2; i < rows; i++) {
        if ((want[i] === NON_FINITE_TOKEN) !== (i !== 3)) {
          throw new Error(`reference: row ${i} of ${rows}x${cols} gave ${want[i]}`);
        }
      }
      for (let i = 0; i < rows; i++) {
        if (got[i] !== want[i]) {
          throw new Error(
            `argmax rows=${rows} cols=${cols} threads=${threads} row ${i}: got ${
              got[i] === POISON ? "never written" : got[i]
            }, expected ${want[i]}`,
          );
        }
      }
    }
  },
});

Deno.test({
  name: "argmax rejects bad arguments, naming them",
  ...GPU_TEST,
  fn: async () => {
    const gpu = await testGpu();
    const buf = (bytes: number) => gpu.storage("activations", bytes);
    const base: ArgmaxArgs = { x: buf(2 * 10 * 4), out: buf(8), rows: 2, cols: 10 };
    await argmax(gpu, base); // valid
    const cases: [Partial<ArgmaxArgs>, string, string][] = [
      [{ rows: 0 }, "rows", "got 0"],
      [{ cols: 1.5 }, "cols", "got 1.5"],
      [{ cols: 11 }, "x", "expected at least 88 bytes"],
      [{ out: buf(4) }, "out", "got a binding of 4 bytes"],
      [{ out: base.x }, "out", "distinct from x"],
      [{ threads: 48 }, "threads", "power of two"],
      [{ threads: 16 }, "threads", "got 16"],
      [{ threads: 1 << 20 }, "threads", "this device's limit"],
    ];
    for (const [patch, argument, text] of cases) {
      await rejects(argmax(gpu, { ...base, ...patch }), argument, text);
    }
  },
});
