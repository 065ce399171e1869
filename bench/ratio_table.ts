/**
 * One markdown table of Pregate's measured figures, each as a ratio to its ceiling and to the peer
 * (PyTorch / HF transformers on the same host), from the JSON files the benchmarks write:
 *
 * - `--kernels`: `bench/kernels_bench.ts` (`PREGATE_BENCH_OUT`): `{header, gpu, impl, size, rows}`,
 *   rows `{name, value, unit, ceiling?, ceilingNote?, note?}` (bench/harness.ts `ResultRow`);
 * - `--tune`: a GEMV sweep (the former `tools/tune_gemv.ts --out`, e.g.
 *   `bench/results/2026-11-28_h200_dawn_tune_gemv.json`): `{header, gpu, ceilingGBs, rows}`, rows `{dtype, shape,
 *   variant, baseline, status, gbs?, pct?, stream?}`;
 * - `--decode`: `bench/decode_bench.ts` (`PREGATE_BENCH_OUT`): `{header, gpu, results}`, results
 *   `{spec, decode_tokens_per_s, ceiling_tokens_per_s, active_bytes_per_token, read_bandwidth_gb_s}`;
 * - `--offload` (repeatable, optionally `LABEL=FILE.json`): `bench/offload.ts` (`PREFIX.json`):
 *   `{gpu, results}`, results `{spec, mode, decode_tokens_per_s, ceiling_tokens_per_s (null: no
 *   uploads), upload_gb_s, upload_bytes_per_token}`;
 * - `--peer`: `bench/peer_bench.py` (`PREFIX.json`): `{env, parts, gemv: {results: [{dtype: fp32 |
 *   fp16 | bf16, gb_s}], d2d_copy: {gb_s_read_plus_write}}, copy: {results: [{kind: pinned |
 *   pageable, mib, gb_s}]}, hf: {checkpoints: [{name, model_type, num_hidden_layers, dtype, runs:
 *   [{mode: gpu_only | offload, decode_tokens_per_s, h2d_bytes_per_token?}]}]}}`;
 * - `--probe` (repeatable, optionally `LABEL=FILE.json`): a subgroup-matrix tiling probe (the former
 *   `tools/probe_sgmatrix.ts --out`, e.g. `bench/results/2026-11-29_h200_s4_probe_final_x16.json`): `{device,
 *   size, x?, results: [{tune, dtype, status, tflops?}], ablations?: [{tune, ablate, tflops?}]}`:
 *   the fastest valid tiling per weight dtype, against the same run's multiplies-alone ablation.
 *
 * Run: `deno run -R -W bench/ratio_table.ts [--kernels F.json] [--tune F.json] [--decode F.json]
 * [--offload [LABEL=]F.json]... [--probe [LABEL=]F.json]... [--peer F.json] [--out F.md]
 * [--svg F.svg]`. Missing inputs or fields
 * give "-" cells; an unreadable or malformed file is an error naming the file (exit status 2).
 * `--svg` also draws the offloading tokens/s plot of `bench/plot_offload.ts` from the `--offload`
 * files (plus the HF peer's decode rates where its checkpoint matches).
 * @module
 */
import { renderSvg } from "./plot_offload.ts";

// ------------------------------------------------------------------------------------ inputs

/** A result file that failed to load or does not have the structure its flag expects. */
export class InputError extends Error {
  constructor(readonly file: string, msg: string) {
    super(`${file}: ${msg}`);
    this.name = "InputError";
  }
}

/** The kinds of input file, one per flag. */
export type Kind = "kernels" | "tune" | "decode" | "offload" | "peer" | "probe";

/** One parsed input file. */
export interface Source {
  kind: Kind;
  /** The path given. */
  file: string;
  /** Label (offload and probe files: `LABEL=` or the file name). */
  label: string;
  data: Record<string, unknown>;
}

