# Sourced by tests/gpu/e2e-bench.sh and e2e-capacity.sh: build_publish builds only the library (CUDA flavour) and
# unpacks the carried publish of the samples (tests/gpu/prepare.sh --e2e) with it; logs go to $OUT. Exits on failure.
build_publish() {
  cmake -S native -B artifacts/gpu/build -G Ninja -DCMAKE_BUILD_TYPE=Release -DGGML_LIB_DIR="$PWD/artifacts/gpu/ggml" -DMUSTAFAR_CUDA=ON \
    > "$OUT/cmake.txt" 2>&1 || { tail -30 "$OUT/cmake.txt"; exit 1; }
  cmake --build artifacts/gpu/build --target ggml-mustafar > "$OUT/build.txt" 2>&1 || { grep error "$OUT/build.txt" | head -20; exit 1; }
  rm -rf artifacts/gpu/publish && tar -xJf artifacts/gpu/apps.tar.xz -C artifacts/gpu
  cp artifacts/gpu/build/libggml-mustafar.so artifacts/gpu/publish/runtimes/linux-x64/native/
}
