// GGUF: writer -> reader round trips in both access modes, every value type, tensor views and
// conversions, typed getters and their errors, and the writer's argument checks.
import assert from "node:assert/strict";
import { ArgumentError, FileWriteError } from "../base/errors.ts";
import { f16BitsToF32, packWeights } from "../base/dtype.ts";
import { type GgufArray, type GgufArrayItems, type GgufEntry, openGguf } from "./gguf.ts";
import { type GgufTensorToWrite, ggufValue as v, writeGguf } from "./gguf_writer.ts";
import { assertGgufError, bothModes, withTempDir } from "./gguf_test_util.ts";
import { dequantize, quantize } from "./quant.ts";
import { randomValues } from "./safetensors_test_util.ts";
import { encodeTensor } from "./safetensors_writer.ts";

const METADATA = {
  "general.architecture": v.string("llama"),
  "t.u8": v.u8(255),
  "t.i8": v.i8(-128),
  "t.u16": v.u16(65535),
  "t.i16": v.i16(-32768),
  "t.u32": v.u32(0xffffffff),
  "t.i32": v.i32(-0x80000000),
  "t.u64": v.u64(2n ** 64n - 1n),
  "t.i64": v.i64(-(2n ** 63n)),
  "t.f32": v.f32(0.1),
  "t.f64": v.f64(Math.PI),
  "t.bool": v.bool(false),
  "t.empty_string": v.string(""),
  "t.unicode": v.string("Ġhello ✓ 日本"),
  "t.u8s": v.array("u8", new Uint8Array([0, 7, 255])),
  "t.i8s": v.array("i8", [-1, 2]),
  "t.u16s": v.array("u16", [1, 65535]),
  "t.i16s": v.array("i16", [-5]),
  "t.u32s": v.array("u32", [4e9]),
  "t.i32s": v.array("i32", [1, -2, 3]),
  "t.u64s": v.array("u64", [1n, 2n ** 63n]),
  "t.i64s": v.array("i64", [-1, 5]),
  "t.f32s": v.array("f32", [0.5, -1.25]),
  "t.f64s": v.array("f64", [1e300]),
  "t.bools": v.array("bool", [true, false, true]),
  "t.strings": v.strings(["a", "", "ü"]),
  "t.no_items": v.array("f32", []),
  "t.nested": v.array("array", [
    { itemType: "string", items: ["x", "yz"] },
    { itemType: "string", items: [] },
    { itemType: "array", items: [{ itemType: "string", items: ["deep"] }] },
  ]),
};

/** The entries a reader should return for {@linkcode METADATA} (numbers as stored). */
function expectedEntries(extra: [string, GgufEntry["value"], GgufEntry["type"]][] = []) {
  const f32 = (x: number[]) => new Float32Array(x);
  const items: Record<string, unknown> = {
    "t.u8s": new Uint8Array([0, 7, 255]),
    "t.i8s": new Int8Array([-1, 2]),
    "t.u16s": new Uint16Array([1, 65535]),
    "t.i16s": new Int16Array([-5]),
    "t.u32s": new Uint32Array([4e9]),
    "t.i32s": new Int32Array([1, -2, 3]),
    "t.u64s": new BigUint64Array([1n, 2n ** 63n]),
    "t.i64s": new BigInt64Array([-1n, 5n]),
    "t.f32s": f32([0.5, -1.25]),
    "t.f64s": new Float64Array([1e300]),
    "t.no_items": f32([]),
  };
  const out = Object.entries(METADATA).map(([key, e]) => {
    let value = e.value;
    if (key in items) {
      value = { itemType: (e.value as GgufArray).itemType, items: items[key] as GgufArrayItems };
    }
    if (key === "t.f32") value = Math.fround(0.1);
    return { key, type: e.type, value };
  });
  for (const [key, value, type] of extra) out.push({ key, type, value });
  return out;
}

const K = 512; // two Q4_K super-blocks, 16 Q8_0 blocks per row

