#!/usr/bin/env bash
# End to end through the published sample: greedy completions of tests/gpu/prompts.tsv
# (model, max tokens, prompt[, expected]), one output line per prompt, with a dense cache (sparsity
# 0, the default) or the Mustafar store at the given K and V sparsity (default local window).
# Run on the CPU flavour here and on the CUDA flavour there; the two files must be equal.
#   tests/gpu/e2e.sh <published Mustafar.Chat folder> <models folder> <output file> [sparsity]
set -euo pipefail
app="$1"; models="$2"; out="$3"; sparsity="${4:-0}"
: > "$out"
while IFS=$'\t' read -r model tokens prompt expected; do
  text=$("$app/Mustafar.Chat" --model "$models/$model" --temperature 0 --max-tokens "$tokens" --ctx-size 2048 \
           --k-sparsity "$sparsity" --v-sparsity "$sparsity" "$prompt" 2>/dev/null < /dev/null)
  text="${text//$'\n'/\\n}"
  printf '%s\t%s\t%s\n' "$model" "${expected:-}" "$text" >> "$out"
done < tests/gpu/prompts.tsv
