#!/usr/bin/env bash
# End-to-end decode with several builds of our library on one machine: the work tree's (built by
# tests/gpu/run.sh) and one built here from each folder of OLDS ("<name>:<folder>" words; a folder holds
# another commit's native/, made on the build machine with `git archive <sha> native | tar -x -C <folder>`
# and carried). The libraries alternate point by point, ROUNDS times (an even number: each library as often
# first as last), so that a drift of the machine hits them alike. POINTS: "s,batch,context" (s = 0: dense cache).
# Usage on the GPU machine: COMMIT=<sha> OLDS="8ae5b54:artifacts/gpu/old" OUT=<folder> POINTS="0,1,4096" tests/gpu/e2e-libs.sh
set -uo pipefail
cd "$(dirname "$0")/../.."
. tests/gpu/round-order.sh
: "${OUT:?set OUT}" "${COMMIT:?set COMMIT}" "${OLDS:?set OLDS}"
bench=artifacts/gpu/publish/Mustafar.Bench
lib_dir=artifacts/gpu/publish/runtimes/linux-x64/native
model=artifacts/gpu/llama3-8b-f16.gguf
[ -x "$bench" ] || { echo "missing $bench: run tests/gpu/run.sh first" >&2; exit 1; }
mkdir -p "$OUT"
cp artifacts/gpu/build/libggml-mustafar.so "$OUT/lib-$COMMIT.so"
names=("$COMMIT")
for old in $OLDS; do
  name="${old%%:*}" src="${old#*:}"
  cmake -S "$src/native" -B "artifacts/gpu/build-$name" -G Ninja -DCMAKE_BUILD_TYPE=Release -DGGML_LIB_DIR="$PWD/artifacts/gpu/ggml" \
    -DMUSTAFAR_CUDA=ON > "$OUT/cmake-$name.txt" 2>&1 && cmake --build "artifacts/gpu/build-$name" --target ggml-mustafar > "$OUT/build-$name.txt" 2>&1 ||
    { grep -E "error" "$OUT/build-$name.txt" | head -20; exit 1; }
  cp "artifacts/gpu/build-$name/libggml-mustafar.so" "$OUT/lib-$name.so"
  names+=("$name")
done
gpu="$(nvidia-smi --query-gpu=name --format=csv,noheader)"
for round in $(seq "${ROUNDS:-2}"); do
  for point in ${POINTS:-"0,1,4096"}; do
    IFS=, read -r s batch ctx <<< "$point"
    mapfile -t order < <(in_round_order "$round" "${names[@]}")
    for lib in "${order[@]}"; do
      cp "$OUT/lib-$lib.so" "$lib_dir/libggml-mustafar.so"
      run="s$s-b$batch-$ctx-$lib-$round"
      timeout "${POINT_LIMIT:-120}" "$bench" --generate-llama3-8b --model "$model" --contexts "$ctx" --batches "$batch" \
        --decode-tokens "${DECODE_TOKENS:-130}" --k-sparsity "$s" --v-sparsity "$s" \
        --title "End-to-end, s = $s, batch $batch, $ctx: $gpu, library of $lib" --out "$OUT/$run.md" > "$OUT/$run.txt" 2>&1
      echo "$run rc=$? $(grep -h "^| [0-9]" "$OUT/$run.md" 2>/dev/null)"
    done
  done
done | tee "$OUT/e2e-libs.txt"
# Each library's mean step time at each point, over the runs that finished.
awk -F'|' '$1 ~ / rc=0 / {
  split($1, w, " "); n = split(w[1], p, "-"); point = p[1]
  for (i = 2; i <= n - 2; ++i) point = point "-" p[i]
  key = point " " p[n - 1]; sum[key] += $10; count[key]++
  if (!(key in seen)) { seen[key] = 1; order[++keys] = key }
}
END { print "mean ms per step (point, library: mean over runs)"; for (i = 1; i <= keys; ++i) printf "%s: %.2f over %d\n", order[i], sum[order[i]] / count[order[i]], count[order[i]] }' \
  "$OUT/e2e-libs.txt" | tee -a "$OUT/e2e-libs.txt"
cp "$OUT/lib-$COMMIT.so" "$lib_dir/libggml-mustafar.so"
rm -f "$OUT"/lib-*.so
