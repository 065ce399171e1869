import assert from "node:assert/strict";
import { ArgumentError, WeightFileError } from "../errors.ts";
import { type DType, roundTo } from "./dtype.ts";
import type { MapKind } from "./mmap.ts";
import {
  INDEX_FILE_NAME,
  openCheckpoint,
  openSafetensors,
  SINGLE_FILE_NAME,
  type TensorStore,
} from "./safetensors.ts";
import {
  encodeTensor,
  type TensorToWrite,
  writeSafetensors,
  writeShardedCheckpoint,
} from "./safetensors_writer.ts";

const KINDS: MapKind[] = ["mmap", "read"];
const enc = new TextEncoder();

const assertEquals = (actual: unknown, expected: unknown, message?: string): void =>
  assert.deepEqual(actual, expected, message);

/** Asserts that `fn` throws an instance of `cls` whose message includes every string; returns it. */
function assertThrows<E extends Error>(
  fn: () => unknown,
  cls: new (...args: never[]) => E,
  ...includes: string[]
): E {
  try {
    fn();
  } catch (e) {
    assert.ok(e instanceof cls, `expected ${cls.name}, got ${String(e)}`);
    for (const s of includes) {
      assert.ok(e.message.includes(s), `expected "${s}" in: ${e.message}`);
    }
    return e;
  }
  throw new assert.AssertionError({ message: `expected ${cls.name} to be thrown` });
}

async function assertRejects<E extends Error>(
  fn: () => Promise<unknown>,
  cls: new (...args: never[]) => E,
  ...includes: string[]
): Promise<E> {
  try {
    await fn();
  } catch (e) {
    assert.ok(e instanceof cls, `expected ${cls.name}, got ${String(e)}`);
    for (const s of includes) {
      assert.ok(e.message.includes(s), `expected "${s}" in: ${e.message}`);
    }
    return e;
  }
  throw new assert.AssertionError({ message: `expected ${cls.name} to be thrown` });
}

/** A WeightFileError naming `file` (and `tensor`, when given) with every string in its message. */
function assertWeightError(
  fn: () => unknown,
  file: string,
  tensor: string | undefined,
  ...includes: string[]
): WeightFileError {
  const e = assertThrows(fn, WeightFileError, file, ...includes);
  assertEquals(e.file, file);
  assertEquals(e.tensor, tensor);
  if (tensor) assert.ok(e.message.includes(`[tensor ${tensor}]`), e.message);
  assertEquals(e.code, "E_WEIGHTS");
  return e;
}

function randomValues(n: number, seed: number): Float32Array {
  let s = seed >>> 0 || 1;
  const out = new Float32Array(n);
  for (let i = 0; i < n; i++) {
    s ^= s << 13;
    s ^= s >>> 17;
    s ^= s << 5;
    out[i] = ((s >>> 0) / 2 ** 32 - 0.5) * 8;
  }
  return out;
}

interface Spec {
  name: string;
  dtype: DType;
  shape: number[];
  values: Float32Array;
}

function spec(name: string, dtype: DType, shape: number[], seed: number): Spec {
  return { name, dtype, shape, values: randomValues(shape.reduce((a, b) => a * b, 1), seed) };
}

function toWrite(s: Spec): TensorToWrite {
  return { name: s.name, dtype: s.dtype, shape: s.shape, data: encodeTensor(s.values, s.dtype) };
}

