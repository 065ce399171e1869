import type { Dispatch } from "../runtime/base/gpu/device.ts";
import { routerTopK, type RouterTopKArgs } from "./router.ts";
import { routerTopKRef } from "./reference.ts";
import { assertClose, GPU_TEST, POISON, poisoned, randn, rejects, testGpu } from "./test_util.ts";

Deno.test({
  name: "routerTopK matches the reference (ids exactly, weights to 1e-5), both modes",
  ...GPU_TEST,
  fn: async () => {
    const gpu = await testGpu();
    const shapes = [
      { T: 1, E: 8, k: 2 },
      { T: 3, E: 60, k: 4 },
      { T: 17, E: 64, k: 8 },
      { T: 5, E: 128, k: 1 },
      { T: 4, E: 300, k: 16 },
      { T: 9, E: 512, k: 8 },
      { T: 2, E: 16, k: 16 },
      { T: 2, E: 1, k: 1 },
    ];
    const cases = [];
    const dispatches: Dispatch[] = [];
    for (const s of shapes) {
      for (const renormalize of [true, false]) {
        // randn values are distinct almost surely; scale 3 spreads the probabilities.
        const logits = randn(s.T * s.E, 3);
        const ids = poisoned(gpu, s.T * s.k, "ids"), weights = poisoned(gpu, s.T * s.k, "weights");
        dispatches.push(
          await routerTopK(gpu, {
            logits: gpu.storage("activations", logits),
            ids,
            weights,
            renormalize,
            ...s,
          }),
        );
        cases.push({ s, renormalize, logits, ids, weights });
      }
    }
    // Exact ties: lower index first.
    const tie = new Float32Array([1, 3, 0.5, 3, 2, 3, -1, 2]);
    const tieIds = poisoned(gpu, 4, "ids"), tieW = poisoned(gpu, 4, "weights");
    dispatches.push(
      await routerTopK(gpu, {
        logits: gpu.storage("activations", tie),
        ids: tieIds,
        weights: tieW,
        T: 1,
        E: 8,
        k: 4,
        renormalize: true,
      }),
    );
    cases.push({
      s: { T: 1, E: 8, k: 4 },
      renormalize: true,
      logits: tie,
      ids: tieIds,
      weights: tieW,
    });
    gpu.submit(dispatches);
    for (const { s, renormalize, logits, ids, weights } of cases) {
      const what = `router T=${s.T} E=${s.E} k=${s.k} renormalize=${renormalize}`;
      const ref = routerTopKRef(logits, s.T, s.E, s.k, renormalize);
      const gotIds = await gpu.readU32(ids, 0, s.T * s.k);
      for (let i = 0; i < ref.ids.length; i++) {
        if (gotIds[i] !== ref.ids[i]) {
          throw new Error(
            `${what}: ids[${i}] = ${gotIds[i] === POISON ? "never written" : gotIds[i]}, ` +
              `expected ${ref.ids[i]} (got ${gotIds.slice(0, s.k)}, expected ${
                ref.ids.slice(0, s.k)
              } for row 0)`,
          );
        }
      }
      assertClose(await gpu.readF32(weights, 0, s.T * s.k), ref.weights, 1e-5, `${what} weights`);
    }
    const tieRef = routerTopKRef(tie, 1, 8, 4, true);
    if (tieRef.ids.join() !== "1,3,5,4") throw new Error(`reference tie order ${tieRef.ids}`);
  },
});

Deno.test({
  name: "routerTopK rejects bad arguments, naming them",
  ...GPU_TEST,
  fn: async () => {
    const gpu = await testGpu();
    const buf = (bytes: number) => gpu.storage("activations", bytes);
    const base: RouterTopKArgs = {
      logits: buf(4 * 64 * 4),
      ids: buf(4 * 8 * 4),
      weights: buf(4 * 8 * 4),
      T: 4,
      E: 64,
      k: 8,
      renormalize: true,
    };
    await routerTopK(gpu, base); // valid
    await rejects(
      routerTopK(gpu, { ...base, E: 513, logits: buf(4 * 513 * 4) }),
      "E",
      "513",
    );
    await rejects(routerTopK(gpu, { ...base, k: 17 }), "k", "[1, 16], got 17");
    await rejects(routerTopK(gpu, { ...base, E: 4, k: 5 }), "k", "[1, 4], got 5");
    await rejects(routerTopK(gpu, { ...base, k: 0 }), "k", "got 0");
    await rejects(routerTopK(gpu, { ...base, T: -1 }), "T", "got -1");
    await rejects(routerTopK(gpu, { ...base, T: 5 }), "logits", "at least 1280 bytes");
    await rejects(routerTopK(gpu, { ...base, ids: buf(16) }), "ids", "got a binding of 16");
    await rejects(
      routerTopK(gpu, { ...base, weights: base.ids }),
      "ids",
      "distinct from weights",
    );
    await rejects(
      routerTopK(gpu, { ...base, renormalize: 1 as unknown as boolean }),
      "renormalize",
      "got 1",
    );
  },
});

Deno.test({
  name:
    "routerTopK: NaN logits rank after every number; -Infinity is an ordinary low logit; a NaN or " +
    "+Infinity logit makes the row's weights NaN",
  ...GPU_TEST,
  fn: async () => {
    const gpu = await testGpu();
    // Four rows of 8: NaNs at the front and in the middle, -Infinity among them; -Infinity among
    // numbers (a valid row); a +Infinity.
    // deno-fmt-ignore
    const logits = new Float32Array([
      NaN, 0.5, -Infinity, 2, NaN, 1, -3, 0.25,
      -Infinity, NaN, NaN, NaN, NaN, NaN, -1, NaN,
      0.5, -Infinity, 2, -1, 1, -3, 0.25, -Infinity,
      0.5, 1, 2, Infinity, 1, -3, 0.25, 0,
    ]);
    for (const renormalize of [false, true]) {
      const ids = poisoned(gpu, 4 * 4, "ids"), weights = poisoned(gpu, 4 * 4, "weights");
      gpu.submit([
        await routerTopK(gpu, {
          logits: gpu.storage("activations", logits),
          ids,
          weights,
          T: 4,
          E: 8,
          k: 4,
          renormalize,
        }),
      ]);
      const got = [...await gpu.readU32(ids, 0, 16)];
      // Row 0: 2 > 1 > 0.5 > 0.25. Row 1: -1, -Infinity, then NaNs by index (1, 2).
      const want = [3, 5, 1, 7, 6, 0, 1, 2, 2, 4, 0, 6, 3, 2, 1, 4];
      if (got.join() !== want.join()) throw new Error(`ids ${got}, expected ${want}`);
      const ref = routerTopKRef(logits, 4, 8, 4, renormalize);
      if (ref.ids.join() !== want.join()) throw new Error(`reference ids ${ref.ids}`);
      const w = await gpu.readF32(weights, 0, 16);
      for (let i = 0; i < 16; i++) {
        const row = Math.floor(i / 4);
        const ok = row === 2
          ? Math.abs(w[i] - ref.weights[i]) < 1e-6 && Number.isFinite(ref.weights[i])
          : Number.isNaN(w[i]) && Number.isNaN(ref.weights[i]);
        if (!ok) {
          throw new Error(
            `renormalize ${renormalize} row ${row}: weight ${w[i]}, reference ${ref.weights[i]}`,
          );
        }
      }
    }
  },
});
