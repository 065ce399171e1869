#!/usr/bin/env bash
# Everything the next GPU-host session should measure, in one command, logs under $OUT (the device
# tool's output folder). Prepare here with `bash ../shared/tools/device-prep.sh`, carry [".device"],
# and run on the host:  source .device/env.sh && bash tools/gpu_session.sh
# Each step has its own time limit so one hang cannot eat the whole call; read $OUT/summary.txt first.
#
# Session 3 plan (30 min of device time; a cold start costs ~40 s; keep helpers off the device),
# each call from a snapshot (`git archive HEAD`) with PREGATE_LOG_DIR=$OUT (at most 8 files):
#   1. tests_dawn impl_parity probe_sgmatrix cli_dawn_exit decode_dawn          (done: 88 s)
#   2. decode_dawn decode_dawn_norobust decode_dawn_noval profile_dawn probe_sgmatrix_norobust
#      (done: 1384 tok/s without robustness = 55.9%; the default-flag run stalled, deno bench too)
#   3. tests_dawn impl_parity decode_dawn profile_dawn soak_dawn_threads offload_dawn_auto (packed)
#      (done: 1537 tok/s = 60.8%; deno bench's first generate after a second load stalled 70 s;
#      offload resident 50 tok/s; soak 24.4 GB/s with 16 threads)
#   4. diag_reload profile_qwen3 diag_qwen3 soak_threads_wide tests_sgm (packed)
#      (done: reloads decode 3x slower with 300 ms stalls; Qwen3 resident 1444 tok/s when warm;
#      16 threads 22.4-24.4 GB/s, 32 threads 23.6)
#   5. offload_dawn8 decode_dawn peer_bench kernels_dawn (packed)
#      (done: decode 62.2%, deno bench part hung again without any reload; uploads 27.7-28.2 GB/s
#      with 64-256 MiB chunks; sgmatrix 32.7 TFLOP/s; offload upload rate 3.9 GB/s with 16 threads)
#   6. kernels_dawn decode_dawn diag_reload soak_9mib offload_dawn_auto (packed)
#      (done: kernels_dawn and the deno-bench part hung again (1 ms timer no help); 9 MiB copies
#      21.0 GB/s with 8 threads, 20.2 with 16; offload 4 layers at 19.7 GB/s with 8 threads)
#   7. kernels_dawn decode_dawn (gpuTime warm-up queued with two syncs; no deno-bench part on Dawn)
#      (done: decode 60.9%; kernels_dawn reached its upload section but ran out of its 120 s limit)
# Session 4 (2026-11-29; commits named in bench/results/2026-11-29_h200_s4_raw_logs.md):
#   1. probe_sgmatrix_unrolled tests_sgm profile_qwen3 kernels_dawn
#      (done: unrolled entry 146.9 TFLOP/s against 33.1 with loops; ablations; GEMV 3.42 TB/s warm)
#   2. probe_sgm_x32 probe_sgm_x16 tests_dawn kernels_dawn
#      (done: f16 activations; runs at a fallen clock seen; linear's label test fixed after)
#   3. probe_final_x32 probe_final_x16 tests_sgm decode_dawn kernels_native
#      (done: K step 64 one buffer 147.4 / 162.0 with f32 / f16 activations at 1980 MHz; decode
#      62.5%; native GEMV bf16 3.15 TB/s, native best upload 4.0 GB/s)
#   4. offload_native kernels_dawn tests_sgm   (done; kernels rows at a fallen clock)
#   5. kernels_dawn offload_dawn8   (kernels_dawn ran out of 240 s; 8-layer copies 2.32 GB/s again)
# Session 5 (2026-11-29; logs in bench/results/2026-11-29_h200_s5_raw_logs.md):
#   1. diag_pagecache offload_dawn8   (checkpoint 100% cached, 125 GiB memory: not the page cache)
#   2. kernels_dawn_noclock diag_pagecache diag_fill diag_fill_1t   (deno bench timed out without
#      the clock sampler too; host memcpy 36-48 GB/s, uploader 18 then 2.5 GB/s)
#   3. kernels_dawn_run diag_pagecache diag_fill2 _reuse _gc _buf3   (deno run: 139 s, complete;
#      slow after ~1000 cycles whatever the ranges, gc or ring size)
#   4. diag_pagecache diag_fill3 diag_fill_sync diag_fill_host   (no slow state within 896 cycles)
#   5. diag_pagecache diag_fill_long offload_dawn8_nores offload_dawn8   (slow by itself; CPU/byte x6)
#   6. diag_pagecache diag_fill_64m _32m _9m3   (slow state: 64 MiB 8.5 GB/s, 32 MiB 6.1, 9 MiB 2.5)
#   7. diag_pagecache diag_fill_plan offload_dawn8   (layer-sized staging: 8 layers 4.2 -> 15.8 tok/s)
#   8. offload_dawn_auto   (4 layers: 64.4 tok/s on-demand, no regression)
#   9. tests_dawn impl_parity   (all kernel, parity, offload and uploader tests pass on Dawn; native
#      and Dawn logits within 1e-6 of each other and of HF for all 4 architectures)
#  10. offload_native   (native 8 layers at this commit: writeBuffer 2.9-3.5 GB/s, pregated 8.0 tok/s)
# Next session: is the slow state (2-3 ms per staging cycle after ~1000 cycles) the parallel fill?
#   Session 2 ran 8 layers on Dawn at 13.4 tok/s on-demand with one-thread `set` fills and
#   one-expert buffers; the 8-thread memcpy fills came later. Steps diag_fill_t1 / _t2 / _t4 (the old
#   9 MiB plan, 1/2/4 threads); then kernels_dawn_run for rows at full clock.
set -u
# Logs go to a scratch folder; $OUT gets only the packed logs, the summary and the markdown tables
# (the device tool returns at most 8 files).
# PREGATE_LOG_DIR=$OUT writes logs straight into $OUT (they survive a call cut short by its time
# limit; then keep to at most 8 files: the summary is printed only).
final=${OUT:-/tmp/pregate-out}; out=${PREGATE_LOG_DIR:-/tmp/pregate-logs}
[ "$out" = "$final" ] || rm -rf "$out"
mkdir -p "$out" "$final"; summary=/tmp/pregate-summary.txt; : > "$summary"
export NO_COLOR=1 PREGATE_BENCH_DIR=/tmp/pregate-bench
# With arguments, only the named steps run (e.g. `bash tools/gpu_session.sh soak_dawn kernels_dawn`).
only=" $* "
step() { # step NAME SECONDS COMMAND...
  local name=$1 limit=$2; shift 2
  if [ "$only" != "  " ] && [[ "$only" != *" $name "* ]]; then return; fi
  local t0=$(date +%s)
  timeout "$limit" "$@" > "$out/$name.log" 2>&1; local rc=$?
  echo "$name rc=$rc $(( $(date +%s) - t0 ))s" | tee -a "$summary"
}
# 0. What Dawn offers here: subgroup sizes, subgroup-matrix configurations, a tiny kernel of each.
step probe_dawn 60 deno run -A tools/probe_dawn.ts
# 1. Is the mapped-staging uploader safe on Dawn? (platform.md: dawn.node crashed after dozens of
#    64 MB map/unmap cycles in an earlier probe.) rc 0 = passed; 139 = segfault.
step soak_dawn 120 deno run -A tools/soak_upload.ts --gpu dawn --cycles 3000 --mb 64 --verify-every 250
# 2. Offloading experiment on Dawn, writeBuffer and mapped uploads (native was measured 2026-11-28).
step offload_dawn_write 150 env PREGATE_GPU=dawn PREGATE_UPLOADER=write \
  PREGATE_BENCH_MODELS=qwen3_moe:qwen3-30b-a3b:8:bf16 PREGATE_BENCH_TOKENS=16 \
  PREGATE_BENCH_OUT="$out/offload_dawn_write" deno run -A bench/offload.ts
