#!/usr/bin/env bash
# The decode attention as the model's graph launches it, against attention_cuda_bench's same point: Nsight
# Compute times the attention kernels (decode, mask ranges, merge) of an end-to-end batch-1 run on the
# Llama-3-8B-shaped model and of the benchmark's `--one` call, with each launch's grid, registers and shared
# memory, so that a kernel slower in the model than in the benchmark shows with its variant and its split.
# Caches are flushed before each profiled kernel (ncu's default), in both runs alike.
# After tests/gpu/run.sh (library built, publish unpacked). SPARSITIES: "0 0.7" by default; CONTEXT: 4096.
# Usage on the GPU machine: OUT=<folder> tests/gpu/attention-in-model.sh
set -uo pipefail
cd "$(dirname "$0")/../.."
: "${OUT:?set OUT}"
bench=artifacts/gpu/publish/Mustafar.Bench
model=artifacts/gpu/llama3-8b-f16.gguf
attn=artifacts/gpu/build/attention_cuda_bench
[ -x "$bench" ] && [ -x "$attn" ] || { echo "missing $bench or $attn: run tests/gpu/run.sh first" >&2; exit 1; }
ctx="${CONTEXT:-4096}"
mkdir -p "$OUT"
metrics=gpu__time_duration.sum,launch__grid_size,launch__registers_per_thread,launch__shared_mem_per_block_dynamic
# The model's first decode steps go by (the prompt runs the prompt kernel); then two steps of 32 layers.
profile() {
  ncu --clock-control none -k "regex:mma_kernel|range_kernel|merge_kernel" --launch-skip "${SKIP:-64}" --launch-count "${COUNT:-64}" \
    --metrics "$metrics" --csv --print-units base "$@"
}
for s in ${SPARSITIES:-0 0.7}; do
  profile "$bench" --generate-llama3-8b --model "$model" --contexts "$ctx" --batches 1 --decode-tokens 16 --k-sparsity "$s" --v-sparsity "$s" \
    --out "$OUT/model-s$s.md" > "$OUT/model-s$s.csv" 2> "$OUT/model-s$s.err"
  echo "model s=$s rc=$?"
  SKIP=10 COUNT=8 profile "$attn" --one "$s" 1 "$ctx" > "$OUT/bench-s$s.csv" 2> "$OUT/bench-s$s.err"
  echo "bench s=$s rc=$?"
done
python3 - "$OUT" ${SPARSITIES:-0 0.7} <<'PY' | tee "$OUT/attention-in-model.txt"
import collections, csv, re, sys
out, sparsities = sys.argv[1], sys.argv[2:]
for s in sparsities:
    for run in ('model', 'bench'):
        rows = [r for r in csv.reader(l for l in open(f'{out}/{run}-s{s}.csv') if l.startswith('"'))]
        if not rows:
            print(f'{run} s={s}: no kernels profiled')
            continue
        hdr, data = rows[0], rows[1:]
        ix = {h: i for i, h in enumerate(hdr)}
        per = collections.defaultdict(dict)  # launch id -> metric -> value
        for r in data:
            m = re.search(r'([A-Za-z_]\w*(?:<[^()]*>)?)\(', r[ix['Kernel Name']])
            per[r[ix['ID']]]['name'] = m.group(1) if m else r[ix['Kernel Name']][:60]
            per[r[ix['ID']]][r[ix['Metric Name']]] = float(r[ix['Metric Value']].replace(',', ''))
        by = collections.defaultdict(list)
        for v in per.values():
            by[(v['name'], int(v.get('launch__grid_size', 0)), int(v.get('launch__registers_per_thread', 0)),
                int(v.get('launch__shared_mem_per_block_dynamic', 0)))].append(v['gpu__time_duration.sum'] / 1000.0)
        for (name, grid, regs, smem), ts in sorted(by.items()):
            ts.sort()
            print(f'{run} s={s}: {name} grid {grid} regs {regs} smem {smem}: {len(ts)} launches, '
                  f'median {ts[len(ts) // 2]:.2f} us, min {ts[0]:.2f}, max {ts[-1]:.2f}')
PY
