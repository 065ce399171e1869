import assert from "node:assert/strict";
import { ConfigError, WeightFileError } from "../base/errors.ts";
import { openCheckpoint } from "../weights/safetensors.ts";
import { pokeTensor } from "../weights/safetensors_test_util.ts";
import { type TensorToWrite, writeShardedCheckpoint } from "../weights/safetensors_writer.ts";
import { loadConfig, parseConfig } from "./config.ts";
import {
  countParams,
  expectedTensors,
  formatBytes,
  formatInspect,
  inspectModel,
  type InspectReport,
  unusedTensors,
} from "./inspect.ts";
import { pregateNames } from "./names.ts";
import { makeModel } from "./make_model.ts";
import { ARCHS, assertEquals, FIXTURES, withTemp } from "./model_test_util.ts";

async function rejects<E extends Error>(
  p: Promise<unknown>,
  cls: new (...a: never[]) => E,
): Promise<E> {
  try {
    await p;
  } catch (e) {
    if (e instanceof cls) return e;
    throw e;
  }
  throw new Error(`expected a ${cls.name}, nothing was thrown`);
}

const prod = (s: readonly number[]) => s.reduce((a, b) => a * b, 1);

Deno.test("tiny Mixtral: every count equals the hand computation", async () => {
  await withTemp(async (dir) => {
    await makeModel({ arch: "mixtral", out: dir, dtype: "bf16" });
    const r = await inspectModel(dir);
    // hidden 64, 2 layers, 4 heads / 2 kv heads of 16, expert inter 96, 8 experts top-2, vocab 256
    const embed = 256 * 64;
    const lmHead = 256 * 64;
    const finalNorm = 64;
    const norms = 2 * 64;
    const attn = 64 * 64 + 32 * 64 + 32 * 64 + 64 * 64; // q, k, v, o
    const router = 8 * 64;
    const expert = 3 * 96 * 64; // gate, up, down
    const perLayerDense = norms + attn + router;
    const experts = 2 * 8 * expert;
    const dense = embed + lmHead + finalNorm + 2 * perLayerDense;
    assertEquals(expert, 18_432);
    assertEquals(dense, 58_688);
    assertEquals(experts, 294_912);
    assertEquals(r.params, {
      total: dense + experts, // 353,600
      dense,
      experts,
      embedding: embed + lmHead,
      activePerToken: dense + 2 * 2 * expert, // 132,416
      perExpert: expert,
    });
    assertEquals(r.params.total, 353_600);
    assertEquals(r.params.activePerToken, 132_416);
    assertEquals(r.expertBytes, {
      perExpert: expert * 2,
      dtype: "BF16",
      byDType: { f32: expert * 4, f16: expert * 2, bf16: expert * 2 },
      total: experts * 2,
      count: 16,
    });
    assertEquals(r.arch, "mixtral");
    assertEquals(r.layers, ["moe", "moe"]);
    assertEquals(r.tensors, 1 + 1 + 1 + 2 * (2 + 4 + 1 + 8 * 3)); // 65
    assertEquals(r.expectedTensors, 65);
    assertEquals(r.dtypes, {
      BF16: { tensors: 65, params: dense + experts, bytes: 2 * (dense + experts) },
    });
    assertEquals(r.tensorBytes, 2 * 353_600);
    assertEquals(r.files.map((f) => f.name), [
      "config.json",
      "generation_config.json",
      "model.safetensors",
    ]);
    for (const f of r.files) assertEquals(f.bytes, (await Deno.stat(f.path)).size);
    assertEquals(r.checkpointBytes, r.files.reduce((a, f) => a + f.bytes, 0));
    assertEquals(r.warnings, []);
    assertEquals(r.unusedTensors, []);
    assertEquals(r.config, {
      hidden: 64,
      layers: 2,
      heads: 4,
      kvHeads: 2,
      headDim: 16,
      vocabSize: 256,
      experts: 8,
      topK: 2,
      expertInter: 96,
      denseInter: 0,
      sharedInter: 0,
      renormalize: true,
      tieEmbeddings: false,
      ropeTheta: 1e6,
      rmsEps: 1e-5,
      qkvBias: false,
      qkNorm: "none",
      clipQkv: 0,
      maxPositions: 256,
    });
  });
});

