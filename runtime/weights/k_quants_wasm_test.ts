import assert from "node:assert/strict";
import { quantizeQ4K, quantizeQ5K, quantizeQ6K } from "./k_quants.ts";
import { quantizeQ4KWasm, quantizeQ5KWasm, quantizeQ6KWasm } from "./k_quants_wasm.ts";
import { K_QUANTS_WASM } from "./k_quants_wasm_module.ts";
import { rng } from "../../kernels/check.ts";

/** Super-blocks that exercise every branch of the search: spreads, signs, zeros, constants. */
function inputs(nb: number, seed: number): Float32Array {
  const r = rng(seed), x = new Float32Array(nb * 256);
  for (let b = 0; b < nb; b++) {
    const kind = b % 8, scale = Math.exp(r() * 20 - 10);
    for (let i = 0; i < 256; i++) {
      const u = r() - 0.5, at = b * 256 + i;
      if (kind === 0) x[at] = u * scale; // centred
      else if (kind === 1) x[at] = Math.abs(u) * scale; // positive only: min clamps to 0
      else if (kind === 2) x[at] = -Math.abs(u) * scale; // negative only
      else if (kind === 3) x[at] = i < 32 ? 0 : u * scale; // a zero sub-block
      else if (kind === 4) x[at] = (i >> 5) === 2 ? 1.5 : u * scale; // a constant sub-block
      else if (kind === 5) x[at] = u ** 5 * scale; // heavy-tailed
      else if (kind === 6) x[at] = i % 7 === 0 ? u * 1e4 : u * 1e-3; // outliers
      else x[at] = Math.round(u * 8) * scale; // few distinct values: ties in the search
    }
  }
  return x;
}

Deno.test("the WebAssembly K-quantisers write the TypeScript reference's bytes", () => {
  for (const seed of [1, 2, 3]) {
    const nb = 64, x = inputs(nb, seed);
    assert.deepEqual(quantizeQ4KWasm(x, nb), quantizeQ4K(x, nb), `q4_k, seed ${seed}`);
    assert.deepEqual(quantizeQ5KWasm(x, nb), quantizeQ5K(x, nb), `q5_k, seed ${seed}`);
    assert.deepEqual(quantizeQ6KWasm(x, nb), quantizeQ6K(x, nb), `q6_k, seed ${seed}`);
  }
});

Deno.test("the WebAssembly quantisers take inputs longer than one chunk, and short ones after", () => {
  const big = inputs(5000, 9), small = inputs(3, 10); // more than one 4 MiB chunk, then a few
  const a = quantizeQ4KWasm(big, 5000);
  const b = quantizeQ4KWasm(small, 3);
  assert.equal(a.byteLength, 5000 * 144);
  assert.deepEqual(b, quantizeQ4K(small, 3));
  assert.deepEqual(a.subarray(4090 * 144), quantizeQ4K(big.subarray(4090 * 256), 910));
});

const ASC = Deno.env.get("PREGATE_ASC");

Deno.test({
  name: "the embedded module is tools/build_wasm.sh's build of wasm/k_quants.ts",
  ignore: !ASC,
  fn: async () => {
    const out = await Deno.makeTempFile({ suffix: ".ts" });
    try {
      const script = new URL("../../tools/build_wasm.sh", import.meta.url).pathname;
      const r = await new Deno.Command("bash", {
        args: [script, out],
        env: { ASC_DIR: ASC! },
        stdout: "piped",
        stderr: "piped",
      }).output();
      assert.equal(r.code, 0, new TextDecoder().decode(r.stderr));
      const built = await import(`file://${out}`);
      assert.equal(built.K_QUANTS_WASM, K_QUANTS_WASM, "rebuild with tools/build_wasm.sh");
    } finally {
      await Deno.remove(out);
    }
  },
});
