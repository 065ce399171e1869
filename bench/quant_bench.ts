/**
 * The quantisers' speed on one CPU thread (what `pregate convert` spends per value and worker):
 * each quantised type on 1 Mi random values, Pregate's `quantize` (WebAssembly for the K-quants)
 * beside the TypeScript reference in `k_quants.ts` and, as the ceiling, ggml's own C reference
 * quantiser (`quantize_row_*_ref` of the libggml-base in a node-llama-cpp install named by
 * PREGATE_LLAMA_CPP, through FFI; left out without it). Every implementation's bytes are checked
 * equal first; then one untimed run, then the median of PREGATE_BENCH_RUNS (default 5) timed runs.
 *
 * Run: `deno run -A bench/quant_bench.ts` (or `deno bench -A bench/quant_bench.ts` for deno bench's
 * own statistics of `quantize`). PREGATE_BENCH_OUT: path of a JSON copy of the table.
 * @module
 */
import { QUANT_TYPES, quantize, type QuantType } from "../runtime/weights/quant.ts";
import { quantizeQ4K, quantizeQ5K, quantizeQ6K } from "../runtime/weights/k_quants.ts";
import { randn } from "../kernels/check.ts";
import { median } from "./harness.ts";

const N = 1 << 20;
const RUNS = Math.max(1, Number(Deno.env.get("PREGATE_BENCH_RUNS") ?? 5));
const x = randn(N, 0.5, 16);

/** The TypeScript references of the types `quantize` runs in WebAssembly. */
const REFERENCE: Partial<Record<QuantType, (x: Float32Array, nb: number) => Uint8Array>> = {
  q4_k: quantizeQ4K,
  q5_k: quantizeQ5K,
  q6_k: quantizeQ6K,
};

/** ggml's `quantize_row_<type>_ref` from a node-llama-cpp install, or null without one. */
function ggmlQuantizers(): ((t: QuantType, x: Float32Array, out: Uint8Array) => void) | null {
  const dir = Deno.env.get("PREGATE_LLAMA_CPP");
  if (!dir) return null;
  const lib = Deno.dlopen(
    `${dir}/node_modules/@node-llama-cpp/linux-x64/bins/linux-x64/libggml-base.so`,
    Object.fromEntries(
      QUANT_TYPES.map((t) => [
        `quantize_row_${t.replace("_k", "_K")}_ref`,
        { parameters: ["buffer", "buffer", "i64"], result: "void" },
      ]),
    ) as Record<string, { parameters: ["buffer", "buffer", "i64"]; result: "void" }>,
  );
  return (t, values, out) =>
    lib.symbols[`quantize_row_${t.replace("_k", "_K")}_ref`](values, out, BigInt(values.length));
}

/** Median seconds of `fn` over RUNS timed runs after one untimed run. */
function timed(fn: () => void): number {
  fn();
  const s: number[] = [];
  for (let r = 0; r < RUNS; r++) {
    const t0 = performance.now();
    fn();
    s.push((performance.now() - t0) / 1e3);
  }
  return median(s);
}

const ggml = ggmlQuantizers();
const rows: Record<string, unknown>[] = [];
for (const type of QUANT_TYPES) {
  const ours = quantize(x, type);
  const ref = REFERENCE[type];
  if (ref && ref(x, N / 256).join() !== ours.join()) {
    throw new Error(`${type}: quantize and the TypeScript reference write different bytes`);
  }
  const cOut = new Uint8Array(ours.byteLength);
  if (ggml) {
    ggml(type, x, cOut);
    if (cOut.join() !== ours.join()) throw new Error(`${type}: ggml's C writes different bytes`);
  }
  const mps = (s: number) => N / s / 1e6;
  rows.push({
    type,
    quantize_m_values_per_s: mps(timed(() => quantize(x, type))),
    typescript_reference_m_values_per_s: ref ? mps(timed(() => ref(x, N / 256))) : null,
    ggml_c_m_values_per_s: ggml ? mps(timed(() => ggml(type, x, cOut))) : null,
  });
}

const fmt = (v: unknown) => (typeof v === "number" ? v.toFixed(1) : "-");
console.log(
  `\nQuantisers on one thread, ${N} values, median of ${RUNS} runs (${Deno.build.target})\n`,
);
console.log("| type | `quantize` M values/s | TypeScript reference | ggml's C (ceiling) |");
console.log("|---|---|---|---|");
for (const r of rows) {
  console.log(
    `| ${r.type} | ${fmt(r.quantize_m_values_per_s)} | ` +
      `${fmt(r.typescript_reference_m_values_per_s)} | ${fmt(r.ggml_c_m_values_per_s)} |`,
  );
}
const out = Deno.env.get("PREGATE_BENCH_OUT");
if (out) await Deno.writeTextFile(out, JSON.stringify({ values: N, runs: RUNS, rows }, null, 2));

for (const type of QUANT_TYPES) {
  Deno.bench({ name: `quantize ${type} (${N} values)`, n: 3, warmup: 1 }, () => {
    quantize(x, type);
  });
}
