#!/usr/bin/env bash
# Nsight Compute profile of the decode attention kernels, one configuration each, after tests/gpu/run.sh
# has built artifacts/gpu/build. Usage: profile.sh "s,batch,context" ...  (s = 0: the dense kernel).
# Writes one text report per configuration to $OUT (default artifacts/gpu/out): speed of light,
# occupancy, warp stalls, instruction mix and the source lines with the most stall samples.
set -euo pipefail
cd "$(dirname "$0")/../.."
out="${OUT:-artifacts/gpu/out}"
mkdir -p "$out"
bench=${BENCH_BIN:-artifacts/gpu/build/attention_cuda_bench}  # BENCH_BIN: another build's
[ -x "$bench" ] || { echo "missing $bench: run tests/gpu/run.sh first" >&2; exit 1; }
for cfg in "$@"; do
  IFS=, read -r s batch ctx <<< "$cfg"
  name="ncu-s$s-b$batch-$ctx"
  # --clock-control none: the clocks stay as the benchmark sees them. The first launches are warm-up.
  # PROFILE_DETAILS=all adds each section's body (the stall reasons, for one).
  ncu --clock-control none ${PROFILE_DETAILS:+--print-details "$PROFILE_DETAILS"} -k regex:'mma_kernel|dense_kernel|compressed_kernel' --launch-skip 4 --launch-count 1 \
    --section SpeedOfLight --section Occupancy --section LaunchStats --section WarpStateStats --section SchedulerStats \
    --section MemoryWorkloadAnalysis --section ComputeWorkloadAnalysis --section InstructionStats --section SourceCounters \
    "$bench" --one "$s" "$batch" "$ctx" > "$out/$name.txt" 2>&1 || echo "ncu failed for $cfg (see $out/$name.txt)"
  grep -E "Duration|Memory Throughput|DRAM Throughput|Compute \(SM\)|Achieved Occupancy|Registers Per|Issue Slots Busy|No Eligible" "$out/$name.txt" | sed "s/^/$name: /" || true
done
