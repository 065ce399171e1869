#!/usr/bin/env bash
# The GPU-host checks, each step under its own time limit:
#   source .device/env.sh && bash tools/gpu_check.sh [STEP ...]     (no STEP: tests parity decode offload)
# Steps:
#   tests    every kernel test, HF parity, offload and uploader test on Dawn, one process per file
#   parity   native vs Dawn vs HF logits and greedy tokens on every fixture (tools/impl_parity.ts)
#   hfnative the HF-parity tests (every architecture, Switch included, every mode) on native WebGPU
#   kernels  the kernels bench on Dawn, as a script (bench/kernels_bench.ts)
#   decode   resident decode, Mixtral-8x7B layer shapes x2, bf16, Dawn (bench/decode_bench.ts)
#   offload  the offloading modes, Qwen3-30B-A3B layer shapes x8, bf16, Dawn (bench/offload.ts)
#   native   the same offload bench on Deno's native WebGPU
#   peer     PyTorch / HF transformers on offload's checkpoint (bench/peer_bench.py; run offload first)
#   pinned   the offload bench's copy-bound modes (on-demand, pregated strict) through the mapped
#            and then the pinned uploader, in one call (PREGATE_PINNED_MODEL: another model spec)
#   quant    the kernels bench's GEMV and MoE rows only (or PREGATE_QUANT_SECTIONS), quantised types
#            included, and Q4_K / Q8_0 GEMVs in five layouts (threads per row x rows per workgroup)
#   convert  writes gguf's 8-layer checkpoint and its Q4_K and Q8_0 GGUF files (PREGATE_GGUF_TYPES)
#            ahead, timed, into PREGATE_BENCH_DIR, which lasts while the machine is held
#   gguf     the offload bench at bf16, then on Q4_K and Q8_0 GGUF files converted from the same
#            8-layer checkpoint, in one call (resident, on-demand, pregated exact and strict; or the
#            types and modes PREGATE_GGUF_TYPES (spaces) and PREGATE_GGUF_MODES (commas) name), once
#            per uploader that PREGATE_GGUF_UPLOADERS names (spaces; default auto)
#   llamacpp llama.cpp (node-llama-cpp 3.21.1, Vulkan) on gguf's files: resident decode tok/s and
#            greedy ids beside Pregate's; the llama.cpp cross-check test (llama.cpp Vulkan, Pregate Dawn).
#            Needs .nlc/nlc.tar.xz (`bash bench/llama_cpp_pack.sh`) carried with .device. When
#            every piece of the CUDA build is in /tmp/nlc-cuda (step cudapart), also llama.cpp
#            CUDA on the same files
#   llamacuda only llama.cpp CUDA on gguf's files (the end of llamacpp)
#   llamahost llama.cpp through FFI (bench/llama_cpp_ffi.mjs) on gguf's files: decode with every
#            layer on the GPU and with the experts in host memory (llama.cpp's --cpu-moe), Vulkan,
#            and CUDA when every piece of its build is in /tmp/nlc-cuda
#   cudapart keeps the pieces of llama.cpp's CUDA build carried in .nlc_cuda (one a call:
#            `bash bench/llama_cpp_cuda_pack.sh`) in /tmp/nlc-cuda, which lasts while the machine
#            is held, and says which are there
#   paper    the paper's experiment (bench/paper.ts, HF transformers beside it) on Switch-Base-8,
#            -64 and -128 at f32, or the models and dtypes PREGATE_PAPER_MODELS / _DTYPES name
#   profile  resident decode kernel by kernel (bench/decode_profile.ts) at bf16, Q4_K and Q8_0 on
#            gguf's checkpoint and files
# Logs and result files go to $OUT (the device tool's output folder) or /tmp/pregate-check; a line
# "STEP rc=N Ss" per step goes to stdout and $OUT/summary.txt. With $OUT set, everything is packed
# into $OUT/check.tgz at the end (the device tool brings back only a few files a call). To compare with an earlier commit, run
# this script from a checkout of each in the same call (same machine, same clock behaviour).
# PREGATE_CHECK_SECONDS=N ends every step by N seconds after the start (a later step is skipped),
# so that several steps fit one call's limit and the packing at the end still runs.
set -u
out=${OUT:-/tmp/pregate-check}
mkdir -p "$out"
: >"$out/summary.txt"
export NO_COLOR=1 PREGATE_BENCH_DIR=${PREGATE_BENCH_DIR:-/tmp/pregate-bench}
steps=" ${*:-tests parity decode offload} "

