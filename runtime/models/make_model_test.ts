import assert from "node:assert/strict";
import { ArgumentError, PregateError } from "../errors.ts";
import { roundTo } from "../weights/dtype.ts";
import { openCheckpoint, type TensorStore } from "../weights/safetensors.ts";
import { loadConfig, type ModelConfig, parseConfig } from "./config.ts";
import { countParams, expectedTensors } from "./inspect.ts";
import {
  makeModel,
  type MakeModelOptions,
  type ModelDims,
  planModel,
  presetNames,
  PRESETS,
  tensorValues,
} from "./make_model.ts";
import { layerNames, modelNames } from "./names.ts";

function assertEquals(actual: unknown, expected: unknown, message?: string): void {
  assert.deepStrictEqual(actual, expected, message);
}

function assertNotEquals(actual: unknown, expected: unknown, message?: string): void {
  assert.notDeepStrictEqual(actual, expected, message);
}

function throwsArgumentError(fn: () => unknown): ArgumentError {
  try {
    fn();
  } catch (e) {
    if (e instanceof ArgumentError) return e;
    throw e;
  }
  throw new Error("expected an ArgumentError, nothing was thrown");
}

function sameBytes(a: Uint8Array, b: Uint8Array): boolean {
  if (a.length !== b.length) return false;
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return false;
  return true;
}

const ARCHS = ["mixtral", "qwen2_moe", "qwen3_moe", "olmoe"] as const;
const FIXTURES = new URL("../../tests/fixtures/hf/", import.meta.url).pathname;

async function tempDir(): Promise<string> {
  return await Deno.makeTempDir({ prefix: "pregate_make_model_" });
}

async function withTemp(fn: (dir: string) => Promise<void>): Promise<void> {
  const dir = await tempDir();
  try {
    await fn(dir);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

async function make(opts: Omit<MakeModelOptions, "out">, dir: string) {
  return await makeModel({ ...opts, out: dir });
}

function reference(arch: string): Record<string, unknown> {
  return JSON.parse(Deno.readTextFileSync(`${FIXTURES}${arch}/reference.json`));
}

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
        assertEquals(store.get(x.up).shape, [ffn.inter, cfg.hidden]);
        assertEquals(store.get(x.down).shape, [cfg.hidden, ffn.inter]);
      }
    }
  }
}

// -----------------------------------------------------------------------------------------------
// a plain float64 CPU forward pass, validated against the HF fixtures' logits
// -----------------------------------------------------------------------------------------------

interface ForwardResult {
  /** logits[t][v] */
  logits: Float64Array[];
  /** For each MoE layer, for each token: the chosen experts. */
  routes: number[][][];
  /** For each MoE layer, for each token: the largest routing probability. */
  topProb: number[][];
}