/** The inputs of one table. */
export interface Inputs {
  kernels?: Source;
  tune?: Source;
  decode?: Source;
  offload: Source[];
  peer?: Source;
  /** Subgroup-matrix probes (the former `tools/probe_sgmatrix.ts --out`; committed results). */
  probe?: Source[];
}

type Obj = Record<string, unknown>;
const isObj = (x: unknown): x is Obj => typeof x === "object" && x !== null && !Array.isArray(x);
const num = (x: unknown): number | undefined =>
  typeof x === "number" && Number.isFinite(x) ? x : undefined;
const str = (x: unknown): string | undefined => (typeof x === "string" ? x : undefined);
const objs = (x: unknown): Obj[] => (Array.isArray(x) ? x.filter(isObj) : []);
const base = (p: string) => p.split(/[\\/]/).pop() ?? p;

/** Parses and checks one file's text: throws InputError (naming the file) if it is malformed. */
export function parseInput(kind: Kind, file: string, text: string, label?: string): Source {
  let data: unknown;
  try {
    data = JSON.parse(text);
  } catch (e) {
    throw new InputError(file, `not valid JSON (${(e as Error).message})`);
  }
  const bad = (what: string) =>
    new InputError(file, `not a ${WRITER[kind]} result file (--${kind}): ${what}`);
  if (!isObj(data)) throw bad("the top level is not an object");
  const listOf = (key: string, need: (r: Obj) => boolean, what: string) => {
    const v = data[key];
    if (!Array.isArray(v)) throw bad(`no "${key}" array`);
    const i = v.findIndex((r) => !isObj(r) || !need(r));
    if (i >= 0) throw bad(`${key}[${i}] ${what}`);
  };
  if (kind === "kernels") listOf("rows", (r) => typeof r.name === "string", "has no name");
  else if (kind === "tune") {
    listOf(
      "rows",
      (r) => typeof r.variant === "string" && typeof r.dtype === "string",
      "has no variant / dtype",
    );
  } else if (kind === "decode") listOf("results", (r) => typeof r.spec === "string", "has no spec");
  else if (kind === "offload") {
    listOf(
      "results",
      (r) => typeof r.spec === "string" && typeof r.mode === "string",
      "has no spec / mode",
    );
  } else if (kind === "probe") {
    listOf(
      "results",
      (r) => isObj(r.tune) && typeof r.dtype === "string" && typeof r.status === "string",
      "has no tune / dtype / status",
    );
  } else if (!["env", "parts", "gemv", "copy", "hf"].some((k) => isObj(data[k]))) {
    throw bad("none of env / parts / gemv / copy / hf");
  }
  return { kind, file, label: label ?? base(file).replace(/\.json$/, ""), data };
}

const WRITER: Record<Kind, string> = {
  kernels: "bench/kernels_bench.ts",
  tune: "GEMV sweep (former tools/tune_gemv.ts)",
  decode: "bench/decode_bench.ts",
  offload: "bench/offload.ts",
  peer: "bench/peer_bench.py",
  probe: "tiling probe (former tools/probe_sgmatrix.ts)",
};

/** Reads and parses one file (InputError if it cannot be read or is malformed). */
export async function loadInput(kind: Kind, file: string, label?: string): Promise<Source> {
  let text: string;
  try {
    text = await Deno.readTextFile(file);
  } catch (e) {
    throw new InputError(file, `cannot read (${(e as Error).message})`);
  }
  return parseInput(kind, file, text, label);
}

// ------------------------------------------------------------------------------------ rows

/** A figure Pregate is compared with. */
export interface Peer {
  value: number;
  /** What the peer figure is (shown after it). */
  note: string;
  /** Where it comes from (file name, or platform.md). */
  source: string;
}

/** One line of the table. */
export interface RatioRow {
  figure: string;
  /** Pregate's figure (undefined: not measured / not in the inputs). */
  value?: number;
  unit: string;
  ceiling?: number;
  ceilingNote?: string;
  /** Peer figures; the first is the main one. */
  peers: Peer[];
  /** A time (lower is better): the ratio to the peer is peer / Pregate. */
  lowerIsBetter?: boolean;
  /** The file the Pregate figure comes from ("-" when none). */
  source: string;
}