Deno.test("tiny Qwen2-MoE: dense layers, shared expert and biases counted as dense", async () => {
  await withTemp(async (dir) => {
    await makeModel({ arch: "qwen2_moe", out: dir });
    const r = await inspectModel(dir);
    // hidden 64, 4 layers (0, 2 dense inter 96; 1, 3 MoE: 8 experts of 80 top-2 + shared 128)
    const attn = 64 * 64 + 32 * 64 + 32 * 64 + 64 * 64 + (64 + 32 + 32); // + q/k/v biases
    const norms = 2 * 64;
    const denseMlp = 3 * 96 * 64;
    const shared = 3 * 128 * 64 + 64; // + shared_expert_gate [1, 64]
    const router = 8 * 64;
    const expert = 3 * 80 * 64;
    const dense = 2 * 256 * 64 + 64 + 4 * (attn + norms) + 2 * denseMlp + 2 * (shared + router);
    const experts = 2 * 8 * expert;
    assertEquals(r.params.dense, dense);
    assertEquals(r.params.experts, experts);
    assertEquals(r.params.total, 415_936);
    assertEquals(r.params.activePerToken, dense + 2 * 2 * expert);
    assertEquals(r.layers, ["dense", "moe", "dense", "moe"]);
    assertEquals([r.config.denseInter, r.config.sharedInter, r.config.expertInter], [96, 128, 80]);
    assertEquals([r.config.qkvBias, r.config.renormalize], [true, false]);
    assertEquals(r.expertBytes?.count, 16);
  });
});

Deno.test("HF fixtures: inspect agrees with reference.json (tensors, params, files, layers)", async () => {
  for (const arch of ARCHS) {
    const dir = `${FIXTURES}${arch}`;
    const ref = JSON.parse(await Deno.readTextFile(`${dir}/reference.json`));
    const r = await inspectModel(dir);
    assertEquals(r.arch, arch);
    assertEquals(r.layers, ref.layer_kinds);
    assertEquals(r.config.tieEmbeddings, ref.tied_embeddings);
    assertEquals(r.config.ropeTheta, ref.rope.theta);
    assertEquals(r.config.headDim, ref.rope.head_dim);
    assertEquals(r.tensors, ref.tensor_names.length);
    assertEquals(r.expectedTensors, ref.tensor_names.length);
    assertEquals(r.warnings, [], arch);
    // memory_params: what HF holds in memory (experts fused per layer); same totals
    const mem = ref.memory_params as { name: string; shape: number[] }[];
    assertEquals(r.params.total, mem.reduce((a, p) => a + prod(p.shape), 0), arch);
    const memExperts = mem.filter((p) => p.name.includes(".experts.")).reduce(
      (a, p) => a + prod(p.shape),
      0,
    );
    assertEquals(r.params.experts, memExperts, arch);
    // tensors as saved: every one F32, bytes = 4 x params
    const saved = ref.tensors as { name: string; shape: number[]; dtype: string }[];
    assertEquals(Object.keys(r.dtypes), ["F32"]);
    assertEquals(r.dtypes.F32.params, saved.reduce((a, t) => a + prod(t.shape), 0));
    assertEquals(r.tensorBytes, 4 * r.dtypes.F32.params);
    // files: config + generation config + the safetensors files = checkpoint_bytes
    assertEquals(
      r.files.filter((f) => f.name.endsWith(".safetensors")).map((f) => f.name),
      ref.safetensors_files,
    );
    assertEquals(r.checkpointBytes, ref.checkpoint_bytes, arch);
    const moeLayers = ref.layer_kinds.filter((k: string) => k === "moe").length;
    const cfg = await loadConfig(dir);
    const moe = cfg.layers.find((l) => l.ffn.kind === "moe")!.ffn;
    assert(moe.kind === "moe");
    assertEquals(r.expertBytes?.count, moeLayers * moe.experts);
    assertEquals(r.expertBytes?.perExpert, 4 * 3 * moe.inter * cfg.hidden);
    assertEquals(r.expertBytes?.total, 4 * r.params.experts);
    assertEquals(r.config.renormalize, ref.router_normalise_topk);
    const text = formatInspect(r);
    assert(text.includes(`(${arch})`) && text.includes("active per token"), text);
  }
});

