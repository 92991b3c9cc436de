#!/usr/bin/env bash
# A/B timing of a batch-1 decode step's matrix-vector products (native/bench/gemv_cuda_bench.cu): the work
# tree's native/src/cuda/gemv_cuda.cu against reference copies of it (REF: files, space-separated), ROUNDS
# rounds with the trees alternated in each, so that a drift of the machine hits them alike. Correctness is
# op_conformance's (tests/gpu/run.sh), not checked here.
# Usage on the GPU machine: OUT=<folder> REF="a.cu b.cu" [ROUNDS=3] tests/gpu/ab-gemv.sh
set -uo pipefail
cd "$(dirname "$0")/../.."
: "${OUT:?set OUT}"
refs=(${REF:-})
for f in "${refs[@]}"; do [ -e "$f" ] || { echo "missing $f" >&2; exit 1; }; done
mkdir -p "$OUT"
# shellcheck source=tests/gpu/trees.sh
. tests/gpu/trees.sh
build_trees native/src/cuda/gemv_cuda.cu gemv_cuda_bench "${refs[@]}" || exit 1
for round in $(seq "${ROUNDS:-3}"); do
  for tree in "${trees[@]}"; do
    "artifacts/gpu/build-$tree/gemv_cuda_bench" "$OUT/gemv-$tree-$round.md" > "$OUT/gemv-$tree-$round.txt" 2>&1 || echo "$tree: rc $?"
    echo "$tree round $round $(grep -h '^| ' "$OUT/gemv-$tree-$round.md" | sed -n '2p')"
  done
done | tee "$OUT/ab-gemv.txt"
# Every tree's last table.
for tree in "${trees[@]}"; do echo "== $tree"; cat "$OUT/gemv-$tree-${ROUNDS:-3}.md"; done
