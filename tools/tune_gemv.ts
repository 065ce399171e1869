/**
 * GEMV kernel sweep: `y[N] = W[N, K] . x[K]` (W row-major, f32 / f16 / bf16 packed two per u32 word,
 * x and y f32), with many generated WGSL variants, to find which layout reaches the streaming-read
 * bandwidth. Self-contained: the kernels are strings built here (kernels/ is not touched; the winner
 * is ported later).
 *
 * Swept: threads per row (16..256), rows per workgroup, rows per thread, unrolled 16-byte weight loads
 * (1/2/4/8 in flight per thread), x read from storage as vec4 or staged once in workgroup memory, the
 * reduction (workgroup-memory tree or subgroupAdd / subgroupShuffleXor), and for f16 the conversion
 * (unpack2x16float, f16 bitcast + convert, f16 products accumulated in f32).
 *
 * Per shape and dtype, every variant is first validated against a CPU reference (sampled rows,
 * float64; error relative to the row's sum of |w * x|: 1e-4 for f32 weights, 1e-3 for 16-bit; every
 * output must be written) and reported WRONG (not timed) if it fails. Then all are timed with GPU
 * timestamp queries: per kernel warm-up passes, then the median of >= 10 samples, each a compute pass
 * of back-to-back dispatches (~1.5 ms) that rotate over copies of W (so that small matrices are not
 * served from L2). All kernels of a shape go in one submission with one readback (a round); a second
 * round runs them in reverse order and a third re-times those whose rounds disagree, and each row
 * keeps its best round (on the H200 the SM clock was seen to drop for a while even under load).
 * Without timestamp queries, wall clock around a submit + sync per sample. GB/s = weight bytes /
 * time, beside the streaming-read ceiling of bench/ceilings.ts (1 GiB) and a streaming-read kernel
 * over the same weight buffers with the same rotation (the ceiling at this size, dispatch gaps
 * included). The repo's own kernel (kernels/linear.ts `matvec`, or kernels/moe.ts `moeDown` for the
 * batched expert shapes) is the baseline row. A failing variant is reported and skipped; the sweep
 * starts no new shape when `--budget-s` is spent. Per-shape tables are printed (and the JSON
 * rewritten) as each shape finishes, then a summary.
 *
 * ```sh
 * deno run -A tools/tune_gemv.ts --gpu dawn|native|auto [--small] [--dtypes bf16,f16,f32]
 *   [--shapes 14336x4096,768x2048x8] [--variants REGEX] [--samples 10] [--budget-s 150]
 *   [--warmup-ms 5] [--wall] [--out file.json] [--dawn-flags LIST|none] [--list] [--dump VARIANT:DTYPE]
 * ```
 * Shapes are `NxK` or `NxKxE` (E experts batched in one dispatch, each with its own x). With `--gpu
 * dawn` the tool creates Dawn itself with `--dawn-flags` (default
 * `disable-dawn-features=timestamp_quantization`, so timestamps are not rounded); `none` uses
 * `openGpu` as the runtime does.
 * @module
 */
import { type Dispatch, Gpu, openGpu } from "../runtime/gpu/device.ts";
import { measureReadBandwidth } from "../bench/ceilings.ts";
import { median } from "../bench/harness.ts";
import { fmt } from "./ratio_table.ts";
import { matvec } from "../kernels/linear.ts";
import { moeDown } from "../kernels/moe.ts";
import { type DType, f16BitsToF32 } from "../runtime/weights/dtype.ts";

// ------------------------------------------------------------------------------------ CLI

interface Options {
  gpu: "native" | "dawn" | "auto";
  small: boolean;
  dtypes: DType[];
  shapes?: Shape[];
  variants?: RegExp;
  samples: number;
  budgetS: number;
  warmMs: number;
  /** Time with wall clock even when timestamp queries exist. */
  wall: boolean;
  out?: string;
  dawnFlags: string[] | null;
  list: boolean;
  dump?: string;
}

interface Shape {
  N: number;
  K: number;
  /** Experts batched in one dispatch (each its own W and x). */
  E: number;
}

const USAGE = `usage: deno run -A tools/tune_gemv.ts --gpu dawn|native|auto [--small]
  [--dtypes bf16,f16,f32] [--shapes NxK[xE],...] [--variants REGEX] [--samples N] [--budget-s S]
  [--warmup-ms 5] [--wall] [--out file.json] [--dawn-flags LIST|none] [--list] [--dump VARIANT:DTYPE]`;

function parseShape(s: string): Shape {
  const m = /^(\d+)x(\d+)(?:x(\d+))?$/.exec(s.trim());
  if (!m) throw new Error(`bad shape '${s}' (want NxK or NxKxE)`);
  const [N, K, E] = [Number(m[1]), Number(m[2]), Number(m[3] ?? 1)];
  if (N < 1 || E < 1 || K < 8 || K % 8 !== 0) {
    throw new Error(`bad shape '${s}': K must be a positive multiple of 8 (16-byte rows)`);
  }
  return { N, K, E };
}

function parseArgs(args: string[]): Options {
  const o: Options = {
    gpu: "native",
    small: false,
    dtypes: ["bf16", "f16", "f32"],
    samples: 10,
    budgetS: 150,
    warmMs: 5,
    wall: false,
    dawnFlags: ["disable-dawn-features=timestamp_quantization"],
    list: false,
  };
  for (let i = 0; i < args.length; i++) {
    const a = args[i];
    const val = () => {
      const v = args[++i];
      if (v === undefined) throw new Error(`${a} needs a value\n${USAGE}`);
      return v;
    };
    if (a === "--gpu") {
      const g = val();
      if (g !== "native" && g !== "dawn" && g !== "auto") throw new Error(`bad --gpu ${g}`);
      o.gpu = g;
    } else if (a === "--small") o.small = true;
    else if (a === "--dtypes") {
      o.dtypes = val().split(",").map((d) => {
        if (d !== "f32" && d !== "f16" && d !== "bf16") throw new Error(`bad dtype ${d}`);
        return d;
      });
    } else if (a === "--shapes") o.shapes = val().split(",").map(parseShape);
    else if (a === "--variants") o.variants = new RegExp(val());
    else if (a === "--samples") o.samples = Math.max(3, Number(val()) | 0);
    else if (a === "--budget-s") o.budgetS = Number(val());
    else if (a === "--warmup-ms") o.warmMs = Number(val());
    else if (a === "--wall") o.wall = true;
    else if (a === "--out") o.out = val();
    else if (a === "--dawn-flags") {
      const v = val();
      o.dawnFlags = v === "none" ? null : v.split(" ").filter((s) => s);
    } else if (a === "--list") o.list = true;
    else if (a === "--dump") o.dump = val();
    else if (a === "--help" || a === "-h") {
      console.log(USAGE);
      Deno.exit(0);
    } else throw new Error(`unknown argument ${a}\n${USAGE}`);
  }
  return o;
}

