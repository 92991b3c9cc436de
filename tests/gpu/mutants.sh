#!/usr/bin/env bash
# Mutation runs on the GPU machine: shows that a GPU-only test fails when the code it guards is broken.
# Each patch in tests/gpu/mutants/ (or the files in MUTANTS) breaks the native code on purpose; the script
# builds the patched copy of native/ beside the work tree, runs the test program the patch names and
# reports "killed" when the check it names failed, "survived" when it did not. A patch's first lines:
#   Test: kv_tests 1          (program in the build folder, then its arguments)
#   Expect: <the start of the check's message that should fail>
# Needs artifacts/gpu/ggml (tests/gpu/prepare.sh). Usage: OUT=<folder> tests/gpu/mutants.sh
set -uo pipefail
cd "$(dirname "$0")/../.."
: "${OUT:?set OUT}"
mkdir -p "$OUT"
root="$PWD"
for patch in ${MUTANTS:-tests/gpu/mutants/*.patch}; do
  name="$(basename "$patch" .patch)"
  read -r prog args <<< "$(sed -n 's/^Test: //p' "$patch" | head -1)"
  expect="$(sed -n 's/^Expect: //p' "$patch" | head -1)"
  tree="$(mktemp -d)"
  cp -r native "$tree/"
  if ! (cd "$tree" && git apply "$root/$patch"); then
    echo "$name: the patch does not apply"
    continue
  fi
  { cmake -S "$tree/native" -B "$tree/build" -G Ninja -DCMAKE_BUILD_TYPE=Release -DGGML_LIB_DIR="$root/artifacts/gpu/ggml" -DMUSTAFAR_CUDA=ON &&
    cmake --build "$tree/build" --target "$prog"; } > "$OUT/$name-build.txt" 2>&1 || { echo "$name: build failed"; continue; }
  # shellcheck disable=SC2086 # the arguments are words
  "$tree/build/$prog" $args > "$OUT/$name.txt" 2>&1
  rc=$?
  if [ "$rc" -ne 0 ] && grep -qF "FAIL $expect" "$OUT/$name.txt"; then verdict=killed; else verdict=survived; fi
  echo "$name: $verdict (exit code $rc; $(tail -1 "$OUT/$name.txt"))"
  grep -h "^FAIL" "$OUT/$name.txt" | head -5
  rm -rf "$tree"
done | tee "$OUT/mutants.txt"
