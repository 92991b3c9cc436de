#!/usr/bin/env bash
# Per-instruction Nsight Compute counters of one decode attention configuration (after tests/gpu/kernels.sh
# or run.sh has built artifacts/gpu/build): executed instructions, shared-memory wavefronts (and their
# excess over the ideal) and stall samples, summed by SASS opcode per warp step of 16 cells.
# Usage: OUT=<folder> tests/gpu/profile-sass.sh s batch context   (s = 0: the dense kernel)
#        OUT=<folder> tests/gpu/profile-sass.sh prompt s context  (the prompt kernel, causal 512 rows; per
#        warp tile of 32 cells, and the 25 instructions with the most stall samples, in program order)
set -euo pipefail
cd "$(dirname "$0")/../.."
: "${OUT:?set OUT}"
bench=${BENCH_BIN:-artifacts/gpu/build/attention_cuda_bench}  # BENCH_BIN: another build's
if [ "$1" = prompt ]; then
  ctx=$3 rep="$OUT/sass-prompt-s$2-$3" kernel=prompt_kernel skip=3 args=(--prompt "$2" "$3" 1)
  steps=$((32 * ctx))  # 1024 warps (32 heads x 512 rows / 16), about context / 32 tiles each
else
  batch=$2 ctx=$3 rep="$OUT/sass-s$1-b$2-$3" kernel=mma_kernel skip=4 args=(--one "$1" "$2" "$3")
  steps=$((8 * batch * ctx / 16))  # KV heads x sequences x cells / 16
fi
ncu --clock-control none -k regex:"$kernel" --launch-skip "$skip" --launch-count 1 --section SourceCounters -o "$rep" \
  "$bench" "${args[@]}" > "$rep.log" 2>&1
ncu -i "$rep.ncu-rep" --page source --csv --print-source sass > "$rep.csv"
rm -f "$rep.ncu-rep"
python3 - "$rep.csv" "$steps" "$1" <<'PY'
import collections, csv, re, sys
rows = list(csv.reader(open(sys.argv[1])))
hdr, data = rows[1], rows[2:]
ix = {h: i for i, h in enumerate(hdr)}
num = lambda x: float(x.replace(',', '') or 0) if re.match(r'^[\d,.]*$', x) else 0.0
steps = float(sys.argv[2])
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
if sys.argv[3] == 'prompt':
    stall = ix['Warp Stall Sampling (All Samples)']
    top = sorted(range(len(data)), key=lambda i: -num(data[i][stall]))[:25]
    print("most stall samples (row of the SASS listing, samples, instruction):")
    for i in sorted(top):
        print(f"{i:6d} {num(data[i][stall]):7.0f}  {data[i][ix['Source']].strip()}")
PY
