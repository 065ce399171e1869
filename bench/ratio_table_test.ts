import assert from "node:assert/strict";
import {
  buildRows,
  fmt,
  InputError,
  type Inputs,
  loadInput,
  main,
  matchCheckpoint,
  ofCeiling,
  parseInput,
  PLATFORM,
  type RatioRow,
  renderMarkdown,
  renderRow,
  toPeers,
} from "./ratio_table.ts";

const R = new URL("../bench/results/", import.meta.url).pathname;
const KERNELS = `${R}2026-11-28_h200_dawn_kernels.json`;
const TUNE = `${R}2026-11-28_h200_dawn_tune_gemv.json`;
const DECODE = `${R}2026-11-28_h200_dawn_decode_after_fusions.json`;
const OFFLOAD = `${R}2026-11-28_h200_dawn_offload_qwen3_mapped.json`;

// deno-lint-ignore no-explicit-any
type Any = any;
const readJson = async (p: string): Promise<Any> => JSON.parse(await Deno.readTextFile(p));

/**
 * A peer file in the structure bench/peer_bench.py writes (main's report: tool, env, parts, and the
 * dicts bench_gemv, bench_copy and bench_hf / bench_hf_dir / _run_hf_mode return), smaller.
 */
const PEER = {
  tool: "bench/peer_bench.py",
  env: {
    python: "3.12.3",
    hostname: "h200",
    time_utc: "2026-12-01T10:00:00Z",
    argv: ["bench/peer_bench.py", "--out", "/out/peer_bench", "--dirs", "/tmp/b/x"],
    torch: "2.11.0",
    torch_cuda: "12.8",
    cuda_available: true,
    gpu: "NVIDIA H200",
    transformers: "5.17.0",
    accelerate: "1.15.0",
    safetensors: "0.8.0",
  },
  parts: {
    gemv: { status: "ok", seconds: 12.1 },
    copy: { status: "ok", seconds: 20.5 },
    hf: { status: "partial", seconds: 200.2 },
  },
  gemv: {
    shape: [14336, 4096],
    op: "torch.matmul(W, x, out=y) (2-D @ 1-D: dispatches to mv, cuBLAS gemv)",
    copies: 4,
    reps: 200,
    warmup: 20,
    timing: "CUDA events around each call; median; GB/s = weight bytes / time",
    matmul_allow_tf32: false,
    results: [
      ["fp32", 4],
      ["fp16", 2],
      ["bf16", 2],
    ].map(([dtype, b], i) => ({
      dtype,
      weight_bytes: 14336 * 4096 * (b as number),
      rotated_bytes: 4 * 14336 * 4096 * (b as number),
      median_us: 60 + i,
      min_us: 58,
      p90_us: 70,
      gb_s: [3900, 3600, 3500][i],
      best_gb_s: 4000,
      loop_gb_s: 3950,
      loop_mean_us: 59,
      max_rel_err_vs_fp32: 1e-3,
    })),
    errors: [],
    d2d_copy: {
      bytes: 2 ** 30,
      median_ms: 0.5,
      gb_s_read_plus_write: 4250,
      note: "dst.copy_(src), 1 GiB, 10 reps, CUDA events; read + write bytes",
    },
  },
  copy: {
    op: "src.to(...)",
    timing: "CUDA events ...",
    results: [4, 16, 64, 256].flatMap((mib) =>
      (["pinned", "pageable"] as const).map((kind) => ({
        kind,
        mib,
        reps: 20,
        is_pinned: kind === "pinned",
        median_ms: 1,
        gb_s: kind === "pinned" ? 50 + mib / 64 : 7 + mib / 256,
        wall_median_ms: 1.1,
        wall_gb_s: 40,
      }))
    ),
    errors: [],
  },
  hf: {
    prompt: "16 ids (i * 7919 + 13) % vocab, as bench/offload.ts",
    generate: "greedy, batch 1, KV cache, eos_token_id=None, min_new_tokens=max_new_tokens",
    attn_requested: "sdpa",
    checkpoints: [
      {
        dir: "/tmp/pregate-bench/qwen3_moe-qwen3-30b-a3b-8-bf16",
        name: "qwen3_moe-qwen3-30b-a3b-8-bf16",
        runs: [
          { mode: "gpu_only", requested_tokens: 32, n_tokens: 32, decode_tokens_per_s: 40 },
          {
            mode: "offload",
            requested_tokens: 8,
            n_tokens: 8,
            decode_tokens_per_s: 0.5,
            h2d_bytes_per_token: 9 * 2 ** 30,
          },
        ],
        errors: [],
        model_type: "qwen3_moe",
        num_hidden_layers: 8,
        dtype: "bfloat16",
        dtype_source: "config.json dtype=bfloat16",
        vocab_size: 151936,
        offload_tokens_match_gpu_only: true,
      },
      {
        dir: "/tmp/pregate-bench/olmoe-olmoe-1b-7b-4-bf16",
        name: "olmoe-olmoe-1b-7b-4-bf16",
        runs: [{ mode: "gpu_only", n_tokens: 32, decode_tokens_per_s: 100 }],
        errors: [{ mode: "offload", error: "RuntimeError: x", partial: null }],
        model_type: "olmoe",
        num_hidden_layers: 4,
        dtype: "bfloat16",
      },
    ],
    errors: [],
  },
};

