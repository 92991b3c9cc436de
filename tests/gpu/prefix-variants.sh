#!/usr/bin/env bash
# prefix-prompts.sh under environment variants, alternated round by round on one machine, so that an A/B of a
# switch (e.g. MUSTAFAR_ASYNC_GRAPHS=0) is not one run of each in a fixed order. VARIANTS: "default" (no setting)
# or NAME=VALUE words; ROUNDS (default 2); the rest as prefix-prompts.sh takes it (BATCH, BEFORE, CONTEXT,
# SPARSITY, ALONE, PROFILE, DECODE_TOKENS). Prints prompt tok/s per point, variant and round.
# Usage on the GPU machine: COMMIT=<sha> OUT=<folder> VARIANTS="default MUSTAFAR_ASYNC_GRAPHS=0" tests/gpu/prefix-variants.sh
set -uo pipefail
cd "$(dirname "$0")/../.."
: "${OUT:?set OUT}" "${COMMIT:?set COMMIT}"
for round in $(seq "${ROUNDS:-2}"); do
  for variant in ${VARIANTS:-default}; do
    vars=()
    [ "$variant" = default ] || vars=("$variant")
    dir="$OUT/${variant//[^A-Za-z0-9_.-]/_}-$round"
    mkdir -p "$dir"
    env "${vars[@]}" OUT="$dir" tests/gpu/prefix-prompts.sh > "$dir/run.txt" 2>&1
    echo "rc=$? $variant round $round"
    # The Bench's rows: | batch | context | prompt tokens | prompt s | prompt tok/s | ...
    grep -h "^| [0-9]" "$dir"/*.md 2>/dev/null | awk -F'|' -v v="$variant" -v r="$round" '{ printf "%s, round %s: batch %s, %s: %s prompt tok/s\n", v, r, $2 + 0, $3, $6 + 0 }'
  done
done | tee "$OUT/prefix-variants.txt"
