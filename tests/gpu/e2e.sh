#!/usr/bin/env bash
# End to end through the published sample: greedy completions of tests/gpu/prompts.tsv
# (model, max tokens, prompt[, expected]) with a dense cache, one output line per prompt.
# Run on the CPU flavour here and on the CUDA flavour there; the two files must be equal.
#   tests/gpu/e2e.sh <published Mustafar.Chat folder> <models folder> <output file>
set -euo pipefail
app="$1"; models="$2"; out="$3"
: > "$out"
while IFS=$'\t' read -r model tokens prompt expected; do
  text=$("$app/Mustafar.Chat" --model "$models/$model" --temperature 0 --max-tokens "$tokens" --ctx-size 2048 \
           --k-sparsity 0 --v-sparsity 0 "$prompt" 2>/dev/null < /dev/null)
  text="${text//$'\n'/\\n}"
  printf '%s\t%s\t%s\n' "$model" "${expected:-}" "$text" >> "$out"
done < tests/gpu/prompts.tsv