step offload_dawn_mapped 150 env PREGATE_GPU=dawn PREGATE_UPLOADER=mapped \
  PREGATE_BENCH_MODELS=qwen3_moe:qwen3-30b-a3b:8:bf16 PREGATE_BENCH_TOKENS=16 \
  PREGATE_BENCH_OUT="$out/offload_dawn_mapped" deno run -A bench/offload.ts
# 3. Native again, after the overlap of pre-gated copies with the routing readback.
step offload_native 170 env PREGATE_BENCH_MODELS=qwen3_moe:qwen3-30b-a3b:8:bf16 \
  PREGATE_BENCH_TOKENS=16 PREGATE_BENCH_OUT="$out/offload_native" deno run -A bench/offload.ts
# 4. Kernels on both implementations (GEMV 16-bit path changed since the last run).
step kernels_dawn 240 env PREGATE_GPU=dawn PREGATE_BENCH_OUT="$out/kernels_dawn.json" \
  deno bench -A bench/kernels_bench.ts
# The same with the clock sampler off (session 4's call-5 timeout: sampler or Dawn stall?).
step kernels_dawn_noclock 240 env PREGATE_GPU=dawn PREGATE_BENCH_CLOCK=0 \
  PREGATE_BENCH_OUT="$out/kernels_dawn_noclock.json" deno bench -A bench/kernels_bench.ts
