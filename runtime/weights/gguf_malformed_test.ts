// Malformed GGUF files: every check of the header, in both access modes, each with its typed
// error naming the file and the key or tensor. Files are built byte by byte (Raw).
import assert from "node:assert/strict";
import { openGguf } from "./gguf.ts";
import { ggufValue as v, writeGguf } from "./gguf_writer.ts";
import { assertBad, assertGgufError, Raw, rawGguf, withTempDir } from "./gguf_test_util.ts";
import { quantize } from "./quant.ts";

const F32 = 0, Q4_K = 12;

/** A valid header start with one u32 key-value pair and `tensors` tensor infos to follow. */
const withKv = (nTensors: number) => new Raw().head(nTensors, 1).kvU32("k", 1);

Deno.test("malformed: truncated anywhere before the end of the last tensor's data", () =>
  withTempDir(async (dir) => {
    const path = `${dir}/t.gguf`;
    const w = await writeGguf(path, {
      "general.architecture": v.string("llama"),
      "a.i64": v.i64(-3),
      "a.strings": v.strings(["x", "yz"]),
      "a.nested": v.array("array", [{ itemType: "f32", items: new Float32Array([1, 2]) }]),
      "a.bool": v.bool(true),
    }, [
      { name: "q", type: "Q4_K", shape: [1, 256], data: quantize(new Float32Array(256), "q4_k") },
      { name: "f", type: "F32", shape: [3], data: new Float32Array([1, 2, 3]) },
    ]);
    const full = await Deno.readFile(path);
    const last = w.tensors[1];
    const dataEnd = last.offset + last.byteLength;
    assert.ok(full.byteLength > dataEnd, "the last tensor is padded");
    let failures = 0;
    for (let n = full.byteLength; n >= 0; n--) {
      await Deno.truncate(path, n);
      for (const mode of ["mmap", "read"] as const) {
        if (n >= dataEnd) {
          openGguf(path, { mode }).close(); // only padding is missing
          continue;
        }
        const e = assertGgufError(
          () => openGguf(path, { mode }),
          path,
          whereOf(() => openGguf(path, { mode })),
        );
        assert.ok(/truncated|past the end|cannot fit/.test(e.message), e.message);
        failures++;
      }
    }
    assert.equal(failures, 2 * dataEnd);
  }));

/** The key / tensor a failing open names (to check it is a GgufError throughout). */
function whereOf(open: () => unknown): { key?: string; tensor?: string } {
  try {
    open();
  } catch (e) {
    const x = e as { key?: string; tensor?: string };
    return { key: x.key, tensor: x.tensor };
  }
  return {};
}

Deno.test("malformed: bad magic, version or endianness", () =>
  withTempDir(async (dir) => {
    const cases: [Raw, string][] = [
      [
        new Raw().head(0, 0, 3, "GGML"),
        'not a GGUF file: it starts with "GGML" (bytes 47 47 4d 4c)',
      ],
      [new Raw().bytes([0x7f, 0x45, 0x4c, 0x46]).fill(20), "not a GGUF file"],
      [new Raw().head(0, 0, 1), "unsupported GGUF version 1 (GGUF v1)"],
      [new Raw().head(0, 0, 0), "unsupported GGUF version 0"],
      [new Raw().head(0, 0, 4), "unsupported GGUF version 4; Pregate reads versions 2 and 3"],
      [new Raw().head(0, 0, 0x03000000), "(a big-endian file?)"],
    ];
    for (const [raw, msg] of cases) assertBad(await rawGguf(dir, raw.build()), {}, msg);
    assertBad(
      await rawGguf(dir, new Raw().bytes([0x47, 0x47]).build()),
      {},
      "truncated: the magic",
    );
  }));

Deno.test("malformed: absurd tensor / metadata counts", () =>
  withTempDir(async (dir) => {
    const cases: [Raw, string][] = [
      [new Raw().head(2n ** 62n, 0), `the tensor count is ${2n ** 62n}`],
      [new Raw().head(0, 2n ** 64n - 1n), "more than the file could hold"],
      [new Raw().head(1000, 0).fill(100), "claims 1000 tensors and 0 metadata entries"],
      [new Raw().head(0, 10).kvU32("k", 1), "cannot fit in the 17 bytes left"],
    ];
    for (const [raw, msg] of cases) assertBad(await rawGguf(dir, raw.build()), {}, msg);
  }));