function tensors(): { spec: GgufTensorToWrite; values: Float32Array | null }[] {
  const q = randomValues(3 * K, 1);
  const q8 = randomValues(2 * 2 * K, 2);
  const h = randomValues(6, 3);
  const f = randomValues(7, 4);
  return [
    {
      spec: { name: "q4.weight", type: "Q4_K", shape: [3, K], data: quantize(q, "q4_k") },
      values: q,
    },
    {
      spec: { name: "q8.weight", type: "q8_0", shape: [2, 2, K], data: () => quantize(q8, "q8_0") },
      values: q8,
    },
    { spec: { name: "h", type: "F16", shape: [2, 3], data: packWeights(h, "f16") }, values: h },
    { spec: { name: "b", type: "BF16", shape: [6], data: packWeights(h, "bf16") }, values: h },
    {
      spec: { name: "f", type: "F32", shape: [7], data: () => [f.subarray(0, 3), f.subarray(3)] },
      values: f,
    },
    {
      spec: { name: "ids", type: "I32", shape: [3], data: new Int32Array([1, -2, 3]) },
      values: null,
    },
    {
      spec: { name: "empty", type: "F32", shape: [0, 4], data: new Float32Array(0) },
      values: null,
    },
  ];
}

Deno.test("gguf: writeGguf -> openGguf round trip, both modes, every value type", () =>
  withTempDir(async (dir) => {
    const path = `${dir}/model.gguf`;
    const ts = tensors();
    const written = await writeGguf(path, METADATA, ts.map((t) => t.spec));
    assert.equal((await Deno.stat(path)).size, written.byteLength);
    assert.equal(written.alignment, 32);
    bothModes(path, (open) => {
      const g = open();
      try {
        assert.equal(g.version, 3);
        assert.equal(g.alignment, 32);
        assert.equal(g.dataOffset, written.dataOffset);
        assert.equal(g.dataOffset % 32, 0);
        assert.deepEqual(g.entries(), expectedEntries());
        assert.deepEqual(g.names(), ts.map((t) => t.spec.name));
        let next = g.dataOffset;
        for (const [i, { spec, values }] of ts.entries()) {
          const t = g.tensor(spec.name);
          assert.deepEqual(t.shape, spec.shape);
          assert.deepEqual(t.dims, [...spec.shape].reverse());
          assert.equal(t.type, spec.type.toUpperCase());
          assert.equal(t.offset, written.tensors[i].offset);
          assert.equal(t.offset, next, "offsets are contiguous up to padding");
          next += Math.ceil(t.byteLength / 32) * 32;
          if (values && (t.type === "Q4_K" || t.type === "Q8_0")) {
            const q = t.type === "Q4_K" ? "q4_k" : "q8_0";
            assert.deepEqual(t.bytes(), quantize(values, q));
            assert.deepEqual(t.toF32(), dequantize(quantize(values, q), q));
            assert.ok(t.view() instanceof Uint8Array);
          }
        }
        assert.deepEqual(
          g.tensor("h").view(),
          new Uint16Array(packWeights(g.tensor("h").toF32(), "f16").buffer, 0, 6),
        );
        assert.deepEqual(
          g.tensor("h").toF32(),
          Float32Array.from(ts[2].values!, (x) => f16BitsToF32(packWeights([x], "f16")[0])),
        );
        assert.deepEqual(g.tensor("f").toF32(), ts[4].values);
        assert.deepEqual(g.tensor("ids").view(), new Int32Array([1, -2, 3]));
        assert.equal(g.tensor("empty").byteLength, 0);
        assert.deepEqual(g.tensor("empty").toF32(), new Float32Array(0));
        assertGgufError(
          () => g.tensor("ids").toF32(),
          path,
          { tensor: "ids" },
          "cannot convert a I32",
        );
      } finally {
        g.close();
      }
    });
  }));

Deno.test("gguf: a header over 1 MiB (a big vocabulary) reads the same in both modes", () =>
  withTempDir(async (dir) => {
    const path = `${dir}/vocab.gguf`;
    const tokens = Array.from({ length: 120_000 }, (_, i) => `tok_${i}_${"x".repeat(i % 7)}`);
    const types = Int32Array.from(tokens, (_, i) => (i % 3) + 1);
    await writeGguf(path, {
      "tokenizer.ggml.tokens": v.strings(tokens),
      "tokenizer.ggml.token_type": v.array("i32", types),
    }, [{ name: "w", type: "F32", shape: [1], data: new Float32Array([7]) }]);
    bothModes(path, (open) => {
      const g = open();
      assert.deepEqual(g.strings("tokenizer.ggml.tokens"), tokens);
      assert.deepEqual(g.numbers("tokenizer.ggml.token_type"), [...types]);
      assert.deepEqual(g.tensor("w").toF32(), new Float32Array([7]));
      g.close();
    });
  }));

