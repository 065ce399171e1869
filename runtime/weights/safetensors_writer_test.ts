import assert from "node:assert/strict";
import { ArgumentError, WeightFileError } from "../base/errors.ts";
import { roundTo } from "../base/dtype.ts";
import { openCheckpoint } from "./safetensors.ts";
import {
  encodeTensor,
  type TensorToWrite,
  writeSafetensors,
  writeShardedCheckpoint,
} from "./safetensors_writer.ts";
import {
  assertEquals,
  assertRejects,
  assertThrows,
  listDir,
  randomValues,
  SPECS,
  toWrite,
  withTempDir,
} from "./safetensors_test_util.ts";

// ---------------------------------------------------------------------------------------------
// layout and lazy data
// ---------------------------------------------------------------------------------------------

Deno.test("the written file has the documented layout", () =>
  withTempDir(async (dir) => {
    const path = `${dir}/x.safetensors`;
    const w = await writeSafetensors(path, SPECS.map(toWrite), { k: "v" });
    const bytes = await Deno.readFile(path);
    const n = Number(new DataView(bytes.buffer).getBigUint64(0, true));
    assertEquals(n, w.headerLength);
    assertEquals(n % 8, 0, "header padded to a multiple of 8");
    const text = new TextDecoder().decode(bytes.subarray(8, 8 + n));
    assert.ok(/^\{.*\} *$/.test(text), "JSON then spaces");
    const header = JSON.parse(text) as Record<string, { data_offsets: number[] }>;
    assertEquals(Object.keys(header), ["__metadata__", ...SPECS.map((s) => s.name)]);
    let at = 0;
    for (const s of SPECS) {
      const [b, e] = header[s.name].data_offsets;
      assertEquals(b, at, `${s.name} starts where the previous tensor ends`);
      at = e;
      assertEquals(
        bytes.subarray(8 + n + b, 8 + n + e),
        encodeTensor(s.values, s.dtype),
      );
    }
    assertEquals(bytes.byteLength, 8 + n + at, "no trailing bytes");
    assertEquals(w.byteLength, bytes.byteLength);
  }));

Deno.test("lazy data: produced once per tensor, in order, from values, iterables and async iterables", () =>
  withTempDir(async (dir) => {
    const calls: string[] = [];
    const w = randomValues(12, 7);
    const tensors: TensorToWrite[] = [
      {
        name: "sync",
        dtype: "f32",
        shape: [12],
        data: () => (calls.push("sync"), new Float32Array(w)),
      },
      {
        name: "promise",
        dtype: "bf16",
        shape: [2, 3],
        data:
          async () => (calls.push("promise"),
            await Promise.resolve(encodeTensor(w.subarray(0, 6), "bf16"))),
      },
      {
        name: "chunks",
        dtype: "f32",
        shape: [12],
        data: function* () {
          calls.push("chunks");
          for (let i = 0; i < 12; i += 5) yield new Float32Array(w.subarray(i, i + 5));
        },
      },
      {
        name: "async-chunks",
        dtype: "U8",
        shape: [3],
        data: async function* () {
          calls.push("async-chunks");
          yield new Uint8Array([1, 2]);
          await Promise.resolve();
          yield new Uint8Array([3]);
        },
      },
    ];
    const ck = await writeShardedCheckpoint(dir, tensors, { maxShardBytes: 60 });
    assertEquals(calls, ["sync", "promise", "chunks", "async-chunks"]);
    assertEquals(ck.files.length, 2);
    const st = openCheckpoint(dir);
    try {
      assertEquals(st.tensorF32("sync"), w);
      assertEquals(st.tensorF32("promise"), roundTo(w.subarray(0, 6), "bf16"));
      assertEquals(st.tensorF32("chunks"), w);
      assertEquals(st.describe("async-chunks").fileDType, "U8");
      assertThrows(() => st.get("async-chunks"), WeightFileError, "unsupported dtype U8");
    } finally {
      st.close();
    }
  }));

// ---------------------------------------------------------------------------------------------
// writer errors
// ---------------------------------------------------------------------------------------------

Deno.test("writer: data of the wrong length is an ArgumentError naming the tensor; nothing is left behind", () =>
  withTempDir(async (dir) => {
    const path = `${dir}/w.safetensors`;
    const cases: [TensorToWrite, string][] = [
      [{ name: "eager", dtype: "f32", shape: [3], data: new Float32Array(2) }, "expected 12 bytes"],
      [{ name: "short", dtype: "f16", shape: [2, 2], data: () => new Uint8Array(6) }, "found 6"],
      [
        { name: "long", dtype: "bf16", shape: [2], data: () => new Uint8Array(6) },
        "found 6 or more",
      ],
      [{
        name: "chunky",
        dtype: "f32",
        shape: [2],
        data: function* () {
          yield new Uint8Array(4);
          yield new Uint8Array(8);
        },
      }, "found 12 or more"],
    ];
    for (const [bad, msg] of cases) {
      const e = await assertRejects(
        () => writeSafetensors(path, [toWrite(SPECS[0]), bad]),
        ArgumentError,
        `tensor '${bad.name}'`,
        msg,
      );
      assert.ok(e.argument.includes(bad.name));
      assertEquals(await listDir(dir), [], "no file, no .partial");
    }
  }));

Deno.test("writer: bad names, dtypes, shapes and metadata are ArgumentErrors", () =>
  withTempDir(async (dir) => {
    const path = `${dir}/w.safetensors`;
    const ok = toWrite(SPECS[0]);
    await assertRejects(
      () => writeSafetensors(path, [ok, ok]),
      ArgumentError,
      "duplicate tensor name 'embed.weight'",
    );
    await assertRejects(
      () => writeSafetensors(path, [{ ...ok, name: "__metadata__" }]),
      ArgumentError,
      "invalid tensor name",
    );
    await assertRejects(
      () => writeSafetensors(path, [{ ...ok, name: "" }]),
      ArgumentError,
      "invalid tensor name",
    );
    await assertRejects(
      () => writeSafetensors(path, [{ ...ok, dtype: "f8" }]),
      ArgumentError,
      "unsupported dtype 'f8'",
    );
    await assertRejects(
      () => writeSafetensors(path, [{ ...ok, shape: [7, -6] }]),
      ArgumentError,
      "non-negative integers",
    );
    await assertRejects(
      () => writeSafetensors(path, [ok], { n: 3 as unknown as string }),
      ArgumentError,
      "metadata",
      "'n' must be a string",
    );
    await assertRejects(
      () => writeShardedCheckpoint(dir, [ok], { maxShardBytes: 0 }),
      ArgumentError,
      "maxShardBytes",
    );
    assertEquals(await listDir(dir), []);
  }));