/** Pregate's figure as a fraction of its ceiling (undefined when either is missing). */
export function ofCeiling(r: RatioRow): number | undefined {
  return r.value !== undefined && r.ceiling ? r.value / r.ceiling : undefined;
}

/** Pregate against each peer: Pregate / peer for rates, peer / Pregate for times (> 1: ahead). */
export function toPeers(r: RatioRow): (number | undefined)[] {
  return r.peers.map((p) =>
    r.value === undefined || !p.value || !r.value
      ? undefined
      : r.lowerIsBetter
      ? p.value / r.value
      : r.value / p.value
  );
}

/**
 * PyTorch on the same H200 (2026-11-28, shared docs/platform.md), for the figures peer_bench.py does
 * not measure: the readback round trip (`.item()`) and the 4096^3 matmuls.
 */
export const PLATFORM = {
  source: "platform.md",
  itemUs: 21,
  matmulFp32Tflops: 51,
  matmulFp16Tflops: 721,
};
const PCIE5_X16 = 63;
const GEMV_SHAPE = "14336x4096";
const DTYPES = ["f32", "f16", "bf16"] as const;
const PEER_DTYPE: Record<string, string> = { f32: "fp32", f16: "fp16", bf16: "bf16" };

interface Checkpoint {
  name: string;
  modelType?: string;
  layers?: number;
  dtype?: string;
  runs: Obj[];
}

/** The HF checkpoint of a Pregate `arch:preset:layers:dtype` spec, and how it was matched. */
export function matchCheckpoint(
  cks: readonly Checkpoint[],
  spec: string,
): { ck: Checkpoint; how: string } | undefined {
  const [arch, preset, layers, dtype] = spec.split(":");
  const dir = `${arch}-${preset}-${layers}-${dtype}`;
  const exact = cks.find((c) => c.name === dir);
  if (exact) return { ck: exact, how: "" };
  const tagged = cks.filter((c) => c.name.startsWith(`${dir}-`));
  if (tagged.length === 1) return { ck: tagged[0], how: `, dir ${tagged[0].name}` };
  const long: Record<string, string> = { f32: "float32", f16: "float16", bf16: "bfloat16" };
  const same = cks.filter((c) =>
    c.modelType === arch && c.layers === Number(layers) && c.dtype === (long[dtype] ?? dtype)
  );
  if (same.length === 1) {
    return { ck: same[0], how: `, dir ${same[0].name}: same arch/layers/dtype, preset unchecked` };
  }
  return undefined;
}

function checkpoints(peer?: Source): Checkpoint[] {
  const hf = peer?.data.hf;
  return objs(isObj(hf) ? hf.checkpoints : undefined).map((c) => ({
    name: str(c.name) ?? base(str(c.dir) ?? "?"),
    modelType: str(c.model_type),
    layers: num(c.num_hidden_layers),
    dtype: str(c.dtype),
    runs: objs(c.runs),
  }));
}

