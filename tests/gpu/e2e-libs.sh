#!/usr/bin/env bash
# End-to-end decode with two builds of our library on one machine: the work tree's (built by
# tests/gpu/run.sh) and one built here from OLD_SRC, a folder holding another commit's native/ (made on the
# build machine with `git archive <sha> native | tar -x -C artifacts/gpu/old`, carried). The libraries
# alternate point by point, ROUNDS times, so that a drift of the machine hits both alike.
# POINTS: "s,batch,context" (s = 0: dense cache).
# Usage on the GPU machine: COMMIT=<sha> OLD=<sha> OUT=<folder> POINTS="0,1,4096" tests/gpu/e2e-libs.sh
set -uo pipefail
cd "$(dirname "$0")/../.."
: "${OUT:?set OUT}" "${COMMIT:?set COMMIT}" "${OLD:?set OLD}"
old_src="${OLD_SRC:-artifacts/gpu/old}"
bench=artifacts/gpu/publish/Mustafar.Bench
lib_dir=artifacts/gpu/publish/runtimes/linux-x64/native
model=artifacts/gpu/llama3-8b-f16.gguf
[ -x "$bench" ] || { echo "missing $bench: run tests/gpu/run.sh first" >&2; exit 1; }
mkdir -p "$OUT"
cmake -S "$old_src/native" -B artifacts/gpu/build-old -G Ninja -DCMAKE_BUILD_TYPE=Release -DGGML_LIB_DIR="$PWD/artifacts/gpu/ggml" \
  -DMUSTAFAR_CUDA=ON > "$OUT/cmake-old.txt" 2>&1 && cmake --build artifacts/gpu/build-old --target ggml-mustafar > "$OUT/build-old.txt" 2>&1 ||
  { grep -E "error" "$OUT/build-old.txt" | head -20; exit 1; }
cp artifacts/gpu/build/libggml-mustafar.so "$OUT/lib-new.so"
cp artifacts/gpu/build-old/libggml-mustafar.so "$OUT/lib-old.so"
gpu="$(nvidia-smi --query-gpu=name --format=csv,noheader)"
for round in $(seq "${ROUNDS:-2}"); do
  for point in ${POINTS:-"0,1,4096"}; do
    IFS=, read -r s batch ctx <<< "$point"
    for lib in new old; do
      cp "$OUT/lib-$lib.so" "$lib_dir/libggml-mustafar.so"
      name="s$s-b$batch-$ctx-$lib-$round"
      timeout "${POINT_LIMIT:-120}" "$bench" --generate-llama3-8b --model "$model" --contexts "$ctx" --batches "$batch" \
        --decode-tokens "${DECODE_TOKENS:-130}" --k-sparsity "$s" --v-sparsity "$s" \
        --title "End-to-end, s = $s, batch $batch, $ctx: $gpu, $lib = $([ $lib = new ] && echo "$COMMIT" || echo "$OLD")" \
        --out "$OUT/$name.md" > "$OUT/$name.txt" 2>&1
      echo "$name rc=$? $(grep -h "^| [0-9]" "$OUT/$name.md" 2>/dev/null)"
    done
  done
done | tee "$OUT/e2e-libs.txt"
cp "$OUT/lib-new.so" "$lib_dir/libggml-mustafar.so"
rm -f "$OUT"/lib-*.so
