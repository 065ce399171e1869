#!/usr/bin/env bash
# Packs npm node-llama-cpp 3.21.1 with its prebuilt llama.cpp binaries for Linux x64 Vulkan (and the
# CPU build, node-llama-cpp's fallback and `--gpu cpu`) into .nlc/nlc.tar.xz at the repository root,
# small enough to travel to the GPU host beside .device (the CUDA build, libggml-cuda.so, is 159 MB
# and needs libcublas; Vulkan's is 55 MB and compresses to a few MB). Drops the llama.cpp source
# bundle, source maps, type declarations and docs; identical files of the two builds (the ggml CPU
# backends) become hard links. Needs npm and network here; the GPU host needs neither:
#   bash bench/llama_cpp_pack.sh
#   # on the GPU host, from the repository root:
#   mkdir -p /tmp/nlc && tar -xJf .nlc/nlc.tar.xz -C /tmp/nlc && source .device/env.sh
#   deno run -A --no-config --node-modules-dir=manual bench/llama_cpp_peer.mjs --install /tmp/nlc \
#     --model F.gguf --gpu vulkan
set -euo pipefail
VERSION=3.21.1
repo=$(cd "$(dirname "$0")/.." && pwd)
out="$repo/.nlc/nlc.tar.xz"
tmp=$(mktemp -d /tmp/nlc-pack.XXXXXX)
trap 'rm -rf "$tmp"' EXIT

cd "$tmp"
npm init -y >/dev/null
npm i --omit=optional --ignore-scripts --no-audit --no-fund --loglevel=error \
  "node-llama-cpp@$VERSION" "@node-llama-cpp/linux-x64-vulkan@$VERSION" \
  "@node-llama-cpp/linux-x64@$VERSION" >/dev/null
nm=node_modules
before=$(du -sb "$nm" | cut -f1)

# What the runtime does not read: the llama.cpp source (only for building from source), source maps,
# type declarations, docs.
rm -f "$nm/node-llama-cpp/llama/gitRelease.bundle"
find "$nm" -type f \( -name '*.map' -o -name '*.d.ts' -o -name '*.d.mts' -o -name '*.d.cts' \
  -o -iname '*.md' -o -iname 'CHANGELOG*' \) -delete
# Any other platform's binaries npm may have added despite --omit=optional.
for d in "$nm"/@node-llama-cpp/*; do
  case "$(basename "$d")" in linux-x64 | linux-x64-vulkan) ;; *) rm -rf "$d" ;; esac
done

# Identical files of the two builds as hard links (tar stores a link once).
cpu="$nm/@node-llama-cpp/linux-x64/bins/linux-x64"
vk="$nm/@node-llama-cpp/linux-x64-vulkan/bins/linux-x64-vulkan"
for f in "$vk"/*; do
  twin="$cpu/$(basename "$f")"
  if [ -f "$twin" ] && cmp -s "$f" "$twin"; then ln -f "$f" "$twin"; fi
done

after=$(du -sb "$nm" | cut -f1)
mkdir -p "$(dirname "$out")"
tar -cf - --owner=0 --group=0 --sort=name "$nm" package.json | xz -9e -T1 >"$out.tmp"
mv "$out.tmp" "$out"
echo "node_modules $((before / 1048576)) MiB -> $((after / 1048576)) MiB;" \
  "$out: $(($(stat -c %s "$out") / 1024)) KiB"
