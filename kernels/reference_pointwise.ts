/**
 * CPU references of the normalisation, positional and pointwise kernels (norm, rope, softmax,
 * activation, embedding, elementwise), computed in float64 (JS numbers) from the same f32 inputs the
 * GPU gets. Kernel tests compare against these. Each function is deliberately the plainest loop;
 * where the model code being matched (HF transformers) rounds to f32 on purpose, the reference
 * mimics it and says so.
 *
 * @example
 * ```ts
 * import { rmsnormRef } from "./reference.ts";
 * console.log(rmsnormRef([3, 4], [1, 1], 1, 2, 0)); // Float64Array [0.8485..., 1.1313...]
 * ```
 * @module
 */
import { roundTo } from "../runtime/base/dtype.ts";

/**
 * RMS norm of each of `rows` rows of `dim` values: `x * (1 / sqrt(mean(x^2) + eps)) * (w + offset)`.
 * HF `LlamaRMSNorm`/`MixtralRMSNorm` (offset 0), Gemma (offset 1), T5 `T5LayerNorm` (offset 0).
 */
export function rmsnormRef(
  x: ArrayLike<number>,
  weight: ArrayLike<number>,
  rows: number,
  dim: number,
  eps: number,
  offset = 0,
): Float64Array {
  const out = new Float64Array(rows * dim);
  for (let r = 0; r < rows; r++) {
    let ss = 0;
    for (let i = 0; i < dim; i++) ss += x[r * dim + i] * x[r * dim + i];
    const inv = 1 / Math.sqrt(ss / dim + eps);
    for (let i = 0; i < dim; i++) out[r * dim + i] = x[r * dim + i] * inv * (weight[i] + offset);
  }
  return out;
}

/**
 * LayerNorm of each of `rows` rows of `dim` values with the biased variance (torch `nn.LayerNorm`):
 * `(x - mean) / sqrt(var + eps) * w + b` (`b` omitted: no bias).
 */
export function layernormRef(
  x: ArrayLike<number>,
  weight: ArrayLike<number>,
  bias: ArrayLike<number> | undefined,
  rows: number,
  dim: number,
  eps: number,
): Float64Array {
  const out = new Float64Array(rows * dim);
  for (let r = 0; r < rows; r++) {
    let s = 0;
    for (let i = 0; i < dim; i++) s += x[r * dim + i];
    const mean = s / dim;
    let ss = 0;
    for (let i = 0; i < dim; i++) ss += (x[r * dim + i] - mean) ** 2;
    const inv = 1 / Math.sqrt(ss / dim + eps);
    for (let i = 0; i < dim; i++) {
      out[r * dim + i] = (x[r * dim + i] - mean) * inv * weight[i] + (bias ? bias[i] : 0);
    }
  }
  return out;
}

/** Softmax of each of `rows` rows of `cols` values (max-subtracted, as every stable softmax). */
export function softmaxRef(x: ArrayLike<number>, rows: number, cols: number): Float64Array {
  const out = new Float64Array(rows * cols);
  for (let r = 0; r < rows; r++) {
    let m = -Infinity;
    for (let c = 0; c < cols; c++) m = Math.max(m, x[r * cols + c]);
    let s = 0;
    for (let c = 0; c < cols; c++) s += Math.exp(x[r * cols + c] - m);
    for (let c = 0; c < cols; c++) out[r * cols + c] = Math.exp(x[r * cols + c] - m) / s;
  }
  return out;
}

/**
 * The complementary error function `erfc(x) = 1 - erf(x)` with full relative precision (~1e-15) also
 * where it is tiny: `1 - ` the Maclaurin series of erf for |x| < 1, the continued fraction
 * `erfc(x) = exp(-x^2) / sqrt(pi) / (x + (1/2) / (x + 1 / (x + (3/2) / (x + ...))))` (modified Lentz)
 * for x >= 1, and `2 - erfc(-x)` for x <= -1.
 */
export function erfcRef(x: number): number {
  if (x <= -1) return 2 - erfcRef(-x);
  if (x < 1) return 1 - erfRef(x);
  let f = x, c = x, d = 0;
  for (let n = 1; n < 1000; n++) {
    d = 1 / (x + (n / 2) * d);
    c = x + (n / 2) / c;
    const delta = c * d;
    f *= delta;
    if (Math.abs(delta - 1) < 1e-16) break;
  }
  return Math.exp(-x * x) / Math.sqrt(Math.PI) / f;
}