/** Mixtral-8x7B dense-size GEMVs (up/gate and down), and Qwen3-30B-A3B-size experts, 8 in one dispatch. */
const FULL_SHAPES: Shape[] = ["14336x4096", "4096x14336", "768x2048x8", "2048x768x8"].map(
  parseShape,
);
/**
 * `--small`: covers every code path on a software adapter. 9 x 8200 runs the unrolled loop of every
 * variant (and has fewer rows than most workgroups), 67 x 1032 both loops, 40 x 520 x 3 mostly the
 * remainder loop, partial workgroups and the expert batching. (Workgroup x staging compiles slowly
 * on llvmpipe, so K stays small where it fits.)
 */
const SMALL_SHAPES: Shape[] = ["9x8200", "67x1032", "40x520x3"].map(parseShape);

// ------------------------------------------------------------------------------------ variants

/** One generated GEMV kernel layout. */
interface Variant {
  name: string;
  /** Threads per weight row (a power of two). */
  tpr: number;
  /** Thread rows per workgroup (workgroup = tpr * rows threads). */
  rows: number;
  /** Weight rows per thread (they share the x loads). */
  rpt: number;
  /** 16-byte weight loads per thread per loop iteration (issued before the math). */
  unroll: number;
  /** x from storage (vec4 loads, cached) or staged once per workgroup in workgroup memory. */
  xsrc: "global" | "shared";
  /** Reduction of a row's partial sums. */
  red: "tree" | "sg";
  /** f32: unpack to f32 and fma; f16cvt: bitcast to vec4<f16> then convert; h16mul: f16 products. */
  math: "f32" | "f16cvt" | "h16mul";
}

function variant(
  tpr: number,
  rows: number,
  unroll: number,
  more: Partial<Pick<Variant, "rpt" | "xsrc" | "red" | "math">> = {},
): Variant {
  const v: Variant = {
    name: "",
    tpr,
    rows,
    rpt: more.rpt ?? 1,
    unroll,
    xsrc: more.xsrc ?? "global",
    red: more.red ?? "tree",
    math: more.math ?? "f32",
  };
  v.name = `t${tpr}r${rows}u${unroll}${v.rpt > 1 ? `p${v.rpt}` : ""}-${v.red}` +
    `${v.xsrc === "shared" ? "-xs" : ""}${v.math === "f32" ? "" : `-${v.math}`}`;
  return v;
}

/** The sweep: portable (tree reduction) first, then subgroup and f16-arithmetic variants. */
const VARIANTS: Variant[] = [
  // portable: workgroup-memory tree reduction, x from storage
  variant(32, 8, 1), // ~ the repo's matvec layout
  variant(32, 8, 2),
  variant(32, 8, 4),
  variant(32, 4, 2),
  variant(32, 4, 4),
  variant(32, 2, 4),
  variant(16, 16, 2),
  variant(64, 4, 1),
  variant(64, 4, 2),
  variant(64, 4, 4),
  variant(128, 2, 2),
  variant(128, 2, 4),
  variant(128, 1, 4),
  variant(256, 1, 1),
  variant(256, 1, 2),
  variant(256, 1, 4),
  variant(32, 4, 2, { rpt: 2 }),
  variant(32, 8, 1, { rpt: 4 }),
  variant(64, 2, 2, { rpt: 2 }),
  // x staged in workgroup memory (skipped when K does not fit)
  variant(32, 8, 2, { xsrc: "shared" }),
  variant(128, 2, 4, { xsrc: "shared" }),
  variant(256, 1, 4, { xsrc: "shared" }),
  // subgroup reductions
  variant(32, 8, 1, { red: "sg" }),
  variant(32, 8, 2, { red: "sg" }),
  variant(32, 8, 4, { red: "sg" }),
  variant(32, 8, 8, { red: "sg" }),
  variant(32, 4, 4, { red: "sg" }),
  variant(32, 4, 8, { red: "sg" }),
  variant(32, 2, 4, { red: "sg" }),
  variant(32, 1, 4, { red: "sg" }),
  variant(16, 16, 2, { red: "sg" }),
  variant(16, 16, 4, { red: "sg" }),
  variant(64, 4, 2, { red: "sg" }),
  variant(64, 2, 4, { red: "sg" }),
  variant(64, 4, 1, { red: "sg" }),
  variant(128, 2, 1, { red: "sg" }),
  variant(128, 2, 2, { red: "sg" }),
  variant(128, 1, 2, { red: "sg" }),
  variant(128, 1, 4, { red: "sg" }),
  variant(256, 1, 1, { red: "sg" }),
  variant(256, 1, 2, { red: "sg" }),
  variant(256, 1, 4, { red: "sg" }),
  variant(32, 4, 2, { red: "sg", rpt: 2 }),
  variant(32, 4, 4, { red: "sg", rpt: 2 }),
  variant(32, 8, 2, { red: "sg", rpt: 4 }),
  variant(32, 8, 4, { red: "sg", xsrc: "shared" }),
  // f16 weights with shader-f16 (f16 dtype only)
  variant(32, 8, 4, { math: "f16cvt" }),
  variant(32, 8, 4, { red: "sg", math: "f16cvt" }),
  variant(32, 8, 4, { red: "sg", math: "h16mul" }),
  variant(32, 8, 4, { red: "sg", math: "h16mul", xsrc: "shared" }),
  variant(128, 2, 4, { math: "h16mul" }),
];

// ------------------------------------------------------------------------------------ WGSL

const PPW: Record<DType, number> = { f32: 1, f16: 2, bf16: 2 };

/** Workgroup-memory bytes a variant needs for a row length K. */
function sharedBytes(v: Variant, K: number, sg: number): number {
  const wg = v.tpr * v.rows;
  let b = 0;
  if (v.xsrc === "shared") b += K * (v.math === "h16mul" ? 2 : 4);
  if (v.red === "tree") b += 4 * wg * v.rpt;
  else if (v.tpr > sg) b += 4 * (wg / sg) * v.rpt;
  return b;
}

/**
 * The WGSL of a variant. Bindings: params {N, rowVec (16-byte blocks per row), xVec (vec4s of x per
 * expert), E}, w (vec4<u32>), x (vec4<f32>), y (f32). Grid: (ceil(N / rows per workgroup), E).
 * `sg` is the device's subgroup size (subgroup variants write NaN if it differs at run time);
 * `K` is baked in only for x staging.
 */