const peerSource = () => parseInput("peer", "/x/peer_bench.json", JSON.stringify(PEER));

async function allInputs(peer = true): Promise<Inputs> {
  return {
    kernels: await loadInput("kernels", KERNELS),
    tune: await loadInput("tune", TUNE),
    decode: await loadInput("decode", DECODE),
    offload: [await loadInput("offload", OFFLOAD, "mapped")],
    peer: peer ? peerSource() : undefined,
  };
}

const find = (rows: RatioRow[], figure: string | RegExp) => {
  const r = rows.find((
    x,
  ) => (typeof figure === "string" ? x.figure === figure : figure.test(x.figure)));
  assert.ok(r, `no row ${figure}: ${rows.map((x) => x.figure).join("; ")}`);
  return r;
};
const cells = (line: string) => line.slice(2, -2).split(" | ");
const close = (a: number | undefined, b: number) =>
  assert.ok(a !== undefined && Math.abs(a - b) <= 1e-12 * Math.abs(b), `${a} != ${b}`);

Deno.test("GEMV rows: kernels_bench value over its ceiling, tune_gemv best and baseline, PyTorch peer", async () => {
  const k = await readJson(KERNELS), t = await readJson(TUNE);
  const rows = buildRows(await allInputs());
  const kr = k.rows.find((r: Any) => r.name === "GEMV bf16 14336x4096");
  const g = find(rows, "GEMV bf16 14336x4096 (kernels_bench)");
  assert.equal(g.value, kr.value);
  assert.equal(g.ceiling, kr.ceiling);
  close(ofCeiling(g), kr.value / kr.ceiling);
  close(toPeers(g)[0], kr.value / 3500);
  const c = cells(renderRow(g));
  assert.equal(c[1], `${fmt(kr.value)} GB/s`); // 309 GB/s
  assert.equal(c[3], `${(100 * kr.value / kr.ceiling).toFixed(1)}%`); // 6.8%
  assert.equal(c[4], "3500 GB/s (PyTorch bf16 cuBLAS gemv, median)");
  assert.equal(c[5], `${fmt(kr.value / 3500)}x`);
  assert.equal(c[6], "2026-11-28_h200_dawn_kernels.json, peer_bench.json");

  // tune_gemv: the best validated variant (not the stream-read row) and the repo baseline.
  for (const dt of ["f32", "f16", "bf16"]) {
    const ok = t.rows.filter((r: Any) =>
      r.dtype === dt && r.shape === "14336x4096" && r.status === "ok" && !r.stream
    );
    const best = ok.filter((r: Any) => !r.baseline).reduce((
      a: Any,
      b: Any,
    ) => (b.gbs > a.gbs ? b : a));
    const base = ok.find((r: Any) => r.baseline);
    const b = find(rows, `GEMV ${dt} 14336x4096, tune_gemv best: ${best.variant}`);
    assert.equal(b.value, best.gbs);
    assert.equal(b.ceiling, t.ceilingGBs);
    close(100 * ofCeiling(b)!, best.pct); // the tool's own % of ceiling
    const r = find(rows, `GEMV ${dt} 14336x4096, tune_gemv: ${base.variant}`);
    assert.equal(r.value, base.gbs);
    assert.equal(r.peers[0].value, { f32: 3900, f16: 3600, bf16: 3500 }[dt]);
  }
  assert.equal(
    find(rows, /^GEMV bf16 .*best/).figure,
    "GEMV bf16 14336x4096, tune_gemv best: t128r1u2-sg",
  );
});