Deno.test("gguf: alignment option, general.alignment, version 2", () =>
  withTempDir(async (dir) => {
    for (const alignment of [1, 64, 4096]) {
      const path = `${dir}/a${alignment}.gguf`;
      const w = await writeGguf(path, { "general.name": v.string("x") }, [
        { name: "a", type: "F16", shape: [3], data: encodeTensor([1, 2, 3], "f16") },
        { name: "b", type: "F32", shape: [1], data: new Float32Array([5]) },
      ], { alignment });
      const g = openGguf(path);
      assert.equal(g.alignment, alignment);
      assert.equal(g.has("general.alignment"), alignment !== 32);
      if (alignment !== 32) assert.equal(g.uint("general.alignment"), alignment);
      assert.equal(g.tensor("b").offset % alignment, 0);
      assert.equal(g.tensor("b").offset, w.tensors[1].offset);
      assert.deepEqual(g.tensor("b").toF32(), new Float32Array([5])); // copied when unaligned
      g.close();
    }
    const path = `${dir}/v2.gguf`;
    await writeGguf(path, { k: v.u32(1) }, []);
    const bytes = await Deno.readFile(path);
    bytes[4] = 2; // version 3 -> 2: the same layout
    await Deno.writeFile(path, bytes);
    const g = openGguf(path);
    assert.equal(g.version, 2);
    assert.equal(g.uint("k"), 1);
    assert.deepEqual(g.names(), []);
    g.close();
  }));

Deno.test("gguf: typed getters, fallbacks and their errors name the key", () =>
  withTempDir(async (dir) => {
    const path = `${dir}/m.gguf`;
    await writeGguf(path, METADATA, [{
      name: "w",
      type: "F32",
      shape: [1],
      data: new Float32Array(1),
    }]);
    const g = openGguf(path);
    assert.equal(g.string("general.architecture"), "llama");
    assert.equal(g.uint("t.u32"), 0xffffffff);
    assert.equal(g.int("t.i16"), -32768);
    assertGgufError(() => g.int("t.i64"), path, { key: "t.i64" }, "safe integer, found i64");
    assert.equal(g.float("t.f64"), Math.PI);
    assert.equal(g.float("t.u8"), 255);
    assert.equal(g.bool("t.bool"), false);
    assert.deepEqual(g.strings("t.strings"), ["a", "", "ü"]);
    assert.deepEqual(g.numbers("t.i64s"), [-1, 5]);
    assert.equal(g.string("missing", "dflt"), "dflt");
    assert.equal(g.uint("missing", 3), 3);
    assert.equal(g.bool("missing", true), true);
    assert.equal(g.value("missing"), undefined);
    assertGgufError(() => g.entry("missing"), path, { key: "missing" }, "missing metadata key");
    assertGgufError(
      () => g.string("t.u8"),
      path,
      { key: "t.u8" },
      "expected a string, found u8 255",
    );
    assertGgufError(() => g.uint("t.i8"), path, { key: "t.i8" }, "non-negative", "i8 -128");
    assertGgufError(() => g.uint("t.u64"), path, { key: "t.u64" }, "u64 18446744073709551615");
    assertGgufError(() => g.int("t.unicode", 1), path, { key: "t.unicode" }, "found string");
    assertGgufError(() => g.float("t.bool"), path, { key: "t.bool" }, "expected a number");
    assertGgufError(() => g.bool("t.u8"), path, { key: "t.u8" }, "expected a bool");
    assertGgufError(() => g.strings("t.i32s"), path, { key: "t.i32s" }, "array of 3 i32");
    assertGgufError(
      () => g.numbers("t.strings"),
      path,
      { key: "t.strings" },
      "an array of numbers",
    );
    assertGgufError(() => g.numbers("t.u64s"), path, { key: "t.u64s" }, "item 1", "not a safe");
    assertGgufError(() => g.tensor("nope"), path, { tensor: "nope" }, "missing tensor");
    assertGgufError(() => g.describe("nope"), path, { tensor: "nope" }, "1 tensors");
    g.close();
    g.close(); // idempotent
    assertGgufError(() => g.tensor("w"), path, { tensor: "w" }, "after close()");
  }));