gguf_modes() { # the gguf step: bf16, then each GGUF type, on one checkpoint, per uploader
  local t u rc=0
  for u in ${PREGATE_GGUF_UPLOADERS:-auto}; do
    for t in ${PREGATE_GGUF_TYPES:-bf16 q4_k q8_0}; do
      env PREGATE_GPU=dawn PREGATE_BENCH_MODELS=qwen3_moe:qwen3-30b-a3b:8:bf16 PREGATE_BENCH_TOKENS=16 \
        PREGATE_BENCH_MODES=${PREGATE_GGUF_MODES:-resident,on-demand,pregated-exact,pregated-strict} \
        PREGATE_BENCH_RUNS=3 PREGATE_UPLOADER=$u \
        $([ $t = bf16 ] || echo PREGATE_BENCH_TYPE=$t) \
        PREGATE_BENCH_OUT="$out/gguf_$([ $u = auto ] || echo "${u}_")$t" \
        deno run -A bench/offload.ts || rc=1
    done
  done
  return $rc
}

convert_files() { # the convert step: gguf's checkpoint and its GGUF files, written ahead
  local d=$PREGATE_BENCH_DIR/qwen3_moe-qwen3-30b-a3b-8-bf16 t rc=0
  echo "cores: $(nproc)"
  [ -f "$d/config.json" ] || deno run -A cli.ts make-model --arch qwen3_moe --preset qwen3-30b-a3b \
    --layers 8 --dtype bf16 --seed 1 --out "$d" || return 1
  for t in ${PREGATE_GGUF_TYPES:-q4_k q8_0}; do
    [ "$t" = bf16 ] || [ -f "$d-$t.gguf" ] && continue
    time deno run -A cli.ts convert --model "$d" --out "$d-$t.gguf" --type "$t" || rc=1
  done
  return $rc
}

pinned_modes() { # the pinned step
  local u rc=0
  for u in mapped pinned; do
    env PREGATE_GPU=dawn PREGATE_BENCH_MODELS=${PREGATE_PINNED_MODEL:-qwen3_moe:qwen3-30b-a3b:8:bf16} \
      PREGATE_BENCH_TOKENS=16 PREGATE_BENCH_MODES=on-demand,pregated-strict PREGATE_BENCH_RUNS=3 \
      PREGATE_UPLOADER=$u PREGATE_BENCH_OUT="$out/pinned_$u" deno run -A bench/offload.ts || rc=1
  done
  return $rc
}

llama_cpp() { # the llamacpp step
  local t f ids rc=0
  nlc_install || return 1
  ids=$(deno eval 'console.log(Array.from({ length: 16 }, (_, i) => (i * 7919 + 13) % 151936).join())')
  for t in q4_k q8_0; do
    f=$PREGATE_BENCH_DIR/qwen3_moe-qwen3-30b-a3b-8-bf16-$t.gguf
    deno run -A --no-config --node-modules-dir=manual bench/llama_cpp_peer.mjs --install /tmp/nlc \
      --model "$f" --gpu vulkan --prompt-ids offload --tokens 16 --runs 5 >"$out/llama_cpp_$t.json" || rc=1
    PREGATE_GPU=dawn deno run -A cli.ts generate --model "$f" --ids "$ids" --max-tokens 16 --json \
      >"$out/pregate_generate_$t.json" || rc=1
  done
  PREGATE_TEST_GPU=dawn PREGATE_LLAMA_CPP=/tmp/nlc PREGATE_LLAMA_CPP_GPU=vulkan \
    deno test -A --no-check tests/llama_cpp_test.ts || rc=1
  llama_cpp_cuda || rc=1
  return $rc
}

cuda_build() { # prints the LD_LIBRARY_PATH llama.cpp's CUDA build needs, once it is unpacked
  if ! [ -f /tmp/nlc-cuda/SHA256SUMS ] || ! (cd /tmp/nlc-cuda && sha256sum -c --quiet SHA256SUMS); then
    echo "llama.cpp CUDA: not all pieces of its build are in /tmp/nlc-cuda (step cudapart)" >&2
    return 1
  fi
  [ -d /tmp/nlc/node_modules/@node-llama-cpp/linux-x64-cuda ] ||
    cat /tmp/nlc-cuda/cuda.tar.xz.part-* | tar -xJ -C /tmp/nlc/node_modules/@node-llama-cpp/ || return 1
  # node-llama-cpp looks for the driver (libcuda, libnvidia-ml) and the CUDA runtime and cuBLAS on
  # LD_LIBRARY_PATH and a few system folders before it loads its CUDA build; so does the FFI peer.
  local drv
  drv=$(find / -xdev -name 'libcuda.so.1' 2>/dev/null | head -n 1)
  echo "/usr/local/cuda-13.0/targets/x86_64-linux/lib${drv:+:$(dirname "$drv")}"
}