/** The rows of the table, in order: kernels, uploads, readback, resident decode, offloading. */
export function buildRows(inp: Inputs): RatioRow[] {
  const rows: RatioRow[] = [];
  const peer = inp.peer, peerFile = peer ? base(peer.file) : "";
  const pd = peer?.data ?? {};
  const gemvPeer = isObj(pd.gemv) ? pd.gemv : {};
  const copyPeer = isObj(pd.copy) ? objs(pd.copy.results) : [];
  const cks = checkpoints(peer);
  const kRows = objs(inp.kernels?.data.rows);
  const kFile = inp.kernels ? base(inp.kernels.file) : "-";
  const kCeil = (prefix: string) => num(kRows.find((r) => str(r.name)?.startsWith(prefix))?.value);
  const fromKernels = (r: Obj, figure: string, peers: Peer[], extra: Partial<RatioRow> = {}) => {
    const note = str(r.ceilingNote);
    const isPeer = note?.startsWith("peer");
    rows.push({
      figure,
      value: num(r.value),
      unit: str(r.unit) ?? "",
      ceiling: isPeer ? undefined : num(r.ceiling),
      ceilingNote: isPeer ? undefined : note,
      peers,
      source: kFile,
      ...extra,
    });
  };

  // GEMV, per dtype: kernels_bench's row, tune_gemv's best variant and the repo baseline.
  for (const dt of DTYPES) {
    const pr = objs(gemvPeer.results).find((r) => r.dtype === PEER_DTYPE[dt]);
    const pv = num(pr?.gb_s);
    const peers = pv === undefined
      ? []
      : [{ value: pv, note: `PyTorch ${PEER_DTYPE[dt]} cuBLAS gemv, median`, source: peerFile }];
    let any = false;
    const kr = kRows.find((r) => r.name === `GEMV ${dt} ${GEMV_SHAPE}`);
    if (kr) {
      any = true;
      fromKernels(kr, `GEMV ${dt} ${GEMV_SHAPE} (kernels_bench)`, peers, {
        ceiling: num(kr.ceiling) ?? kCeil("ceiling: streaming-read"),
        ceilingNote: str(kr.ceilingNote) ?? "streaming read",
      });
    }
    if (inp.tune) {
      const t = inp.tune.data;
      const ok = objs(t.rows).filter((r) =>
        r.dtype === dt && r.shape === GEMV_SHAPE && r.status === "ok" && !r.stream &&
        num(r.gbs) !== undefined
      );
      const best = ok.filter((r) => !r.baseline).sort((a, b) => num(b.gbs)! - num(a.gbs)!)[0];
      const baseline = ok.find((r) => r.baseline);
      for (
        const [r, what] of [[best, "tune_gemv best"], [baseline, "tune_gemv"]] as const
      ) {
        if (!r) continue;
        any = true;
        rows.push({
          figure: `GEMV ${dt} ${GEMV_SHAPE}, ${what}: ${str(r.variant)}`,
          value: num(r.gbs),
          unit: "GB/s",
          ceiling: num(t.ceilingGBs),
          ceilingNote: "streaming read, 1 GiB",
          peers,
          source: base(inp.tune.file),
        });
      }
    }
    if (!any) {
      rows.push({ figure: `GEMV ${dt} ${GEMV_SHAPE}`, unit: "GB/s", peers, source: "-" });
    }
  }

  // Device-to-device copy.
  const d2d = isObj(gemvPeer.d2d_copy) ? num(gemvPeer.d2d_copy.gb_s_read_plus_write) : undefined;
  const d2dPeers = d2d === undefined
    ? []
    : [{ value: d2d, note: "PyTorch copy_ 1 GiB, read+write bytes", source: peerFile }];
  const copyRow = kRows.find((r) => str(r.name)?.startsWith("copyBufferToBuffer"));
  if (copyRow) fromKernels(copyRow, str(copyRow.name)!, d2dPeers);
  else if (inp.kernels) {
    rows.push({
      figure: "copyBufferToBuffer (device)",
      unit: "GB/s",
      peers: d2dPeers,
      source: "-",
    });
  }

  // Matmul (prefill): portable f32 / f16 weights, and subgroup-matrix rows where present.
  const mmPeer = (dt: string): Peer[] =>
    dt === "f32"
      ? [{ value: PLATFORM.matmulFp32Tflops, note: "PyTorch fp32", source: PLATFORM.source }]
      : [{
        value: PLATFORM.matmulFp16Tflops,
        note: "PyTorch fp16, tensor cores",
        source: PLATFORM.source,
      }];
  const mm = kRows.filter((r) => /^matmul \w+ weights/.test(str(r.name) ?? ""));
  for (const r of mm) {
    const dt = str(r.name)!.split(" ")[1];
    fromKernels(r, str(r.name)!, mmPeer(dt));
  }
  if (mm.length === 0) {
    for (const dt of ["f32", "f16"]) {
      rows.push({
        figure: `matmul ${dt} weights 4096^3`,
        unit: "TFLOP/s",
        peers: mmPeer(dt),
        source: "-",
      });
    }
  }

  // Subgroup-matrix probes: the fastest valid tiling per weight dtype, against the multiplies-alone
  // ablation of the same run (the tensor-core rate that kernel's code reaches through Dawn).
  for (const p of inp.probe ?? []) {
    const ok = objs(p.data.results).filter((r) => r.status === "ok" && num(r.tflops));
    const mma = objs(p.data.ablations).find((a) => a.ablate === 3 && num(a.tflops));
    const x = str(p.data.x);
    for (const dt of [...new Set(ok.map((r) => str(r.dtype)!))]) {
      const best = ok.filter((r) =>
        r.dtype === dt
      ).sort((a, b) => num(b.tflops)! - num(a.tflops)!)[0];
      const t = isObj(best.tune) ? best.tune : {};
      const tiling = `${t.SGM}x${t.SGN} sg, ${t.TM}x${t.TN} tiles, BK ${t.BK}, ${t.STAGES} buf` +
        (t.UNROLLED ? ", unrolled" : "");
      rows.push({
        figure: `matmul ${dt} weights${x ? `, ${x} activations` : ""} ${
          num(p.data.size) ?? "?"
        }^3, subgroup matrix, probe ${p.label}: ${tiling}`,
        value: num(best.tflops),
        unit: "TFLOP/s",
        ceiling: mma ? num(mma.tflops) : undefined,
        ceilingNote: mma ? "multiplies alone, same run" : undefined,
        peers: mmPeer("f16"),
        source: base(p.file),
      });
    }
  }

  // Host->GPU uploads: the best row of each kernels_bench path, then each offload bench's rate.
  const copyPeers = (mib?: number): Peer[] => {
    const sizes = copyPeer.map((r) => num(r.mib)).filter((m): m is number => m !== undefined);
    const at = mib !== undefined && sizes.includes(mib) ? mib : Math.max(...sizes);
    return ["pinned", "pageable"].flatMap((kind) => {
      const v = num(copyPeer.find((r) => r.kind === kind && r.mib === at)?.gb_s);
      return v === undefined
        ? []
        : [{ value: v, note: `PyTorch ${kind} .to("cuda"), ${at} MiB`, source: peerFile }];
    });
  };
  const paths: [RegExp, string][] = [
    [/^upload writeBuffer (\d+) MiB/, "writeBuffer"],
    [/^upload mapped staging x2 (\d+) MiB/, "mapped staging x2"],
    [/^upload mapped uploader (\d+) MiB/, "mapped uploader (parallel memcpy)"],
  ];
  for (const [re, what] of paths) {
    const cand = kRows.filter((r) => re.test(str(r.name) ?? "") && num(r.value) !== undefined);
    const best = cand.sort((a, b) => num(b.value)! - num(a.value)!)[0];
    if (best) {
      const mib = Number(re.exec(str(best.name)!)![1]);
      fromKernels(best, `host->GPU upload, ${what} (best: ${mib} MiB chunks)`, copyPeers(mib));
    } else if (what !== paths[2][1] || !inp.kernels) {
      // (the uploader rows are newer than some kernels files: no placeholder for them there)
      rows.push({
        figure: `host->GPU upload, ${what}`,
        unit: "GB/s",
        ceiling: PCIE5_X16,
        ceilingNote: "PCIe 5 x16 nominal",
        peers: copyPeers(),
        source: "-",
      });
    }
  }
  for (const o of inp.offload) {
    const seen = new Set<string>();
    for (const r of objs(o.data.results)) {
      const spec = str(r.spec)!;
      if (seen.has(spec)) continue;
      seen.add(spec);
      rows.push({
        figure: `host->GPU expert copies, offload bench (${spec}, ${o.label})`,
        value: num(r.upload_gb_s),
        unit: "GB/s",
        ceiling: PCIE5_X16,
        ceilingNote: "PCIe 5 x16 nominal",
        peers: copyPeers(),
        source: base(o.file),
      });
    }
  }

  // Readback round trip.
  const item: Peer[] = [{
    value: PLATFORM.itemUs,
    note: "PyTorch .item()",
    source: PLATFORM.source,
  }];
  const rb = kRows.find((r) => str(r.name)?.startsWith("readback round trip"));
  if (rb) fromKernels(rb, str(rb.name)!, item, { lowerIsBetter: true });
  else {
    rows.push({
      figure: "readback round trip",
      unit: "us",
      peers: item,
      lowerIsBetter: true,
      source: "-",
    });
  }

  // Decode: resident (decode_bench), then every offloading mode (offload bench).
  const hfPeer = (spec: string, mode: "gpu_only" | "offload"): Peer[] => {
    const m = matchCheckpoint(cks, spec);
    const run = m?.ck.runs.find((r) => r.mode === mode);
    const v = num(run?.decode_tokens_per_s);
    if (v === undefined) return [];
    const h2d = num(run?.h2d_bytes_per_token);
    const what = mode === "gpu_only"
      ? "HF transformers, GPU only"
      : `HF + accelerate offload${h2d ? `, ${(h2d / 2 ** 30).toFixed(2)} GiB/token` : ""}`;
    return [{ value: v, note: `${what}${m!.how}`, source: peerFile }];
  };
  const dec = objs(inp.decode?.data.results);
  for (const r of dec) {
    const spec = str(r.spec)!;
    const active = num(r.active_bytes_per_token), bw = num(r.read_bandwidth_gb_s);
    rows.push({
      figure: `resident decode ${spec}`,
      value: num(r.decode_tokens_per_s),
      unit: "tok/s",
      ceiling: num(r.ceiling_tokens_per_s),
      ceilingNote: active && bw
        ? `${(active / 2 ** 20).toFixed(0)} MiB/token at ${bw.toFixed(0)} GB/s`
        : "bandwidth",
      peers: hfPeer(spec, "gpu_only"),
      source: base(inp.decode!.file),
    });
  }
  if (dec.length === 0) {
    rows.push({ figure: "resident decode", unit: "tok/s", peers: [], source: "-" });
  }
  for (const o of inp.offload) {
    for (const r of objs(o.data.results)) {
      const spec = str(r.spec)!, mode = str(r.mode)!;
      const resident = mode.startsWith("resident");
      const up = num(r.upload_bytes_per_token), gbs = num(r.upload_gb_s);
      rows.push({
        figure: `offload ${mode} decode ${spec} (${o.label})`,
        value: num(r.decode_tokens_per_s),
        unit: "tok/s",
        ceiling: num(r.ceiling_tokens_per_s),
        ceilingNote: up && gbs
          ? `${(up / 2 ** 20).toFixed(0)} MiB/token at ${gbs.toFixed(2)} GB/s`
          : resident
          ? undefined
          : "copy rate",
        peers: hfPeer(spec, resident ? "gpu_only" : "offload"),
        source: base(o.file),
      });
    }
  }
  if (inp.offload.length === 0) {
    rows.push({ figure: "offload decode", unit: "tok/s", peers: [], source: "-" });
  }
  return rows;
}