Deno.test("uploads, readback, matmul and device copy against PCIe, pinned/pageable copies and platform.md", async () => {
  const k = await readJson(KERNELS), o = await readJson(OFFLOAD);
  const rows = buildRows(await allInputs());
  // The best writeBuffer row of the file (2.67 GB/s at 256 MiB) against pinned and pageable at 256 MiB.
  const wb = k.rows.filter((r: Any) => r.name.startsWith("upload writeBuffer"));
  const best = wb.reduce((a: Any, b: Any) => (b.value > a.value ? b : a));
  const u = find(rows, /^host->GPU upload, writeBuffer/);
  assert.equal(
    u.figure,
    `host->GPU upload, writeBuffer (best: ${best.name.split(" ")[2]} MiB chunks)`,
  );
  assert.equal(u.value, best.value);
  assert.equal(u.ceiling, 63);
  close(ofCeiling(u), best.value / 63);
  assert.deepEqual(u.peers.map((p) => p.value), [50 + 256 / 64, 7 + 1]);
  const [toPinned, toPageable] = toPeers(u);
  close(toPinned, best.value / 54);
  close(toPageable, best.value / 8);
  assert.match(
    renderRow(u),
    /\| 54\.0 GB\/s \(PyTorch pinned \.to\("cuda"\), 256 MiB\); 8\.00 GB\/s/,
  );
  // Mapped staging: best at 64 MiB (12.6 GB/s).
  const m = find(rows, /^host->GPU upload, mapped staging x2/);
  assert.equal(m.figure, "host->GPU upload, mapped staging x2 (best: 64 MiB chunks)");
  assert.equal(m.peers[0].value, 51);
  // The offload bench's expert copy rate.
  const e = find(rows, /^host->GPU expert copies, offload bench/);
  assert.equal(e.value, o.results[0].upload_gb_s);
  close(ofCeiling(e), o.results[0].upload_gb_s / 63);

  // Readback: a time, compared with platform.md's 21 us .item() (peer_bench.py has no such figure).
  const rb = find(rows, /^readback round trip/);
  const rbv = k.rows.find((r: Any) => r.name.startsWith("readback")).value;
  assert.equal(rb.value, rbv);
  assert.equal(rb.ceiling, undefined);
  close(toPeers(rb)[0], PLATFORM.itemUs / rbv);
  const rc = cells(renderRow(rb));
  assert.deepEqual(rc.slice(2, 5), ["-", "-", "21.0 us (PyTorch .item())"]);
  assert.equal(rc[6], "2026-11-28_h200_dawn_kernels.json, platform.md");

  // Matmul: the FMA ceiling of the same run, PyTorch fp32 / fp16 from platform.md.
  const mm = find(rows, "matmul f32 weights 4096^3");
  const mmk = k.rows.find((r: Any) => r.name === "matmul f32 weights 4096^3");
  close(ofCeiling(mm), mmk.value / mmk.ceiling);
  close(toPeers(mm)[0], mmk.value / 51);
  close(
    toPeers(find(rows, "matmul f16 weights 4096^3"))[0],
    k.rows.find((r: Any) => r.name === "matmul f16 weights 4096^3").value / 721,
  );

  const d = find(rows, /^copyBufferToBuffer/);
  close(toPeers(d)[0], d.value! / 4250);
});