nlc_install() { # .nlc's node-llama-cpp install in /tmp/nlc
  [ -d /tmp/nlc/node_modules ] || { mkdir -p /tmp/nlc && tar -xJf .nlc/nlc.tar.xz -C /tmp/nlc; }
}

llama_cpp_cuda() { # the llamacuda step (and the end of llamacpp)
  local t f lib rc=0
  nlc_install || return 1
  if lib=$(cuda_build); then
    echo "llama.cpp CUDA: LD_LIBRARY_PATH += $lib"
    for t in q4_k q8_0; do
      f=$PREGATE_BENCH_DIR/qwen3_moe-qwen3-30b-a3b-8-bf16-$t.gguf
      LD_LIBRARY_PATH=$lib:${LD_LIBRARY_PATH:-} \
        deno run -A --no-config --node-modules-dir=manual bench/llama_cpp_peer.mjs \
        --install /tmp/nlc --model "$f" --gpu cuda --prompt-ids offload --tokens 16 --runs 5 \
        >"$out/llama_cpp_cuda_$t.json" || rc=1
    done
  else
    rc=1
  fi
  # What llama.cpp's CUDA build (libggml-cuda.so: CUDA 13 runtime and cuBLAS) would find here.
  python3 -c 'import torch; print("torch CUDA", torch.version.cuda)' || true
  find / -xdev \( -name 'libcublas.so*' -o -name 'libcudart.so*' \) 2>/dev/null | head -n 20
  return $rc
}

llama_host() { # the llamahost step: llama.cpp through FFI, experts on the GPU and in host memory
  local g t e f lib name rc=0
  nlc_install || return 1
  for g in vulkan cuda; do
    lib=
    if [ $g = cuda ]; then lib=$(cuda_build) || continue; fi
    for t in ${PREGATE_GGUF_TYPES:-q4_k q8_0}; do
      f=$PREGATE_BENCH_DIR/qwen3_moe-qwen3-30b-a3b-8-bf16-$t.gguf
      for e in gpu host; do
        name=llama_ffi_${g}_${e}_$t
        LD_LIBRARY_PATH=$lib${lib:+:}${LD_LIBRARY_PATH:-} \
          deno run -A --no-config bench/llama_cpp_ffi.mjs --install /tmp/nlc --model "$f" --gpu $g \
          --experts $e --prompt-ids offload --tokens 16 --runs 5 >"$out/$name.json" 2>"$out/$name.log" ||
          rc=1
        echo "$name: $(grep -E 'decode tok/s|llama_cpp_ffi:' "$out/$name.log" | tail -n 1)"
      done
    done
  done
  return $rc
}