/** Asserts an ArgumentError on `argument` containing `text`, and that `path` was not created. */
async function rejectsWrite(path: string, p: Promise<unknown>, argument: string, text: string) {
  try {
    await p;
  } catch (e) {
    assert.ok(e instanceof ArgumentError, String(e));
    assert.equal(e.argument, argument, e.message);
    assert.ok(e.message.includes(text), e.message);
    await assert.rejects(Deno.stat(path));
    await assert.rejects(Deno.stat(`${path}.partial`));
    return;
  }
  assert.fail(`expected an ArgumentError on ${argument}`);
}

Deno.test("gguf: the writer rejects bad names, types, shapes, data and values", () =>
  withTempDir(async (dir) => {
    const p = `${dir}/bad.gguf`;
    const f32 = (n: number) => new Float32Array(n);
    const w = (t: Partial<GgufTensorToWrite>, meta = {}) =>
      writeGguf(p, meta, [{ name: "w", type: "F32", shape: [2], data: f32(2), ...t }]);
    await rejectsWrite(p, w({ name: "" }), "name", "invalid tensor name");
    await rejectsWrite(p, w({ name: "x".repeat(64) }), "name", "1 to 63 UTF-8 bytes");
    await rejectsWrite(
      p,
      writeGguf(p, {}, [1, 2].map(() => ({ name: "w", type: "F32", shape: [1], data: f32(1) }))),
      "name",
      "duplicate tensor name 'w'",
    );
    await rejectsWrite(p, w({ type: "Q9_9" }), "type of tensor 'w'", "unknown ggml type 'Q9_9'");
    await rejectsWrite(p, w({ shape: [] }), "shape of tensor 'w'", "1 to 4 non-negative");
    await rejectsWrite(p, w({ shape: [1, 1, 1, 1, 2] }), "shape of tensor 'w'", "got [1,1,1,1,2]");
    await rejectsWrite(p, w({ shape: [2.5] }), "shape of tensor 'w'", "non-negative integers");
    await rejectsWrite(
      p,
      w({ type: "Q4_K", shape: [2, 128] }),
      "shape of tensor 'w'",
      "Q4_K blocks of 256",
    );
    await rejectsWrite(p, w({ data: f32(3) }), "data of tensor 'w'", "expected 8 bytes, found 12");
    await rejectsWrite(
      p,
      w({ data: () => [f32(1), f32(2)] }),
      "data of tensor 'w'",
      "found 12 or more",
    );
    await rejectsWrite(
      p,
      w({ data: () => f32(1) }),
      "data of tensor 'w'",
      "expected 8 bytes, found 4",
    );
    await rejectsWrite(p, w({}, { k: v.u8(256) }), "k", "an integer in [0, 255] for a u8 value");
    await rejectsWrite(p, w({}, { k: v.i32(1.5) }), "k", "for a i32 value, got 1.5");
    await rejectsWrite(p, w({}, { k: v.array("u16", [1, -1]) }), "k[1]", "[0, 65535]");
    await rejectsWrite(p, w({}, { k: v.array("u64", [2 ** 60]) }), "k[0]", "a bigint");
    await rejectsWrite(
      p,
      w({}, { k: v.strings(["a", 3 as unknown as string]) }),
      "k[1]",
      "a string",
    );
    await rejectsWrite(
      p,
      w({}, { k: { type: "u128" as never, value: 1 } }),
      "k",
      "unknown GGUF value type",
    );
    await rejectsWrite(p, w({}, [["k", v.u8(1)], ["k", v.u8(2)]]), "k", "duplicate metadata key");
    await rejectsWrite(p, w({}, { "": v.u8(1) }), "metadata", "empty key");
    await rejectsWrite(p, w({}, { "general.alignment": v.u64(32) }), "general.alignment", "u32");
    await rejectsWrite(
      p,
      w({}, { "general.alignment": v.u32(48) }),
      "alignment",
      "power of two, got 48",
    );
    await rejectsWrite(
      p,
      writeGguf(p, { "general.alignment": v.u32(64) }, [], { alignment: 128 }),
      "alignment",
      "disagrees",
    );
  }));

Deno.test("gguf: a file system refusal is a FileWriteError naming the file", () =>
  withTempDir(async (dir) => {
    const path = `${dir}/missing/x.gguf`;
    await assert.rejects(
      writeGguf(path, { "general.name": v.string("x") }, [
        { name: "a", type: "F32", shape: [1], data: new Float32Array([1]) },
      ]),
      (e) =>
        e instanceof FileWriteError && e.file === `${path}.partial` && /ENOENT/.test(e.message),
    );
  }));