Deno.test("decode rows: resident and offloading modes against their ceilings and HF", async () => {
  const dec = await readJson(DECODE), off = await readJson(OFFLOAD);
  const rows = buildRows(await allInputs());
  for (const r of dec.results) {
    const row = find(rows, `resident decode ${r.spec}`);
    assert.equal(row.value, r.decode_tokens_per_s);
    assert.equal(row.ceiling, r.ceiling_tokens_per_s);
    close(ofCeiling(row), r.decode_tokens_per_s / r.ceiling_tokens_per_s);
  }
  // olmoe matches the peer's checkpoint dir; the 4-layer qwen3 does not (the peer's has 8 layers).
  const ol = find(rows, "resident decode olmoe:olmoe-1b-7b:4:bf16");
  assert.equal(ol.peers[0].value, 100);
  close(toPeers(ol)[0], ol.value! / 100);
  assert.deepEqual(find(rows, "resident decode qwen3_moe:qwen3-30b-a3b:4:bf16").peers, []);
  assert.match(
    renderRow(find(rows, "resident decode qwen3_moe:qwen3-30b-a3b:4:bf16")),
    /\| - \| - \| 2026/,
  );

  const modes = rows.filter((r) => r.figure.startsWith("offload "));
  assert.equal(modes.length, off.results.length);
  for (const r of off.results) {
    const row = find(rows, `offload ${r.mode} decode ${r.spec} (mapped)`);
    assert.equal(row.value, r.decode_tokens_per_s);
    if (r.ceiling_tokens_per_s === null) {
      assert.equal(cells(renderRow(row))[3], "-"); // resident: no uploads, no copy ceiling
      assert.equal(row.peers[0].value, 40); // HF GPU only
    } else {
      close(ofCeiling(row), r.decode_tokens_per_s / r.ceiling_tokens_per_s);
      assert.equal(row.peers[0].value, 0.5); // HF + accelerate offload
      close(toPeers(row)[0], r.decode_tokens_per_s / 0.5);
      assert.match(row.peers[0].note, /accelerate offload, 9\.00 GiB\/token/);
    }
  }
});

Deno.test("without a peer file the peer columns are '-' (platform.md figures excepted)", async () => {
  const rows = buildRows(await allInputs(false));
  for (const r of rows) {
    const c = cells(renderRow(r));
    if (/^(matmul|readback)/.test(r.figure)) assert.match(c[6], /platform\.md/);
    else assert.deepEqual([c[4], c[5]], ["-", "-"], r.figure);
  }
  // Nothing given but a peer: one "-" row per figure, peers still shown.
  const only = buildRows({ offload: [], peer: peerSource() });
  const g = find(only, "GEMV f16 14336x4096");
  assert.deepEqual(cells(renderRow(g)).slice(1, 7), [
    "-",
    "-",
    "-",
    "3600 GB/s (PyTorch fp16 cuBLAS gemv, median)",
    "-",
    "peer_bench.json",
  ]);
  for (
    const f of [
      "resident decode",
      "offload decode",
      "readback round trip",
      "matmul f32 weights 4096^3",
    ]
  ) {
    assert.equal(find(only, f).value, undefined);
  }
  const md = renderMarkdown({ offload: [] }, buildRows({ offload: [] }));
  assert.ok(
    md.includes(
      "| figure | Pregate value | ceiling | % of ceiling | peer (PyTorch/HF on the same host) | ratio to peer | source file |",
    ),
  );
  assert.ok(md.includes("| GEMV f32 14336x4096 | - | - | - | - | - | - |"));
});

Deno.test("checkpoint matching: dir name, make-model overrides tag, same arch/layers/dtype", () => {
  const ck = (name: string, modelType = "x", layers = 1, dtype = "bfloat16") => ({
    name,
    modelType,
    layers,
    dtype,
    runs: [],
  });
  const cks = [
    ck("mixtral-mixtral-8x7b-2-bf16-hidden512"),
    ck("foo", "olmoe", 4),
    ck("qwen3_moe-tiny-3-f32"),
  ];
  assert.equal(matchCheckpoint(cks, "qwen3_moe:tiny:3:f32")?.ck.name, "qwen3_moe-tiny-3-f32");
  assert.equal(
    matchCheckpoint(cks, "mixtral:mixtral-8x7b:2:bf16")?.ck.name,
    "mixtral-mixtral-8x7b-2-bf16-hidden512",
  );
  assert.match(matchCheckpoint(cks, "olmoe:olmoe-1b-7b:4:bf16")!.how, /preset unchecked/);
  assert.equal(matchCheckpoint(cks, "olmoe:olmoe-1b-7b:4:f32"), undefined);
  assert.equal(matchCheckpoint(cks, "olmoe:olmoe-1b-7b:8:bf16"), undefined);
});