// ------------------------------------------------------------------------------------ rendering

/** Numbers as the bench tables print them (3 significant digits, no decimals from 100 up). */
export function fmt(x: number): string {
  return x >= 100
    ? x.toFixed(0)
    : x >= 10
    ? x.toFixed(1)
    : x >= 0.01
    ? x.toPrecision(3)
    : x.toExponential(1);
}
const pct = (f?: number) => (f === undefined ? "-" : `${(100 * f).toFixed(1)}%`);
const ratio = (f?: number) => (f === undefined ? "-" : `${fmt(f)}x`);
const cell = (s: string) => s.replace(/\|/g, "\\|");

/** One table row, as markdown. */
export function renderRow(r: RatioRow): string {
  const v = r.value === undefined ? "-" : `${fmt(r.value)} ${r.unit}`;
  const c = r.ceiling === undefined
    ? "-"
    : `${fmt(r.ceiling)} ${r.unit}${r.ceilingNote ? ` (${r.ceilingNote})` : ""}`;
  const p = r.peers.length
    ? r.peers.map((x) => `${fmt(x.value)} ${r.unit} (${x.note})`).join("; ")
    : "-";
  const q = r.peers.length ? toPeers(r).map(ratio).join("; ") : "-";
  const srcs = [r.source, ...r.peers.map((x) => x.source)].filter((s) => s && s !== "-");
  const s = srcs.length ? [...new Set(srcs)].join(", ") : "-";
  return `| ${[r.figure, v, c, pct(ofCeiling(r)), p, q, s].map(cell).join(" | ")} |`;
}

