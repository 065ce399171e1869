import assert from "node:assert/strict";
import { WeightFileError } from "../base/errors.ts";
import {
  INDEX_FILE_NAME,
  openCheckpoint,
  openSafetensors,
  SINGLE_FILE_NAME,
} from "./safetensors.ts";
import { writeSafetensors, writeShardedCheckpoint } from "./safetensors_writer.ts";
import {
  assertEquals,
  assertRejects,
  assertThrows,
  assertWeightError,
  bothModes,
  checkStore,
  KINDS,
  spec,
  SPECS,
  toWrite,
  withTempDir,
} from "./safetensors_test_util.ts";

// ---------------------------------------------------------------------------------------------
// round trips (reading what the writer wrote)
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

Deno.test("resident: the page-cache share of tensors' bytes (mmap), null when reading", () =>
  withTempDir(async (dir) => {
    const path = `${dir}/m.safetensors`;
    await writeSafetensors(path, SPECS.map(toWrite));
    // Just written: in the page cache.
    const st = openSafetensors(path, { mode: "mmap" });
    try {
      assertEquals(st.resident(), 1);
      assertEquals(st.resident(["norm.weight"]), 1);
      assertEquals(st.resident([]), null);
      assert.throws(() => st.resident(["nope"]), WeightFileError);
    } finally {
      st.close();
    }
    const rd = openSafetensors(path, { mode: "read" });
    try {
      assertEquals(rd.resident(), null);
    } finally {
      rd.close();
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

// ---------------------------------------------------------------------------------------------
// the store: missing tensors, use after close
// ---------------------------------------------------------------------------------------------

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

Deno.test("advise: dontneed drops the mapping of tensors, whose bytes read back unchanged", () =>
  withTempDir(async (dir) => {
    const path = `${dir}/model.safetensors`;
    await writeSafetensors(path, SPECS.map(toWrite));
    const mapped = openSafetensors(path, { mode: "mmap" });
    const read = openSafetensors(path, { mode: "read" });
    try {
      const names = mapped.names();
      const before = names.map((n) => mapped.get(n).bytes().slice());
      assertEquals(mapped.advise("dontneed"), true);
      assertEquals(mapped.advise("willneed", [names[0]]), true);
      names.forEach((n, i) => assertEquals(mapped.get(n).bytes(), before[i], n));
      assertEquals(read.advise("dontneed"), false); // read access: nothing to advise
      assertThrows(() => mapped.advise("dontneed", ["no.such.tensor"]), WeightFileError);
    } finally {
      mapped.close();
      read.close();
    }
  }));
