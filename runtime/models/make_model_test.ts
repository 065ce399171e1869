import assert from "node:assert/strict";
import { ArgumentError, FileWriteError } from "../base/errors.ts";
import { openCheckpoint, type TensorStore } from "../weights/safetensors.ts";
import { loadConfig, type ModelConfig } from "./config.ts";
import { makeModel, type ModelDims, removePartialFiles } from "./make_model.ts";
import { expectedTensors, layerNames, modelNames } from "./names.ts";
import {
  ARCHS,
  assertEquals,
  FIXTURES,
  make,
  reference,
  sameBytes,
  withTemp,
} from "./model_test_util.ts";

/** The fixture's dimensions as overrides (so makeModel writes the same model shape). */
function fixtureDims(arch: string): Partial<ModelDims> {
  const c = JSON.parse(Deno.readTextFileSync(`${FIXTURES}${arch}/config.json`));
  const d: Partial<ModelDims> = {
    hidden: c.hidden_size,
    layers: c.num_hidden_layers,
    heads: c.num_attention_heads,
    kvHeads: c.num_key_value_heads,
    experts: c.num_local_experts ?? c.num_experts,
    topK: c.num_experts_per_tok,
    vocab: c.vocab_size,
    ropeTheta: c.rope_parameters.rope_theta,
    rmsEps: c.rms_norm_eps,
    maxPositions: c.max_position_embeddings,
    tieEmbeddings: c.tie_word_embeddings,
  };
  if (arch === "mixtral" || arch === "olmoe") d.inter = c.intermediate_size;
  else {
    Object.assign(d, {
      inter: c.moe_intermediate_size,
      denseInter: c.intermediate_size,
      sparseStep: c.decoder_sparse_step,
      mlpOnlyLayers: c.mlp_only_layers,
    });
  }
  if (arch !== "mixtral") d.normTopK = c.norm_topk_prob;
  if (arch === "qwen2_moe") d.sharedInter = c.shared_expert_intermediate_size;
  if (arch === "qwen3_moe") d.headDim = c.head_dim;
  return d;
}

function checkTensors(store: TensorStore, cfg: ModelConfig, dtype: string): void {
  const expected = expectedTensors(cfg);
  assertEquals(store.names().sort(), expected.map((t) => t.name).sort());
  for (const t of expected) {
    const e = store.get(t.name);
    assertEquals(e.shape, [...t.shape], t.name);
    assertEquals(e.dtype, dtype, t.name);
  }
  // names.ts agrees with expectedTensors on every role
  const m = modelNames(cfg);
  assert(store.has(m.embed) && store.has(m.finalNorm) && store.has(m.lmHead));
  for (let i = 0; i < cfg.layers.length; i++) {
    const n = layerNames(cfg, i);
    for (const name of [n.inputNorm, n.postNorm, n.q, n.k, n.v, n.o]) assert(store.has(name), name);
    if (n.ffn.kind === "moe") {
      const ffn = cfg.layers[i].ffn;
      assert(ffn.kind === "moe");
      for (let e = 0; e < ffn.experts; e++) {
        const x = n.ffn.expert(e);
        assertEquals(store.get(x.gate).shape, [ffn.inter, cfg.hidden]);
        if (ffn.act === "relu") assertEquals(x.up, undefined); // wi and wo only
        else assertEquals(store.get(x.up!).shape, [ffn.inter, cfg.hidden]);
        assertEquals(store.get(x.down).shape, [cfg.hidden, ffn.inter]);
      }
    }
  }
}

Deno.test("tiny model of every arch and dtype: exactly the expected tensors, shapes, dtype and layer pattern", async () => {
  const patterns: Record<string, string[]> = {
    mixtral: ["moe", "moe"],
    qwen3_moe: ["moe", "dense", "moe"],
    olmoe: ["moe", "moe"],
    qwen2_moe: ["dense", "moe", "dense", "moe"],
  };
  for (const arch of ARCHS) {
    for (const dtype of ["f32", "f16", "bf16"] as const) {
      await withTemp(async (dir) => {
        const made = await make({ arch, dtype, seed: 5 }, dir);
        assertEquals(made.files, [`${dir}/model.safetensors`]);
        assertEquals(made.index, null);
        const cfg = await loadConfig(dir);
        assertEquals(cfg.arch, arch);
        assertEquals(cfg.layers.map((l) => l.ffn.kind), patterns[arch]);
        assertEquals(cfg, made.config);
        const store = openCheckpoint(dir, { mode: "read" });
        try {
          checkTensors(store, cfg, dtype);
          assertEquals(store.metadata.format, "pt");
          // the tensors are in the planned order (each layer's experts last, gate/up/down together)
          assertEquals(store.names(), made.tensors.map((t) => t.name));
        } finally {
          store.close();
        }
        const entries = (await Array.fromAsync(Deno.readDir(dir))).map((e) => e.name).sort();
        assertEquals(entries, ["config.json", "generation_config.json", "model.safetensors"]);
      });
    }
  }
});