/** The whole report: a line per input, the table, and what the ratios mean. */
export function renderMarkdown(inp: Inputs, rows: readonly RatioRow[]): string {
  const L = ["# Pregate against its ceilings and the peer", ""];
  const desc = (s: Source) => {
    const gpu = str(s.data.gpu) ?? str(s.data.device);
    if (s.kind !== "peer") return `\`${s.file}\`${gpu ? ` (${gpu})` : ""}`;
    const env = isObj(s.data.env) ? s.data.env : {};
    const v = (k: string) => str(env[k]) ?? "?";
    return `\`${s.file}\` (${v("gpu")}; torch ${v("torch")}, transformers ${v("transformers")})`;
  };
  for (const k of ["kernels", "tune", "decode", "peer"] as const) {
    const s = inp[k];
    L.push(`- ${k}: ${s ? desc(s) : "not given"}`);
  }
  if (inp.probe?.length) L.push(`- probe: ${inp.probe.map(desc).join(", ")}`);
  L.push(
    `- offload: ${inp.offload.length ? inp.offload.map(desc).join(", ") : "not given"}`,
    "",
    "| figure | Pregate value | ceiling | % of ceiling | peer (PyTorch/HF on the same host) | ratio to peer | source file |",
    "|---|---|---|---|---|---|---|",
    ...rows.map(renderRow),
    "",
    "% of ceiling = Pregate / ceiling. Ratio to peer = Pregate / peer for rates and peer / Pregate " +
      "for times, so above 1x Pregate is ahead; with two peers (pinned; pageable) one ratio each. " +
      "Ceilings come from the same run as the figure (streaming-read and FMA-only kernels, the " +
      "weight bytes a token reads, the measured copy rate) or are nominal (PCIe 5 x16: 63 GB/s). " +
      `Peer figures from ${PLATFORM.source} are PyTorch on the same H200 (2026-11-28, shared ` +
      "docs/platform.md), for what bench/peer_bench.py does not measure (`.item()`, matmul). " +
      '"-": not in the inputs.',
    "",
  );
  return L.join("\n");
}

