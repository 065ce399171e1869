/**
 * Helpers shared by the model tests (make_model, random_weights, plan_model, inspect, the arch
 * files'): fixture paths, temporary directories, byte comparison, a plain CPU forward pass.
 * Test-only.
 * @module
 */
import assert from "node:assert/strict";
import type { TensorStore } from "../weights/safetensors.ts";
import { ARCHITECTURES, archNamed } from "./arch/mod.ts";
import type { ModelConfig } from "./model_config.ts";
import { type MadeModel, makeModel, type MakeModelOptions } from "./make_model.ts";
import { layerNames, modelNames } from "./names.ts";

/**
 * The registered decoder-only architectures (each has an HF fixture of its name); the
 * encoder-decoders (Switch) have tests of their own (`arch/switch_transformers_test.ts`).
 */
export const ARCHS = ARCHITECTURES.filter((a) => !archNamed(a).encoderDecoder);
/** Directory of the HF-written fixtures. */
export const FIXTURES = new URL("../../tests/fixtures/hf/", import.meta.url).pathname;

/** Deep strict equality. */
export function assertEquals(actual: unknown, expected: unknown, message?: string): void {
  assert.deepStrictEqual(actual, expected, message);
}

/** Deep strict inequality. */
export function assertNotEquals(actual: unknown, expected: unknown, message?: string): void {
  assert.notDeepStrictEqual(actual, expected, message);
}

/** Whether two byte arrays are equal. */
export function sameBytes(a: Uint8Array, b: Uint8Array): boolean {
  if (a.length !== b.length) return false;
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return false;
  return true;
}

/** A fresh temporary directory. */
export async function tempDir(): Promise<string> {
  return await Deno.makeTempDir({ prefix: "pregate_make_model_" });
}

/** Runs `fn` with a temporary directory, removed afterwards. */
export async function withTemp(fn: (dir: string) => Promise<void>): Promise<void> {
  const dir = await tempDir();
  try {
    await fn(dir);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

/** makeModel into `dir`. */
export async function make(
  opts: Omit<MakeModelOptions, "out">,
  dir: string,
): Promise<MadeModel> {
  return await makeModel({ ...opts, out: dir });
}

/** Whether a file exists. */
export function existsSync(path: string): boolean {
  try {
    Deno.statSync(path);
    return true;
  } catch {
    return false;
  }
}

/** A fixture's reference.json. */
export function reference(arch: string): Record<string, unknown> {
  return JSON.parse(Deno.readTextFileSync(`${FIXTURES}${arch}/reference.json`));
}

// -----------------------------------------------------------------------------------------------
// a plain float64 CPU forward pass (random_weights_test.ts checks it against the HF fixtures)
// -----------------------------------------------------------------------------------------------

/** What {@linkcode cpuForward} computes. */
export interface ForwardResult {
  /** logits[t][v] */
  logits: Float64Array[];
  /** For each MoE layer, for each token: the chosen experts. */
  routes: number[][][];
  /** For each MoE layer, for each token: the largest routing probability. */
  topProb: number[][];
}

/**
 * The model's forward pass over `ids` in float64 on the CPU, from its checkpoint's tensors (`get`):
 * the plainest reading of the HF modeling code, a reference for the GPU forward and for the
 * statistics of random models.
 */
export function cpuForward(
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
    names: { gate: string; up?: string; down: string },
    x: Float64Array,
    inter: number,
  ) => {
    const g = matvec(get(names.gate), x, inter);
    const u = matvec(get(names.up!), x, inter); // the decoders' MLPs are SwiGLU
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
      if (n.qkNorm && cfg.qkNorm === "full") {
        rms(q, get(n.qkNorm.q));
        rms(k, get(n.qkNorm.k));
      } else if (n.qkNorm) {
        for (let hh = 0; hh < cfg.heads; hh++) rms(q, get(n.qkNorm.q), hh * D, D);
        for (let hh = 0; hh < cfg.kvHeads; hh++) rms(k, get(n.qkNorm.k), hh * D, D);
      }
      if (cfg.clipQkv > 0) { // OLMoE: after the q/k norms, as HF's OlmoeAttention
        const c = Math.fround(cfg.clipQkv);
        for (const a of [q, k, v]) a.forEach((x, i) => (a[i] = Math.min(c, Math.max(-c, x))));
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

/** A cached f32 reader of a checkpoint's tensors, for {@linkcode cpuForward}. */
export function tensorGetter(store: TensorStore): (name: string) => Float32Array {
  const cache = new Map<string, Float32Array>();
  return (name) => {
    let v = cache.get(name);
    if (!v) cache.set(name, v = store.tensorF32(name));
    return v;
  };
}
