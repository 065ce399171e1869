// Malformed sharded checkpoints: the index, its shards and the directory layout.
import assert from "node:assert/strict";
import { INDEX_FILE_NAME, openCheckpoint } from "./safetensors.ts";
import { writeSafetensors, writeShardedCheckpoint } from "./safetensors_writer.ts";
import { WeightFileError } from "../base/errors.ts";
import { assertWeightError, KINDS, rawFile, withTempDir } from "./safetensors_test_util.ts";

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

Deno.test("checkIntact names the truncated shard and the tensor asked for; other shards pass", async () => {
  await withTempDir(async (dir) => {
    const t = (name: string) => ({
      name,
      dtype: "f32",
      shape: [256],
      data: new Float32Array(256).fill(1),
    });
    const { files } = await writeShardedCheckpoint(dir, [t("a"), t("b"), t("c")], {
      maxShardBytes: 2048,
    });
    assert.equal(files.length, 2);
    for (const mode of KINDS) {
      const store = openCheckpoint(dir, { mode });
      try {
        store.checkIntact();
        await Deno.truncate(files[1], 100);
        store.checkIntact(["a", "b"]); // both in the first shard
        assert.throws(
          () => store.checkIntact(["a", "c"]),
          (e) =>
            e instanceof WeightFileError && e.file === files[1] && e.tensor === "c" &&
            /shrank from \d+ to 100 bytes/.test(e.message),
        );
        assert.throws(() => store.checkIntact(), (e) => e instanceof WeightFileError);
      } finally {
        store.close();
      }
      await writeShardedCheckpoint(dir, [t("a"), t("b"), t("c")], { maxShardBytes: 2048 });
    }
  });
});
