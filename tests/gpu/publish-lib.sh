# Sourced by the GPU scripts that run the samples. unpack_publish <library>: unpacks the carried publish of the
# samples (tests/gpu/prepare.sh --e2e) with that build of our library in it. build_publish: builds only the
# library (CUDA flavour), logs in $OUT, then unpacks the publish with it. Both exit on failure.
unpack_publish() {
  rm -rf artifacts/gpu/publish && tar -xJf artifacts/gpu/apps.tar.xz -C artifacts/gpu &&
    cp "$1" artifacts/gpu/publish/runtimes/linux-x64/native/libggml-mustafar.so || exit 1
}
build_publish() {
  cmake -S native -B artifacts/gpu/build -G Ninja -DCMAKE_BUILD_TYPE=Release -DGGML_LIB_DIR="$PWD/artifacts/gpu/ggml" -DMUSTAFAR_CUDA=ON \
    > "$OUT/cmake.txt" 2>&1 || { tail -30 "$OUT/cmake.txt"; exit 1; }
  cmake --build artifacts/gpu/build --target ggml-mustafar > "$OUT/build.txt" 2>&1 || { grep error "$OUT/build.txt" | head -20; exit 1; }
  unpack_publish artifacts/gpu/build/libggml-mustafar.so
}
