#!/usr/bin/env bash
# Why the decode attention kernel's warps wait: Nsight Compute's stall reasons (warps stalled per issued
# instruction, by reason) for one configuration each, caches left as the benchmark leaves them.
# Usage: BENCH_BIN=<attention_cuda_bench> tests/gpu/stalls.sh "s,batch,context[,splits]" ...  (s = 0: dense)
#        "prompt,s,context": the prompt kernel on a causal 512-row micro-batch (attention_cuda_bench --prompt).
set -euo pipefail
cd "$(dirname "$0")/../.."
bench=${BENCH_BIN:-artifacts/gpu/build/attention_cuda_bench}
[ -x "$bench" ] || { echo "missing $bench" >&2; exit 1; }
reasons="barrier branch_resolving dispatch_stall drain imc_miss lg_throttle long_scoreboard math_pipe_throttle membar mio_throttle misc
no_instruction not_selected selected short_scoreboard sleeping tex_throttle wait"
metrics="gpu__time_duration.sum,smsp__inst_executed.sum,smsp__cycles_active.avg"
for r in $reasons; do metrics+=",smsp__average_warps_issue_stalled_${r}_per_issue_active.ratio"; done
for cfg in "$@"; do
  IFS=, read -r a b c d <<< "$cfg"
  if [ "$a" = prompt ]; then
    echo "== prompt s=$b context=$c (512 rows, causal)"
    kernel=prompt_kernel skip=5 args=(--prompt "$b" "$c" 1)  # 3 warm-up calls and 10 timed
  else
    echo "== s=$a batch=$b context=$c splits=${d:-0}"
    kernel=mma_kernel skip=10 args=(--one "$a" "$b" "$c" "${d:-0}")
  fi
  ncu --clock-control none --cache-control none -k regex:"$kernel" --launch-skip "$skip" --launch-count 1 --metrics "$metrics" \
    "$bench" "${args[@]}" 2>&1 | grep -E "duration|inst_executed|cycles_active|stalled" |
    sed -E 's/smsp__average_warps_issue_stalled_(.*)_per_issue_active.ratio/stalled \1/' | awk '{$1=$1; print}'
done