Deno.test("with the HF fixtures' dimensions: config.json, generation_config.json and tensors match HF 5.17's", async () => {
  for (const arch of ARCHS) {
    await withTemp(async (dir) => {
      await make({ arch, overrides: fixtureDims(arch), configStyle: "hf5" }, dir);
      const want = await Deno.readTextFile(`${FIXTURES}${arch}/config.json`);
      assertEquals(await Deno.readTextFile(`${dir}/config.json`), want, arch);
      assertEquals(
        await Deno.readTextFile(`${dir}/generation_config.json`),
        await Deno.readTextFile(`${FIXTURES}${arch}/generation_config.json`),
      );
      const ref = reference(arch);
      const store = openCheckpoint(dir, { mode: "read" });
      try {
        assertEquals(store.names().sort(), [...(ref.tensor_names as string[])].sort());
        for (const t of ref.tensors as { name: string; shape: number[]; dtype: string }[]) {
          const e = store.describe(t.name);
          assertEquals([e.shape, e.fileDType], [t.shape, t.dtype], t.name);
        }
      } finally {
        store.close();
      }
    });
  }
});

Deno.test("sharding: a small maxShardBytes writes shards and an index that openCheckpoint reads", async () => {
  await withTemp(async (dir) => {
    const made = await make(
      { arch: "qwen3_moe", dtype: "bf16", seed: 1, maxShardBytes: 100_000 },
      dir,
    );
    assert(made.files.length > 5, `${made.files.length} shards`);
    assertEquals(made.index, `${dir}/model.safetensors.index.json`);
    const n = made.files.length;
    const pad = (x: number) => String(x).padStart(5, "0");
    assertEquals(made.files[0], `${dir}/model-00001-of-${pad(n)}.safetensors`);
    for (const f of made.files) assert((await Deno.stat(f)).size <= 100_000 + 20_000, f);
    const index = JSON.parse(await Deno.readTextFile(made.index!));
    assertEquals(index.metadata.total_size, made.totalBytes);
    assertEquals(Object.keys(index.weight_map).length, made.tensors.length);
    const store = openCheckpoint(dir, { mode: "read" });
    try {
      checkTensors(store, made.config, "bf16");
      assertEquals(store.files.length, n);
    } finally {
      store.close();
    }
    // the same bytes as an unsharded model
    await withTemp(async (dir2) => {
      await make({ arch: "qwen3_moe", dtype: "bf16", seed: 1 }, dir2);
      const a = openCheckpoint(dir, { mode: "read" });
      const b = openCheckpoint(dir2, { mode: "read" });
      try {
        for (const name of b.names()) assert(sameBytes(a.get(name).bytes(), b.get(name).bytes()));
      } finally {
        a.close();
        b.close();
      }
    });
  });
});

Deno.test("onProgress: monotonic, ends at (total, total)", async () => {
  await withTemp(async (dir) => {
    const calls: [number, number][] = [];
    const made = await make({ arch: "olmoe", onProgress: (d, t) => calls.push([d, t]) }, dir);
    assert(calls.length > 10);
    for (let i = 1; i < calls.length; i++) assert(calls[i][0] >= calls[i - 1][0]);
    assert(calls.every(([_, t]) => t === made.totalBytes));
    assertEquals(calls[calls.length - 1], [made.totalBytes, made.totalBytes]);
    assertEquals(made.totalBytes, made.tensorBytes);
  });
});

Deno.test("output directory: refuses a non-empty one, force overwrites the old checkpoint files only", async () => {
  await withTemp(async (dir) => {
    await make({ arch: "mixtral", maxShardBytes: 200_000 }, dir);
    const shards = (await Array.fromAsync(Deno.readDir(dir))).filter((e) =>
      e.name.startsWith("model-")
    ).length;
    assert(shards > 3);
    const err = await make({ arch: "mixtral" }, dir).catch((e) => e);
    assert(err instanceof ArgumentError, String(err));
    assertEquals(err.argument, "out");
    assert(err.message.includes("not empty") && err.message.includes("config.json"), err.message);
    assert(err.message.includes("force"));
    await Deno.writeTextFile(`${dir}/README.md`, "keep me");
    await make({ arch: "mixtral", force: true }, dir);
    const entries = (await Array.fromAsync(Deno.readDir(dir))).map((e) => e.name).sort();
    assertEquals(entries, [
      "README.md",
      "config.json",
      "generation_config.json",
      "model.safetensors",
    ]);
    const file = `${dir}/README.md`;
    const e2 = await makeModel({ arch: "mixtral", out: file }).catch((e) => e);
    assert(e2 instanceof ArgumentError && e2.message.includes("not a directory"), String(e2));
  });
});