# The kernels bench as a script (its figures are measured at top level; Deno.bench cases are
# no-ops under `deno run`): `deno bench` with Dawn stalls intermittently (denoland/deno#23253).
step kernels_dawn_run 240 env PREGATE_GPU=dawn PREGATE_BENCH_OUT="$out/kernels_dawn_run.json" \
  deno run -A bench/kernels_bench.ts
step kernels_native 200 env PREGATE_BENCH_OUT="$out/kernels_native.json" deno bench -A bench/kernels_bench.ts
# 4b. Kernel tests on Dawn (subgroup GEMV variants, subgroup-matrix matmul, fused kernels); the
#     exit code of a Dawn process after its work (a segfault at teardown was seen).
step probe_sgmatrix 80 deno run -A tools/probe_sgmatrix.ts --gpu dawn
step tests_dawn 150 bash -c 'for f in kernels/linear_test.ts kernels/gemv_test.ts kernels/moe_test.ts \
  kernels/qkv_test.ts kernels/rope_test.ts kernels/matmul_sgmatrix_test.ts kernels/norm_test.ts \
  kernels/argmax_test.ts kernels/attention_test.ts tests/hf_parity_test.ts \
  tests/offload_test.ts runtime/experts/uploader_test.ts; do
  PREGATE_TEST_GPU=dawn deno test -A --no-check "$f" > /tmp/t.log 2>&1; rc=$?
  echo "$f rc=$rc tests ok=$(grep -c "\.\.\. ok" /tmp/t.log) failed=$(grep -c "\.\.\. FAILED" /tmp/t.log)"
  grep -E "^(ok|FAILED) \||FAILED|max err|worst|portable|needs" /tmp/t.log | head -8; done'
# Issue "Speed" done-when: --gpu dawn and --gpu native give the same logits for every fixture.
step impl_parity 60 deno run -A tools/impl_parity.ts --json "$out/impl_parity.json"
step cli_dawn_exit 20 deno run -A cli.ts generate --model tests/fixtures/hf/mixtral --ids 1,2,3 \
  --max-tokens 4 --gpu dawn --json