function genWgsl(v: Variant, dtype: DType, sg: number, K: number): string {
  const WG = v.tpr * v.rows, RW = v.rows * v.rpt, ppw = PPW[dtype], STEP = v.tpr * v.unroll;
  const half = v.math !== "f32";
  const xt = v.math === "h16mul" ? "vec4<f16>" : "vec4<f32>";
  const L: string[] = [];
  if (v.red === "sg") L.push("enable subgroups;");
  if (half) L.push("enable f16;");
  L.push(
    "struct P { N: u32, rowVec: u32, xVec: u32, E: u32 }",
    "@group(0) @binding(0) var<uniform> p: P;",
    "@group(0) @binding(1) var<storage, read> w: array<vec4<u32>>;",
    "@group(0) @binding(2) var<storage, read> x: array<vec4<f32>>;",
    "@group(0) @binding(3) var<storage, read_write> y: array<f32>;",
  );
  if (v.xsrc === "shared") L.push(`var<workgroup> xs: array<${xt}, ${K / 4}>;`);
  if (v.red === "tree") L.push(`var<workgroup> red: array<f32, ${WG * v.rpt}>;`);
  else if (v.tpr > sg) L.push(`var<workgroup> red: array<f32, ${(WG / sg) * v.rpt}>;`);
  // x vec4 number i (relative to the expert's x when staged, absolute otherwise).
  const X = (i: string) =>
    v.xsrc === "shared" ? `xs[${i}]` : v.math === "h16mul" ? `${xt}(x[${i}])` : `x[${i}]`;
  // acc += the block's 4 (f32) or 8 (16-bit) weights times x from vec4 number xi.
  let body: string;
  if (dtype === "f32") {
    body = `return fma(bitcast<vec4<f32>>(q), ${X("xi")}, acc);`;
  } else if (dtype === "bf16") {
    body = `let xa = ${X("xi")}; let xb = ${X("xi + 1u")};
  let a = fma(bitcast<vec4<f32>>(q << vec4<u32>(16u)), vec4<f32>(xa.x, xa.z, xb.x, xb.z), acc);
  return fma(bitcast<vec4<f32>>(q & vec4<u32>(0xffff0000u)), vec4<f32>(xa.y, xa.w, xb.y, xb.w), a);`;
  } else if (v.math === "f32") {
    body = `let xa = ${X("xi")}; let xb = ${X("xi + 1u")};
  let a = fma(vec4<f32>(unpack2x16float(q.x), unpack2x16float(q.y)), xa, acc);
  return fma(vec4<f32>(unpack2x16float(q.z), unpack2x16float(q.w)), xb, a);`;
  } else if (v.math === "f16cvt") {
    body = `let xa = ${X("xi")}; let xb = ${X("xi + 1u")};
  let a = fma(vec4<f32>(bitcast<vec4<f16>>(q.xy)), xa, acc);
  return fma(vec4<f32>(bitcast<vec4<f16>>(q.zw)), xb, a);`;
  } else {
    body = `let xa = ${X("xi")}; let xb = ${X("xi + 1u")};
  return acc + vec4<f32>(bitcast<vec4<f16>>(q.xy) * xa) + vec4<f32>(bitcast<vec4<f16>>(q.zw) * xb);`;
  }
  L.push(`fn blk(acc: vec4<f32>, q: vec4<u32>, xi: u32) -> vec4<f32> {\n  ${body}\n}`);

  const B: string[] = [];
  const J = [...Array(v.rpt).keys()], U = [...Array(v.unroll).keys()];
  B.push(
    `let lane = lid % ${v.tpr}u;`,
    `let tr = lid / ${v.tpr}u;`,
    `let e = wid.y;`,
    `let rowVec = p.rowVec;`,
  );
  if (v.xsrc === "shared") {
    B.push(
      `let xg = e * p.xVec;`,
      `for (var i = lid; i < ${K / 4}u; i += ${WG}u) { xs[i] = ${xt}(x[xg + i]); }`,
      `workgroupBarrier();`,
      `let xo = 0u;`,
    );
  } else B.push(`let xo = e * p.xVec;`);
  for (const j of J) {
    B.push(
      `let row${j} = wid.x * ${RW}u + tr + ${j * v.rows}u;`,
      `let wb${j} = (e * p.N + min(row${j}, p.N - 1u)) * rowVec;`,
    );
    for (const u of U) B.push(`var a${j}_${u} = vec4<f32>(0.0);`);
  }
  // Main loop: a uniform trip count, `unroll` loads per row in flight, then the math.
  B.push(`let full = rowVec / ${STEP}u;`, `for (var i = 0u; i < full; i++) {`);
  B.push(`  let o = i * ${STEP}u + lane;`);
  for (const j of J) {
    for (const u of U) B.push(`  let q${j}_${u} = w[wb${j} + o + ${u * v.tpr}u];`);
  }
  for (const u of U) {
    for (const j of J) {
      B.push(`  a${j}_${u} = blk(a${j}_${u}, q${j}_${u}, xo + (o + ${u * v.tpr}u) * ${ppw}u);`);
    }
  }
  B.push(`}`);
  // Remainder: fewer than STEP blocks, one load per row per iteration.
  B.push(`for (var b = full * ${STEP}u + lane; b < rowVec; b += ${v.tpr}u) {`);
  for (const j of J) B.push(`  a${j}_0 = blk(a${j}_0, w[wb${j} + b], xo + b * ${ppw}u);`);
  B.push(`}`);
  for (const j of J) {
    B.push(`let s${j} = dot(${U.map((u) => `a${j}_${u}`).join(" + ")}, vec4<f32>(1.0));`);
  }
  const out = (j: number, val: string) => `if (row${j} < p.N) { y[e * p.N + row${j}] = ${val}; }`;
  if (v.red === "tree") {
    for (const j of J) B.push(`red[${j * WG}u + lid] = s${j};`);
    B.push(`workgroupBarrier();`);
    B.push(`for (var s = ${v.tpr / 2}u; s > 0u; s >>= 1u) {`, `  if (lane < s) {`);
    for (const j of J) B.push(`    red[${j * WG}u + lid] += red[${j * WG}u + lid + s];`);
    B.push(`  }`, `  workgroupBarrier();`, `}`);
    B.push(`if (lane == 0u) {`);
    for (const j of J) B.push(`  ${out(j, `red[${j * WG}u + lid]`)}`);
    B.push(`}`);
  } else {
    // NaN (built from a run-time value) when the subgroup size is not the one generated for.
    const bad = `bitcast<f32>(0x7fc00000u | sgs)`;
    if (v.tpr <= sg) {
      for (const j of J) {
        if (v.tpr === sg) B.push(`let t${j} = subgroupAdd(s${j});`);
        else {
          B.push(`var t${j} = s${j};`);
          for (let o = v.tpr / 2; o >= 1; o /= 2) {
            B.push(`t${j} += subgroupShuffleXor(t${j}, ${o}u);`);
          }
        }
      }
      B.push(`if (lane == 0u) {`);
      for (const j of J) B.push(`  ${out(j, `select(t${j}, ${bad}, sgs != ${sg}u)`)}`);
      B.push(`}`);
    } else {
      const NSG = WG / sg, per = v.tpr / sg;
      for (const j of J) B.push(`let t${j} = subgroupAdd(s${j});`);
      B.push(`if (sgi == 0u) {`);
      for (const j of J) B.push(`  red[${j * NSG}u + min(lid / ${sg}u, ${NSG - 1}u)] = t${j};`);
      B.push(`}`, `workgroupBarrier();`, `if (lane == 0u) {`);
      for (const j of J) {
        B.push(`  var r${j} = 0.0;`);
        for (let k = 0; k < per; k++) B.push(`  r${j} += red[${j * NSG}u + tr * ${per}u + ${k}u];`);
        B.push(`  ${out(j, `select(r${j}, ${bad}, sgs != ${sg}u)`)}`);
      }
      B.push(`}`);
    }
  }
  const builtins = [
    "@builtin(workgroup_id) wid: vec3<u32>",
    "@builtin(local_invocation_index) lid: u32",
    ...(v.red === "sg"
      ? ["@builtin(subgroup_size) sgs: u32", "@builtin(subgroup_invocation_id) sgi: u32"]
      : []),
  ];
  L.push(
    `@compute @workgroup_size(${WG})\nfn main(${builtins.join(", ")}) {\n  ${B.join("\n  ")}\n}`,
  );
  return L.join("\n") + "\n";
}