Deno.test("main: --out writes the table, --svg the plot; malformed or wrong-kind files exit 2 naming the file", async () => {
  const dir = await Deno.makeTempDir();
  const log = console.log, err = console.error;
  const errs: string[] = [];
  console.log = () => {};
  console.error = (m: string) => errs.push(m);
  try {
    await Deno.writeTextFile(`${dir}/peer.json`, JSON.stringify(PEER));
    const args = [
      "--kernels",
      KERNELS,
      "--decode",
      DECODE,
      "--offload",
      `m=${OFFLOAD}`,
      "--peer",
      `${dir}/peer.json`,
    ];
    assert.equal(await main([...args, "--out", `${dir}/t.md`, "--svg", `${dir}/p.svg`]), 0);
    const md = await Deno.readTextFile(`${dir}/t.md`);
    assert.ok(
      md.includes("| offload on-demand decode qwen3_moe:qwen3-30b-a3b:8:bf16 (m) | 13.4 tok/s |"),
    );
    assert.ok(md.includes("(NVIDIA H200; torch 2.11.0, transformers 5.17.0)"));
    const svg = await Deno.readTextFile(`${dir}/p.svg`);
    assert.ok(svg.startsWith("<svg") && svg.includes(">HF GPU only<") && svg.includes(">m<"));

    await Deno.writeTextFile(`${dir}/bad.json`, '{"rows": [');
    assert.equal(await main(["--kernels", `${dir}/bad.json`]), 2);
    assert.match(errs.at(-1)!, new RegExp(`${dir}/bad\\.json: not valid JSON`));
    assert.equal(await main(["--kernels", DECODE]), 2); // a decode file given as kernels
    assert.match(
      errs.at(-1)!,
      /_decode_after_fusions\.json: not a bench\/kernels_bench\.ts result file \(--kernels\): no "rows" array/,
    );
    assert.equal(await main(["--tune", KERNELS]), 2);
    assert.match(errs.at(-1)!, /rows\[0\] has no variant/);
    assert.equal(await main(["--peer", DECODE]), 2);
    assert.equal(await main(["--decode", `${dir}/missing.json`]), 2);
    assert.match(errs.at(-1)!, /missing\.json: cannot read/);
    assert.equal(await main([]), 2);
    assert.equal(await main(["--bogus", "x"]), 2);
  } finally {
    console.log = log;
    console.error = err;
    await Deno.remove(dir, { recursive: true });
  }
  assert.throws(() => parseInput("offload", "f.json", "[]"), InputError);
  assert.throws(
    () => parseInput("offload", "f.json", '{"results": [{"spec": "a"}]}'),
    /f\.json: .*results\[0\] has no spec \/ mode/,
  );
});

Deno.test("probe rows: the fastest valid tiling per weight dtype against its multiplies-alone ablation", async () => {
  const file = `${R}2026-11-29_h200_s4_probe_final_x32.json`;
  const p = await readJson(file);
  const probe = await loadInput("probe", file, "final");
  const rows = buildRows({ offload: [], probe: [probe] });
  const probeRows = rows.filter((r) => r.figure.includes("subgroup matrix, probe"));
  assert.equal(probeRows.length, 2, "one row per weight dtype (f16, bf16)");
  const mma = p.ablations.find((a: Any) => a.ablate === 3).tflops;
  for (const dt of ["f16", "bf16"]) {
    const best = p.results.filter((r: Any) => r.dtype === dt && r.status === "ok")
      .reduce((a: Any, b: Any) => (b.tflops > a.tflops ? b : a));
    const r = find(
      rows,
      new RegExp(`^matmul ${dt} weights 4096\\^3, subgroup matrix, probe final`),
    );
    assert.equal(r.value, best.tflops);
    assert.equal(r.ceiling, mma);
    close(toPeers(r)[0], best.tflops / PLATFORM.matmulFp16Tflops);
    assert.match(
      r.figure,
      new RegExp(`${best.tune.SGM}x${best.tune.SGN} sg, .*BK ${best.tune.BK}`),
    );
  }
  // Not a probe file: an InputError naming the file.
  assert.throws(() => parseInput("probe", "k.json", JSON.stringify({ rows: [] })), InputError);
  assert.match(
    renderMarkdown({ offload: [], probe: [probe] }, rows),
    /- probe: `.*probe_final_x32/,
  );
});