Deno.test("malformed: absurd string lengths and array counts", () =>
  withTempDir(async (dir) => {
    let p = await rawGguf(dir, new Raw().head(0, 1).u64(2n ** 62n).fill(16).build());
    assertBad(p, {}, "the length of the key of metadata entry 0", `${2n ** 62n}`);
    p = await rawGguf(dir, new Raw().head(0, 1).u64(1000).bytes([107]).fill(16).build());
    assertBad(p, {}, "a string of 1000 bytes", "runs past the end");
    p = await rawGguf(dir, new Raw().head(0, 1).str("s").type("string").u64(1e12).fill(8).build());
    assertBad(p, { key: "s" }, "the value: a string of 1000000000000 bytes");
    p = await rawGguf(
      dir,
      new Raw().head(0, 1).str("a").type("array").type("u32").u64(2n ** 50n).build(),
    );
    assertBad(p, { key: "a" }, `an array of ${2n ** 50n} u32 items`, "cannot fit");
    p = await rawGguf(
      dir,
      new Raw().head(0, 1).str("a").type("array").type("string").u64(3).str("x").u64(2n ** 40n)
        .build(),
    );
    assertBad(p, { key: "a" }, "cannot fit"); // 3 strings need at least 24 bytes
    p = await rawGguf(
      dir,
      new Raw().head(0, 1).str("a").type("array").type("string").u64(2).str("x").u64(2n ** 40n)
        .fill(8).build(),
    );
    assertBad(p, { key: "a" }, "item 1: a string of 1099511627776 bytes");
  }));

Deno.test("malformed: unknown value types, bad bools, bad UTF-8, empty and duplicate keys", () =>
  withTempDir(async (dir) => {
    const cases: [Raw, { key?: string }, string][] = [
      [withKv(0).str("t").type(13).u32(0), { key: "t" }, "unknown value type 13"],
      [withKv(0).str("t").type(0xffffffff).u32(0), { key: "t" }, "unknown value type 4294967295"],
      [withKv(0).str("a").type("array").type(99).u64(0), { key: "a" }, "unknown value type 99"],
      [withKv(0).str("b").type("bool").u8(2), { key: "b" }, "a bool must be 0 or 1, found 2"],
      [
        withKv(0).str("b").type("array").type("bool").u64(2).u8(1).u8(7),
        { key: "b" },
        "an item: a bool must be 0 or 1, found 7",
      ],
      [withKv(0).str(new Uint8Array([0xff, 0xfe])).type("u8").u8(0), {}, "is not valid UTF-8"],
      [
        withKv(0).str("s").type("string").str(new Uint8Array([0xc3])),
        { key: "s" },
        "not valid UTF-8",
      ],
      [withKv(0).str("").type("u8").u8(0), {}, "metadata entry 1 has an empty key"],
      [withKv(0).kvU32("k", 2), { key: "k" }, "duplicate metadata key (entry 1)"],
    ];
    for (const [raw, where, msg] of cases) {
      // withKv declared one entry; the case adds a second.
      const bytes = raw.build();
      new DataView(bytes.buffer).setBigUint64(16, 2n, true);
      assertBad(await rawGguf(dir, bytes), where, msg);
    }
  }));

Deno.test("malformed: arrays nested too deeply", () =>
  withTempDir(async (dir) => {
    const raw = new Raw().head(0, 1).str("deep").type("array");
    for (let i = 0; i < 9; i++) raw.type("array").u64(1);
    raw.type("u8").u64(0);
    assertBad(await rawGguf(dir, raw.build()), { key: "deep" }, "nested deeper than 8 levels");
    const ok = new Raw().head(0, 1).str("deep").type("array");
    for (let i = 0; i < 7; i++) ok.type("array").u64(1);
    ok.type("string").u64(1).str("x");
    const g = openGguf(await rawGguf(dir, ok.build(), "ok.gguf"));
    assert.equal(g.entry("deep").type, "array");
    g.close();
  }));

Deno.test("malformed: general.alignment of the wrong type or not a power of two", () =>
  withTempDir(async (dir) => {
    const key = "general.alignment";
    const cases: [Raw, string][] = [
      [new Raw().head(0, 1).kvStr(key, "32"), "must be a u32, found string"],
      [new Raw().head(0, 1).str(key).type("u64").u64(32), "must be a u32, found u64"],
      [new Raw().head(0, 1).kvU32(key, 0), "must be a power of two, found 0"],
      [new Raw().head(0, 1).kvU32(key, 48), "must be a power of two, found 48"],
    ];
    for (const [raw, msg] of cases) assertBad(await rawGguf(dir, raw.build()), { key }, msg);
  }));

/** A file with `infos` (tensor infos written by `fill`) and `data` bytes after alignment. */
function tensorFile(n: number, fill: (r: Raw) => void, data = 64, alignment = 32): Uint8Array {
  const r = new Raw().head(n, 0);
  fill(r);
  return r.pad(alignment).fill(data, 1).build();
}

