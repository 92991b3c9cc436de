#!/usr/bin/env bash
# End-to-end decode under environment variants (switches that a change reads, e.g. MUSTAFAR_PDL=0), after
# tests/gpu/run.sh has built the library and unpacked the publish. Each point runs under every variant in
# turn on one machine, so that variants are compared within the call (machines of one kind differ by a
# few per cent). Generates the Llama-3-8B-shaped model first when it is missing.
# POINTS: "s,batch,context" (s = 0: dense cache); VARIANTS: "default" (no setting) or NAME=VALUE words:
# environment settings (several joined by +), or Mustafar.Bench options where NAME begins with -- (e.g. --batch-size=2048).
# ROUNDS (default 1) repeats the whole set; even rounds take the variants in reverse order (give an even number when
# variants are compared: in 2026-12-03's calls the variant run first at a point was often the slower one).
# Usage on the GPU machine: COMMIT=<sha> OUT=<folder> VARIANTS="default MUSTAFAR_PDL=0" POINTS="0,1,4096" tests/gpu/e2e-variants.sh
set -uo pipefail
cd "$(dirname "$0")/../.."
. tests/gpu/round-order.sh
: "${OUT:?set OUT}" "${COMMIT:?set COMMIT}"
bench=artifacts/gpu/publish/Mustafar.Bench
model=artifacts/gpu/llama3-8b-f16.gguf
[ -x "$bench" ] || { echo "missing $bench: run tests/gpu/run.sh first" >&2; exit 1; }
gpu="$(nvidia-smi --query-gpu=name --format=csv,noheader)"
mkdir -p "$OUT"
for round in $(seq "${ROUNDS:-1}"); do
for point in ${POINTS:-"0,1,4096"}; do
  IFS=, read -r s batch ctx <<< "$point"
  read -ra variants <<< "${VARIANTS:-default}"
  mapfile -t order < <(in_round_order "$round" "${variants[@]}")
  for variant in "${order[@]}"; do
    vars=() args=()
    case "$variant" in
      default) ;;
      --*) args=("${variant%%=*}" "${variant#*=}") ;;
      *) IFS=+ read -ra vars <<< "$variant" ;;  # NAME=VALUE+NAME=VALUE: several settings
    esac
    name="s$s-b$batch-$ctx-${variant//[^A-Za-z0-9_.-]/_}-$round"
    env "${vars[@]}" timeout "${POINT_LIMIT:-120}" "$bench" --generate-llama3-8b --model "$model" --contexts "$ctx" --batches "$batch" \
      --decode-tokens "${DECODE_TOKENS:-130}" --k-sparsity "$s" --v-sparsity "$s" "${args[@]}" \
      --title "End-to-end, s = $s, batch $batch, $ctx, $variant: $gpu, commit $COMMIT" --out "$OUT/$name.md" > "$OUT/$name.txt" 2>&1
    echo "$name rc=$? $(grep -h "^| [0-9]" "$OUT/$name.md" 2>/dev/null)"
  done
done
done | tee "$OUT/e2e-variants.txt"
