# Sourced by tests/gpu/ab.sh and ab-gemv.sh: build_trees <file> "<targets>" <refs...> builds the work
# tree's native/ as tree "new" and, for each reference, a copy with <file> replaced by it (ref1, ref2,
# ...), each from its own copy of native/ and all in parallel (each kernel file is one long compilation:
# side by side, four trees build in about the time of one). Sets `trees`; needs OUT and artifacts/gpu/ggml.
# A reference that is a folder replaces every file it holds, at the same path under native/ (for a change
# that also touched a header: `mkdir -p artifacts/gpu/ref/old && git archive <commit> native/src/cuda |
# tar -x -C artifacts/gpu/ref/old --strip-components=1`, then REF=artifacts/gpu/ref/old).
build_trees() {
  local file=$1 targets=$2 ggml="$PWD/artifacts/gpu/ggml" i tree failed=0
  shift 2
  local refs=("$@")
  trees=(new)
  for i in "${!refs[@]}"; do trees+=("ref$((i + 1))"); done
  for i in "${!trees[@]}"; do
    tree=${trees[$i]}
    rm -rf "artifacts/gpu/src-$tree" && mkdir -p "artifacts/gpu/src-$tree" && cp -r native "artifacts/gpu/src-$tree/"
    if [ "$i" != 0 ]; then
      local ref=${refs[$((i - 1))]}
      if [ -d "$ref" ]; then cp -r "$ref/." "artifacts/gpu/src-$tree/native/"; else cp "$ref" "artifacts/gpu/src-$tree/$file"; fi
    fi
    cp "artifacts/gpu/src-$tree/$file" "$OUT/$tree-$(basename "$file")"
    # shellcheck disable=SC2086
    (cmake -S "artifacts/gpu/src-$tree/native" -B "artifacts/gpu/build-$tree" -G Ninja -DCMAKE_BUILD_TYPE=Release -DGGML_LIB_DIR="$ggml" \
        -DMUSTAFAR_CUDA=ON > "$OUT/cmake-$tree.txt" 2>&1 &&
      cmake --build "artifacts/gpu/build-$tree" --target $targets > "$OUT/build-$tree.txt" 2>&1 ||
      touch "$OUT/failed-$tree") &
  done
  wait
  for tree in "${trees[@]}"; do
    [ -e "$OUT/failed-$tree" ] || continue
    failed=1
    echo "$tree: build failed" >&2
    tail -5 "$OUT/cmake-$tree.txt" >&2
    grep -E "error" "$OUT/build-$tree.txt" | head -30 >&2
  done
  return "$failed"
}
