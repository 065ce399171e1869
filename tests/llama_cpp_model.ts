/**
 * A tiny llama-architecture GGUF written by Pregate's GGUF writer (random weights, a GPT-2 style
 * byte-level BPE vocabulary with a few merges), and a float64 CPU reference forward that reads the
 * same file through Pregate's GGUF reader: the two halves of `llama_cpp_test.ts`, which checks that
 * llama.cpp's greedy tokens on the file equal the reference's. Used by tests only.
 *
 * The reference follows llama.cpp's `llama` graph: RMSNorm, RoPE in ggml's NORM mode (adjacent
 * pairs rotated), grouped-query causal attention, SwiGLU, an untied `output` projection.
 * @module
 */
import { f16BitsToF32, f32ToF16Bits, packWeights } from "../runtime/base/dtype.ts";
import type { GgufFile } from "../runtime/weights/gguf.ts";
import {
  type GgufTensorToWrite,
  ggufValue as v,
  writeGguf,
} from "../runtime/weights/gguf_writer.ts";
import { dequantize, quantize } from "../runtime/weights/quant.ts";
import { randn } from "../kernels/test_util.ts";

/** The storage type of the model's matrices. */
export type TinyType = "f16" | "q8_0" | "q4_k";

/** The tiny model's sizes: Q4_K rows need 256 values, so that variant is wider. */
function tinySizes(type: TinyType) {
  const H = type === "q4_k" ? 256 : 64;
  return { H, heads: 4, kvHeads: 2, headDim: H / 4, ff: 2 * H, layers: 2, ctx: 256, eps: 1e-5 };
}

/** GPT-2's byte-to-unicode table: the vocabulary's spelling of byte b. */
function byteChars(): string[] {
  const keep: number[] = [];
  for (let b = 33; b <= 126; b++) keep.push(b);
  for (let b = 161; b <= 172; b++) keep.push(b);
  for (let b = 174; b <= 255; b++) keep.push(b);
  const out: string[] = new Array(256);
  let extra = 0;
  for (let b = 0; b < 256; b++) {
    out[b] = String.fromCodePoint(keep.includes(b) ? b : 256 + extra++);
  }
  return out;
}

/** The merges of the vocabulary (after the 256 byte tokens, in this order). */
export const TINY_MERGES = ["Ġ t", "h e", "Ġt he", "i n", "e r", "a n", "Ġ a", "o n", "r e", "Ġ s"];

/** The vocabulary: 256 byte tokens, one per merge, then `<s>` and `</s>`. */
export function tinyVocab(): { tokens: string[]; types: Int32Array; bos: number; eos: number } {
  const tokens = [...byteChars(), ...TINY_MERGES.map((m) => m.replace(" ", "")), "<s>", "</s>"];
  const V = tokens.length;
  return {
    tokens,
    types: Int32Array.from(tokens, (_, i) => (i >= V - 2 ? 3 : 1)), // 1 normal, 3 control
    bos: V - 2,
    eos: V - 1,
  };
}

/** The token ids of `s` under the vocabulary (byte ids, merged greedily by merge rank). */
export function tinyTokenize(s: string): number[] {
  const chars = byteChars();
  const { tokens } = tinyVocab();
  const id = new Map(tokens.map((t, i) => [t, i]));
  const words = s.split(/(?= )/); // GPT-2 style: a space belongs to the word after it
  const out: number[] = [];
  for (const w of words) {
    let parts = [...new TextEncoder().encode(w)].map((b) => chars[b]);
    for (;;) {
      let best = -1, at = -1;
      for (let i = 0; i + 1 < parts.length; i++) {
        const r = TINY_MERGES.indexOf(`${parts[i]} ${parts[i + 1]}`);
        if (r >= 0 && (best < 0 || r < best)) [best, at] = [r, i];
      }
      if (best < 0) break;
      parts = [...parts.slice(0, at), parts[at] + parts[at + 1], ...parts.slice(at + 2)];
    }
    for (const p of parts) out.push(id.get(p)!);
  }
  return out;
}

