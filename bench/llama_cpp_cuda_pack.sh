#!/usr/bin/env bash
# Packs node-llama-cpp 3.21.1's prebuilt CUDA build of llama.cpp (npm @node-llama-cpp/linux-x64-cuda:
# libggml-cuda.so is 159 MB, 124 MB under xz) in pieces small enough to travel to the GPU host one a
# call (the device tool carries at most 64 MiB with the working tree), into .nlc_cuda/:
#   bash bench/llama_cpp_cuda_pack.sh        # .nlc_cuda/cuda.tar.xz.part-aa, -ab, -ac (43 MiB) + SHA256SUMS
# On the GPU host each call that carries .nlc_cuda keeps its pieces in /tmp/nlc-cuda (which lasts
# while the machine is held), so carry one piece a call (move the others aside here) with
#   bash tools/gpu_check.sh cudapart
# and once all are there, `tools/gpu_check.sh llamacpp` unpacks the build next to .nlc's install and
# runs llama.cpp on CUDA too. The build links the host's CUDA 13 runtime and cuBLAS
# (libcudart.so.13, libcublas.so.13: /usr/local/cuda-13.0 on the GPU host, session 10).
set -euo pipefail
VERSION=3.21.1
PIECE=43M
repo=$(cd "$(dirname "$0")/.." && pwd)
out="$repo/.nlc_cuda"
tmp=$(mktemp -d /tmp/nlc-cuda-pack.XXXXXX)
trap 'rm -rf "$tmp"' EXIT

cd "$tmp"
npm pack --silent "@node-llama-cpp/linux-x64-cuda@$VERSION" >/dev/null
mkdir -p linux-x64-cuda
tar -xzf node-llama-cpp-linux-x64-cuda-$VERSION.tgz -C linux-x64-cuda --strip-components=1
rm -f node-llama-cpp-linux-x64-cuda-$VERSION.tgz
find linux-x64-cuda -type f \( -iname '*.md' -o -name '*.map' \) -delete
rm -rf "$out" && mkdir -p "$out"
tar -cf - --owner=0 --group=0 --sort=name linux-x64-cuda | xz -9 -T0 |
  split -b "$PIECE" - "$out/cuda.tar.xz.part-"
(cd "$out" && sha256sum cuda.tar.xz.part-* >SHA256SUMS)
ls -l "$out"
