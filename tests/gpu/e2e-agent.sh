#!/usr/bin/env bash
# The published Semantic Kernel agent sample on stories260K, its plugin function required (so that a
# tiny model calls it: grammar-constrained sampling), greedy, dense cache and the Mustafar store at s = 0.7.
# Run on the CPU flavour here and on the CUDA flavour there; the two files must be equal.
#   tests/gpu/e2e-agent.sh <published folder> <models folder> <output file>
set -euo pipefail
app="$1"; models="$2"; out="$3"
: > "$out"
for s in 0 0.7; do
  for fn in switch_light lights_on; do
    printf '== stories260K, s = %s, --require %s\n' "$s" "$fn" >> "$out"
    "$app/Mustafar.Agent" --model "$models/stories260K-f32.gguf" --sparsity "$s" --require "$fn" \
      2>/dev/null < /dev/null >> "$out"
  done
done