/** Writes the tiny model with matrices of `type` (norms F32) to `path`. */
export async function writeTinyLlama(path: string, type: TinyType, seed = 1): Promise<void> {
  const s = tinySizes(type);
  const vocab = tinyVocab();
  const V = vocab.tokens.length;
  let next = seed * 1000;
  const tensors: GgufTensorToWrite[] = [];
  const matrix = (name: string, rows: number, cols: number, scale: number) => {
    const values = randn(rows * cols, scale, next++);
    const data = type === "f16" ? packWeights(values, "f16") : quantize(values, type);
    tensors.push({ name, type: type.toUpperCase(), shape: [rows, cols], data });
  };
  const norm = (name: string) => {
    const values = randn(s.H, 0.1, next++).map((x) => 1 + x);
    tensors.push({ name, type: "F32", shape: [s.H], data: values });
  };
  const w = 2 / Math.sqrt(s.H); // strong enough that every block changes the prediction
  matrix("token_embd.weight", V, s.H, 1);
  for (let l = 0; l < s.layers; l++) {
    norm(`blk.${l}.attn_norm.weight`);
    matrix(`blk.${l}.attn_q.weight`, s.heads * s.headDim, s.H, w);
    matrix(`blk.${l}.attn_k.weight`, s.kvHeads * s.headDim, s.H, w);
    matrix(`blk.${l}.attn_v.weight`, s.kvHeads * s.headDim, s.H, w);
    matrix(`blk.${l}.attn_output.weight`, s.H, s.heads * s.headDim, w);
    norm(`blk.${l}.ffn_norm.weight`);
    matrix(`blk.${l}.ffn_gate.weight`, s.ff, s.H, w);
    matrix(`blk.${l}.ffn_up.weight`, s.ff, s.H, w);
    matrix(`blk.${l}.ffn_down.weight`, s.H, s.ff, 1 / Math.sqrt(s.ff));
  }
  norm("output_norm.weight");
  matrix("output.weight", V, s.H, 1);
  await writeGguf(path, {
    "general.architecture": v.string("llama"),
    "general.name": v.string(`pregate-tiny-${type}`),
    "llama.context_length": v.u32(s.ctx),
    "llama.embedding_length": v.u32(s.H),
    "llama.block_count": v.u32(s.layers),
    "llama.feed_forward_length": v.u32(s.ff),
    "llama.attention.head_count": v.u32(s.heads),
    "llama.attention.head_count_kv": v.u32(s.kvHeads),
    "llama.attention.layer_norm_rms_epsilon": v.f32(s.eps),
    "llama.rope.dimension_count": v.u32(s.headDim),
    "llama.rope.freq_base": v.f32(10000),
    "tokenizer.ggml.model": v.string("gpt2"),
    "tokenizer.ggml.pre": v.string("default"),
    "tokenizer.ggml.tokens": v.strings(vocab.tokens),
    "tokenizer.ggml.token_type": v.array("i32", vocab.types),
    "tokenizer.ggml.merges": v.strings(TINY_MERGES),
    "tokenizer.ggml.bos_token_id": v.u32(vocab.bos),
    "tokenizer.ggml.eos_token_id": v.u32(vocab.eos),
    "tokenizer.ggml.add_bos_token": v.bool(false),
  }, tensors);
}

// ------------------------------------------------------------------------ reference forward

/** `W x` for W [rows, cols] row-major (float64 accumulation). */
function matvec(W: Float32Array, x: ArrayLike<number>, rows: number, cols: number): Float64Array {
  const y = new Float64Array(rows);
  for (let r = 0; r < rows; r++) {
    let acc = 0;
    for (let c = 0; c < cols; c++) acc += W[r * cols + c] * x[c];
    y[r] = acc;
  }
  return y;
}

function rmsNorm(x: Float64Array, w: Float32Array, eps: number): Float64Array {
  let ss = 0;
  for (const v of x) ss += v * v;
  const k = 1 / Math.sqrt(ss / x.length + eps);
  return x.map((v, i) => v * k * w[i]);
}