Deno.test("makeModel rejects bad maxShardBytes before writing anything", async () => {
  await withTemp(async (dir) => {
    const out = `${dir}/m`;
    const e = await makeModel({ arch: "mixtral", out, maxShardBytes: 0 }).catch((e) => e);
    assert(e instanceof ArgumentError && e.argument === "maxShardBytes", String(e));
    let exists = true;
    try {
      await Deno.stat(out);
    } catch {
      exists = false;
    }
    assertEquals(exists, false);
  });
});

Deno.test("an interrupted run's directory (*.partial, no config.json) is replaced without force", async () => {
  await withTemp(async (dir) => {
    // What a killed make-model leaves: a finished shard, a half-written one, no config.json.
    await Deno.writeFile(`${dir}/model-00001-of-00002.safetensors`, new Uint8Array(64));
    await Deno.writeFile(`${dir}/model-00002-of-00002.safetensors.partial`, new Uint8Array(99));
    await make({ arch: "mixtral" }, dir);
    const entries = (await Array.fromAsync(Deno.readDir(dir))).map((e) => e.name).sort();
    assertEquals(entries, ["config.json", "generation_config.json", "model.safetensors"]);
    // With anything else in the directory, or a config.json, it is not taken for one.
    await Deno.writeFile(`${dir}/model.safetensors.partial`, new Uint8Array(9));
    const withConfig = await make({ arch: "mixtral" }, dir).catch((e) => e);
    assert(
      withConfig instanceof ArgumentError && withConfig.argument === "out",
      String(withConfig),
    );
    await Deno.remove(`${dir}/config.json`);
    await Deno.writeTextFile(`${dir}/notes.txt`, "mine");
    const withNotes = await make({ arch: "mixtral" }, dir).catch((e) => e);
    assert(withNotes instanceof ArgumentError && withNotes.argument === "out", String(withNotes));
    removePartialFiles(dir);
    const left = (await Array.fromAsync(Deno.readDir(dir))).map((e) => e.name).sort();
    assertEquals(left, ["generation_config.json", "model.safetensors", "notes.txt"]);
  });
});

Deno.test("an output path through a regular file names the path (as root, a stand-in for a read-only directory)", async () => {
  await withTemp(async (dir) => {
    await Deno.writeTextFile(`${dir}/file.txt`, "x");
    const e = await makeModel({ arch: "mixtral", out: `${dir}/file.txt/m` }).catch((e) => e);
    assert(e instanceof ArgumentError && e.argument === "out", String(e));
    assert(e.message.includes(`${dir}/file.txt/m`), e.message);
  });
});

Deno.test({
  name: "a directory nobody may create (under /sys, root included) is a FileWriteError naming it",
  ignore: Deno.build.os !== "linux",
  fn: async () => {
    const out = `/sys/pregate-make-model-${Date.now()}/m`;
    const e = await makeModel({ arch: "mixtral", out }).catch((e) => e);
    assert(e instanceof FileWriteError, String(e));
    assertEquals(e.file, out);
    assert(/cannot write: (operation not permitted|permission denied)/.test(e.message), e.message);
  },
});

Deno.test({
  name: "a read-only output directory is a FileWriteError naming the file (not as root)",
  ignore: Deno.build.os === "windows" || Deno.uid() === 0,
  fn: async () => {
    await withTemp(async (dir) => {
      await Deno.chmod(dir, 0o555);
      try {
        const e = await makeModel({ arch: "mixtral", out: dir }).catch((e) => e);
        assert(e instanceof FileWriteError, String(e));
        assertEquals(e.file, `${dir}/model.safetensors.partial`);
        const nested = await makeModel({ arch: "mixtral", out: `${dir}/sub` }).catch((e) => e);
        assert(nested instanceof FileWriteError && nested.file === `${dir}/sub`, String(nested));
      } finally {
        await Deno.chmod(dir, 0o755);
      }
    });
  },
});