/** The error function to ~1e-15: the Maclaurin series for |x| < 1, `1 - erfc` beyond. */
export function erfRef(x: number): number {
  const ax = Math.abs(x);
  if (ax >= 1) return Math.sign(x) * (1 - erfcRef(ax));
  let term = ax, sum = ax;
  for (let n = 1; n < 100; n++) {
    term *= -ax * ax / n;
    const t = term / (2 * n + 1);
    sum += t;
    if (Math.abs(t) < 1e-17 * Math.abs(sum)) break;
  }
  return Math.sign(x) * sum * 2 / Math.sqrt(Math.PI);
}

/** An activation kind of `activation.ts`. */
export type ActivationKindRef = "silu" | "gelu" | "gelu_tanh" | "relu";

/**
 * One activation value: `silu` x·sigmoid(x); `gelu` (HF "gelu", exact) x/2·(1 + erf(x/√2)) =
 * x/2·erfc(-x/√2);
 * `gelu_tanh` (HF "gelu_new"/"gelu_pytorch_tanh") x/2·(1 + tanh(√(2/π)(x + 0.044715x³)));
 * `relu` max(x, 0).
 */
export function activationValueRef(x: number, kind: ActivationKindRef): number {
  switch (kind) {
    case "silu":
      return x / (1 + Math.exp(-x));
    case "gelu":
      // x/2 (1 + erf(x/√2)) written with erfc, exact also in the negative tail.
      return 0.5 * x * erfcRef(-x / Math.SQRT2);
    case "gelu_tanh":
      // x/2 (1 + tanh(u)) written as the identical x sigmoid(2u), exact also in the negative tail.
      return x / (1 + Math.exp(-2 * Math.sqrt(2 / Math.PI) * (x + 0.044715 * x * x * x)));
    case "relu":
      return Math.max(x, 0);
  }
}

/** `act(x)` elementwise (see {@linkcode activationValueRef}). */
export function activationRef(x: ArrayLike<number>, kind: ActivationKindRef): Float64Array {
  const out = new Float64Array(x.length);
  for (let i = 0; i < x.length; i++) out[i] = activationValueRef(x[i], kind);
  return out;
}

/** `act(gate) * up` elementwise: SwiGLU (`silu`), GeGLU (`gelu`, `gelu_tanh`), ReGLU (`relu`). */
export function gatedActivationRef(
  gate: ArrayLike<number>,
  up: ArrayLike<number>,
  kind: ActivationKindRef,
): Float64Array {
  const out = new Float64Array(gate.length);
  for (let i = 0; i < gate.length; i++) out[i] = activationValueRef(gate[i], kind) * up[i];
  return out;
}

/**
 * HF's RoPE inverse frequencies with its f32 roundings:
 * `inv_freq = 1.0 / (base ** (torch.arange(0, dim, 2).float() / dim))`, every op in f32, i.e.
 * `fround(1 / fround(fround(base) ** fround(2i / dim)))`.
 */
export function ropeInvFreqRef(theta: number, rotaryDim: number): Float32Array {
  const f = Math.fround;
  const out = new Float32Array(rotaryDim / 2);
  for (let i = 0; i < rotaryDim / 2; i++) {
    out[i] = f(1 / f(Math.pow(f(theta), f((2 * i) / rotaryDim))));
  }
  return out;
}

/** Layout and parameters of {@linkcode ropeRef}. */
export interface RopeRefArgs {
  /** Tokens. */
  T: number;
  /** Heads per token. */
  heads: number;
  /** Rotated dims per head (even). */
  rotaryDim: number;
  /** Elements between tokens. */
  stride: number;
  /** Elements between heads. */
  headStride: number;
  /** Element of the first token's first head. */
  offset: number;
  /** Position of token 0 (token t is at pos0 + t). */
  pos0: number;
  /** Inverse frequencies, `rotaryDim / 2` f32 values (e.g. {@linkcode ropeInvFreqRef}). */
  invFreq: Float32Array;
  /** `neox`: pairs (i, i + rotaryDim/2) (HF `rotate_half`); `interleaved`: pairs (2i, 2i+1) (GPT-J). */
  style: "neox" | "interleaved";
}

/**
 * RoPE of a copy of `x`: for each token, head and pair i with angle `a = fround(fround(pos) *
 * invFreq[i])` (HF computes `position_ids.float() @ inv_freq` in f32), `(x1, x2) <- (x1 cos a - x2 sin
 * a, x2 cos a + x1 sin a)`; cos and sin themselves in float64. Elements outside the rotated dims are
 * copied unchanged.
 */