function forward(
  cfg: ModelConfig,
  get: (name: string) => Float32Array,
  ids: number[],
): ForwardResult {
  const H = cfg.hidden;
  const D = cfg.headDim;
  const T = ids.length;
  const matvec = (w: Float32Array, x: Float64Array, rows: number): Float64Array => {
    const cols = x.length;
    const y = new Float64Array(rows);
    for (let r = 0; r < rows; r++) {
      let s = 0;
      for (let c = 0; c < cols; c++) s += w[r * cols + c] * x[c];
      y[r] = s;
    }
    return y;
  };
  const rms = (x: Float64Array, w: Float32Array, off = 0, n = x.length): void => {
    let ss = 0;
    for (let i = 0; i < n; i++) ss += x[off + i] ** 2;
    const inv = 1 / Math.sqrt(ss / n + cfg.rmsEps);
    for (let i = 0; i < n; i++) x[off + i] = x[off + i] * inv * w[i];
  };
  const normed = (x: Float64Array, w: Float32Array) => {
    const y = x.slice();
    rms(y, w);
    return y;
  };
  const silu = (v: number) => v / (1 + Math.exp(-v));
  const mlp = (
    names: { gate: string; up: string; down: string },
    x: Float64Array,
    inter: number,
  ) => {
    const g = matvec(get(names.gate), x, inter);
    const u = matvec(get(names.up), x, inter);
    for (let i = 0; i < inter; i++) g[i] = silu(g[i]) * u[i];
    return matvec(get(names.down), g, H);
  };
  const rope = (v: Float64Array, heads: number, pos: number) => {
    const half = cfg.rotaryDim / 2;
    for (let h = 0; h < heads; h++) {
      for (let i = 0; i < half; i++) {
        const a = pos * cfg.ropeTheta ** (-(2 * i) / cfg.rotaryDim);
        const x1 = v[h * D + i];
        const x2 = v[h * D + i + half];
        v[h * D + i] = x1 * Math.cos(a) - x2 * Math.sin(a);
        v[h * D + i + half] = x2 * Math.cos(a) + x1 * Math.sin(a);
      }
    }
  };
  const mn = modelNames(cfg);
  const emb = get(mn.embed);
  const xs = ids.map((id) => Float64Array.from(emb.subarray(id * H, (id + 1) * H)));
  const routes: number[][][] = [];
  const topProb: number[][] = [];
  for (let l = 0; l < cfg.layers.length; l++) {
    const n = layerNames(cfg, l);
    const qs: Float64Array[] = [];
    const ks: Float64Array[] = [];
    const vs: Float64Array[] = [];
    for (let t = 0; t < T; t++) {
      const h = normed(xs[t], get(n.inputNorm));
      const q = matvec(get(n.q), h, cfg.heads * D);
      const k = matvec(get(n.k), h, cfg.kvHeads * D);
      const v = matvec(get(n.v), h, cfg.kvHeads * D);
      if (n.bias) {
        const [bq, bk, bv] = [get(n.bias.q), get(n.bias.k), get(n.bias.v)];
        q.forEach((_, i) => (q[i] += bq[i]));
        k.forEach((_, i) => (k[i] += bk[i]));
        v.forEach((_, i) => (v[i] += bv[i]));
      }
      if (cfg.clipQkv > 0) {
        for (const a of [q, k, v]) {
          a.forEach((x, i) => (a[i] = Math.min(cfg.clipQkv, Math.max(-cfg.clipQkv, x))));
        }
      }
      if (n.qkNorm && cfg.qkNorm === "full") {
        rms(q, get(n.qkNorm.q));
        rms(k, get(n.qkNorm.k));
      } else if (n.qkNorm) {
        for (let hh = 0; hh < cfg.heads; hh++) rms(q, get(n.qkNorm.q), hh * D, D);
        for (let hh = 0; hh < cfg.kvHeads; hh++) rms(k, get(n.qkNorm.k), hh * D, D);
      }
      rope(q, cfg.heads, t);
      rope(k, cfg.kvHeads, t);
      qs.push(q);
      ks.push(k);
      vs.push(v);
    }
    const group = cfg.heads / cfg.kvHeads;
    const wo = get(n.o);
    for (let t = 0; t < T; t++) {
      const att = new Float64Array(cfg.heads * D);
      for (let hh = 0; hh < cfg.heads; hh++) {
        const kv = Math.floor(hh / group);
        const s = new Float64Array(t + 1);
        let max = -Infinity;
        for (let j = 0; j <= t; j++) {
          let dot = 0;
          for (let i = 0; i < D; i++) dot += qs[t][hh * D + i] * ks[j][kv * D + i];
          s[j] = dot / Math.sqrt(D);
          max = Math.max(max, s[j]);
        }
        let sum = 0;
        for (let j = 0; j <= t; j++) sum += s[j] = Math.exp(s[j] - max);
        for (let j = 0; j <= t; j++) {
          for (let i = 0; i < D; i++) att[hh * D + i] += (s[j] / sum) * vs[j][kv * D + i];
        }
      }
      const o = matvec(wo, att, H);
      for (let i = 0; i < H; i++) xs[t][i] += o[i];
    }
    const ffn = cfg.layers[l].ffn;
    const layerRoutes: number[][] = [];
    const layerTop: number[] = [];
    for (let t = 0; t < T; t++) {
      const h = normed(xs[t], get(n.postNorm));
      let out: Float64Array;
      if (n.ffn.kind === "dense") {
        out = mlp(n.ffn, h, ffn.inter);
      } else {
        assert(ffn.kind === "moe");
        const logits = matvec(get(n.ffn.router), h, ffn.experts);
        const max = Math.max(...logits);
        const p = logits.map((z) => Math.exp(z - max));
        const sum = p.reduce((a, b) => a + b, 0);
        p.forEach((_, i) => (p[i] /= sum));
        const order = [...p.keys()].sort((a, b) => p[b] - p[a]).slice(0, ffn.topK);
        const wsum = order.reduce((a, e) => a + p[e], 0);
        out = new Float64Array(H);
        for (const e of order) {
          const w = ffn.renormalize ? p[e] / wsum : p[e];
          const y = mlp(n.ffn.expert(e), h, ffn.inter);
          for (let i = 0; i < H; i++) out[i] += w * y[i];
        }
        if (n.ffn.shared) {
          const y = mlp(n.ffn.shared, h, ffn.sharedInter);
          const g = matvec(get(n.ffn.shared.gateWeight), h, 1)[0];
          const s = 1 / (1 + Math.exp(-g));
          for (let i = 0; i < H; i++) out[i] += s * y[i];
        }
        layerRoutes.push(order);
        layerTop.push(p[order[0]]);
      }
      for (let i = 0; i < H; i++) xs[t][i] += out[i];
    }
    if (ffn.kind === "moe") {
      routes.push(layerRoutes);
      topProb.push(layerTop);
    }
  }
  const head = get(mn.lmHead);
  const logits = xs.map((x) => matvec(head, normed(x, get(mn.finalNorm)), cfg.vocabSize));
  return { logits, routes, topProb };
}