# 4c. Resident decode (Mixtral-8x7B layer shapes, 2 layers) on Dawn, against the bandwidth ceiling.
#     After 3 s of warm-up (the SM clock climbs from ~500 MHz only under sustained work); then the
#     same with Dawn's shader robustness off, and with validation off too (A/B of the flags).
MIX2=mixtral:mixtral-8x7b:2:bf16
step decode_dawn 60 env PREGATE_GPU=dawn PREGATE_BENCH_MODELS=$MIX2 \
  PREGATE_BENCH_TOKENS=128 PREGATE_BENCH_OUT="$out/decode_dawn.json" deno bench -A --no-check bench/decode_bench.ts
FAST="enable-dawn-features=allow_unsafe_apis,vulkan_enable_f16_on_nvidia,disable_robustness disable-dawn-features=timestamp_quantization"
FASTER="enable-dawn-features=allow_unsafe_apis,vulkan_enable_f16_on_nvidia,disable_robustness,skip_validation disable-dawn-features=timestamp_quantization"
step decode_dawn_norobust 70 env PREGATE_GPU=dawn PREGATE_BENCH_MODELS=$MIX2 PREGATE_DAWN_FLAGS="$FAST" \
  PREGATE_BENCH_TOKENS=128 PREGATE_BENCH_OUT="$out/decode_dawn_norobust.json" deno bench -A --no-check bench/decode_bench.ts
step decode_dawn_noval 70 env PREGATE_GPU=dawn PREGATE_BENCH_MODELS=$MIX2 PREGATE_DAWN_FLAGS="$FASTER" \
  PREGATE_BENCH_TOKENS=128 PREGATE_BENCH_OUT="$out/decode_dawn_noval.json" deno bench -A --no-check bench/decode_bench.ts
# 4e. Where a decode step's time goes (GPU timestamps per dispatch, CPU time in submit).
step profile_dawn 60 deno run -A tools/profile_decode.ts --make $MIX2 --gpu dawn --tokens 64
# The tensor-core matmul's bound: the two fastest tilings, then the fastest without its global
# staging and without its multiplies.
step probe_sgmatrix_ablate 90 deno run -A tools/probe_sgmatrix.ts --gpu dawn --ablate --no-baseline \
  --configs '[{"SGM":4,"SGN":2,"TM":2,"TN":4,"BK":32,"STAGES":2,"VEC":1},{"SGM":2,"SGN":2,"TM":4,"TN":4,"BK":64,"STAGES":1,"VEC":1}]'
# The generated entry (loops written out) against the loops, with ablations of the fastest of each
# (the multiplies alone for the unrolled one).
step probe_sgmatrix_unrolled 150 deno run -A tools/probe_sgmatrix.ts --gpu dawn --ablate --no-baseline \
  --out "$out/probe_sgmatrix_unrolled.json"
# Unrolled tilings with f32 activations (the runtime's) and with f16 activations (the issue's "f16
# inputs"), each with the ablations of its fastest.
UCFG='[{"SGM":4,"SGN":2,"TM":2,"TN":4,"BK":32,"STAGES":2,"VEC":1,"UNROLLED":1},
{"SGM":4,"SGN":2,"TM":2,"TN":4,"BK":32,"STAGES":2,"VEC":0,"UNROLLED":1},
{"SGM":2,"SGN":4,"TM":4,"TN":2,"BK":32,"STAGES":2,"VEC":0,"UNROLLED":1},
{"SGM":4,"SGN":2,"TM":2,"TN":4,"BK":64,"STAGES":1,"VEC":1,"UNROLLED":1},
{"SGM":4,"SGN":2,"TM":2,"TN":4,"BK":16,"STAGES":2,"VEC":1,"UNROLLED":1},
{"SGM":4,"SGN":1,"TM":2,"TN":4,"BK":32,"STAGES":2,"VEC":1,"UNROLLED":1},
{"SGM":2,"SGN":2,"TM":4,"TN":4,"BK":32,"STAGES":2,"VEC":1,"UNROLLED":1}]'
step probe_sgm_x32 100 deno run -A tools/probe_sgmatrix.ts --gpu dawn --ablate --no-baseline \
  --configs "$UCFG" --out "$out/probe_sgm_x32.json"