/** The offloading tokens/s plot (bench/plot_offload.ts), HF peer rates added as their own bars. */
export function offloadSvg(inp: Inputs): string {
  type PlotRow = Parameters<typeof renderSvg>[1][number]["rows"][number];
  const series: { label: string; rows: PlotRow[] }[] = [];
  const specs: string[] = [];
  for (const o of inp.offload) {
    const bySpec = new Map<string, PlotRow[]>();
    for (const r of objs(o.data.results)) {
      const v = num(r.decode_tokens_per_s);
      if (v === undefined) continue;
      const spec = str(r.spec)!;
      if (!specs.includes(spec)) specs.push(spec);
      bySpec.set(spec, [...(bySpec.get(spec) ?? []), {
        mode: str(r.mode)!,
        decode_tokens_per_s: v,
        ceiling_tokens_per_s: num(r.ceiling_tokens_per_s) ?? null,
        peak_gpu_bytes: num(r.peak_gpu_bytes) ?? 0,
      }]);
    }
    for (const [spec, rows] of bySpec) {
      series.push({ label: bySpec.size > 1 ? `${o.label} ${spec}` : o.label, rows });
    }
  }
  const cks = checkpoints(inp.peer);
  for (const spec of specs) {
    const m = matchCheckpoint(cks, spec);
    const rows: PlotRow[] = [];
    for (
      const [mode, name] of [["gpu_only", "HF GPU only"], ["offload", "HF accelerate offload"]]
    ) {
      const v = num(m?.ck.runs.find((r) => r.mode === mode)?.decode_tokens_per_s);
      if (v) {
        rows.push({
          mode: name,
          decode_tokens_per_s: v,
          ceiling_tokens_per_s: null,
          peak_gpu_bytes: 0,
        });
      }
    }
    if (rows.length) series.push({ label: `HF ${m!.ck.name}`, rows });
  }
  const title = specs.length === 1
    ? `Decode tokens/s per mode, ${specs[0]}`
    : "Decode tokens/s per offloading mode";
  return renderSvg(title, series);
}

