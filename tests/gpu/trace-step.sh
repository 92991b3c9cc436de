#!/usr/bin/env bash
# Where a decode step's GPU time goes: every kernel of a short end-to-end run on the Llama-3-8B-shaped
# model, timed alone by Nsight Compute (gpu__time_duration; CUDA graphs are profiled node by node), then
# grouped by graph (each starts with GET_ROWS, the token embeddings) and summed by kernel for the decode
# steps (graphs with the decode attention kernel; BATCH sets the concurrent requests). The sum of the kernels' own times, against the
# step time of the same run without the profiler, is what launches and gaps cost.
# After tests/gpu/run.sh (library built, publish unpacked). Usage on the GPU machine:
#   OUT=<folder> CONTEXT=1024 S=0 [BATCH=1] tests/gpu/trace-step.sh
set -uo pipefail
cd "$(dirname "$0")/../.."
: "${OUT:?set OUT}"
bench=artifacts/gpu/publish/Mustafar.Bench
model=artifacts/gpu/llama3-8b-f16.gguf
ctx="${CONTEXT:-1024}" s="${S:-0}" batch="${BATCH:-1}"
mkdir -p "$OUT"
args=(--generate-llama3-8b --model "$model" --contexts "$ctx" --batches "$batch" --decode-tokens 16 --k-sparsity "$s" --v-sparsity "$s")
"$bench" "${args[@]}" --out "$OUT/step-s$s-$ctx.md" > "$OUT/step-s$s-$ctx.txt" 2>&1
grep -h "^| [0-9]" "$OUT/step-s$s-$ctx.md"
timeout "${TRACE_LIMIT:-300}" ncu --clock-control none --metrics gpu__time_duration.sum --csv --print-units base \
  --launch-count "${LAUNCHES:-9000}" "$bench" "${args[@]}" --out "$OUT/traced.md" > "$OUT/trace-s$s-$ctx.csv" 2> "$OUT/trace-s$s-$ctx.err"
echo "ncu rc=$?"
python3 - "$OUT/trace-s$s-$ctx.csv" <<'PY' | tee "$OUT/trace-s$s-$ctx.txt"
import collections, csv, re, sys
rows = [r for r in csv.reader(l for l in open(sys.argv[1]) if l.startswith('"'))]
hdr, data = rows[0], rows[1:]
ix = {h: i for i, h in enumerate(hdr)}
kern = []
for r in data:
    if r[ix['Metric Name']] != 'gpu__time_duration.sum': continue
    m = re.search(r'([A-Za-z_]\w*(?:<[^()]*>)?)\(', r[ix['Kernel Name']])  # the kernel, without its parameters
    name = m.group(1) if m else r[ix['Kernel Name']][:60]
    kern.append((name, float(r[ix['Metric Value']].replace(',', '')) / 1000.0))  # ns -> us
graphs, cur = [], []
for k in kern:
    if k[0].startswith('get_rows_kernel') and cur:
        graphs.append(cur)
        cur = []
    cur.append(k)
if cur: graphs.append(cur)
# Decode steps: graphs whose attention is the decode kernel (the prompt kernel serves 32 rows or more).
decode = [g for g in graphs if any(n.startswith('mma_kernel') for n, _ in g) and not any(n.startswith('prompt_kernel') for n, _ in g)]
print(f"{len(kern)} kernels timed, {len(graphs)} graphs, {len(decode)} decode steps")
if not decode: sys.exit(0)
decode = decode[2:] if len(decode) > 4 else decode  # the first steps run before replay begins
by = collections.defaultdict(lambda: [0, 0.0])
for g in decode:
    for n, t in g:
        by[n][0] += 1
        by[n][1] += t
steps = len(decode)
total = sum(v[1] for v in by.values()) / steps
print(f"per decode step ({steps} steps): {sum(v[0] for v in by.values()) / steps:.0f} kernels, {total:.1f} us of kernel time")
for n, (c, t) in sorted(by.items(), key=lambda e: -e[1][1]):
    print(f"  {n:40s} {c / steps:6.1f} a step  {t / steps:9.1f} us a step  {t / c:8.2f} us each")
PY
