import assert from "node:assert/strict";
import { QUANT_CHUNK_VALUES, QuantPool } from "./quant_pool.ts";
import { quantize } from "./quant.ts";

function wave(n: number, seed: number): Float32Array {
  const v = new Float32Array(n);
  for (let i = 0; i < n; i++) v[i] = Math.sin(i * 0.37 + seed) * 0.02 + Math.cos(i * 1.3) * 0.01;
  return v;
}

Deno.test("QuantPool: an array of several pieces quantises byte-identically to quantize", async () => {
  const pool = new QuantPool(2);
  try {
    for (const type of ["q4_k", "q8_0"] as const) {
      // Two and a half pieces: the last one is short.
      const n = Math.floor(2.5 * QUANT_CHUNK_VALUES / 256) * 256;
      const values = wave(n, type.length);
      const expected = quantize(values, type);
      assert.deepEqual(await pool.quantize(values.slice(), type), expected);
    }
  } finally {
    pool.close();
  }
});

Deno.test("QuantPool: a non-finite value in a later piece names the piece", async () => {
  const pool = new QuantPool(2);
  try {
    const values = wave(2 * QUANT_CHUNK_VALUES, 1);
    values[QUANT_CHUNK_VALUES + 5] = NaN;
    await assert.rejects(() => pool.quantize(values, "q8_0"), {
      message: `values: value 5 is NaN; only finite values can be quantised ` +
        `(in the piece from value ${QUANT_CHUNK_VALUES})`,
    });
  } finally {
    pool.close();
  }
});