Deno.test("sharded checkpoints: the index and every shard are listed", async () => {
  await withTemp(async (dir) => {
    const made = await makeModel({ arch: "olmoe", out: dir, dtype: "f16", maxShardBytes: 150_000 });
    const r = await inspectModel(dir);
    const names = r.files.map((f) => f.name);
    assertEquals(names.slice(0, 3), [
      "config.json",
      "generation_config.json",
      "model.safetensors.index.json",
    ]);
    assertEquals(names.length, 3 + made.files.length);
    assert(names.slice(3).every((n) => /^model-\d{5}-of-\d{5}\.safetensors$/.test(n)));
    assertEquals(r.tensorBytes, made.totalBytes);
    assertEquals(r.dtypes.F16.bytes, made.totalBytes);
    assert(formatInspect(r).includes("model.safetensors.index.json"));
  });
});

/** Rewrites the tiny model in `src` into `dst` with `edit` applied to its tensor list. */
async function rewrite(
  src: string,
  dst: string,
  edit: (tensors: TensorToWrite[]) => TensorToWrite[],
): Promise<void> {
  const store = openCheckpoint(src, { mode: "read" });
  try {
    const tensors: TensorToWrite[] = store.names().map((name) => {
      const t = store.get(name);
      return { name, dtype: t.dtype, shape: t.shape, data: t.bytes().slice() };
    });
    await writeShardedCheckpoint(dst, edit(tensors));
  } finally {
    store.close();
  }
  await Deno.copyFile(`${src}/config.json`, `${dst}/config.json`);
}

Deno.test("errors: missing tensor, wrong shape, unsupported dtype -> WeightFileError naming the tensor", async () => {
  await withTemp(async (tmp) => {
    const src = `${tmp}/src`;
    await makeModel({ arch: "qwen3_moe", out: src });
    const expert = "model.layers.2.mlp.experts.5.down_proj.weight";

    await rewrite(src, `${tmp}/missing`, (ts) => ts.filter((t) => t.name !== expert));
    let e = await rejects(inspectModel(`${tmp}/missing`), WeightFileError);
    assertEquals(e.tensor, expert);
    assert(
      e.message.includes(expert) && e.message.includes("1 of them is not in the checkpoint"),
      e.message,
    );
    assert(e.message.includes("[64, 96]"), e.message);

    await rewrite(src, `${tmp}/missing2`, (ts) => ts.filter((t) => !t.name.includes("k_norm")));
    e = await rejects(inspectModel(`${tmp}/missing2`), WeightFileError);
    assertEquals(e.tensor, "model.layers.0.self_attn.k_norm.weight");
    assert(e.message.includes("3 of them are not"), e.message);

    const q = "model.layers.1.self_attn.q_proj.weight";
    await rewrite(
      src,
      `${tmp}/shape`,
      (ts) =>
        ts.map((t) =>
          t.name === q ? { ...t, shape: [64, 128], data: new Float32Array(64 * 128) } : t
        ),
    );
    e = await rejects(inspectModel(`${tmp}/shape`), WeightFileError);
    assertEquals(e.tensor, q);
    assert(
      e.message.includes("needs [128, 64]") && e.message.includes("file has [64, 128]"),
      e.message,
    );
    assert(e.message.includes("attn of layer 1"), e.message);
    assert(e.file.endsWith("model.safetensors"), e.file);

    const norm = "model.norm.weight";
    await rewrite(
      src,
      `${tmp}/dtype`,
      (ts) => ts.map((t) => t.name === norm ? { ...t, dtype: "I32", data: new Int32Array(64) } : t),
    );
    e = await rejects(inspectModel(`${tmp}/dtype`), WeightFileError);
    assertEquals(e.tensor, norm);
    assert(e.message.includes("unsupported dtype I32"), e.message);

    // a config that does not match the weights (another expert count)
    await rewrite(src, `${tmp}/cfg`, (ts) => ts);
    const raw = JSON.parse(await Deno.readTextFile(`${src}/config.json`));
    await Deno.writeTextFile(`${tmp}/cfg/config.json`, JSON.stringify({ ...raw, num_experts: 16 }));
    e = await rejects(inspectModel(`${tmp}/cfg`), WeightFileError);
    assertEquals(e.tensor, "model.layers.0.mlp.gate.weight");
    assert(e.message.includes("needs [16, 64]"), e.message);

    // no config.json / no weights
    await rejects(inspectModel(`${tmp}/nowhere`), ConfigError);
    await Deno.mkdir(`${tmp}/noweights`);
    await Deno.copyFile(`${src}/config.json`, `${tmp}/noweights/config.json`);
    await rejects(inspectModel(`${tmp}/noweights`), WeightFileError);
  });
});