/** ggml's NORM RoPE: pairs (2i, 2i + 1) of each head rotated by pos * base^(-2i / d). */
function rope(x: Float64Array, heads: number, d: number, pos: number): void {
  for (let h = 0; h < heads; h++) {
    for (let i = 0; i < d; i += 2) {
      const theta = pos * Math.pow(10000, -i / d);
      const [c, s] = [Math.cos(theta), Math.sin(theta)];
      const [a, b] = [x[h * d + i], x[h * d + i + 1]];
      x[h * d + i] = a * c - b * s;
      x[h * d + i + 1] = a * s + b * c;
    }
  }
}

const f16 = (v: number) => f16BitsToF32(f32ToF16Bits(v)); // llama.cpp's KV cache is f16

/** ggml's `quantize_row_q8_K_ref` and back: blocks of 256, an f32 scale amax / 127. */
function roundQ8K(x: Float64Array): Float64Array {
  const out = new Float64Array(x.length);
  const f = Math.fround;
  for (let b = 0; b < x.length; b += 256) {
    let amax = 0, max = 0;
    for (let j = b; j < b + 256; j++) {
      if (Math.abs(f(x[j])) > amax) [amax, max] = [Math.abs(f(x[j])), f(x[j])];
    }
    if (!amax) continue;
    const iscale = f(-127 / max), d = f(1 / iscale);
    for (let j = b; j < b + 256; j++) {
      const v = f(iscale * f(x[j]));
      const q = Math.min(127, v - Math.floor(v) === 0.5 ? 2 * Math.round(v / 2) : Math.round(v));
      out[j] = q * d;
    }
  }
  return out;
}

/**
 * The activations as llama.cpp's CPU matmul sees them: converted to the weights' `vec_dot_type`
 * first (F16 for F16 weights, Q8_0 for Q8_0, Q8_K for Q4_K), which is where most of the numerical
 * difference between llama.cpp and an exact forward comes from.
 */
function asLlamaCppActivations(x: Float64Array, weights: string): Float64Array {
  if (weights === "F16") return x.map(f16);
  if (weights === "Q8_0") {
    return Float64Array.from(dequantize(quantize(Float32Array.from(x), "q8_0"), "q8_0"));
  }
  if (weights === "Q4_K") return roundQ8K(x);
  return x;
}

/**
 * Greedy decoding of the tiny model read from `g` (weights dequantised by Pregate's reader): the
 * `n` tokens after `prompt`, with the top-1 margin (logit gap to the runner-up) of each step.
 */
export function tinyLlamaGreedy(
  g: GgufFile,
  prompt: readonly number[],
  n: number,
): { tokens: number[]; margins: number[] } {
  const step = tinyLlamaStepper(g);
  let logits: Float64Array = new Float64Array(0);
  prompt.forEach((tok, pos) => logits = step(tok, pos));
  const tokens: number[] = [], margins: number[] = [];
  for (let i = 0; i < n; i++) {
    const [best, second] = topTwo(logits);
    tokens.push(best);
    margins.push(logits[best] - logits[second]);
    if (i + 1 < n) logits = step(best, prompt.length + i);
  }
  return { tokens, margins };
}

/** The best and second-best indices of `logits`. */
function topTwo(logits: Float64Array): [number, number] {
  let best = 0, second = -1;
  for (let j = 1; j < logits.length; j++) {
    if (logits[j] > logits[best]) [best, second] = [j, best];
    else if (second < 0 || logits[j] > logits[second]) second = j;
  }
  return [best, second];
}

/**
 * Teacher-forced check of a generation: runs `prompt` then `generated`, and for each generated
 * token returns how far its logit is below the reference's best (0 when it is the reference's
 * greedy choice) and the reference's own top-1 margin there.
 */