/** Streaming read of a buffer (as bench/ceilings.ts): 16 vec4<u32> per thread, xor-reduced. */
const STREAM = {
  name: "tune_gemv_stream",
  entry: "main",
  source: () =>
    Promise.resolve(`
@group(0) @binding(0) var<storage, read> src: array<vec4<u32>>;
@group(0) @binding(1) var<storage, read_write> sink: array<u32>;
@compute @workgroup_size(256)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) lid: u32) {
  let base = (wid.x + wid.y * nwg.x) * 4096u;
  var acc = vec4<u32>(0u);
  for (var i = 0u; i < 16u; i++) {
    let j = base + i * 256u + lid;
    if (j < arrayLength(&src)) { acc ^= src[j]; }
  }
  let r = acc.x ^ acc.y ^ acc.z ^ acc.w;
  if (r == 0x12345678u) { sink[0] = r; }
}`),
};

// ------------------------------------------------------------------------------------ data

/** xorshift32 state. */
let rs = 0x9e3779b9;
function rnd(): number {
  rs ^= rs << 13;
  rs ^= rs >>> 17;
  rs ^= rs << 5;
  return rs >>> 0;
}

/**
 * Random packed weights, magnitudes in [2^-7, 2) with random signs, generated directly as bits
 * (fast for 60 M values): f32 words, or two bf16 / f16 halves per word.
 */
function randomWords(words: number, dtype: DType): Uint32Array {
  const out = new Uint32Array(words);
  for (let i = 0; i < words; i++) {
    const r = rnd();
    if (dtype === "f32") {
      out[i] = (r & 0x807fffff) | ((120 + ((r >>> 23) & 7)) << 23);
    } else if (dtype === "bf16") {
      const h0 = (r & 0x807f) | ((120 + ((r >>> 8) & 7)) << 7);
      const h1 = ((r >>> 16) & 0x807f) | ((120 + ((r >>> 24) & 7)) << 7);
      out[i] = h0 | (h1 << 16);
    } else {
      const h0 = ((r >>> 16) & 0x8000) | ((8 + ((r >>> 10) & 7)) << 10) | (r & 0x3ff);
      const h1 = ((r << 2) & 0x8000) | ((8 + ((r >>> 13) & 7)) << 10) | ((r >>> 3) & 0x3ff);
      out[i] = h0 | (h1 << 16);
    }
  }
  return out;
}

const cvtU = new Uint32Array(1), cvtF = new Float32Array(cvtU.buffer);
function weightAt(words: Uint32Array, dtype: DType, i: number): number {
  if (dtype === "f32") {
    cvtU[0] = words[i];
    return cvtF[0];
  }
  const h = (words[i >> 1] >>> ((i & 1) * 16)) & 0xffff;
  if (dtype === "bf16") {
    cvtU[0] = h << 16;
    return cvtF[0];
  }
  return f16BitsToF32(h);
}

// ------------------------------------------------------------------------------------ results

type Status = "ok" | "WRONG" | "FAIL" | "SKIP";

interface Row {
  dtype: DType;
  shape: string;
  variant: string;
  baseline: boolean;
  status: Status;
  gbs?: number;
  pct?: number;
  us?: number;
  relErr?: number;
  how?: string;
  /** Dispatches per timed pass, samples. */
  timing?: string;
  compileMs?: number;
  validateMs?: number;
  timeMs?: number;
  /** GB/s of each timing round (first pass over all variants, then re-timing rounds). */
  rounds?: number[];
  /** Not a GEMV: the streaming-read kernel over the same weight buffers (this shape's ceiling). */
  stream?: boolean;
  note?: string;
}

const shapeName = (s: Shape) => `${s.N}x${s.K}${s.E > 1 ? `x${s.E}` : ""}`;

function groupTable(rows: Row[], ceiling: number): string {
  const rank = (r: Row) =>
    r.status === "ok" ? 0 : r.status === "WRONG" || r.status === "FAIL" ? 1 : 2;
  const sorted = [...rows].sort((a, b) => rank(a) - rank(b) || (b.gbs ?? 0) - (a.gbs ?? 0));
  const lines = [
    `| # | variant | GB/s | % of ceiling (${
      fmt(ceiling)
    } GB/s) | us/dispatch | rel err | status / notes |`,
    "|---|---|---|---|---|---|---|",
  ];
  sorted.forEach((r, i) => {
    const name = r.baseline
      ? `**${r.variant}** (baseline)`
      : r.stream
      ? `_${r.variant}_`
      : r.variant;
    const ok = r.status === "ok";
    lines.push(
      `| ${ok ? i + 1 : "-"} | ${name} | ${ok ? fmt(r.gbs!) : "-"} | ${
        ok ? `${r.pct!.toFixed(1)}%` : "-"
      } | ${ok ? fmt(r.us!) : "-"} | ${
        r.relErr === undefined ? "-" : r.relErr.toExponential(1)
      } | ${ok ? "" : `${r.status} `}${
        [r.note, ok ? `${r.how}, ${r.timing}` : undefined].filter((s) => s).join("; ")
      } |`,
    );
  });
  return lines.join("\n");
}

// ------------------------------------------------------------------------------------ GPU helpers

async function openDevice(o: Options): Promise<{ gpu: Gpu; how: string }> {
  if (o.gpu === "dawn" && o.dawnFlags) {
    try {
      const spec = "npm:webgpu@0.6.2";
      const mod = await import(spec) as { create: (flags: string[]) => GPU };
      const g = mod.create(o.dawnFlags);
      const adapter = await g.requestAdapter({ powerPreference: "high-performance" });
      if (!adapter) throw new Error("Dawn found no adapter");
      const gpu = await Gpu.fromAdapter({ gpu: g, impl: "dawn", keepAlive: g }, adapter);
      return { gpu, how: `Dawn created here with [${o.dawnFlags.join(" ")}]` };
    } catch (e) {
      console.error(
        `[tune_gemv] Dawn with flags failed (${(e as Error).message}); falling back to openGpu`,
      );
    }
  }
  const gpu = await openGpu({ gpu: o.gpu, log: (m) => console.error(m) });
  return { gpu, how: "openGpu" };
}