step probe_sgm_x16 100 deno run -A tools/probe_sgmatrix.ts --gpu dawn --ablate --no-baseline \
  --x f16 --configs "$UCFG" --out "$out/probe_sgm_x16.json"
# The candidates again, each after 2 s of warm-up with the SM clock logged, f16 and bf16 weights.
FCFG='[{"SGM":4,"SGN":2,"TM":2,"TN":4,"BK":32,"STAGES":2,"VEC":1,"UNROLLED":1},
{"SGM":4,"SGN":2,"TM":2,"TN":4,"BK":64,"STAGES":1,"VEC":1,"UNROLLED":1},
{"SGM":4,"SGN":2,"TM":2,"TN":4,"BK":32,"STAGES":2,"VEC":0,"UNROLLED":1},
{"SGM":2,"SGN":4,"TM":4,"TN":2,"BK":64,"STAGES":1,"VEC":1,"UNROLLED":1}]'
step probe_final_x32 110 deno run -A tools/probe_sgmatrix.ts --gpu dawn --ablate --no-baseline \
  --dtype f16,bf16 --configs "$FCFG" --out "$out/probe_final_x32.json"
step probe_final_x16 110 deno run -A tools/probe_sgmatrix.ts --gpu dawn --ablate --no-baseline \
  --dtype f16,bf16 --x f16 --configs "$FCFG" --out "$out/probe_final_x16.json"
step probe_sgmatrix_norobust 80 env PREGATE_DAWN_FLAGS="$FAST" deno run -A tools/probe_sgmatrix.ts --gpu dawn
# 4d. The parallel-memcpy mapped uploader (short soak, thread sweep) and the offloading experiment
#     with the defaults (auto uploader = mapped on Dawn, pre-gated copies issued after compute).
step soak_dawn_threads 60 deno run -A tools/soak_upload.ts --gpu dawn --cycles 200 --mb 72 \
  --parts 24 --verify-every 50 --threads 4,8,16
step offload_dawn_auto 110 env PREGATE_GPU=dawn PREGATE_BENCH_MODELS=qwen3_moe:qwen3-30b-a3b:4:bf16 \
  PREGATE_BENCH_TOKENS=12 PREGATE_BENCH_OUT="$out/offload_dawn_auto" deno run -A bench/offload.ts
step offload_dawn_compute 110 env PREGATE_GPU=dawn PREGATE_BENCH_PREFETCH_AT=compute \
  PREGATE_BENCH_MODELS=qwen3_moe:qwen3-30b-a3b:4:bf16 PREGATE_BENCH_TOKENS=12 \
  PREGATE_BENCH_OUT="$out/offload_dawn_compute" deno run -A bench/offload.ts
# 4f. Diagnostics: a stall of the first generate after a second load in one process (70 s on the
#     H200, Dawn), Qwen3's resident decode at 20 ms/token in the offload bench, the upload threads.
QW4=qwen3_moe:qwen3-30b-a3b:4:bf16
step diag_reload 45 deno run -A tools/diag_generate.ts --make $MIX2 --gpu dawn --loads 3 --runs 2 --tokens 64
step diag_keep 60 deno run -A tools/diag_generate.ts --make $MIX2 --gpu dawn --loads 3 --runs 2 --tokens 64 --keep
step diag_settle 60 deno run -A tools/diag_generate.ts --make $MIX2 --gpu dawn --loads 3 --runs 2 --tokens 64 --settle-ms 3000
step profile_qwen3 90 deno run -A tools/profile_decode.ts --make $QW4 --gpu dawn --tokens 32
step diag_qwen3 90 deno run -A tools/diag_generate.ts --make $QW4 --gpu dawn --loads 2 --runs 2 --tokens 12
step soak_threads_wide 90 deno run -A tools/soak_upload.ts --gpu dawn --cycles 200 --mb 72 \
  --parts 24 --verify-every 50 --threads 16,32 --buffers 6