export function ropeRef(x: ArrayLike<number>, a: RopeRefArgs): Float64Array {
  const out = Float64Array.from(x);
  const half = a.rotaryDim / 2;
  for (let t = 0; t < a.T; t++) {
    const pos = Math.fround(a.pos0 + t);
    for (let h = 0; h < a.heads; h++) {
      const base = a.offset + t * a.stride + h * a.headStride;
      for (let i = 0; i < half; i++) {
        const angle = Math.fround(pos * a.invFreq[i]);
        const c = Math.cos(angle), s = Math.sin(angle);
        const i1 = a.style === "neox" ? base + i : base + 2 * i;
        const i2 = a.style === "neox" ? base + i + half : base + 2 * i + 1;
        const x1 = x[i1], x2 = x[i2];
        out[i1] = x1 * c - x2 * s;
        out[i2] = x2 * c + x1 * s;
      }
    }
  }
  return out;
}

/** Embedding lookup: `out[t, :] = table[ids[t], :] * scale` for a `[vocab, dim]` table. */
export function embedRef(
  table: ArrayLike<number>,
  ids: ArrayLike<number>,
  dim: number,
  scale = 1,
): Float64Array {
  const out = new Float64Array(ids.length * dim);
  for (let t = 0; t < ids.length; t++) {
    for (let i = 0; i < dim; i++) out[t * dim + i] = table[ids[t] * dim + i] * scale;
  }
  return out;
}

/** `x * s` elementwise. */
export function scaleRef(x: ArrayLike<number>, s: number): Float64Array {
  const out = new Float64Array(x.length);
  for (let i = 0; i < x.length; i++) out[i] = x[i] * s;
  return out;
}

/** `x[r, c] + bias[c]` over `rows` rows of `n` values (a per-column bias, e.g. HF q/k/v biases). */
export function addBiasRef(
  x: ArrayLike<number>,
  bias: ArrayLike<number>,
  rows: number,
  n: number,
): Float64Array {
  const out = new Float64Array(rows * n);
  for (let r = 0; r < rows; r++) {
    for (let c = 0; c < n; c++) out[r * n + c] = x[r * n + c] + bias[c];
  }
  return out;
}

/**
 * `x` clamped to `[-clip, clip]` elementwise, the bound rounded to f32 as torch's `clamp_` on an f32
 * tensor rounds it (OLMoE's `clip_qkv`; `qkvClamp` applies it to q, k and v).
 *
 * @example
 * ```ts
 * import { clampRef } from "./reference.ts";
 * console.log(clampRef([-3, 0.5, 2], 1)); // Float64Array [-1, 0.5, 1]
 * ```
 */
export function clampRef(x: ArrayLike<number>, clip: number): Float64Array {
  const c = Math.fround(clip);
  return Float64Array.from(x, (v) => Math.min(c, Math.max(-c, v)));
}

/** Round half to even (what WGSL's `round` and ggml's `nearest_int` do). */
function roundEvenRef(v: number): number {
  const r = Math.round(v);
  return Math.abs(v % 1) === 0.5 && r % 2 !== 0 ? r - 1 : r;
}

/**
 * `x` [rows, K] rounded as llama.cpp's CPU backend rounds activations (round_activations.wgsl):
 * `q8_0` blocks of 32 (`f16(amax / 127) * round(x * 127 / amax)`), `q8_k` blocks of 256
 * (`(1 / iscale) * min(127, round(iscale * x))`, `iscale = -127 / max`), or each value through
 * `f16` / `bf16`. In f32 arithmetic, as the kernel.
 */
export function roundActivationsRef(
  x: Float32Array,
  format: "q8_0" | "q8_k" | "f16" | "bf16",
): Float32Array {
  if (format === "f16" || format === "bf16") return roundTo(x, format);
  const f = Math.fround, n = format === "q8_0" ? 32 : 256, out = new Float32Array(x.length);
  for (let o = 0; o < x.length; o += n) {
    let amax = 0, vmax = 0;
    for (let j = 0; j < n; j++) {
      if (Math.abs(x[o + j]) > amax) [amax, vmax] = [Math.abs(x[o + j]), x[o + j]];
    }
    if (amax === 0) continue;
    if (format === "q8_0") {
      const dh = roundTo(new Float32Array([f(amax / 127)]), "f16")[0], id = f(127 / amax);
      for (let j = 0; j < n; j++) out[o + j] = f(dh * roundEvenRef(f(x[o + j] * id)));
    } else {
      const iscale = f(-127 / vmax), d = f(1 / iscale);
      for (let j = 0; j < n; j++) {
        out[o + j] = f(d * Math.min(127, roundEvenRef(f(iscale * x[o + j]))));
      }
    }
  }
  return out;
}
