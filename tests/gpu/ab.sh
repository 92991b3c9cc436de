#!/usr/bin/env bash
# A/B timing of the attention kernels on one machine: the work tree's native/src/cuda/attention_decode.cu
# against reference copies of that file (REF: one or more files, space-separated, default
# artifacts/gpu/ref/attention_decode.cu; make one with `git show <commit>:native/src/cuda/attention_decode.cu
# > artifacts/gpu/ref/attention_decode.cu` and carry artifacts/gpu/ref; where headers differ too, a folder:
# see tests/gpu/trees.sh). Trees: new, ref1, ref2, ...
# Dense times of one point differ by a few per cent between machines of one kind, so a change is judged
# against its reference in the same call. Every build runs the kernel tests (KERNEL_TESTS).
# POINTS: "s,batch,context[,splits]" (s = 0: dense; splits 0 or absent: the launcher's choice).
# NCU_POINTS: decode points as in POINTS whose decode kernel Nsight Compute measures once per tree: time,
# instructions, shared-memory wavefronts and bank conflicts, the LSU data pipe's and the issue slots' use.
# PROMPTS: "s,context[,causal[,expand]]": a 512-row prompt micro-batch over context cells (causal mask unless 0;
# over the store, expand 0 times the prompt kernel expanding its tiles instead of the expanded copy; builds
# before c63acca ignore it and always take their prompt kernel's own expansion).
# COLD_POINTS: decode points whose decode kernel Nsight Compute times with every cache flushed before each launch
# (a model's other kernels pass between two layers' attentions) and with none: time and the share of warp stalls
# waiting for instructions.
# MASKED_POINTS: "s,context,visible[,reuse[,cold]]": batch-1 decode with a mask row (`attention_cuda_bench --masked`;
# reuse 1: the rows' ranges computed once, as a model's layers share them; cold 1: each call after an L2 flush), into
# masked.txt.
# E2E_POINTS: "s,batch,context": each tree's library also builds and runs the Llama-3-8B-shaped model end to end
# (needs the publish of tests/gpu/prepare.sh --e2e in artifacts/gpu/apps.tar.xz; ROUNDS, DECODE_TOKENS).
# KERNEL_TESTS: the trees whose kernel tests run (default: all; a reference already tested need not be again).
# Usage on the GPU machine: OUT=<folder> POINTS="..." tests/gpu/ab.sh
set -uo pipefail
cd "$(dirname "$0")/../.."
: "${OUT:?set OUT}"
refs=(${REF:-artifacts/gpu/ref/attention_decode.cu})
for f in "${refs[@]}"; do [ -e "$f" ] || { echo "missing $f" >&2; exit 1; }; done
mkdir -p "$OUT"
# shellcheck source=tests/gpu/trees.sh
. tests/gpu/trees.sh
build_trees native/src/cuda/attention_decode.cu "cuda_kernel_tests attention_cuda_bench${E2E_POINTS:+ ggml-mustafar}" "${refs[@]}" || exit 1
for tree in ${KERNEL_TESTS:-${trees[@]}}; do
  "artifacts/gpu/build-$tree/cuda_kernel_tests" 1 > "$OUT/kernel-tests-$tree.txt" 2>&1
  echo "$tree kernel tests: $(tail -1 "$OUT/kernel-tests-$tree.txt")"
done
# Alternate the builds point by point, so that a drift of the machine hits them alike.
for point in ${POINTS:-"0.7,8,32768"}; do
  IFS=, read -r s batch ctx splits <<< "$point"
  for tree in "${trees[@]}"; do
    printf '%s ' "$tree"
    "artifacts/gpu/build-$tree/attention_cuda_bench" --one "$s" "$batch" "$ctx" "${splits:-0}"
  done
done | tee "$OUT/ab.txt"
for point in ${PROMPTS:-}; do
  IFS=, read -r s ctx causal expand <<< "$point"
  for tree in "${trees[@]}"; do
    printf '%s ' "$tree"
    "artifacts/gpu/build-$tree/attention_cuda_bench" --prompt "$s" "$ctx" "${causal:-1}" "${expand:-1}"
  done