function getter(store: TensorStore): (name: string) => Float32Array {
  const cache = new Map<string, Float32Array>();
  return (name) => {
    let v = cache.get(name);
    if (!v) cache.set(name, v = store.tensorF32(name));
    return v;
  };
}

Deno.test("reference forward reproduces the HF fixtures' logits (validates the checks below)", async () => {
  for (const arch of ARCHS) {
    const ref = reference(arch);
    const cfg = await loadConfig(`${FIXTURES}${arch}`);
    const store = openCheckpoint(`${FIXTURES}${arch}`, { mode: "read" });
    try {
      const out = forward(cfg, getter(store), ref.ids as number[]);
      const want = ref.logits as number[][];
      let err = 0;
      for (let t = 0; t < want.length; t++) {
        for (let v = 0; v < want[t].length; v++) {
          err = Math.max(err, Math.abs(out.logits[t][v] - want[t][v]));
        }
      }
      assert(err < 1e-4, `${arch}: max |logit - HF| = ${err}`);
    } finally {
      store.close();
    }
  }
});

// -----------------------------------------------------------------------------------------------
// makeModel
// -----------------------------------------------------------------------------------------------

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

Deno.test("tiny presets: the intended configs, two in the HF 4 form (top-level rope_theta)", () => {
  const hf4 = ["mixtral", "qwen3_moe"];
  for (const arch of ARCHS) {
    const plan = planModel({ arch, out: "" });
    const j = plan.configJson;
    assertEquals(j.model_type, arch);
    assertEquals(j.hidden_size, 64);
    assertEquals(j.vocab_size, 256);
    assertEquals(j.num_local_experts ?? j.num_experts, 8);
    if (hf4.includes(arch)) {
      assertEquals(plan.configStyle, "hf4");
      assertEquals(j.rope_parameters, undefined);
      assertEquals(j.rope_scaling, null);
      assertEquals(typeof j.rope_theta, "number");
      assertEquals(j.torch_dtype, "float32");
      assertEquals(j.dtype, undefined);
      assert(plan.configText.includes('"rope_theta": 1000000.0'));
    } else {
      assertEquals(plan.configStyle, "hf5");
      assertEquals(j.rope_theta, undefined);
      assertEquals((j.rope_parameters as Record<string, unknown>).rope_type, "default");
      assertEquals(j.dtype, "float32");
    }
    // both forms parse to the same model
    const other = planModel({ arch, out: "", configStyle: hf4.includes(arch) ? "hf5" : "hf4" });
    assertEquals({ ...other.config, raw: null }, { ...plan.config, raw: null });
    assertEquals(parseConfig(JSON.parse(plan.configText)).layers, plan.config.layers);
  }
  const q3 = planModel({ arch: "qwen3_moe", out: "" });
  assertEquals(q3.configJson.num_experts, 8); // 4.x key; HF 5 writes num_local_experts
  assertEquals(q3.configJson.head_dim, 32);
  assertEquals(q3.config.tieEmbeddings, true);
  assertEquals(q3.config.qkNorm, "head");
  const q2 = planModel({ arch: "qwen2_moe", out: "" }).config;
  assertEquals(q2.qkvBias, true);
  const moe = q2.layers[1].ffn;
  assert(moe.kind === "moe" && moe.sharedInter === 128 && !moe.renormalize);
  assertEquals(planModel({ arch: "olmoe", out: "" }).config.qkNorm, "full");
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

Deno.test("same seed -> identical bytes; different seed -> every tensor differs", async () => {
  const dirs = [await tempDir(), await tempDir(), await tempDir()];
  try {
    await make({ arch: "qwen2_moe", dtype: "bf16", seed: 42 }, dirs[0]);
    await make({ arch: "qwen2_moe", dtype: "bf16", seed: 42 }, dirs[1]);
    await make({ arch: "qwen2_moe", dtype: "bf16", seed: 43 }, dirs[2]);
    for (const f of ["model.safetensors", "config.json", "generation_config.json"]) {
      assertEquals(
        await Deno.readFile(`${dirs[0]}/${f}`),
        await Deno.readFile(`${dirs[1]}/${f}`),
        f,
      );
    }
    const a = openCheckpoint(dirs[0], { mode: "read" });
    const c = openCheckpoint(dirs[2], { mode: "read" });
    try {
      for (const name of a.names()) assertNotEquals(a.get(name).bytes(), c.get(name).bytes(), name);
      // tensors of one model differ from each other too (streams are keyed by name)
      const e0 = a.get("model.layers.1.mlp.experts.0.gate_proj.weight").bytes();
      const e1 = a.get("model.layers.1.mlp.experts.1.gate_proj.weight").bytes();
      assertNotEquals(e0, e1);
    } finally {
      a.close();
      c.close();
    }
  } finally {
    for (const d of dirs) await Deno.remove(d, { recursive: true });
  }
});

Deno.test("a tensor's values do not depend on the other tensors (fewer layers: same layer 0)", async () => {
  const dirs = [await tempDir(), await tempDir()];
  try {
    await make({ arch: "mixtral", seed: 9 }, dirs[0]);
    await make({ arch: "mixtral", seed: 9, overrides: { layers: 1 } }, dirs[1]);
    const a = openCheckpoint(dirs[0], { mode: "read" });
    const b = openCheckpoint(dirs[1], { mode: "read" });
    try {
      for (const name of b.names()) {
        assert(sameBytes(a.get(name).bytes(), b.get(name).bytes()), name);
      }
      assertEquals(a.names().length > b.names().length, true);
    } finally {
      a.close();
      b.close();
    }
  } finally {
    for (const d of dirs) await Deno.remove(d, { recursive: true });
  }
});

Deno.test("f16 and bf16 files hold the f32 samples rounded; tensorValues predicts the file", async () => {
  const dirs = { f32: await tempDir(), f16: await tempDir(), bf16: await tempDir() };
  try {
    const plans = {
      f32: await make({ arch: "olmoe", dtype: "f32", seed: 3 }, dirs.f32),
      f16: await make({ arch: "olmoe", dtype: "f16", seed: 3 }, dirs.f16),
      bf16: await make({ arch: "olmoe", dtype: "bf16", seed: 3 }, dirs.bf16),
    };
    const stores = {
      f32: openCheckpoint(dirs.f32, { mode: "read" }),
      f16: openCheckpoint(dirs.f16, { mode: "read" }),
      bf16: openCheckpoint(dirs.bf16, { mode: "read" }),
    };
    try {
      for (const t of plans.f32.tensors) {
        const f = stores.f32.tensorF32(t.name);
        assertEquals(f, tensorValues(t, 3), t.name);
        for (const d of ["f16", "bf16"] as const) {
          const got = stores[d].tensorF32(t.name);
          assertEquals(got, roundTo(f, d), `${d} ${t.name}`);
          const pt = plans[d].tensors.find((x) => x.name === t.name)!;
          assertEquals(got, tensorValues(pt, 3));
        }
      }
    } finally {
      for (const s of Object.values(stores)) s.close();
    }
  } finally {
    for (const d of Object.values(dirs)) await Deno.remove(d, { recursive: true });
  }
});

Deno.test("weight statistics: matrices N(0, 1/fan_in), o/down scaled, routers 2x, norms 1 + 0.1 N(0, 1)", () => {
  const plan = planModel({
    preset: "olmoe-1b-7b",
    out: "",
    seed: 11,
    overrides: { layers: 1, experts: 2, topK: 1, vocab: 512 },
  });
  const stats = (v: Float32Array) => {
    let s = 0;
    let ss = 0;
    for (const x of v) s += x;
    const mean = s / v.length;
    for (const x of v) ss += (x - mean) ** 2;
    let max = 0;
    for (const x of v) max = Math.max(max, Math.abs(x));
    return { mean, std: Math.sqrt(ss / v.length), max };
  };
  for (const t of plan.tensors) {
    const v = tensorValues(t, 11);
    const s = stats(v);
    const n = v.length;
    const tol = 5 / Math.sqrt(n); // in units of the std
    assert(Math.abs(s.mean - t.mean) < t.std * tol + 1e-7, `${t.name}: mean ${s.mean}`);
    assert(Math.abs(s.std / t.std - 1) < 2 * tol + 0.01, `${t.name}: std ${s.std} vs ${t.std}`);
    assert(s.max < t.mean + 4.5 * t.std, `${t.name}: max ${s.max}`);
    if (t.role === "expert" || t.role === "attn" || t.role === "lm_head" || t.role === "mlp") {
      // o and down projections write into the residual stream: scaled by 1/sqrt(2 layers), the
      // preset's 16 layers (not the 1 kept), so the kept layer equals the full model's
      const residual = t.projection === "o" || t.projection === "down";
      assertEquals(t.std, (residual ? 1 / Math.sqrt(2 * 16) : 1) / Math.sqrt(t.shape[1]), t.name);
    }
    if (t.role === "embed") assertEquals(t.std, 1);
    if (t.role === "router") assertEquals(t.std, 2 / Math.sqrt(t.shape[1]));
    if (t.role === "norm" || t.role === "qk_norm") assertEquals([t.mean, t.std], [1, 0.1]);
  }
});

Deno.test("random models give O(1) logits and routing spread over the experts", async () => {
  const cases: MakeModelOptions[] = [
    ...ARCHS.map((arch) => ({ arch, out: "", seed: 1 })),
    {
      arch: "qwen3_moe",
      out: "",
      seed: 2,
      dtype: "bf16",
      overrides: {
        hidden: 256,
        heads: 8,
        kvHeads: 2,
        headDim: 64,
        inter: 64,
        experts: 32,
        topK: 4,
        layers: 8,
        vocab: 1000,
        mlpOnlyLayers: [],
      },
    },
    {
      // untied, many experts, deeper: routing must stay spread in the last layers too
      arch: "olmoe",
      out: "",
      seed: 4,
      dtype: "bf16",
      overrides: { hidden: 256, heads: 8, kvHeads: 8, inter: 32, experts: 64, topK: 8, layers: 8 },
    },
    {
      arch: "mixtral",
      out: "",
      seed: 3,
      dtype: "f16",
      overrides: { hidden: 256, heads: 8, layers: 6, inter: 128 },
    },
  ];
  const ids = Array.from({ length: 24 }, (_, i) => (i * 37 + 5) % 256);
  for (const c of cases) {
    await withTemp(async (dir) => {
      const made = await makeModel({ ...c, out: dir });
      const cfg = made.config;
      const store = openCheckpoint(dir, { mode: "read" });
      try {
        const out = forward(cfg, getter(store), ids);
        let ss = 0;
        let n = 0;
        let max = 0;
        for (const row of out.logits) {
          for (const v of row) {
            assert(Number.isFinite(v));
            ss += v * v;
            n++;
            max = Math.max(max, Math.abs(v));
          }
        }
        const rmsLogit = Math.sqrt(ss / n);
        const label = `${cfg.arch} ${JSON.stringify(c.overrides ?? {})}`;
        assert(rmsLogit > 0.3 && rmsLogit < 3, `${label}: logit rms ${rmsLogit}`);
        assert(max < 20, `${label}: max |logit| ${max}`);
        // the argmax differs between positions (not a constant prediction)
        const argmax = out.logits.map((r) => r.indexOf(Math.max(...r)));
        assert(new Set(argmax).size >= ids.length / 3, `${label}: argmax ${argmax}`);
        for (let l = 0; l < out.routes.length; l++) {
          const ffn = cfg.layers.find((x) => x.ffn.kind === "moe")!.ffn;
          assert(ffn.kind === "moe");
          const used = new Set(out.routes[l].flat());
          const picks = ids.length * ffn.topK;
          const want = Math.min(ffn.experts, picks) * 0.6;
          assert(used.size >= want, `${label} moe layer ${l}: ${used.size} experts used`);
          const meanTop = out.topProb[l].reduce((a, b) => a + b, 0) / ids.length;
          assert(meanTop < 0.9, `${label} moe layer ${l}: mean top-1 probability ${meanTop}`);
          assert(meanTop > 1.5 / ffn.experts, `${label}: routing is uniform (${meanTop})`);
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

Deno.test("multi-chunk tensors (larger than one 4 MiB chunk) are generated correctly", async () => {
  await withTemp(async (dir) => {
    // embedding and LM head 4100 x 1024 bf16 = 8.4 MB: three chunks each, the last one short
    const made = await make({
      arch: "mixtral",
      dtype: "bf16",
      seed: 4,
      overrides: {
        vocab: 4100,
        hidden: 1024,
        heads: 8,
        kvHeads: 8,
        inter: 16,
        experts: 2,
        topK: 1,
        layers: 1,
      },
    }, dir);
    const store = openCheckpoint(dir, { mode: "read" });
    try {
      for (const t of made.tensors) {
        const got = new Uint32Array(store.tensorF32(t.name).buffer);
        const want = new Uint32Array(tensorValues(t, 4).buffer);
        assertEquals(got.length, want.length);
        let bad = -1;
        for (let i = 0; i < got.length && bad < 0; i++) if (got[i] !== want[i]) bad = i;
        assertEquals(bad, -1, `${t.name}: first difference at element ${bad}`);
      }
    } finally {
      store.close();
    }
  });
});

Deno.test("real presets: shapes, configs and parameter counts of the published models", () => {
  const want: Record<string, { total: number; active: number; layers: number }> = {
    "mixtral-8x7b": { total: 46.70, active: 12.88, layers: 32 },
    "qwen3-30b-a3b": { total: 30.53, active: 3.35, layers: 48 },
    "olmoe-1b-7b": { total: 6.92, active: 1.28, layers: 16 },
    "qwen1.5-moe-a2.7b": { total: 14.32, active: 2.69, layers: 24 },
  };
  for (const [preset, w] of Object.entries(want)) {
    const plan = planModel({ preset, out: "", dtype: "bf16" });
    const p = countParams(plan.config);
    assertEquals((p.total / 1e9).toFixed(2), w.total.toFixed(2), preset);
    assertEquals((p.activePerToken / 1e9).toFixed(2), w.active.toFixed(2), preset);
    assertEquals(plan.config.layers.length, w.layers);
    assertEquals(plan.totalBytes, p.total * 2);
    assert(plan.config.layers.every((l) => l.ffn.kind === "moe"));
    assertEquals(plan.configJson.transformers_version, "5.17.0");
    // shrinking keeps the real layer shapes
    const small = planModel({ preset, out: "", dtype: "bf16", overrides: { layers: 2 } });
    assertEquals(small.config.layers.length, 2);
    assertEquals(small.config.layers[0], plan.config.layers[0]);
    assertEquals(
      small.tensors.filter((t) => t.layer === 0),
      plan.tensors.filter((t) => t.layer === 0),
    );
  }
  const m = planModel({ preset: "mixtral-8x7b", out: "" }).config;
  assertEquals([m.hidden, m.heads, m.kvHeads, m.headDim, m.vocabSize, m.ropeTheta], [
    4096,
    32,
    8,
    128,
    32000,
    1e6,
  ]);
  const q = planModel({ preset: "qwen3-30b-a3b", out: "" }).config;
  assertEquals([q.hidden, q.heads, q.kvHeads, q.headDim, q.tieEmbeddings], [
    2048,
    32,
    4,
    128,
    false,
  ]);
  const f = q.layers[0].ffn;
  assert(f.kind === "moe" && f.experts === 128 && f.topK === 8 && f.inter === 768 && f.renormalize);
  const o = planModel({ preset: "olmoe-1b-7b", out: "" });
  assertEquals(o.configJson.clip_qkv, null);
  assertEquals(o.config.clipQkv, 0);
  const q2 = planModel({ preset: "qwen1.5-moe-a2.7b", out: "" }).config.layers[0].ffn;
  assert(
    q2.kind === "moe" && q2.experts === 60 && q2.topK === 4 && q2.inter === 1408 &&
      q2.sharedInter === 5632,
  );
  assertEquals(planModel({ preset: "mixtral-8x7b", out: "" }).arch, "mixtral");
  assertEquals(presetNames("mixtral"), ["tiny", "mixtral-8x7b"]);
  assertEquals(Object.values(PRESETS).filter((p) => p.name === "tiny").length, 4);
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

Deno.test("bad arguments are ArgumentErrors naming the argument and listing the valid choices", () => {
  const bad = (opts: Partial<MakeModelOptions>, argument: string, ...parts: string[]) => {
    const e = throwsArgumentError(() => planModel({ out: "", ...opts } as MakeModelOptions));
    assertEquals(e.argument, argument, e.message);
    for (const p of parts) assert(e.message.includes(p), `${e.message} should mention '${p}'`);
    assert(e instanceof PregateError && e.code === "E_ARGUMENT");
  };
  bad({ arch: "llama" }, "arch", "llama", "mixtral, qwen2_moe, qwen3_moe, olmoe");
  bad({}, "arch", "required");
  bad({ preset: "gpt-4" }, "arch", "gpt-4", "mixtral-8x7b");
  bad({ arch: "olmoe", preset: "huge" }, "preset", "huge", "tiny, olmoe-1b-7b");
  bad(
    { arch: "olmoe", preset: "mixtral-8x7b" },
    "preset",
    "mixtral model, not olmoe",
    "olmoe-1b-7b",
  );
  bad({ arch: "mixtral", dtype: "fp8" }, "dtype", "fp8", "f32, f16, bf16");
  bad({ arch: "mixtral", seed: -1 }, "seed");
  bad({ arch: "mixtral", seed: 1.5 }, "seed");
  bad({ arch: "mixtral", configStyle: "hf3" as "hf4" }, "configStyle");
  bad({ arch: "mixtral", overrides: { heads: 5 } }, "overrides.kvHeads", "heads 5", "kvHeads 2");
  bad(
    { arch: "mixtral", overrides: { heads: 6, kvHeads: 2 } },
    "overrides.heads",
    "hidden 64",
    "heads 6",
  );
  bad({ arch: "mixtral", overrides: { topK: 9 } }, "overrides.topK", "topK 9", "experts 8");
  bad({ arch: "mixtral", overrides: { layers: 0 } }, "overrides.layers", "integer >= 1");
  bad({ arch: "mixtral", overrides: { hidden: 64.5 } }, "overrides.hidden");
  bad(
    { arch: "mixtral", overrides: { widht: 3 } as Partial<ModelDims> },
    "overrides.widht",
    "unknown",
    "hidden",
  );
  bad(
    { arch: "mixtral", overrides: { sharedInter: 64 } },
    "overrides.sharedInter",
    "shared expert",
  );
  bad(
    { arch: "mixtral", overrides: { sparseStep: 2 } },
    "overrides.sparseStep",
    "every layer is MoE",
  );
  bad({ arch: "mixtral", overrides: { normTopK: false } }, "overrides.normTopK");
  bad({ arch: "olmoe", overrides: { headDim: 32 } }, "overrides.headDim", "no head_dim");
  bad({ arch: "mixtral", overrides: { headDim: 15 } }, "overrides.headDim", "odd");
  bad({ arch: "mixtral", overrides: { clipQkv: 8 } }, "overrides.clipQkv", "OLMoE");
  bad(
    { arch: "qwen3_moe", overrides: { mlpOnlyLayers: [7] } },
    "overrides.mlpOnlyLayers",
    "[0, 3)",
  );
  bad(
    { arch: "qwen2_moe", overrides: { sparseStep: 5 } },
    "overrides.sparseStep",
    "no layer",
    "MoE",
  );
  bad(
    { arch: "mixtral", dtype: "bf16", overrides: { inter: 95 } },
    "overrides.inter",
    "95 is odd",
    "bf16",
  );
  bad(
    { arch: "qwen2_moe", dtype: "f16", overrides: { sharedInter: 7 } },
    "overrides.sharedInter",
    "odd",
  );
  bad(
    { arch: "qwen3_moe", dtype: "bf16", overrides: { denseInter: 33 } },
    "overrides.denseInter",
    "odd",
  );
  bad(
    {
      arch: "mixtral",
      dtype: "bf16",
      overrides: { hidden: 63, heads: 3, kvHeads: 3, headDim: 12 },
    },
    "overrides.hidden",
    "odd",
  );
  // odd sizes are fine in f32
  const ok = planModel({ arch: "mixtral", out: "", overrides: { inter: 95, vocab: 251 } });
  assertEquals(ok.config.layers[0].ffn.inter, 95);
  // explicit head_dim where the arch stores it
  assertEquals(
    planModel({ arch: "mixtral", out: "", overrides: { headDim: 32 } }).configJson.head_dim,
    32,
  );
  // a preset's mlp_only_layers beyond a reduced layer count are dropped
  assertEquals(
    planModel({ arch: "qwen3_moe", out: "", overrides: { layers: 1 } }).dims.mlpOnlyLayers,
    [],
  );
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
