#!/usr/bin/env bash
# Runs each test file alone on the current GPU with a timeout, to find one that hangs.
# Usage (GPU host): bash tools/diag_native.sh OUTDIR
out=${1:-/tmp/diag}; mkdir -p "$out"
for f in kernels/*_test.ts tests/*_test.ts; do
  s=$(date +%s.%N)
  timeout 25 deno test -A "$f" > "$out/$(basename "$f" .ts).log" 2>&1; rc=$?
  printf '%-40s rc=%-4s %.1fs\n' "$f" "$rc" "$(echo "$(date +%s.%N) - $s" | bc)"
done