done | tee -a "$OUT/ab.txt"
for point in ${MASKED_POINTS:-}; do
  IFS=, read -r s ctx visible reuse cold <<< "$point"
  for tree in "${trees[@]}"; do
    printf '%s ' "$tree"
    "artifacts/gpu/build-$tree/attention_cuda_bench" --masked "$s" "$ctx" "$visible" "${reuse:-0}" "${cold:-0}"
  done
done | tee "$OUT/masked.txt"
# The same as a Markdown table (TREES: names for the header, in the order new ref1 ref2 ...).
if command -v python3 > /dev/null; then python3 tests/gpu/ab_table.py "$OUT/ab.txt" ${TREES:-} | tee "$OUT/ab.md"; fi
for point in ${NCU_POINTS:-}; do
  IFS=, read -r s batch ctx splits <<< "$point"
  for tree in "${trees[@]}"; do
    echo "== $tree $point"
    ncu --clock-control none -k regex:mma_kernel --launch-skip 10 --launch-count 1 --metrics \
      gpu__time_duration.sum,smsp__inst_executed.sum,l1tex__data_pipe_lsu_wavefronts_mem_shared.sum,l1tex__data_bank_conflicts_pipe_lsu_mem_shared.sum,l1tex__data_pipe_lsu_wavefronts.avg.pct_of_peak_sustained_elapsed,smsp__issue_active.avg.pct_of_peak_sustained_active \
      "artifacts/gpu/build-$tree/attention_cuda_bench" --one "$s" "$batch" "$ctx" "${splits:-0}" 2>&1 | grep -E "duration|inst_exec|wavefronts|conflicts|pct"
  done
done | tee "$OUT/ncu.txt"
for point in ${COLD_POINTS:-}; do
  IFS=, read -r s batch ctx splits <<< "$point"
  for tree in "${trees[@]}"; do
    for cache in all none; do
      echo "== $tree $point caches flushed: $cache"
      ncu --clock-control none --cache-control "$cache" -k regex:mma_kernel --launch-skip 10 --launch-count 5 --metrics \
        gpu__time_duration.sum,smsp__warp_issue_stalled_no_instruction_per_warp_active.pct \
        "artifacts/gpu/build-$tree/attention_cuda_bench" --one "$s" "$batch" "$ctx" "${splits:-0}" 2>&1 | grep -E "duration|stalled"
    done
  done
done | tee "$OUT/cold.txt"
if [ -n "${E2E_POINTS:-}" ]; then
  bench=artifacts/gpu/publish/Mustafar.Bench lib_dir=artifacts/gpu/publish/runtimes/linux-x64/native
  # shellcheck source=tests/gpu/publish-lib.sh
  . tests/gpu/publish-lib.sh
  unpack_publish "artifacts/gpu/build-${trees[0]}/libggml-mustafar.so"
  for round in $(seq "${ROUNDS:-2}"); do
    for point in $E2E_POINTS; do
      IFS=, read -r s batch ctx <<< "$point"
      for tree in "${trees[@]}"; do
        cp "artifacts/gpu/build-$tree/libggml-mustafar.so" "$lib_dir/libggml-mustafar.so"
        run="e2e-s$s-b$batch-$ctx-$tree-$round"
        timeout "${POINT_LIMIT:-120}" "$bench" --generate-llama3-8b --model artifacts/gpu/llama3-8b-f16.gguf --contexts "$ctx" --batches "$batch" \
          --decode-tokens "${DECODE_TOKENS:-64}" --k-sparsity "$s" --v-sparsity "$s" --out "$OUT/$run.md" > "$OUT/$run.txt" 2>&1
        echo "$run rc=$? $(grep -h "^| [0-9]" "$OUT/$run.md" 2>/dev/null)"
      done
    done
  done | tee "$OUT/e2e.txt"
fi