/** The device's subgroup size (min and max over a 256-thread workgroup), or null. */
async function probeSubgroupSize(gpu: Gpu): Promise<[number, number] | null> {
  if (!gpu.features.subgroups) return null;
  try {
    const pipe = await gpu.pipeline({
      name: "tune_gemv_sgprobe",
      entry: "main",
      source: () =>
        Promise.resolve(`enable subgroups;
@group(0) @binding(0) var<storage, read_write> o: array<atomic<u32>>;
@compute @workgroup_size(256) fn main(@builtin(subgroup_size) s: u32) {
  atomicMin(&o[0], s);
  atomicMax(&o[1], s);
}`),
    });
    const buf = gpu.storage("other", new Uint32Array([0xffffffff, 0, 0, 0]));
    gpu.submit([gpu.dispatch(pipe, [buf], [4])]);
    const r = await gpu.readU32(buf, 0, 2);
    gpu.destroyBuffer(buf);
    return r[0] >= 1 && r[0] <= 1024 ? [r[0], r[1]] : null;
  } catch (e) {
    console.error(`[tune_gemv] subgroup size probe failed: ${(e as Error).message}`);
    return null;
  }
}

/** Timing submissions that took far longer than their timed GPU span: [wall ms, GPU ms]. */
const STALLS: [number, number][] = [];

/**
 * Wall-clock timing, for devices without timestamp queries: per sample one submit of `perPass`
 * back-to-back dispatches (rotating over `ds`) and a sync, which the figure includes.
 */
async function timeWall(
  gpu: Gpu,
  ds: readonly Dispatch[],
  samples: number,
  targetS: number,
  light: boolean,
): Promise<{ times: number[]; perPass: number }> {
  let k = 0;
  const one = async (n: number) => {
    const enc = gpu.device.createCommandEncoder();
    const pass = enc.beginComputePass();
    for (let i = 0; i < n; i++) {
      const d = ds[k++ % ds.length];
      pass.setPipeline(d.pipeline);
      pass.setBindGroup(0, d.bindGroup);
      pass.dispatchWorkgroups(...d.workgroups);
    }
    pass.end();
    const t0 = performance.now();
    gpu.device.queue.submit([enc.finish()]);
    await gpu.sync();
    return (performance.now() - t0) / 1e3 / n;
  };
  let perPass = 1;
  if (!light) perPass = Math.max(1, Math.min(256, Math.round(targetS / await one(ds.length))));
  await one(perPass);
  const times: number[] = [];
  for (let s = 0; s < samples; s++) times.push(await one(perPass));
  return { times, perPass };
}

/** One timed kernel of a group: its row, its dispatches (one per weight copy), its y slice. */
interface Entry {
  row: Row;
  ds: Dispatch[];
  /** Byte offset of its output slice (GEMVs only; the stream kernel has none). */
  y?: number;
  perPass?: number;
  warm?: number;
}

/**
 * Times several kernels in one submission with one readback (timestamp queries): an optional
 * pre-heat of `preheatMs` (the first kernel, so that clocks are up), then per kernel `warm` untimed
 * passes and `samples` timed passes of `perPass` back-to-back dispatches rotating over its
 * dispatch list. Returns, per kernel, the seconds per dispatch of each valid sample.
 */
async function timeBatch(
  gpu: Gpu,
  list: { ds: readonly Dispatch[]; perPass: number; warm: number }[],
  samples: number,
  preheatMs = 0,
): Promise<{ times: number[][]; how: string }> {
  const dev = gpu.device;
  const times: number[][] = list.map(() => []);
  let quantized = true;
  // A query set holds at most 4096 queries: chunks of kernels.
  const per = Math.max(1, Math.floor(4096 / (2 * samples)));
  for (let c0 = 0; c0 < list.length; c0 += per) {
    const chunk = list.slice(c0, c0 + per);
    const count = 2 * samples * chunk.length;
    const qs = dev.createQuerySet({ type: "timestamp", count });
    const res = gpu.createBuffer({
      size: 8 * count,
      purpose: "other",
      usage: GPUBufferUsage.QUERY_RESOLVE | GPUBufferUsage.COPY_SRC,
    });
    try {
      const enc = dev.createCommandEncoder();
      const pass = (ds: readonly Dispatch[], n: number, k: number, q?: number) => {
        const p = enc.beginComputePass(
          q === undefined ? {} : {
            timestampWrites: {
              querySet: qs,
              beginningOfPassWriteIndex: q,
              endOfPassWriteIndex: q + 1,
            },
          },
        );
        for (let i = 0; i < n; i++) {
          const d = ds[(k + i) % ds.length];
          p.setPipeline(d.pipeline);
          p.setBindGroup(0, d.bindGroup);
          p.dispatchWorkgroups(...d.workgroups);
        }
        p.end();
      };
      if (preheatMs > 0 && c0 === 0 && chunk.length) {
        // perPass dispatches last about 1.5 ms: enough passes for preheatMs.
        for (let i = 0; i < Math.ceil(preheatMs / 1.5); i++) {
          pass(chunk[0].ds, chunk[0].perPass, i);
        }
      }
      chunk.forEach((e, j) => {
        let k = 0;
        for (let w = 0; w < e.warm; w++, k += e.perPass) pass(e.ds, e.perPass, k);
        for (let s = 0; s < samples; s++, k += e.perPass) {
          pass(e.ds, e.perPass, k, 2 * (j * samples + s));
        }
      });
      enc.resolveQuerySet(qs, 0, count, res, 0);
      const w0 = performance.now();
      dev.queue.submit([enc.finish()]);
      const t = new BigUint64Array(await gpu.read(res, 0, 8 * count));
      const wall = performance.now() - w0;
      const span = Number(t[count - 1] - t[0]) / 1e6;
      if (wall > 500 && wall > 3 * span) STALLS.push([wall, span]);
      chunk.forEach((e, j) => {
        for (let s = 0; s < samples; s++) {
          const q = 2 * (j * samples + s);
          if ((t[q] & 0xffffn) !== 0n || (t[q + 1] & 0xffffn) !== 0n) quantized = false;
          const d = Number(t[q + 1] - t[q]);
          if (d > 0 && d < 1e11) times[c0 + j].push(d / 1e9 / e.perPass);
        }
      });
    } finally {
      qs.destroy();
      gpu.destroyBuffer(res);
    }
  }
  return { times, how: quantized ? "timestamps (quantized 65.5 us)" : "timestamps" };
}

