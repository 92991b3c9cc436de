#!/usr/bin/env bash
# Greedy text of 4 concurrent requests on the stories model in each cache layout (MustafarCacheLayout) at
# s = 0 and 0.7, as digests printed by samples/Mustafar.Bench: one line per run. Run on the CPU flavour by
# tests/gpu/prepare.sh --e2e (the expected file) and on the CUDA flavour by tests/gpu/e2e-layouts.sh.
#   tests/gpu/layout-digests.sh <published Mustafar.Bench folder> <models folder> <output file>
set -euo pipefail
app="$1"; models="$2"; out="$3"
: > "$out"
for s in 0 0.7; do
  for layout in shared per-request; do
    digest=$("$app/Mustafar.Bench" --model "$models/stories260K-f32.gguf" --contexts 256 --batches 4 --decode-tokens 48 \
               --batch-size 1024 --k-sparsity "$s" --v-sparsity "$s" --cache-layout "$layout" 2>/dev/null | grep -o "digest [0-9a-f]*")
    printf 's=%s %s %s\n' "$s" "$layout" "$digest" >> "$out"
  done
done