cuda_parts() { # the cudapart step
  mkdir -p /tmp/nlc-cuda && cp .nlc_cuda/* /tmp/nlc-cuda/ || return 1
  cd /tmp/nlc-cuda && ls -l && sha256sum -c --ignore-missing SHA256SUMS
}

profiles() { # the profile step
  local t rc=0
  for t in bf16 q4_k q8_0; do
    env PREGATE_GPU=dawn PREGATE_BENCH_MODEL=qwen3_moe:qwen3-30b-a3b:8:bf16 \
      $([ $t = bf16 ] || echo PREGATE_BENCH_TYPE=$t) PREGATE_BENCH_OUT="$out/profile_$t" \
      deno run -A bench/decode_profile.ts || rc=1
  done
  return $rc
}

step() { # step NAME SECONDS COMMAND... (SECONDS: at most what PREGATE_CHECK_SECONDS leaves)
  local name=$1 limit=$2
  shift 2
  [[ "$steps" == *" $name "* ]] || return 0
  if [ -n "${PREGATE_CHECK_SECONDS:-}" ]; then
    local left=$((PREGATE_CHECK_SECONDS - SECONDS))
    if [ "$left" -lt 10 ]; then
      echo "$name skipped: PREGATE_CHECK_SECONDS ($PREGATE_CHECK_SECONDS s) spent" | tee -a "$out/summary.txt"
      return 0
    fi
    [ "$left" -lt "$limit" ] && limit=$left
  fi
  local t0=$SECONDS
  timeout "$limit" bash -c '"$@"' _ "$@" >"$out/$name.log" 2>&1 # bash: the steps may be functions
  echo "$name rc=$? $((SECONDS - t0))s" | tee -a "$out/summary.txt"
}

dawn_tests() {
  local rc=0
  for f in kernels/*_test.ts tests/hf_parity_test.ts tests/offload_test.ts \
    runtime/experts/uploader_test.ts; do
    PREGATE_TEST_GPU=dawn deno test -A --no-check "$f" >/tmp/pregate-test.log 2>&1 || rc=1
    echo "$f: $(grep -E '^(ok|FAILED) \|' /tmp/pregate-test.log | tail -n1)"
    grep -E "FAILED|=> " /tmp/pregate-test.log | head -n 5
  done
  return $rc
}

paper_rows() { # the paper step: bench/paper.ts with HF beside it (PREGATE_PAPER_* choose the rows)
  env PREGATE_GPU=dawn PREGATE_BENCH_DIR=/tmp/paper PREGATE_PAPER_HF=1 \
    PREGATE_PAPER_MODELS="${PREGATE_PAPER_MODELS:-switch-base-8,switch-base-64,switch-base-128}" \
    PREGATE_PAPER_DTYPES="${PREGATE_PAPER_DTYPES:-f32}" PREGATE_BENCH_OUT="$out/paper" \
    deno run -A bench/paper.ts
}

export out
export -f dawn_tests convert_files pinned_modes gguf_modes nlc_install cuda_build llama_cpp llama_cpp_cuda \
  llama_host cuda_parts profiles paper_rows
step tests 300 dawn_tests
step parity 90 deno run -A tools/impl_parity.ts --json "$out/impl_parity.json"
step hfnative 200 bash -c "deno run -A cli.ts gpu-info --gpu native; \
  PREGATE_TEST_GPU=native deno test -A --no-check tests/hf_parity_test.ts"
step kernels 240 env PREGATE_GPU=dawn PREGATE_BENCH_OUT="$out/kernels_dawn.json" \
  deno run -A bench/kernels_bench.ts
step decode 90 env PREGATE_GPU=dawn PREGATE_BENCH_MODELS=mixtral:mixtral-8x7b:2:bf16 \
  PREGATE_BENCH_TOKENS=128 PREGATE_BENCH_OUT="$out/decode_dawn.json" \
  deno run -A bench/decode_bench.ts
step offload 180 env PREGATE_GPU=dawn PREGATE_BENCH_MODELS=qwen3_moe:qwen3-30b-a3b:8:bf16 \
  PREGATE_BENCH_TOKENS=16 PREGATE_BENCH_OUT="$out/offload_dawn8" deno run -A bench/offload.ts
step native 200 env PREGATE_GPU=native PREGATE_BENCH_MODELS=qwen3_moe:qwen3-30b-a3b:8:bf16 \
  PREGATE_BENCH_TOKENS=16 PREGATE_BENCH_OUT="$out/offload_native8" deno run -A bench/offload.ts
step peer 300 env PYTHONUNBUFFERED=1 python3 bench/peer_bench.py --out "$out/peer_bench" \
  --dirs "$PREGATE_BENCH_DIR/qwen3_moe-qwen3-30b-a3b-8-bf16"
step pinned 420 pinned_modes
step quant 300 env PREGATE_GPU=dawn PREGATE_BENCH_SECTIONS=${PREGATE_QUANT_SECTIONS:-gemv,moe} \
  PREGATE_BENCH_OUT="$out/kernels_quant.json" deno run -A bench/kernels_bench.ts
step convert 580 convert_files
step gguf 580 gguf_modes
step cudapart 60 cuda_parts
step llamacpp 420 llama_cpp
step llamacuda 240 llama_cpp_cuda
step llamahost 300 llama_host
step paper 580 paper_rows
step profile 240 profiles
cat "$out/summary.txt"
if [ -n "${OUT:-}" ]; then
  tar -czf /tmp/pregate-check.tgz -C "$out" . && rm -rf "${out:?}"/* && mv /tmp/pregate-check.tgz "$out/check.tgz"
fi
