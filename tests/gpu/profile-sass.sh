#!/usr/bin/env bash
# Per-instruction Nsight Compute counters of one decode attention configuration (after tests/gpu/kernels.sh
# or run.sh has built artifacts/gpu/build): executed instructions, shared-memory wavefronts (and their
# excess over the ideal) and stall samples, summed by SASS opcode per warp step of 16 cells.
# Usage: OUT=<folder> tests/gpu/profile-sass.sh s batch context   (s = 0: the dense kernel)
set -euo pipefail
cd "$(dirname "$0")/../.."
: "${OUT:?set OUT}"
s=$1 batch=$2 ctx=$3
bench=${BENCH_BIN:-artifacts/gpu/build/attention_cuda_bench}  # BENCH_BIN: another build's
rep="$OUT/sass-s$s-b$batch-$ctx"
ncu --clock-control none -k regex:'mma_kernel' --launch-skip 4 --launch-count 1 --section SourceCounters -o "$rep" \
  "$bench" --one "$s" "$batch" "$ctx" > "$rep.log" 2>&1
ncu -i "$rep.ncu-rep" --page source --csv --print-source sass > "$rep.csv"
rm -f "$rep.ncu-rep"
python3 - "$rep.csv" "$batch" "$ctx" <<'PY'
import collections, csv, re, sys
rows = list(csv.reader(open(sys.argv[1])))
hdr, data = rows[1], rows[2:]
ix = {h: i for i, h in enumerate(hdr)}
num = lambda x: float(x.replace(',', '') or 0) if re.match(r'^[\d,.]*$', x) else 0.0
steps = 8 * int(sys.argv[2]) * int(sys.argv[3]) / 16  # KV heads x sequences x cells / 16
cols = ['Instructions Executed', 'L1 Wavefronts Shared', 'L1 Wavefronts Shared Excessive', 'Warp Stall Sampling (All Samples)']
by = collections.defaultdict(lambda: [0.0] * 4)
for r in data:
    m = re.match(r'(@!?U?P\w+\s+)?([A-Z0-9_]+(\.[A-Z0-9_]+)*)', r[ix['Source']].strip())
    e = by[m.group(2) if m else '?']
    for k, c in enumerate(cols): e[k] += num(r[ix[c]])
tot = [sum(e[k] for e in by.values()) for k in range(4)]
print(f"per warp step: {tot[0] / steps:.0f} instructions, {tot[1] / steps:.0f} shared wavefronts ({tot[2] / steps:.0f} excessive), {tot[3]:.0f} stall samples")
print(f"{'opcode':28s} {'instr':>7s} {'wavefr':>7s} {'excess':>7s} {'stalls':>7s}")
for op, e in sorted(by.items(), key=lambda kv: -(kv[1][1] * 4 + kv[1][0]))[:22]:
    print(f"{op:28s} {e[0] / steps:7.1f} {e[1] / steps:7.1f} {e[2] / steps:7.1f} {e[3]:7.0f}")
PY
