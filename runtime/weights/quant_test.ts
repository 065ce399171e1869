// Q8_0 / Q5_0 / Q4_K / Q5_K / Q6_K: bytes identical to llama.cpp's reference quantisers, bit-exact
// decoding of hand-built blocks, round-trip error bounds, and typed errors.
import assert from "node:assert/strict";
import { ArgumentError } from "../base/errors.ts";
import { f32ToF16Bits } from "../base/dtype.ts";
import {
  dequantize,
  GGML_TYPES,
  ggmlTypeById,
  ggmlTypeByName,
  parseQuantType,
  q4kScaleMin,
  QUANT_TYPES,
  quantize,
  quantizedBytes,
  type QuantType,
} from "./quant.ts";

const FIXTURES = new URL("../../tests/fixtures/ggml_quants/", import.meta.url);

/** Seeded normal values (Box-Muller over mulberry32). */
function normals(n: number, seed: number, scale = 1): Float32Array {
  let s = seed >>> 0;
  const r = () => {
    s = (s + 0x6d2b79f5) >>> 0;
    let t = Math.imul(s ^ (s >>> 15), s | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
  const out = new Float32Array(n);
  for (let i = 0; i < n; i++) {
    out[i] = Math.sqrt(-2 * Math.log(Math.max(r(), 1e-12))) * Math.cos(2 * Math.PI * r()) * scale;
  }
  return out;
}

Deno.test("quantize: bytes identical to llama.cpp's quantize_row_*_ref", async () => {
  // tests/fixtures/ggml_quants: input.f32 (2048 values with all-positive, zero, constant, huge,
  // tiny, all-negative and outlier blocks) and what ggml-quants.c (llama.cpp as node-llama-cpp
  // 3.21.1 ships it) wrote for it; see the README there.
  const x = new Float32Array((await Deno.readFile(new URL("input.f32", FIXTURES))).buffer);
  for (const type of QUANT_TYPES) {
    const expected = await Deno.readFile(new URL(`${type}.bin`, FIXTURES));
    const got = quantize(x, type);
    assert.equal(got.byteLength, expected.byteLength);
    const diff = got.findIndex((b, i) => b !== expected[i]);
    assert.equal(diff, -1, `${type}: first differing byte ${diff}`);
  }
});

Deno.test("dequantize: random bytes decode as llama.cpp's dequantize_row_* decode them", async () => {
  // tests/fixtures/ggml_quants: blocks.bin (1024 random bytes) and what ggml-quants.c decodes of
  // its whole blocks of each type (NaN where a random f16 scale is NaN or infinite times 0).
  const raw = await Deno.readFile(new URL("blocks.bin", FIXTURES));
  for (const type of QUANT_TYPES) {
    const want = new Float32Array(
      (await Deno.readFile(new URL(`${type}_decoded.f32`, FIXTURES))).buffer,
    );
    const got = dequantize(raw.subarray(0, quantizedBytes(want.length, type)), type);
    assert.equal(got.length, want.length);
    const bad = got.findIndex((v, i) => !(Object.is(v, want[i]) || (isNaN(v) && isNaN(want[i]))));
    assert.equal(bad, -1, `${type}: value ${bad}: ${got[bad]}, ggml ${want[bad]}`);
  }
});

Deno.test("dequantize: a hand-built Q8_0 block decodes bit-exactly", () => {
  const block = new Uint8Array(2 * 34);
  const q = [-128, -127, -1, 0, 1, 2, 63, 64, 100, 127];
  const d = [0.5, -0.0078125]; // f16 0x3800 and a negative scale
  for (let b = 0; b < 2; b++) {
    const h = f32ToF16Bits(d[b]);
    block[b * 34] = h & 0xff;
    block[b * 34 + 1] = h >> 8;
    for (let i = 0; i < 32; i++) block[b * 34 + 2 + i] = q[(i + b) % q.length] & 0xff;
  }
  const y = dequantize(block, "q8_0");
  assert.equal(y.length, 64);
  for (let b = 0; b < 2; b++) {
    for (let i = 0; i < 32; i++) assert.equal(y[b * 32 + i], q[(i + b) % q.length] * d[b]);
  }
});

Deno.test("dequantize: a hand-built Q4_K super-block decodes bit-exactly", () => {
  // Scales and mins chosen to use the high two bits of the 6-bit fields.
  const sc = [1, 2, 33, 63, 17, 40, 5, 62];
  const m = [0, 63, 10, 32, 48, 1, 16, 31];
  const blk = new Uint8Array(144);
  const [d, dmin] = [2, 0.25];
  blk.set([0x00, 0x40, 0x00, 0x34]); // f16 2.0 = 0x4000, 0.25 = 0x3400 (little-endian)
  const s = new Uint8Array(12);
  for (let j = 0; j < 4; j++) {
    s[j] = sc[j] | ((sc[j + 4] >> 4) << 6);
    s[j + 4] = m[j] | ((m[j + 4] >> 4) << 6);
    s[j + 8] = (sc[j + 4] & 15) | ((m[j + 4] & 15) << 4);
  }
  blk.set(s, 4);
  const nib = (i: number) => (i * 7 + 3) % 16; // quant of value i
  for (let p = 0; p < 4; p++) {
    for (let l = 0; l < 32; l++) {
      blk[16 + 32 * p + l] = nib(64 * p + l) | (nib(64 * p + 32 + l) << 4);
    }
  }
  for (let j = 0; j < 8; j++) assert.deepEqual(q4kScaleMin(blk, 4, j), [sc[j], m[j]]);
  const y = dequantize(blk, "q4_k");
  for (let i = 0; i < 256; i++) {
    const j = i >> 5;
    assert.equal(y[i], d * sc[j] * nib(i) - dmin * m[j], `value ${i}`);
  }
});

Deno.test("dequantize: hand-built Q5_0 blocks decode bit-exactly", () => {
  const blk = new Uint8Array(2 * 22); // the second block starts at 2 mod 4
  const q5 = (i: number) => (i * 7 + 3) % 32; // stored quant of value i (value: q - 16)
  const d = [0.5, -3];
  for (let b = 0; b < 2; b++) {
    const p = 22 * b;
    blk.set(b ? [0x00, 0xc2] : [0x00, 0x38], p); // f16 0.5 = 0x3800, -3 = 0xc200
    for (let i = 0; i < 32; i++) {
      const q = q5(i + b);
      blk[p + 2 + (i >> 3)] |= (q >> 4) << (i & 7);
      blk[p + 6 + (i & 15)] |= (q & 15) << (i < 16 ? 0 : 4);
    }
  }
  const y = dequantize(blk, "q5_0");
  for (let b = 0; b < 2; b++) {
    for (let i = 0; i < 32; i++) {
      assert.equal(y[32 * b + i], (q5(i + b) - 16) * d[b], `block ${b} value ${i}`);
    }
  }
});

Deno.test("dequantize: a hand-built Q5_K super-block decodes bit-exactly", () => {
  const sc = [3, 63, 17, 40, 1, 33, 62, 5];
  const m = [48, 0, 31, 63, 10, 16, 1, 32];
  const blk = new Uint8Array(176);
  blk.set([0x00, 0x3c, 0x00, 0x38]); // d = 1.0 (f16 0x3c00), dmin = 0.5 (0x3800)
  for (let j = 0; j < 4; j++) {
    blk[4 + j] = sc[j] | ((sc[j + 4] >> 4) << 6);
    blk[8 + j] = m[j] | ((m[j + 4] >> 4) << 6);
    blk[12 + j] = (sc[j + 4] & 15) | ((m[j + 4] & 15) << 4);
  }
  const q5 = (i: number) => (i * 11 + 5) % 32; // quant of value i
  for (let i = 0; i < 256; i++) {
    const j = i >> 5, l = i & 31;
    blk[16 + l] |= (q5(i) >> 4) << j;
    blk[48 + 32 * (j >> 1) + l] |= (q5(i) & 15) << (4 * (j & 1));
  }
  const y = dequantize(blk, "q5_k");
  for (let i = 0; i < 256; i++) {
    const j = i >> 5;
    assert.equal(y[i], sc[j] * q5(i) - 0.5 * m[j], `value ${i}`);
  }
});

Deno.test("dequantize: a hand-built Q6_K super-block decodes bit-exactly", () => {
  const sc = Int8Array.from({ length: 16 }, (_, i) => ((i * 37 + 11) % 255) - 127); // -127 .. 127
  const blk = new Uint8Array(2 * 210); // two super-blocks: the second starts at 2 mod 4
  const q6 = (i: number) => (i * 13 + 7) % 64; // stored quant of value i (value: q - 32)
  for (let b = 0; b < 2; b++) {
    const p = 210 * b;
    blk.set([0x00, b ? 0xb4 : 0x30], p + 208); // d = 0.125 (f16 0x3000), then -0.25 (0xb400)
    for (let k = 0; k < 16; k++) blk[p + 192 + k] = sc[(k + b) % 16] & 0xff;
    for (let i = 0; i < 256; i++) {
      const h = i >> 7, g = (i >> 5) & 3, l = i & 31, q = q6(i + b);
      blk[p + 64 * h + 32 * (g & 1) + l] |= (q & 15) << (4 * (g >> 1));
      blk[p + 128 + 32 * h + l] |= (q >> 4) << (2 * g);
    }
  }
  const y = dequantize(blk, "q6_k");
  assert.equal(y.length, 512);
  for (let b = 0; b < 2; b++) {
    for (let i = 0; i < 256; i++) {
      const d = b ? -0.25 : 0.125;
      const want = d * sc[((i >> 4) + b) % 16] * (q6(i + b) - 32);
      assert.equal(y[256 * b + i], want, `block ${b} value ${i}`);
    }
  }
});

/** Max |error| / per-block unit and relative RMS error of a round trip. */
function roundTrip(x: Float32Array, type: QuantType): { maxUnits: number; relRms: number } {
  const y = dequantize(quantize(x, type), type);
  assert.equal(y.length, x.length);
  let num = 0, den = 0, maxUnits = 0;
  for (let b = 0; b < x.length / 32; b++) {
    const v = x.subarray(b * 32, b * 32 + 32);
    const amax = Math.max(...v.map(Math.abs));
    const lo = Math.min(0, ...v), hi = Math.max(...v);
    // Q8_0: one step is amax / 127; Q6_K: about amax / 31 (levels -32 .. 31); Q5_0: amax / 16
    // (-16 .. 15); Q4_K and Q5_K: a sub-block's range over 15 or 31 levels.
    const levels: Record<QuantType, number> = {
      q8_0: 127,
      q6_k: 31,
      q5_0: 16,
      q4_0: 8,
      q5_k: 31,
      q4_k: 15,
    };
    const unit = (type === "q4_k" || type === "q5_k" ? hi - lo : amax) / levels[type];
    for (let i = 0; i < 32; i++) {
      const e = Math.abs(y[b * 32 + i] - v[i]);
      num += e * e;
      den += v[i] * v[i];
      if (unit > 0) maxUnits = Math.max(maxUnits, e / unit);
      else assert.equal(e, 0);
    }
  }
  return { maxUnits, relRms: Math.sqrt(num / den) };
}

Deno.test("quantize -> dequantize: error bounds on random data", () => {
  for (const seed of [1, 7, 99]) {
    // (Scales whose f16 block scales stay normal: the fixture test covers subnormal ones.)
    for (const scale of [1, 0.05, 300]) {
      const x = normals(256 * 8, seed, scale);
      const q8 = roundTrip(x, "q8_0");
      // Rounding to the nearest step (1/2) plus the f16 rounding of d (127 * 2^-11).
      assert.ok(q8.maxUnits <= 0.5 + 127 / 2048, `q8_0 seed ${seed}: ${q8.maxUnits}`);
      assert.ok(q8.relRms < 0.007, `q8_0 seed ${seed}: ${q8.relRms}`);
      // Measured: Q5_0 up to 0.97 units and 0.045 RMS, Q4_K 0.76 and 0.073, Q5_K 0.97 and 0.037,
      // Q6_K 0.50 and 0.019.
      const bounds = [
        ["q5_0", 1 + 16 / 2048, 0.05], // (clipping -amax to 15 costs a whole step)
        ["q4_k", 1, 0.08],
        ["q5_k", 1.25, 0.045],
        ["q6_k", 0.75, 0.025],
      ] as const;
      for (const [type, units, rms] of bounds) {
        const r = roundTrip(x, type);
        assert.ok(r.maxUnits <= units, `${type} seed ${seed}: ${r.maxUnits}`);
        assert.ok(r.relRms < rms, `${type} seed ${seed}: ${r.relRms}`);
      }
    }
  }
});

Deno.test("quantize: zero blocks stay exactly zero, constant blocks nearly constant", () => {
  const x = new Float32Array(512);
  x.fill(0.75, 256, 288); // one constant positive sub-block
  x.fill(-2, 288, 320); // and a negative one
  for (const type of QUANT_TYPES) {
    const y = dequantize(quantize(x, type), type);
    for (let i = 0; i < 512; i++) {
      if (x[i] === 0) assert.ok(y[i] === 0, `${type} ${i}: ${y[i]}`); // (Q6_K may give -0)
      else assert.ok(Math.abs(y[i] - x[i]) <= 0.005 * Math.abs(x[i]), `${type} ${i}: ${y[i]}`);
    }
  }
});

Deno.test("quant: sizes, type table and typed errors", () => {
  assert.equal(quantizedBytes(4096, "q8_0"), 128 * 34);
  assert.equal(quantizedBytes(4096, "q4_k"), 16 * 144);
  assert.equal(quantizedBytes(512, "q5_k"), 2 * 176);
  assert.equal(quantizedBytes(512, "q6_k"), 2 * 210);
  assert.equal(ggmlTypeByName("Q6_K")?.bytes, 210);
  assert.equal(ggmlTypeByName("q4_k")?.id, 12);
  assert.equal(ggmlTypeById(8)?.name, "Q8_0");
  assert.equal(ggmlTypeById(4), undefined); // removed Q4_2
  assert.equal(new Set(GGML_TYPES.map((t) => t.id)).size, GGML_TYPES.length);
  assert.equal(parseQuantType("Q8_0"), "q8_0");
  assert.equal(parseQuantType("Q6_K"), "q6_k");
  const expectArg = (fn: () => unknown, argument: string, text: string) =>
    assert.throws(fn, (e) => {
      assert.ok(e instanceof ArgumentError, String(e));
      assert.equal(e.argument, argument);
      assert.ok(e.message.includes(text), e.message);
      return true;
    });
  expectArg(() => quantize(new Float32Array(48), "q8_0"), "values", "blocks of 32 values; got 48");
  expectArg(() => quantize(new Float32Array(128), "q4_k"), "values", "blocks of 256");
  const bad = new Float32Array(32);
  bad[5] = NaN;
  expectArg(() => quantize(bad, "q8_0"), "values", "value 5 is NaN");
  expectArg(() => quantize(new Float32Array(32), "q3_k" as QuantType), "type", "unknown");
  expectArg(() => quantize(new Float32Array(300), "q6_k"), "values", "blocks of 256");
  expectArg(() => dequantize(new Uint8Array(34), "q8_0", 64), "bytes", "need 68 bytes, got 34");
  expectArg(() => parseQuantType("f8"), "type", "unsupported");
});