export function tinyLlamaGaps(
  g: GgufFile,
  prompt: readonly number[],
  generated: readonly number[],
): { gap: number; margin: number; spread: number }[] {
  const step = tinyLlamaStepper(g);
  let logits: Float64Array = new Float64Array(0);
  prompt.forEach((tok, pos) => logits = step(tok, pos));
  return generated.map((tok, i) => {
    const [best, second] = topTwo(logits);
    const mean = logits.reduce((a, b) => a + b, 0) / logits.length;
    const spread = Math.sqrt(logits.reduce((a, b) => a + (b - mean) ** 2, 0) / logits.length);
    const r = { gap: logits[best] - logits[tok], margin: logits[best] - logits[second], spread };
    if (i + 1 < generated.length) logits = step(tok, prompt.length + i);
    return r;
  });
}

/** The reference forward: one token at a time, returning the logits after it. */
function tinyLlamaStepper(g: GgufFile): (token: number, pos: number) => Float64Array {
  const H = g.uint("llama.embedding_length"), L = g.uint("llama.block_count");
  const NH = g.uint("llama.attention.head_count"), NKV = g.uint("llama.attention.head_count_kv");
  const FF = g.uint("llama.feed_forward_length"),
    eps = g.float("llama.attention.layer_norm_rms_epsilon");
  const D = H / NH;
  const t = (name: string) => g.tensor(name).toF32();
  const wt = g.describe("blk.0.attn_q.weight").type;
  const act = (x: Float64Array) => asLlamaCppActivations(x, wt);
  const E = t("token_embd.weight");
  const V = E.length / H;
  const layers = Array.from({ length: L }, (_, l) => ({
    an: t(`blk.${l}.attn_norm.weight`),
    q: t(`blk.${l}.attn_q.weight`),
    k: t(`blk.${l}.attn_k.weight`),
    v: t(`blk.${l}.attn_v.weight`),
    o: t(`blk.${l}.attn_output.weight`),
    fn: t(`blk.${l}.ffn_norm.weight`),
    gate: t(`blk.${l}.ffn_gate.weight`),
    up: t(`blk.${l}.ffn_up.weight`),
    down: t(`blk.${l}.ffn_down.weight`),
    keys: [] as Float64Array[],
    vals: [] as Float64Array[],
  }));
  const outNorm = t("output_norm.weight");
  const out = t("output.weight");
  const step = (token: number, pos: number): Float64Array => {
    let x = Float64Array.from(E.subarray(token * H, token * H + H));
    for (const ly of layers) {
      const h = act(rmsNorm(x, ly.an, eps));
      const q = matvec(ly.q, h, NH * D, H);
      const k = matvec(ly.k, h, NKV * D, H);
      rope(q, NH, D, pos);
      rope(k, NKV, D, pos);
      ly.keys.push(k.map(f16));
      ly.vals.push(matvec(ly.v, h, NKV * D, H).map(f16));
      const att = new Float64Array(NH * D);
      for (let hd = 0; hd < NH; hd++) {
        const kv = Math.floor(hd / (NH / NKV));
        const s = ly.keys.map((kk) => {
          let acc = 0;
          for (let i = 0; i < D; i++) acc += q[hd * D + i] * kk[kv * D + i];
          return acc / Math.sqrt(D);
        });
        const m = Math.max(...s);
        const p = s.map((v) => Math.exp(v - m));
        const z = p.reduce((a, b) => a + b, 0);
        for (let j = 0; j < p.length; j++) {
          for (let i = 0; i < D; i++) att[hd * D + i] += (p[j] / z) * ly.vals[j][kv * D + i];
        }
      }
      const o = matvec(ly.o, act(att), H, NH * D);
      x = x.map((v, i) => v + o[i]);
      const f = act(rmsNorm(x, ly.fn, eps));
      const gt = matvec(ly.gate, f, FF, H), up = matvec(ly.up, f, FF, H);
      const a = act(gt.map((v, i) => (v / (1 + Math.exp(-v))) * up[i]));
      const down = matvec(ly.down, a, H, FF);
      x = x.map((v, i) => v + down[i]);
    }
    return matvec(out, act(rmsNorm(x, outNorm, eps)), V, H);
  };
  return step;
}