// ------------------------------------------------------------------------------------ CLI

const USAGE = "usage: deno run -R -W bench/ratio_table.ts [--kernels F.json] [--tune F.json] " +
  "[--decode F.json] [--offload [LABEL=]F.json]... [--probe [LABEL=]F.json]... [--peer F.json] " +
  "[--out F.md] [--svg F.svg]";

/** Runs the command; returns the exit status (2: bad arguments or a bad input file). */
export async function main(args: readonly string[]): Promise<number> {
  const inp: Inputs = { offload: [] };
  let out: string | undefined, svg: string | undefined;
  try {
    for (let i = 0; i < args.length; i++) {
      const a = args[i], v = args[i + 1];
      if (a === "-h" || a === "--help") {
        console.log(USAGE);
        return 0;
      }
      if (v === undefined || v.startsWith("--")) throw new Error(`${a} needs a value`);
      i++;
      if (a === "--out") out = v;
      else if (a === "--svg") svg = v;
      else if (a === "--offload" || a === "--probe") {
        const m = /^([^=/\\]+)=(.+)$/.exec(v);
        const src = await loadInput(a.slice(2) as Kind, m ? m[2] : v, m ? m[1] : undefined);
        if (a === "--offload") inp.offload.push(src);
        else (inp.probe ??= []).push(src);
      } else if (["--kernels", "--tune", "--decode", "--peer"].includes(a)) {
        const kind = a.slice(2) as Exclude<Kind, "offload" | "probe">;
        if (inp[kind]) throw new Error(`${a} given twice`);
        inp[kind] = await loadInput(kind, v);
      } else throw new Error(`unknown argument ${a}`);
    }
    if (
      !inp.kernels && !inp.tune && !inp.decode && !inp.peer && inp.offload.length === 0 &&
      !inp.probe?.length
    ) {
      throw new Error("no input files");
    }
  } catch (e) {
    console.error(
      e instanceof InputError ? `error: ${e.message}` : `${(e as Error).message}\n${USAGE}`,
    );
    return 2;
  }
  const md = renderMarkdown(inp, buildRows(inp));
  console.log(md);
  if (out) {
    await Deno.writeTextFile(out, md);
    console.error(`wrote ${out}`);
  }
  if (svg) {
    try {
      await Deno.writeTextFile(svg, offloadSvg(inp));
      console.error(`wrote ${svg}`);
    } catch (e) {
      console.error(`error: ${svg}: ${(e as Error).message}`);
      return 1;
    }
  }
  return 0;
}

if (import.meta.main) Deno.exit(await main(Deno.args));