# Expert-sized chunks (Qwen3-30B-A3B: 9 MiB per expert) with 8 and 16 copy threads.
step soak_9mib 40 deno run -A tools/soak_upload.ts --gpu dawn --cycles 600 --mb 9 --verify-every 100 \
  --threads 8,16
step tests_sgm 60 env PREGATE_TEST_GPU=dawn deno test -A --no-check kernels/matmul_sgmatrix_test.ts
# Page cache of the 8-layer checkpoint (its offload runs copy experts at 2.3-3.9 GB/s, fill-bound).
step diag_pagecache 100 bash tools/diag_pagecache.sh 8
# Session 5, call 1: the 8-layer checkpoint is 100% in the page cache with 125 GiB free, yet its
# expert fills run at 1.5-1.8 GB/s. Sweep every expert of layer ranges: host-only memcpy, then
# through the uploader (needs diag_pagecache's checkpoint).
QW8=$PREGATE_BENCH_DIR/qwen3_moe-qwen3-30b-a3b-8-bf16
step diag_fill 150 deno run -A tools/diag_fill.ts --dir "$QW8" \
  --sweeps host:0-3,host:0-3,host:4-7,host:0-7,host:0-7,gpu:0-3,gpu:0-3,gpu:0-7,gpu:0-7,host:0-7
# Call 2: host memcpy of all 9 GiB ran 38-48 GB/s, the uploader 18 GB/s in its first sweep, then
# 4.7 and 2.5: it slows as its cycles accumulate. Which part: staging memory (stage), per-cycle
# getMappedRange (reuse), garbage (gc), the ring of 17 buffers (3)?
FILL="gpu:0-0,gpu:0-0,gpu:0-0,gpu:0-0,gpu:0-3,gpu:0-0,stage:0-7,stage:0-7,gpu:0-0"
step diag_fill2 60 deno run -A tools/diag_fill.ts --dir "$QW8" --sweeps "$FILL"
step diag_fill_reuse 60 deno run -A tools/diag_fill.ts --dir "$QW8" --sweeps "$FILL" --ranges reuse
step diag_fill_gc 60 deno run -A --v8-flags=--expose-gc tools/diag_fill.ts --dir "$QW8" \
  --sweeps "$FILL" --gc
step diag_fill_buf3 60 deno run -A tools/diag_fill.ts --dir "$QW8" --sweeps "$FILL" --buffers 3
# Call 3: slow only once the process maps all 8 layers (stage sweeps touched layers 4-7) and the
# ring cycles; reuse, gc and 3 buffers change nothing. Does it recover alone (pause), on the JS
# thread's own memcpy (sync), or when the mapping shrinks again (drop)?
FILL3="gpu:0-0,gpu:0-0,stage:0-7,gpu:0-0,gpu:0-0,pause:3000-0,gpu:0-0,drop:4-7,gpu:0-0,gpu:0-0"
step diag_fill3 60 deno run -A tools/diag_fill.ts --dir "$QW8" --sweeps "$FILL3"
step diag_fill_sync 60 deno run -A tools/diag_fill.ts --dir "$QW8" --sweeps "$FILL3" --threads 1 \
  --min-piece-kb 1048576
step diag_fill_host 60 deno run -A tools/diag_fill.ts --dir "$QW8" \
  --sweeps host:0-7,gpu:0-0,gpu:0-0,gpu:0-0,drop:1-7,gpu:0-0,gpu:0-0,host:0-0
# Call 4: all fast (no slow state at all). One long process: does it turn slow by itself?
step diag_fill_long 60 deno run -A tools/diag_fill.ts --dir "$QW8" \
  --sweeps gpu:0-7,gpu:0-7,gpu:0-7,gpu:0-7,host:0-7,stage:0-7,gpu:0-0,gpu:0-0