// ------------------------------------------------------------------------------------ main

async function main() {
  const t0 = performance.now();
  const o = parseArgs(Deno.args);
  const elapsed = () => (performance.now() - t0) / 1e3;
  const pick = (v: Variant) => !o.variants || o.variants.test(v.name);

  if (o.list) {
    for (const v of VARIANTS) console.log(v.name);
    return;
  }
  if (o.dump) {
    const [name, dt = "bf16"] = o.dump.split(":");
    const v = VARIANTS.find((x) => x.name === name);
    if (!v) throw new Error(`no variant ${name} (see --list)`);
    console.log(genWgsl(v, dt as DType, 32, 4096));
    return;
  }

  const { gpu, how: openedHow } = await openDevice(o);
  const light = gpu.isFallback || /llvmpipe|lavapipe|swiftshader/i.test(gpu.adapterName);
  const log = (m: string) => console.error(`[tune_gemv ${elapsed().toFixed(1)}s] ${m}`);
  log(`${gpu.describe()} (${openedHow})${light ? ", software adapter: light timing" : ""}`);

  const sgRange = await probeSubgroupSize(gpu);
  const sg = sgRange ? sgRange[1] : 32;
  const notes: string[] = [];
  if (sgRange) {
    log(`subgroup size ${sgRange[0]}..${sgRange[1]}`);
    if (sgRange[0] !== sgRange[1]) {
      notes.push(
        `subgroup size varies (${sgRange[0]}..${sgRange[1]}): subgroup variants assume ${sg}`,
      );
    }
  }

  let ceiling = NaN;
  try {
    ceiling = await measureReadBandwidth(gpu);
    log(`streaming-read ceiling ${fmt(ceiling)} GB/s`);
  } catch (e) {
    notes.push(`ceiling measurement failed: ${(e as Error).message}`);
  }

  const shapes = o.shapes ?? (o.small ? SMALL_SHAPES : FULL_SHAPES);
  const all: Row[] = [];
  const maxShared = gpu.limits.maxComputeWorkgroupStorageSize;
  const maxWg = gpu.limits.maxComputeInvocationsPerWorkgroup;
  const rotateBytes = light ? 8 << 20 : 512 << 20;
  const useTs = gpu.features.timestampQuery && !o.wall;
  const timingOpts = {
    samples: light ? 3 : o.samples,
    // Timestamp passes of ~1.5 ms (Dawn's default 65.5 us timestamp rounding is turned off where
    // possible); at most 64 dispatches each, as Dawn records every dispatch on the CPU at submit.
    targetS: useTs ? 0.0015 : 0.03,
    warmS: o.warmMs / 1e3,
    maxPerPass: useTs ? 64 : 256,
    light,
  };
  let lost = false;
  let skippedBudget = 0;
  const header = `tune_gemv ${new Date().toISOString()} ${gpu.describe()}; ${openedHow}; ` +
    `subgroup size ${sgRange ? sgRange.join("..") : "n/a"}; ceiling ${fmt(ceiling)} GB/s`;

  const writeJson = async () => {
    if (!o.out) return;
    const json = {
      header,
      gpu: gpu.describe(),
      impl: gpu.impl,
      adapter: gpu.adapterName,
      features: gpu.features,
      subgroupSize: sgRange,
      ceilingGBs: ceiling,
      args: Deno.args,
      notes,
      elapsedS: elapsed(),
      rows: all,
    };
    await Deno.writeTextFile(o.out, JSON.stringify(json, null, 1));
  };

  const cachedWords = new Map<string, Uint32Array>();
  for (const dtype of o.dtypes) {
    cachedWords.clear();
    for (const shape of shapes) {
      const sname = shapeName(shape);
      const rows: Row[] = [];
      const todo = VARIANTS.filter(pick);
      if (lost || elapsed() > o.budgetS) {
        skippedBudget += todo.length + 1;
        continue;
      }
      const { N, K, E } = shape;
      const words = (E * N * K) / PPW[dtype];
      const wBytes = words * 4;
      if (wBytes > gpu.limits.maxStorageBufferBindingSize) {
        notes.push(`${dtype} ${sname}: weights over maxStorageBufferBindingSize, skipped`);
        continue;
      }
      log(`${dtype} ${sname}: preparing ${fmt(wBytes / 2 ** 20)} MiB of weights`);
      let w = cachedWords.get(`${words}`);
      if (!w) {
        w = randomWords(words, dtype);
        cachedWords.set(`${words}`, w);
      }
      const x = new Float32Array(E * K);
      for (let i = 0; i < x.length; i++) x[i] = (rnd() / 2 ** 32) * 2 - 1;
      const copies = Math.max(1, Math.min(32, Math.ceil(rotateBytes / wBytes)));
      const bufs: GPUBuffer[] = [];
      const wBufs: GPUBuffer[] = [];
      try {
        wBufs.push(gpu.storage("dense", w, `w0`));
        if (copies > 1) {
          const enc = gpu.device.createCommandEncoder();
          for (let c = 1; c < copies; c++) {
            const b = gpu.storage("dense", wBytes, `w${c}`);
            enc.copyBufferToBuffer(wBufs[0], 0, b, 0, wBytes);
            wBufs.push(b);
          }
          gpu.device.queue.submit([enc.finish()]);
        }
      } catch (e) {
        notes.push(`${dtype} ${sname}: allocation failed (${(e as Error).message}), skipped`);
        wBufs.forEach((b) => gpu.destroyBuffer(b));
        continue;
      }
      const xBuf = gpu.storage("activations", x, "x");
      const params = gpu.uniform(new Uint32Array([N, K / (4 * PPW[dtype]), K / 4, E]), "params");
      bufs.push(xBuf, params);
      // Every GEMV writes its own slice of one output buffer, so that all can be validated with
      // one readback (each readback is a sync, and syncs on Dawn sometimes stall for seconds).
      const yBytes = E * N * 4;
      const align = Math.max(256, gpu.limits.minStorageBufferOffsetAlignment ?? 256);
      const ySlot = Math.ceil(yBytes / align) * align;
      const yAll = gpu.storage("activations", ySlot * (todo.length + 1), "y");
      bufs.push(yAll);
      let nextSlot = 0;
      const takeY = () => ({ buffer: yAll, offset: ySlot * nextSlot++, size: yBytes });

      // CPU reference on sampled rows (float64), with each row's sum of |w * x| as the error scale.
      const total = E * N;
      const sample = new Set<number>([0, 1, 2, total - 1, total - 2, N - 1]);
      while (sample.size < Math.min(total, 40)) sample.add(rnd() % total);
      const ref = [...sample].map((r) => {
        const e = Math.floor(r / N);
        let s = 0, a = 0;
        for (let k = 0; k < K; k++) {
          const p = weightAt(w!, dtype, r * K + k) * x[e * K + k];
          s += p;
          a += Math.abs(p);
        }
        return { r, s, a };
      });
      const tol = dtype === "f32" ? 1e-4 : 1e-3;
      const fail = (row: Row, e: unknown) => {
        const msg = (e as Error).message ?? String(e);
        row.status = "FAIL";
        row.note = msg.split("\n").slice(0, 3).join(" / ").slice(0, 300);
        if (/device (was )?lost/i.test(msg)) lost = true;
      };
      const entries: Entry[] = [];

      // This shape's ceiling: the streaming-read kernel over the same buffers, same rotation.
      const streamRow: Row = {
        dtype,
        shape: sname,
        variant: "stream-read of the same weights (ceiling)",
        baseline: false,
        stream: true,
        status: "FAIL",
      };
      rows.push(streamRow);
      try {
        const pipe = await gpu.pipeline(STREAM);
        const sink = gpu.storage("other", 16, "sink");
        bufs.push(sink);
        const groups = gpu.grid(Math.ceil(wBytes / 16 / (256 * 16)));
        entries.push({
          row: streamRow,
          ds: wBufs.map((wb) => gpu.dispatch(pipe, [wb, sink], groups)),
        });
      } catch (e) {
        fail(streamRow, e);
      }

      // Baseline: the repo's kernel.
      const baseRow: Row = {
        dtype,
        shape: sname,
        variant: E === 1 ? "repo matvec (linear.ts)" : "repo moeDown (moe.ts)",
        baseline: true,
        status: "FAIL",
      };
      rows.push(baseRow);
      try {
        const y = takeY();
        const ds: Dispatch[] = [];
        if (E === 1) {
          for (const wb of wBufs) ds.push(await matvec(gpu, { x: xBuf, w: wb, y, K, N, dtype }));
        } else {
          const table = gpu.storage("other", Uint32Array.from({ length: E }, (_, i) => i));
          const ids = gpu.storage("other", Uint32Array.from({ length: E }, (_, i) => i));
          bufs.push(table, ids);
          for (const wb of wBufs) {
            ds.push(
              await moeDown(gpu, {
                x: xBuf,
                down: wb,
                out: y,
                table,
                ids,
                T: 1,
                topK: E,
                hidden: N,
                inter: K,
                slotWords: N * K / PPW[dtype],
                dtype,
              }),
            );
          }
        }
        entries.push({ row: baseRow, ds, y: y.offset });
      } catch (e) {
        fail(baseRow, e);
      }

      // The variants: skip what this device or shape cannot run, compile the rest.
      for (const v of todo) {
        const row: Row = { dtype, shape: sname, variant: v.name, baseline: false, status: "SKIP" };
        rows.push(row);
        const wg = v.tpr * v.rows;
        const smem = sharedBytes(v, K, sg);
        const groups = Math.ceil(N / (v.rows * v.rpt));
        if (lost) row.note = "device lost";
        else if (elapsed() > o.budgetS) row.note = "budget";
        else if (v.red === "sg" && !sgRange) row.note = "needs subgroups";
        else if (v.math !== "f32" && dtype !== "f16") row.note = "f16 weights only";
        else if (v.math !== "f32" && !gpu.features.shaderF16) row.note = "needs shader-f16";
        else if (v.red === "sg" && (v.tpr > sg ? v.tpr % sg !== 0 : sg % v.tpr !== 0)) {
          row.note = `threads per row vs subgroup size ${sg}`;
        } else if (wg > maxWg || smem > maxShared) {
          row.note =
            `needs ${wg} threads / ${smem} B workgroup memory (limits ${maxWg} / ${maxShared})`;
        } else if (groups > gpu.limits.maxComputeWorkgroupsPerDimension) {
          row.note = `${groups} workgroups over the per-dimension limit`;
        } else {
          try {
            const name = `tune_gemv:${v.name}:${dtype}${v.xsrc === "shared" ? `:K${K}` : ""}`;
            const c0 = performance.now();
            const pipe = await gpu.pipeline({
              name,
              entry: "main",
              source: () => Promise.resolve(genWgsl(v, dtype, sg, K)),
            });
            row.compileMs = performance.now() - c0;
            const y = takeY();
            const ds = wBufs.map((wb) => gpu.dispatch(pipe, [params, wb, xBuf, y], [groups, E]));
            entries.push({ row, ds, y: y.offset });
          } catch (e) {
            fail(row, e);
          }
        }
        if (row.note === "budget") skippedBudget++;
      }

      // Validation: every GEMV once on weight copy 0, one submission, one readback; if that fails
      // (a GPU error), one by one to find the culprit.
      const check = (row: Row, yv: Float32Array) => {
        let err = 0;
        for (const { r, s, a } of ref) {
          const e = Math.abs(yv[r] - s) / Math.max(a, 1e-30);
          if (!(e <= err)) err = e; // NaN propagates
        }
        for (let i = 0; i < yv.length; i++) {
          if (!Number.isFinite(yv[i])) err = NaN;
        }
        row.relErr = Number.isNaN(err) ? undefined : err;
        if (err <= tol) return true;
        row.status = "WRONG";
        row.note = Number.isNaN(err)
          ? "NaN / unwritten rows"
          : `error ${err.toExponential(2)} > ${tol}`;
        return false;
      };
      const gemvs = entries.filter((e) => e.y !== undefined);
      const poison = new Float32Array(yAll.size / 4).fill(NaN);
      const valid = new Set<Entry>();
      try {
        gpu.write(yAll, poison);
        gpu.submit(gemvs.map((e) => e.ds[0]));
        const yv = await gpu.readF32(yAll);
        for (const e of gemvs) {
          if (check(e.row, yv.subarray(e.y! / 4, e.y! / 4 + E * N))) valid.add(e);
        }
      } catch (e) {
        log(`${dtype} ${sname}: batched validation failed (${(e as Error).message}); one by one`);
        for (const en of gemvs) {
          if (lost) break;
          try {
            gpu.write(yAll, poison);
            gpu.submit([en.ds[0]]);
            if (check(en.row, await gpu.readF32(yAll, en.y!, E * N))) valid.add(en);
          } catch (err) {
            fail(en.row, err);
          }
        }
      }
      const timedEntries = entries.filter((e) => e.y === undefined || valid.has(e));
      log(`${dtype} ${sname}: ${valid.size} of ${gemvs.length} GEMVs validated; timing`);

      // Timing rounds, the second in reverse order (clocks and other work on the GPU drift: on the
      // H200 the SM clock was seen to sit at 345-900 MHz for part of a busy second); each row's
      // figure is its best round.
      const record = (en: Entry, times: number[], how: string) => {
        if (times.length < Math.min(3, timingOpts.samples)) {
          en.row.note = [en.row.note, `timing gave ${times.length} valid samples`]
            .filter((x) => x).join("; ");
          return;
        }
        const sec = median(times);
        const sorted = [...times].sort((a, b) => a - b);
        const gbs = wBytes / sec / 1e9;
        const row = en.row;
        (row.rounds ??= []).push(gbs);
        row.status = "ok";
        if (row.gbs === undefined || gbs > row.gbs) {
          row.us = sec * 1e6;
          row.gbs = gbs;
          row.pct = (100 * gbs) / ceiling;
          row.how = how;
          row.timing = `${en.perPass ?? 1}/pass x ${times.length}, spread ${
            (100 * (sorted[sorted.length - 1] - sorted[0]) / sec).toFixed(0)
          }%`;
        }
      };
      try {
        if (useTs) {
          const t1 = performance.now();
          if (!light) {
            // Calibration: dispatches per pass so that a pass lasts ~targetS, warm-up passes.
            const cal = await timeBatch(
              gpu,
              timedEntries.map((e) => ({ ds: e.ds, perPass: Math.min(e.ds.length, 4), warm: 1 })),
              1,
            );
            timedEntries.forEach((e, i) => {
              const t = cal.times[i][0] ?? timingOpts.targetS;
              e.perPass = Math.max(
                1,
                Math.min(timingOpts.maxPerPass, Math.round(timingOpts.targetS / t)),
              );
              e.warm = Math.max(1, Math.min(50, Math.ceil(timingOpts.warmS / (e.perPass * t))));
            });
          }
          // Round 3: the rows whose first two rounds disagree (the GPU ran slower for a while:
          // clocks), with the stream and baseline rows for comparison.
          const disagree = (e: Entry) => {
            const rs = e.row.rounds ?? [];
            return rs.length < 2 || Math.max(...rs) > 1.15 * Math.min(...rs);
          };
          const order = [
            () => timedEntries,
            () => [...timedEntries].reverse(),
            () => {
              const l = timedEntries.filter((e) => !e.row.stream && !e.row.baseline && disagree(e));
              return l.length
                ? [...timedEntries.filter((e) => e.row.stream || e.row.baseline), ...l]
                : [];
            },
          ];
          for (const [ri, make] of order.entries()) {
            const list = make();
            if (lost || !list.length || (ri > 0 && elapsed() > o.budgetS)) break;
            const r = await timeBatch(
              gpu,
              list.map((e) => ({ ds: e.ds, perPass: e.perPass ?? 1, warm: e.warm ?? 1 })),
              timingOpts.samples,
              light ? 0 : 250,
            );
            list.forEach((e, i) => record(e, r.times[i], r.how));
          }
          const ms = performance.now() - t1;
          timedEntries.forEach((e) => (e.row.timeMs = ms / timedEntries.length));
        } else {
          for (const e of timedEntries) {
            if (lost || elapsed() > o.budgetS) break;
            const t = await timeWall(gpu, e.ds, timingOpts.samples, timingOpts.targetS, light);
            e.perPass = t.perPass;
            record(e, t.times, "wall clock incl. sync");
          }
        }
      } catch (e) {
        const msg = (e as Error).message;
        notes.push(`${dtype} ${sname}: timing failed: ${msg.split("\n")[0]}`);
        if (/device (was )?lost/i.test(msg)) lost = true;
      }
      for (const en of timedEntries) {
        const row = en.row;
        if (row.status !== "ok" && row.status !== "WRONG") {
          row.status = "FAIL";
          row.note ??= "not timed";
        }
        const rs = row.rounds ?? [];
        if (rs.length > 1 && Math.max(...rs) > 1.25 * Math.min(...rs)) {
          const lo = fmt(Math.min(...rs)), hi = fmt(Math.max(...rs));
          row.note = [row.note, `unstable: ${lo}..${hi} GB/s over ${rs.length} rounds`]
            .filter((x) => x).join("; ");
        }
      }
      wBufs.forEach((b) => gpu.destroyBuffer(b));
      bufs.forEach((b) => gpu.destroyBuffer(b));
      all.push(...rows);
      console.log(
        `\n### ${dtype} ${sname} (weights ${
          fmt(wBytes / 2 ** 20)
        } MiB, ${copies} copies rotated)\n\n` +
          groupTable(rows, ceiling) + "\n",
      );
      await writeJson();
    }
  }

  // Summary: best per group against the baseline.
  const lines = [
    `\n## Summary: ${header}\n`,
    "| dtype | shape | best variant | GB/s | % of ceiling | stream-read same bytes GB/s | baseline GB/s | speedup | >= 2500 GB/s | validated / run |",
    "|---|---|---|---|---|---|---|---|---|---|",
  ];
  const groups = new Map<string, Row[]>();
  for (const r of all) {
    const k = `${r.dtype} ${r.shape}`;
    groups.set(k, [...(groups.get(k) ?? []), r]);
  }
  let wrong = 0, run = 0;
  for (const [k, rs] of groups) {
    const ok = rs.filter((r) => r.status === "ok" && !r.baseline && !r.stream);
    const ran = rs.filter((r) => !r.baseline && !r.stream && r.status !== "SKIP");
    const stream = rs.find((r) => r.stream && r.status === "ok");
    wrong += ran.length - ok.length;
    run += ran.length;
    const best = ok.sort((a, b) => b.gbs! - a.gbs!)[0];
    const base = rs.find((r) => r.baseline);
    const [dt, sh] = k.split(" ");
    lines.push(
      `| ${dt} | ${sh} | ${best?.variant ?? "-"} | ${best ? fmt(best.gbs!) : "-"} | ${
        best ? `${best.pct!.toFixed(1)}%` : "-"
      } | ${stream ? fmt(stream.gbs!) : "-"} | ${
        base?.status === "ok" ? fmt(base.gbs!) : base?.status ?? "-"
      } | ${best && base?.status === "ok" ? `${(best.gbs! / base.gbs!).toFixed(2)}x` : "-"} | ${
        ok.filter((r) => r.gbs! >= 2500).length
      } | ${ok.length} / ${ran.length} |`,
    );
  }
  console.log(lines.join("\n"));
  if (skippedBudget) {
    notes.push(`${skippedBudget} measurements not run: --budget-s ${o.budgetS} spent`);
  }
  if (lost) notes.push("the device was lost; the rest was skipped");
  if (STALLS.length) {
    notes.push(
      `${STALLS.length} timing submissions took > 0.5 s and > 3x their timed GPU span (wall/GPU ms: ${
        STALLS.slice(0, 8).map(([w, g]) => `${w.toFixed(0)}/${g.toFixed(1)}`).join(", ")
      }); CPU-side recording of many dispatches, or syncs that stall`,
    );
  }
  notes.push(
    `${run - wrong} of ${run} variant runs validated and timed (${wrong} WRONG or FAIL); ` +
      `${elapsed().toFixed(1)} s`,
  );
  console.log(`\n${notes.map((n) => `- ${n}`).join("\n")}`);
  await writeJson();
  gpu.destroy();
}

if (import.meta.main) {
  await main();
}