Deno.test("malformed: tensor infos (dimensions, types, block sizes, names)", () =>
  withTempDir(async (dir) => {
    const cases: [(r: Raw) => void, string | undefined, string][] = [
      [(r) => r.tensor("t", [1, 1, 1, 1, 1], F32, 0), "t", "5 dimensions, more than ggml's 4"],
      [(r) => r.tensor("t", [2 ** 30, 2 ** 30], F32, 0), "t", "has too many elements"],
      [(r) => r.tensor("t", [2n ** 63n as unknown as number], F32, 0), "t", "dimension 0 is"],
      [(r) => r.tensor("t", [4], 99, 0), "t", "unknown ggml tensor type 99"],
      [(r) => r.tensor("t", [4], 4, 0), "t", "unknown ggml tensor type 4"], // removed Q4_2
      [
        (r) => r.tensor("t", [128], Q4_K, 0),
        "t",
        "ne[0] = 128 values per row is not a whole number of Q4_K blocks of 256",
      ],
      [
        (r) => r.tensor("t", [4], F32, 16),
        "t",
        "data offset 16 is not a multiple of the alignment 32",
      ],
      [(r) => r.tensor("t", [4], F32, 2n ** 62n as unknown as number), "t", "data offset is"],
      [(r) => r.tensor("", [4], F32, 0), undefined, "tensor 0 has an empty name"],
      [
        (r) => r.str(new Uint8Array([0x80])).u32(1).u64(4).u32(F32).u64(0),
        undefined,
        "the name of tensor 0 (at byte 32) is not valid UTF-8",
      ],
    ];
    for (const [fill, tensor, msg] of cases) {
      assertBad(await rawGguf(dir, tensorFile(1, fill)), { tensor }, msg);
    }
    const dup = tensorFile(2, (r) => r.tensor("t", [4], F32, 0).tensor("t", [4], F32, 32));
    assertBad(await rawGguf(dir, dup), { tensor: "t" }, "duplicate tensor name (tensor 1)");
  }));

Deno.test("malformed: tensor data past the end, overlapping, or after a truncated header", () =>
  withTempDir(async (dir) => {
    // 4 f32 = 16 bytes; the data section has 64 bytes.
    let p = await rawGguf(dir, tensorFile(1, (r) => r.tensor("t", [4], F32, 64)));
    assertBad(
      p,
      { tensor: "t" },
      "data [128, 144) (offset 64 in the data section at 64)",
      "past the end",
    );
    p = await rawGguf(dir, tensorFile(1, (r) => r.tensor("t", [32], F32, 0)));
    assertBad(p, { tensor: "t" }, "data [64, 192)", "past the end of the file (128 bytes)");
    p = await rawGguf(
      dir,
      tensorFile(2, (r) => r.tensor("a", [16], F32, 0).tensor("b", [4], F32, 32)),
    );
    assertBad(p, { tensor: "b" }, "data [128, 144) overlaps tensor a [96, 160)");
    p = await rawGguf(
      dir,
      tensorFile(2, (r) => r.tensor("a", [4], F32, 32).tensor("b", [16], F32, 0), 128),
    );
    assertBad(p, { tensor: "a" }, "overlaps tensor b"); // out of order is fine, overlap is not
    p = await rawGguf(
      dir,
      tensorFile(2, (r) => r.tensor("a", [4], F32, 32).tensor("b", [4], F32, 0)),
    );
    const g = openGguf(p); // out of order, not overlapping: readable
    assert.deepEqual(g.names(), ["a", "b"]);
    assert.equal(g.describe("a").offset - g.describe("b").offset, 32);
    g.close();
    // An empty tensor may sit at the very end; zero-length tensors never overlap.
    p = await rawGguf(
      dir,
      tensorFile(2, (r) => r.tensor("e", [0], F32, 64).tensor("z", [0, 3], F32, 0)),
    );
    const e = openGguf(p);
    assert.equal(e.tensor("e").bytes().byteLength, 0);
    e.close();
  }));

Deno.test("malformed: random byte corruption opens or throws a GgufError, never anything else", () =>
  withTempDir(async (dir) => {
    const path = `${dir}/f.gguf`;
    await writeGguf(path, {
      "general.architecture": v.string("qwen3moe"),
      "t.strings": v.strings(["a", "bc", "def"]),
      "t.nested": v.array("array", [{ itemType: "i32", items: new Int32Array([1, 2]) }]),
      "t.f": v.f32(1),
    }, [
      { name: "q", type: "Q8_0", shape: [2, 32], data: quantize(new Float32Array(64), "q8_0") },
      { name: "f", type: "F16", shape: [4], data: new Uint16Array(4) },
    ]);
    const good = await Deno.readFile(path);
    let s = 12345;
    const rand = (n: number) => {
      s = (Math.imul(s, 1103515245) + 12345) >>> 0;
      return s % n;
    };
    let opened = 0, rejected = 0;
    for (let i = 0; i < 400; i++) {
      const bad = good.slice();
      for (let k = 0; k <= rand(3); k++) bad[rand(good.byteLength)] = rand(256);
      await Deno.writeFile(path, bad);
      for (const mode of ["mmap", "read"] as const) {
        try {
          openGguf(path, { mode }).close();
          opened++;
        } catch (e) {
          assert.equal((e as Error).name, "GgufError", String(e));
          rejected++;
        }
      }
    }
    assert.ok(opened > 0 && rejected > 0, `${opened} opened, ${rejected} rejected`);
  }));