Deno.test("unused tensors and mixed dtypes are warnings, not errors", async () => {
  await withTemp(async (tmp) => {
    const src = `${tmp}/src`;
    await makeModel({ arch: "qwen3_moe", out: src, dtype: "bf16" });
    await rewrite(src, `${tmp}/extra`, (ts) => [
      ...ts,
      { name: "model.rotary_emb.inv_freq", dtype: "f32", shape: [16], data: new Float32Array(16) },
      // tied model: an lm_head.weight in the file is not used
      { name: "lm_head.weight", dtype: "bf16", shape: [256, 64], data: new Uint16Array(256 * 64) },
    ]);
    const r: InspectReport = await inspectModel(`${tmp}/extra`, { maxListed: 1 });
    assertEquals(r.unusedTensors, ["model.rotary_emb.inv_freq", "lm_head.weight"]);
    assertEquals(r.tensors, r.expectedTensors + 2);
    assertEquals(r.warnings.length, 2);
    assert(
      r.warnings[0].includes("2 tensor(s)") && r.warnings[0].includes("inv_freq, ..."),
      r.warnings[0],
    );
    assert(r.warnings[1].includes("2 dtypes (BF16, F32)"), r.warnings[1]);
    assertEquals(r.dtypes.F32, { tensors: 1, params: 16, bytes: 64 });
    const text = formatInspect(r);
    assert(text.includes("warning  2 tensor(s)"), text);
  });
});

Deno.test("expectedTensors: HF names, each layer's experts contiguous, gate/up/down together", () => {
  const cfg = parseConfig(JSON.parse(Deno.readTextFileSync(`${FIXTURES}qwen2_moe/config.json`)));
  const ts = expectedTensors(cfg);
  const ref = JSON.parse(Deno.readTextFileSync(`${FIXTURES}qwen2_moe/reference.json`));
  assertEquals(ts.map((t) => t.name).sort(), [...ref.tensor_names].sort());
  assertEquals(new Set(ts.map((t) => t.name)).size, ts.length);
  for (let l = 0; l < cfg.layers.length; l++) {
    const idx = ts.map((t, i) => [t, i] as const).filter(([t]) =>
      t.layer === l && t.role === "expert"
    );
    if (cfg.layers[l].ffn.kind === "dense") {
      assertEquals(idx.length, 0);
      continue;
    }
    assertEquals(idx.length, 8 * 3);
    assertEquals(idx[idx.length - 1][1] - idx[0][1], idx.length - 1); // contiguous
    for (let e = 0; e < 8; e++) {
      assertEquals(idx.slice(3 * e, 3 * e + 3).map(([t]) => [t.expert, t.projection]), [
        [e, "gate"],
        [e, "up"],
        [e, "down"],
      ]);
    }
  }
  assertEquals(ts[0].role, "embed");
  assertEquals(ts[ts.length - 1].role, "lm_head");
  const tied = parseConfig(JSON.parse(Deno.readTextFileSync(`${FIXTURES}qwen3_moe/config.json`)));
  assertEquals(expectedTensors(tied).filter((t) => t.role === "lm_head").length, 0);
  assertEquals(countParams(tied).embedding, 256 * 64);
});

