#!/usr/bin/env bash
# Greedy text of 4 concurrent requests in each cache layout (MustafarCacheLayout) at s = 0 and 0.7, as digests
# printed by samples/Mustafar.Bench (--prompts): story prompts on the stories model, and the recall prompts of
# tests/gpu/prompts.tsv on recall-hd128-q8_0 (head_dim 128). One line per run. Run on the CPU flavour by
# tests/gpu/prepare.sh --e2e (the expected file) and on the CUDA flavour by tests/gpu/e2e-layouts.sh. The texts
# themselves go to <output file>.texts (which request a differing digest comes from, and how it differs).
#   tests/gpu/layout-digests.sh <published Mustafar.Bench folder> <models folder> <output file>
set -euo pipefail
app="$1"; models="$2"; out="$3"
prompts="$(mktemp -d)"
trap 'rm -rf "$prompts"' EXIT
printf '%s\n' "Once upon a time" "The little dog" "the little bird" "Lily and Ben went to the park" > "$prompts/stories.txt"
awk -F'\t' '$1 ~ /^recall/ { print $3 }' tests/gpu/prompts.tsv | head -4 > "$prompts/recall.txt"
: > "$out"
: > "$out.texts"
# The recall prompts generate their answers, the 4 tokens of prompts.tsv (as e2e.sh): with 8, one request's text went
# on after its code in two ways on the CUDA flavour's per-request layout, as its micro-batches fell (the flavours'
# batch dependence, bench/results/gpu-tests-2026-12-02.md), which is not what this compares.
for run in "stories260K-f32.gguf stories.txt 256 48" "recall-hd128-q8_0.gguf recall.txt 1024 4"; do
  read -r model file context tokens <<< "$run"
  for s in 0 0.7; do
    for layout in shared per-request; do
      printed=$("$app/Mustafar.Bench" --model "$models/$model" --prompts "$prompts/$file" --contexts "$context" --batches 4 \
                  --decode-tokens "$tokens" --k-sparsity "$s" --v-sparsity "$s" --cache-layout "$layout" 2>/dev/null)
      printf '%s s=%s %s %s\n' "$model" "$s" "$layout" "$(grep -o "digest [0-9a-f]*" <<< "$printed")" >> "$out"
      grep "^generated text [0-9]" <<< "$printed" | sed "s/^/$model s=$s $layout: /" >> "$out.texts"
    done
  done
done