async function withTempDir(fn: (dir: string) => Promise<void> | void): Promise<void> {
  const dir = await Deno.makeTempDir({ prefix: "pregate_st_" });
  try {
    await fn(dir);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

async function listDir(dir: string): Promise<string[]> {
  const names: string[] = [];
  for await (const e of Deno.readDir(dir)) names.push(e.name);
  return names.sort();
}

/** A raw safetensors file: 8-byte length (or `length`), header bytes, data. */
function rawFile(
  header: string | Uint8Array,
  data = new Uint8Array(0),
  length?: bigint,
): Uint8Array {
  const h = typeof header === "string" ? enc.encode(header) : header;
  const out = new Uint8Array(8 + h.byteLength + data.byteLength);
  new DataView(out.buffer).setBigUint64(0, length ?? BigInt(h.byteLength), true);
  out.set(h, 8);
  out.set(data, 8 + h.byteLength);
  return out;
}

function checkStore(store: TensorStore, specs: Spec[], kind: MapKind): void {
  assertEquals(store.kind, kind);
  assertEquals(store.names(), specs.map((s) => s.name));
  for (const s of specs) {
    assert.ok(store.has(s.name));
    const t = store.get(s.name);
    assertEquals(t.name, s.name);
    assertEquals(t.dtype, s.dtype);
    assertEquals(t.shape, s.shape);
    assertEquals(t.elements, s.values.length);
    assertEquals(t.byteLength, encodeTensor(s.values, s.dtype).byteLength);
    assertEquals(t.bytes(), encodeTensor(s.values, s.dtype), `bytes of ${s.name}`);
    assertEquals(t.alignment >= 4, t.offset % 4 === 0);
    assertEquals(t.offset % t.alignment, 0);
    assertEquals(store.tensorF32(s.name), roundTo(s.values, s.dtype), `values of ${s.name}`);
  }
  assert.ok(!store.has("nope"));
}

const SPECS: Spec[] = [
  spec("embed.weight", "bf16", [7, 6], 1),
  spec("odd.f16", "f16", [5], 2), // 10 bytes: the next tensor is only 2-byte aligned
  spec("unaligned.f32", "f32", [3, 1, 2], 3),
  spec("scalar", "f32", [], 4),
  spec("empty", "f16", [0, 4], 5),
  spec("norm.weight", "f32", [16], 6),
];

// ---------------------------------------------------------------------------------------------
// round trips
// ---------------------------------------------------------------------------------------------

for (const kind of KINDS) {
  Deno.test(`${kind}: writeSafetensors -> openSafetensors round trip`, () =>
    withTempDir(async (dir) => {
      const path = `${dir}/model.safetensors`;
      const written = await writeSafetensors(path, SPECS.map(toWrite), { format: "pt" });
      const st = openSafetensors(path, { mode: kind });
      try {
        checkStore(st, SPECS, kind);
        assertEquals(st.files, [path]);
        assertEquals(st.metadata, { format: "pt" });
        for (const w of written.tensors) {
          const t = st.get(w.name);
          assertEquals([t.offset, t.byteLength, t.file], [w.offset, w.byteLength, path]);
        }
        const f32 = st.get("unaligned.f32");
        assertEquals(f32.offset % 4, 2, "the f32 tensor after 5 f16 values is 2-byte aligned");
        assertEquals(f32.alignment, 2);
        assertEquals(st.describe("empty").byteLength, 0);
      } finally {
        st.close();
      }
      assertEquals((await Deno.stat(path)).size, written.byteLength);
    }));

  Deno.test(`${kind}: sharded writeShardedCheckpoint -> openCheckpoint round trip`, () =>
    withTempDir(async (dir) => {
      const specs = [
        spec("a", "f32", [10], 11), // 40 bytes
        spec("b", "bf16", [20], 12), // 40
        spec("c", "f16", [30], 13), // 60 -> shard 2
        spec("huge", "f32", [50], 14), // 200 > max: a shard of its own
        spec("d", "bf16", [3], 15), // 6 -> shard 4
        spec("e", "f32", [1], 16), // 4
      ];
      const out = await writeShardedCheckpoint(`${dir}/ck`, specs.map(toWrite), {
        maxShardBytes: 100,
        metadata: { format: "pt" },
      });
      const shardNames = [1, 2, 3, 4].map((i) => `model-0000${i}-of-00004.safetensors`);
      assertEquals(out.files, shardNames.map((n) => `${dir}/ck/${n}`));
      assertEquals(out.index, `${dir}/ck/${INDEX_FILE_NAME}`);
      assertEquals(out.totalSize, 40 + 40 + 60 + 200 + 6 + 4);
      const index = JSON.parse(await Deno.readTextFile(out.index!));
      assertEquals(index, {
        metadata: { total_size: 350 },
        weight_map: {
          a: shardNames[0],
          b: shardNames[0],
          c: shardNames[1],
          d: shardNames[3],
          e: shardNames[3],
          huge: shardNames[2],
        },
      });
      assertEquals(Object.keys(index.weight_map), ["a", "b", "c", "d", "e", "huge"], "sorted");
      const ck = openCheckpoint(`${dir}/ck`, { mode: kind });
      try {
        checkStore(ck, specs, kind);
        assertEquals(ck.files, out.files);
        assertEquals(ck.get("c").file, out.files[1]);
        assertEquals(ck.get("e").file, out.files[3]);
        assertEquals(ck.metadata, { format: "pt", total_size: "350" });
      } finally {
        ck.close();
      }
    }));
}

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

Deno.test("mmap: tensor bytes are zero-copy views of the mapping", () =>
  withTempDir(async (dir) => {
    const path = `${dir}/m.safetensors`;
    await writeSafetensors(path, SPECS.map(toWrite));
    const st = openSafetensors(path, { mode: "mmap" });
    try {
      const a = st.get("embed.weight").bytes();
      const b = st.get("norm.weight").bytes();
      assert.ok(a.buffer === b.buffer, "one mapping");
      assertEquals(a.byteOffset, st.get("embed.weight").offset);
    } finally {
      st.close();
    }
  }));

Deno.test("a single-file checkpoint, stale layouts removed when rewritten", () =>
  withTempDir(async (dir) => {
    const specs = [spec("w", "f32", [4], 1), spec("v", "f16", [4], 2)];
    const sharded = await writeShardedCheckpoint(dir, specs.map(toWrite), { maxShardBytes: 16 });
    assertEquals(sharded.files.length, 2);
    const single = await writeShardedCheckpoint(dir, specs.map(toWrite), { maxShardBytes: 24 });
    assertEquals(single.files, [`${dir}/${SINGLE_FILE_NAME}`]);
    assertEquals(single.index, null);
    await assertRejects(() => Deno.stat(`${dir}/${INDEX_FILE_NAME}`), Deno.errors.NotFound);
    let ck = openCheckpoint(dir);
    checkStore(ck, specs, "mmap");
    ck.close();
    await writeShardedCheckpoint(dir, specs.map(toWrite), { maxShardBytes: 16 });
    await assertRejects(() => Deno.stat(`${dir}/${SINGLE_FILE_NAME}`), Deno.errors.NotFound);
    ck = openCheckpoint(dir);
    assertEquals(ck.files.length, 2);
    checkStore(ck, specs, "mmap");
    ck.close();
    // a path to a file is opened as that file
    ck = openCheckpoint(sharded.files[1]);
    assertEquals(ck.names(), ["v"]);
    ck.close();
  }));

Deno.test("an empty checkpoint and an empty tensor list are valid", () =>
  withTempDir(async (dir) => {
    const out = await writeShardedCheckpoint(dir, []);
    assertEquals(out.totalSize, 0);
    const w = await writeSafetensors(`${dir}/e.safetensors`, []);
    assertEquals([w.byteLength, w.headerLength], [16, 8]);
    for (const p of [dir, `${dir}/e.safetensors`]) {
      const ck = openCheckpoint(p);
      assertEquals(ck.names(), []);
      ck.close();
    }
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

// ---------------------------------------------------------------------------------------------
// malformed files
// ---------------------------------------------------------------------------------------------

/** Writes `bytes` to `dir/bad.safetensors` and returns the path. */
async function badFile(dir: string, bytes: Uint8Array): Promise<string> {
  const path = `${dir}/bad.safetensors`;
  await Deno.writeFile(path, bytes);
  return path;
}

const F32x2 = { dtype: "F32", shape: [2], data_offsets: [0, 8] };

/** Runs the check in both access modes. */
function bothModes(path: string, check: (open: () => TensorStore) => void): void {
  for (const mode of KINDS) check(() => openSafetensors(path, { mode }));
}

Deno.test("malformed: file shorter than 8 bytes", () =>
  withTempDir(async (dir) => {
    for (const n of [0, 5]) {
      const path = await badFile(dir, new Uint8Array(n));
      bothModes(path, (open) => {
        assertWeightError(
          open,
          path,
          undefined,
          `file is ${n} bytes, shorter than the 8-byte header length`,
        );
      });
    }
  }));

Deno.test("malformed: header length past the end of the file", () =>
  withTempDir(async (dir) => {
    const path = await badFile(
      dir,
      rawFile(JSON.stringify({ x: F32x2 }), new Uint8Array(8), 1000n),
    );
    bothModes(path, (open) => {
      assertWeightError(open, path, undefined, "header length 1000 runs past the end of the file");
    });
    const huge = await badFile(dir, rawFile("{}", new Uint8Array(0), 2n ** 62n));
    bothModes(huge, (open) => {
      assertWeightError(open, huge, undefined, `header length ${2n ** 62n}`, "absurdly large");
    });
  }));

Deno.test("malformed: header length absurdly large but inside the (sparse) file", () =>
  withTempDir(async (dir) => {
    const path = `${dir}/sparse.safetensors`;
    const f = await Deno.open(path, { write: true, create: true });
    const prefix = new Uint8Array(8);
    new DataView(prefix.buffer).setBigUint64(0, 100_000_001n, true);
    await f.write(prefix);
    await f.truncate(100_000_100);
    f.close();
    bothModes(path, (open) => {
      assertWeightError(
        open,
        path,
        undefined,
        "header length 100000001 is absurdly large (limit 100000000",
      );
    });
  }));

Deno.test("malformed: header is not UTF-8, not JSON, or not an object", () =>
  withTempDir(async (dir) => {
    const cases: [string | Uint8Array, string][] = [
      [new Uint8Array([0x7b, 0xff, 0xfe, 0x7d]), "not valid UTF-8"],
      ['{"x": {"dtype": "F32",', "not valid JSON"],
      ["", "not valid JSON"],
      ["[1, 2]", "must be a JSON object of tensor entries, found an array"],
      ["null", "found null"],
      ["42", "found a number (42)"],
    ];
    for (const [header, msg] of cases) {
      const path = await badFile(dir, rawFile(header));
      bothModes(path, (open) => assertWeightError(open, path, undefined, msg));
    }
  }));

Deno.test("malformed: __metadata__ is not an object", () =>
  withTempDir(async (dir) => {
    const path = await badFile(
      dir,
      rawFile(JSON.stringify({ __metadata__: "pt", x: F32x2 }), new Uint8Array(8)),
    );
    bothModes(path, (open) =>
      assertWeightError(open, path, undefined, "__metadata__ must be an object"));
  }));

Deno.test("malformed: tensor entries missing fields or of the wrong types", () =>
  withTempDir(async (dir) => {
    const cases: [unknown, string][] = [
      ["F32", "entry must be an object with dtype, shape and data_offsets, found a string"],
      [[1, 2], "entry must be an object"],
      [
        { shape: [2], data_offsets: [0, 8] },
        'dtype: expected a string such as "BF16", found nothing',
      ],
      [
        { dtype: 4, shape: [2], data_offsets: [0, 8] },
        'dtype: expected a string such as "BF16", found 4',
      ],
      [
        { dtype: "F32", data_offsets: [0, 8] },
        "shape: expected an array of non-negative integers, found nothing",
      ],
      [{ dtype: "F32", shape: "2", data_offsets: [0, 8] }, "shape: expected an array"],
      [{ dtype: "F32", shape: [-2], data_offsets: [0, 8] }, "found [-2]"],
      [{ dtype: "F32", shape: [1.5], data_offsets: [0, 8] }, "found [1.5]"],
      [
        { dtype: "F32", shape: [2] },
        "data_offsets: expected [begin, end] (two non-negative integers), found nothing",
      ],
      [{ dtype: "F32", shape: [2], data_offsets: [0, 4, 8] }, "found [0,4,8]"],
      [{ dtype: "F32", shape: [2], data_offsets: [-8, 0] }, "found [-8,0]"],
      [
        { dtype: "F32", shape: [2], data_offsets: { begin: 0 } },
        "data_offsets: expected [begin, end]",
      ],
    ];
    for (const [entry, msg] of cases) {
      const header = JSON.stringify({ ok: F32x2, "bad.tensor": entry });
      const path = await badFile(dir, rawFile(header, new Uint8Array(16)));
      bothModes(path, (open) => assertWeightError(open, path, "bad.tensor", msg));
    }
  }));

Deno.test("malformed: unsupported dtypes fail on get(), not at open", () =>
  withTempDir(async (dir) => {
    const header = JSON.stringify({
      __metadata__: { format: "pt" },
      w: F32x2,
      position_ids: { dtype: "I64", shape: [2], data_offsets: [8, 24] },
      scale: { dtype: "F8_E4M3", shape: [4], data_offsets: [24, 28] },
      mask: { dtype: "U8", shape: [3], data_offsets: [28, 31] },
      packed: { dtype: "F4", shape: [2], data_offsets: [31, 32] }, // sub-byte: size not checked
    });
    const path = await badFile(dir, rawFile(header, new Uint8Array(32)));
    bothModes(path, (open) => {
      const st = open();
      try {
        assertEquals(st.names(), ["w", "position_ids", "scale", "mask", "packed"]);
        assert.ok(st.has("position_ids"));
        assertEquals(st.get("w").shape, [2]);
        const d = st.describe("position_ids");
        assertEquals([d.fileDType, d.dtype, d.shape, d.byteLength], ["I64", null, [2], 16]);
        for (
          const [name, dt] of [["position_ids", "I64"], ["scale", "F8_E4M3"], ["mask", "U8"], [
            "packed",
            "F4",
          ]]
        ) {
          assertWeightError(
            () => st.get(name),
            path,
            name,
            `unsupported dtype ${dt} (supported: F32, F16, BF16)`,
          );
          assertWeightError(() => st.tensorF32(name), path, name, `unsupported dtype ${dt}`);
        }
      } finally {
        st.close();
      }
    });
  }));

Deno.test("malformed: offsets of unsupported-dtype tensors are still validated at open", () =>
  withTempDir(async (dir) => {
    const header = JSON.stringify({
      w: F32x2,
      ids: { dtype: "I64", shape: [2], data_offsets: [8, 40] },
    });
    const path = await badFile(dir, rawFile(header, new Uint8Array(24)));
    bothModes(
      path,
      (open) => assertWeightError(open, path, "ids", "run past the end of the data section"),
    );
    const header2 = JSON.stringify({
      w: F32x2,
      ids: { dtype: "I64", shape: [3], data_offsets: [8, 24] },
    });
    const path2 = await badFile(dir, rawFile(header2, new Uint8Array(24)));
    bothModes(
      path2,
      (open) => assertWeightError(open, path2, "ids", "needs 3 x 8 = 24 bytes", "hold 16 bytes"),
    );
  }));

Deno.test("malformed: data_offsets out of range, reversed or overlapping", () =>
  withTempDir(async (dir) => {
    const data = new Uint8Array(16);
    const cases: [Record<string, unknown>, string, string][] = [
      [
        { a: F32x2, b: { dtype: "F32", shape: [3], data_offsets: [8, 20] } },
        "b",
        "data_offsets [8, 20] run past the end of the data section (expected end <= 16",
      ],
      [
        { a: { dtype: "F32", shape: [0], data_offsets: [8, 0] } },
        "a",
        "data_offsets [8, 0]: begin is after end",
      ],
      [
        {
          a: { dtype: "F32", shape: [3], data_offsets: [0, 12] },
          b: { dtype: "F32", shape: [2], data_offsets: [8, 16] },
        },
        "b",
        "overlap those of tensor a [0, 12] (expected begin >= 12)",
      ],
      [
        // overlap discovered regardless of header order
        {
          b: { dtype: "F16", shape: [2], data_offsets: [2, 6] },
          a: { dtype: "F32", shape: [1], data_offsets: [0, 4] },
        },
        "b",
        "overlap those of tensor a [0, 4]",
      ],
    ];
    for (const [header, tensor, msg] of cases) {
      const path = await badFile(dir, rawFile(JSON.stringify(header), data));
      bothModes(path, (open) => assertWeightError(open, path, tensor, msg));
    }
    // zero-length tensors may share an offset with anything; gaps are allowed
    const ok = await badFile(
      dir,
      rawFile(
        JSON.stringify({
          a: { dtype: "F32", shape: [1], data_offsets: [0, 4] },
          z: { dtype: "F16", shape: [0], data_offsets: [2, 2] },
          b: { dtype: "F32", shape: [1], data_offsets: [8, 12] },
        }),
        data,
      ),
    );
    bothModes(ok, (open) => {
      const st = open();
      assertEquals(st.names(), ["a", "z", "b"]);
      st.close();
    });
  }));

Deno.test("malformed: shape x dtype size differs from the byte length", () =>
  withTempDir(async (dir) => {
    const header = JSON.stringify({ w: { dtype: "BF16", shape: [2, 3], data_offsets: [0, 8] } });
    const path = await badFile(dir, rawFile(header, new Uint8Array(16)));
    bothModes(path, (open) =>
      assertWeightError(
        open,
        path,
        "w",
        "shape [2,3] of dtype BF16 needs 6 x 2 = 12 bytes, but data_offsets [0, 8] hold 8 bytes",
      ));
  }));

Deno.test("missing tensor: the error names the file and lists close names", () =>
  withTempDir(async (dir) => {
    const names = [
      "model.layers.0.mlp.gate.weight",
      "model.layers.0.mlp.experts.0.up_proj.weight",
      "model.layers.1.mlp.gate.weight",
      "model.norm.weight",
      "lm_head.weight",
    ];
    const path = `${dir}/m.safetensors`;
    await writeSafetensors(
      path,
      names.map((name) => ({ name, dtype: "f32", shape: [1], data: new Float32Array(1) })),
    );
    bothModes(path, (open) => {
      const st = open();
      try {
        const e = assertWeightError(
          () => st.get("model.layers.0.mlp.gate.weights"),
          path,
          "model.layers.0.mlp.gate.weights",
          "no such tensor (the checkpoint has 5 tensors; closest names: model.layers.0.mlp.gate.weight, model.layers.1.mlp.gate.weight",
        );
        assert.ok(!e.message.includes("lm_head"), "only a few close names");
        assertWeightError(() => st.describe("x"), path, "x", "no such tensor");
        assertWeightError(() => st.tensorF32("x"), path, "x", "no such tensor");
      } finally {
        st.close();
      }
    });
  }));

Deno.test("use after close is an error, not a crash", () =>
  withTempDir(async (dir) => {
    const path = `${dir}/m.safetensors`;
    await writeSafetensors(path, SPECS.map(toWrite));
    const st = openSafetensors(path);
    const t = st.get("norm.weight");
    const view = t.bytes();
    st.close();
    st.close();
    assertWeightError(() => st.get("norm.weight"), path, "norm.weight", "used after close()");
    assertThrows(() => t.bytes(), WeightFileError, path, "used after close()");
    assertEquals(view.length, 0, "the old view was detached");
  }));

// ---------------------------------------------------------------------------------------------
// malformed checkpoints
// ---------------------------------------------------------------------------------------------

async function writeIndex(
  dir: string,
  weightMap: unknown,
  extra: Record<string, unknown> = {},
): Promise<string> {
  const path = `${dir}/${INDEX_FILE_NAME}`;
  await Deno.writeTextFile(
    path,
    JSON.stringify({ metadata: { total_size: 0 }, weight_map: weightMap, ...extra }),
  );
  return path;
}

async function shard(dir: string, file: string, names: string[]): Promise<void> {
  await writeSafetensors(
    `${dir}/${file}`,
    names.map((name) => ({ name, dtype: "f32", shape: [1], data: new Float32Array([1]) })),
  );
}

Deno.test("checkpoint: a tensor stored in two shards", () =>
  withTempDir(async (dir) => {
    await shard(dir, "s1.safetensors", ["a", "dup"]);
    await shard(dir, "s2.safetensors", ["b", "dup"]);
    await writeIndex(dir, { a: "s1.safetensors", b: "s2.safetensors", dup: "s1.safetensors" });
    for (const mode of KINDS) {
      assertWeightError(
        () => openCheckpoint(dir, { mode }),
        `${dir}/s2.safetensors`,
        "dup",
        `duplicate tensor: it is also stored in ${dir}/s1.safetensors`,
      );
    }
  }));

Deno.test("checkpoint: the index names a shard that does not exist", () =>
  withTempDir(async (dir) => {
    await shard(dir, "s1.safetensors", ["a"]);
    const index = await writeIndex(dir, { a: "s1.safetensors", b: "s2.safetensors" });
    assertWeightError(
      () => openCheckpoint(dir),
      index,
      "b",
      `maps this tensor to shard s2.safetensors, but ${dir}/s2.safetensors does not exist`,
    );
  }));

Deno.test("checkpoint: the weight_map names a tensor its shard does not contain", () =>
  withTempDir(async (dir) => {
    await shard(dir, "s1.safetensors", ["a"]);
    await shard(dir, "s2.safetensors", ["b"]);
    const index = await writeIndex(dir, {
      a: "s1.safetensors",
      b: "s2.safetensors",
      ghost: "s2.safetensors",
    });
    assertWeightError(
      () => openCheckpoint(dir),
      `${dir}/s2.safetensors`,
      "ghost",
      `${index} maps this tensor to this shard, but the shard does not contain it`,
    );
    await writeIndex(dir, { a: "s2.safetensors", b: "s1.safetensors" });
    assertWeightError(
      () => openCheckpoint(dir),
      `${dir}/s2.safetensors`,
      "a",
      `the shard does not contain it (it is in ${dir}/s1.safetensors)`,
    );
  }));

Deno.test("checkpoint: a malformed shard is reported by its own file name", () =>
  withTempDir(async (dir) => {
    await shard(dir, "s1.safetensors", ["a"]);
    await Deno.writeFile(
      `${dir}/s2.safetensors`,
      rawFile(
        JSON.stringify({ b: { dtype: "F32", shape: [2], data_offsets: [0, 4] } }),
        new Uint8Array(4),
      ),
    );
    await writeIndex(dir, { a: "s1.safetensors", b: "s2.safetensors" });
    assertWeightError(
      () => openCheckpoint(dir),
      `${dir}/s2.safetensors`,
      "b",
      "needs 2 x 4 = 8 bytes",
    );
  }));

Deno.test("checkpoint: malformed index files", () =>
  withTempDir(async (dir) => {
    await shard(dir, "s1.safetensors", ["a"]);
    const index = `${dir}/${INDEX_FILE_NAME}`;
    await Deno.writeTextFile(index, "{ not json");
    assertWeightError(() => openCheckpoint(dir), index, undefined, "index is not valid JSON");
    await Deno.writeTextFile(index, "[]");
    assertWeightError(
      () => openCheckpoint(dir),
      index,
      undefined,
      "index must be a JSON object, found an array",
    );
    await writeIndex(dir, undefined);
    assertWeightError(
      () => openCheckpoint(dir),
      index,
      undefined,
      "weight_map: expected an object",
      "found nothing",
    );
    await writeIndex(dir, {});
    assertWeightError(() => openCheckpoint(dir), index, undefined, "weight_map is empty");
    await writeIndex(dir, { a: 3 });
    assertWeightError(
      () => openCheckpoint(dir),
      index,
      "a",
      "expected a shard file name, found a number (3)",
    );
  }));

Deno.test("checkpoint: a directory without model files, and a missing directory", () =>
  withTempDir(async (dir) => {
    assertWeightError(
      () => openCheckpoint(dir),
      dir,
      undefined,
      "expected model.safetensors or model.safetensors.index.json",
      "found neither",
    );
    await shard(dir, "consolidated.safetensors", ["a"]);
    const e = assertWeightError(
      () => openCheckpoint(dir),
      dir,
      undefined,
      "found consolidated.safetensors",
    );
    assert.ok(
      e.message.includes(`open the file directly: ${dir}/consolidated.safetensors`),
      e.message,
    );
    assertWeightError(
      () => openCheckpoint(`${dir}/nope`),
      `${dir}/nope`,
      undefined,
      "checkpoint not found",
    );
  }));
