import assert from "node:assert/strict";
import { DTYPES } from "../base/dtype.ts";
import { countNonFinite, scanNonFinite } from "./finite.ts";
import { openCheckpoint } from "./safetensors.ts";
import { encodeTensor, writeShardedCheckpoint } from "./safetensors_writer.ts";
import { KINDS, randomValues, withTempDir } from "./safetensors_test_util.ts";

Deno.test("countNonFinite counts NaN and +-Inf on the bits of every dtype, aligned or not", () => {
  for (const dtype of DTYPES) {
    const values = Array.from(randomValues(1001, 7), (v) => v * 1e3);
    // Extremes that stay finite in every dtype: 0, -0, a tiny (subnormal in f16) and a large value.
    values[10] = 0;
    values[11] = -0;
    values[12] = 1e-7;
    values[13] = dtype === "f16" ? 65504 : 3e38;
    const bad: [number, number][] = [[400, NaN], [17, Infinity], [999, -Infinity], [600, NaN]];
    for (const [i, v] of bad) values[i] = v;
    const bytes = encodeTensor(values, dtype);
    const want = { nan: 2, inf: 2, firstIndex: 17 };
    assert.deepEqual(countNonFinite(bytes, dtype), want, dtype);
    // The same bytes at an odd offset (a tensor of a 2-byte dtype is only 2-byte aligned).
    const shifted = new Uint8Array(bytes.byteLength + 1);
    shifted.set(bytes, 1);
    assert.deepEqual(countNonFinite(shifted.subarray(1), dtype), want, `${dtype} unaligned`);
    const clean = encodeTensor(values.map((v) => (Number.isFinite(v) ? v : 1)), dtype);
    assert.deepEqual(countNonFinite(clean, dtype), { nan: 0, inf: 0, firstIndex: -1 });
  }
});

Deno.test("scanNonFinite names exactly the tensors holding NaN or Inf, in both access modes", async () => {
  await withTempDir(async (dir) => {
    const f = (n: number, dtype: "f32" | "f16" | "bf16", bad?: [number, number]) => {
      const v = Array.from(randomValues(n, n));
      if (bad) v[bad[0]] = bad[1];
      return encodeTensor(v, dtype);
    };
    await writeShardedCheckpoint(dir, [
      { name: "a", dtype: "f32", shape: [8, 8], data: f(64, "f32") },
      { name: "b", dtype: "bf16", shape: [3, 5], data: f(15, "bf16", [14, NaN]) },
      { name: "ids", dtype: "I64", shape: [2], data: new BigInt64Array([1n, 2n]) },
      { name: "c", dtype: "f16", shape: [7], data: f(7, "f16", [3, -Infinity]) },
      { name: "d", dtype: "f32", shape: [5], data: f(5, "f32", [0, Infinity]) },
    ], { maxShardBytes: 200 });
    for (const mode of KINDS) {
      const store = openCheckpoint(dir, { mode });
      const progress: number[] = [];
      const bad = scanNonFinite(store, undefined, (done) => progress.push(done));
      assert.deepEqual(
        bad.map((t) => [t.tensor, t.dtype, t.nan, t.inf, t.firstIndex]),
        [["b", "bf16", 1, 0, 14], ["c", "f16", 0, 1, 3], ["d", "f32", 0, 1, 0]],
        mode,
      );
      assert.ok(bad.every((t) => t.file.startsWith(dir)));
      assert.deepEqual(progress, [256, 286, 300, 320]); // the I64 tensor is skipped
      assert.deepEqual(scanNonFinite(store, ["a", "c"]).map((t) => t.tensor), ["c"]);
      store.close();
    }
  });
});