# Call 5: turns slow by itself after ~1000 cycles of 9 MiB buffers (CPU time per byte x6, user
# time: the stores into the ring's staging are slow; plain memory and a staging buffer held mapped
# stay fast). Larger staging buffers, as the soak (3000 x 64 MiB at 28 GB/s) used?
LONG=gpu:0-7,gpu:0-7,gpu:0-7,gpu:0-7,stage:0-7,gpu:0-0
step diag_fill_64m 60 deno run -A tools/diag_fill.ts --dir "$QW8" --sweeps $LONG --staging-mb 64 --buffers 4
step diag_fill_32m 60 deno run -A tools/diag_fill.ts --dir "$QW8" --sweeps $LONG --staging-mb 32 --buffers 5
step diag_fill_9m3 60 deno run -A tools/diag_fill.ts --dir "$QW8" --sweeps $LONG --buffers 3
# Call 6: per cycle ~2-3 ms in that state: 64 MiB buffers 8.1-8.8 GB/s, 32 MiB 6.1, 9 MiB 2.4.
# stagingPlan now gives one buffer per layer's copies (up to 128 MiB): the plan as the engine has it.
step diag_fill_plan 60 deno run -A tools/diag_fill.ts --dir "$QW8" --sweeps $LONG
# Session 5's open question: does the slow state need parallel copy threads? (old 9 MiB plan)
OLD="--staging-mb 9 --buffers 17"
step diag_fill_t1 90 deno run -A tools/diag_fill.ts --dir "$QW8" --sweeps $LONG $OLD --threads 1
step diag_fill_t2 60 deno run -A tools/diag_fill.ts --dir "$QW8" --sweeps $LONG $OLD --threads 2
step diag_fill_t4 60 deno run -A tools/diag_fill.ts --dir "$QW8" --sweeps $LONG $OLD --threads 4
step diag_fill_1t 60 deno run -A tools/diag_fill.ts --dir "$QW8" --threads 1 --sweeps host:0-7,host:0-7
# 5. Peers on the same machine and checkpoint: PyTorch GEMV, pinned copies, HF transformers decode
#    (GPU-only and experts offloaded through accelerate).
#    The checkpoints come from offload_dawn8 and decode_dawn (run them first in the same call).
# The modes without the resident one (which loads all 10.4 GiB to the GPU first); the bench now
# times a sweep of every expert before and after its modes.
step offload_dawn8_nores 100 env PREGATE_GPU=dawn PREGATE_BENCH_MODELS=qwen3_moe:qwen3-30b-a3b:8:bf16 \
  PREGATE_BENCH_TOKENS=16 PREGATE_BENCH_MODES=on-demand,pregated-strict \
  PREGATE_BENCH_OUT="$out/offload_dawn8_nores" deno run -A bench/offload.ts
step offload_dawn8 150 env PREGATE_GPU=dawn PREGATE_BENCH_MODELS=qwen3_moe:qwen3-30b-a3b:8:bf16 \
  PREGATE_BENCH_TOKENS=16 PREGATE_BENCH_OUT="$out/offload_dawn8" deno run -A bench/offload.ts
step peer_bench 270 env PYTHONUNBUFFERED=1 python3 tools/peer_bench.py --out "$out/peer_bench" \
  --dirs "$PREGATE_BENCH_DIR/qwen3_moe-qwen3-30b-a3b-8-bf16" "$PREGATE_BENCH_DIR/mixtral-mixtral-8x7b-2-bf16"
# The device returns at most 8 files: pack everything.
if [ "$out" != "$final" ]; then
  (cd "$out" && tar -czf "$final/pregate-session.tgz" .)
  cp "$summary" "$final/summary.txt"
fi
grep -h "^|" "$out"/*.md 2>/dev/null | head -60
cat "$summary"