Deno.test("formatBytes and formatInspect", async () => {
  assertEquals(formatBytes(512), "512 B");
  assertEquals(formatBytes(64 * 1024), "64.0 KiB");
  assertEquals(formatBytes(1.5 * 2 ** 30), "1.50 GiB");
  assertEquals(formatBytes(200 * 2 ** 20), "200 MiB");
  const text = formatInspect(await inspectModel(`${FIXTURES}qwen2_moe`));
  const lines = text.split("\n");
  assertEquals(lines[0], `model    ${FIXTURES}qwen2_moe (qwen2_moe)`);
  assert(lines.includes("layers   dense, moe, dense, moe"), text);
  assert(text.includes("415,936 total"), text);
  assert(text.includes("shared expert inter 128"), text);
  assert(text.includes("qkv bias"), text);
  assert(!text.includes("warning"), text);
});

Deno.test("check: every tensor holding NaN or Inf is named, with counts and the first element", async () => {
  await withTemp(async (dir) => {
    await makeModel({ arch: "mixtral", out: dir, dtype: "bf16" });
    const clean = await inspectModel(dir, { check: true });
    assertEquals(clean.nonFinite, []);
    assertEquals(clean.warnings, []);
    assertEquals("nonFinite" in (await inspectModel(dir)), false); // only scanned when asked
    const expert = "model.layers.1.block_sparse_moe.experts.6.w2.weight";
    await pokeTensor(dir, "lm_head.weight", [5 * 64 + 3], NaN);
    await pokeTensor(dir, expert, [100, 7], Infinity);
    await pokeTensor(dir, "model.embed_tokens.weight", [0], -Infinity);
    const r = await inspectModel(dir, { check: true });
    assertEquals(
      r.nonFinite!.map((t) => [t.tensor, t.nan, t.inf, t.firstIndex]),
      [["model.embed_tokens.weight", 0, 1, 0], [expert, 0, 2, 7], ["lm_head.weight", 1, 0, 323]],
    );
    assertEquals(r.warnings.length, 1);
    assert(r.warnings[0].startsWith("3 tensor(s) hold NaN or Inf values: "), r.warnings[0]);
    assert(r.warnings[0].includes("lm_head.weight (1 NaN, 0 Inf; first at element 323)"));
    assert(formatInspect(r).includes("warning  3 tensor(s) hold NaN or Inf"));
  });
});

Deno.test("trained pre-gates count as used where a next MoE layer exists, across dense layers", async () => {
  // layers: 0 MoE, 1 dense (mlp_only_layers), 2 MoE: layer 0's pre-gate chooses layer 2's experts
  const cfg = await loadConfig(`${FIXTURES}/qwen3_moe`);
  assertEquals(pregateNames(cfg), ["model.layers.0.mlp.pregate.weight"]);
  const stray = ["model.layers.1.mlp.pregate.weight", "model.layers.2.mlp.pregate.weight"];
  const names = [...expectedTensors(cfg).map((t) => t.name), ...pregateNames(cfg), ...stray];
  assertEquals(unusedTensors(cfg, names), stray);
});
