#!/usr/bin/env bash
# Is a checkpoint's page cache kept on the GPU host? The offload bench's 8-layer Qwen3 runs copied
# experts at 2.3-3.9 GB/s against 19.7-21.1 with 4 layers, with the time in the CPU fill of the
# staging buffers (the GPU never waited): reads that miss the page cache would do that. This
# writes the 8-layer checkpoint as the bench does, shows the memory limits, how much of the file
# is cached, and times two reads of the largest shard.
# Usage (GPU host): source .device/env.sh && bash tools/diag_pagecache.sh [LAYERS]
set -u
layers=${1:-8}
dir=/tmp/pregate-bench/qwen3_moe-qwen3-30b-a3b-$layers-bf16
vm() { grep -E "^(pgmajfault|pgfault|pgpgin|pgpgout|pswpin|workingset_refault_file|pgsteal_kswapd|pgsteal_direct) " /proc/vmstat | tr '\n' ' '; echo; }
echo "== memory"; free -g; grep -E "^(MemTotal|MemFree|Cached):" /proc/meminfo; vm; cat /sys/fs/cgroup/memory.max 2>/dev/null || true
cat /sys/fs/cgroup/memory.high 2>/dev/null || true
df -h /tmp | tail -1
if [ ! -d "$dir" ]; then
  t0=$(date +%s.%N)
  deno run -A cli.ts make-model --arch qwen3_moe --preset qwen3-30b-a3b --layers "$layers" \
    --dtype bf16 --out "$dir" > /dev/null || exit 1
  echo "== wrote $dir in $(python3 -c "print(round($(date +%s.%N) - $t0, 1))") s"
fi
du -sh "$dir"
echo "== page cache after writing"; fincore "$dir"/*.safetensors 2>/dev/null || echo "(no fincore)"
big=$(ls -S "$dir"/*.safetensors | head -1)
for i in 1 2; do
  echo "== read $i of $big"; dd if="$big" of=/dev/null bs=64M 2>&1 | tail -1
done
echo "== page cache after reading"; fincore "$big" 2>/dev/null || true
grep -E "^(MemTotal|Cached|Dirty|MemAvailable|Writeback):" /proc/meminfo; vm
# Every shard at once, as the 16 copy threads read them: the whole checkpoint's read rate.
for i in 1 2; do
  t0=$(date +%s.%N)
  for f in "$dir"/*.safetensors; do cat "$f" > /dev/null & done; wait
  bytes=$(du -sb "$dir" | cut -f1)
  echo "== parallel read $i: $(python3 -c "print(round($bytes / ($(date +%s.%N) - $t0) / 1e9, 2))") GB/s"
  vm
done
echo "== page cache at the end"; fincore "$dir"/*.safetensors 2>/dev/null | tail -3
grep -E "^(MemTotal|Cached|MemAvailable):" /proc/meminfo
