#include "ggml_cpu_numerics.h"

#include <dlfcn.h>

namespace mustafar::cpu {
namespace {

int probe(void* lib, const char* name) {
    using Fn = int (*)();
    auto fn = lib ? reinterpret_cast<Fn>(dlsym(lib, name)) : nullptr;
    return fn ? fn() : 0;
}

GgmlCpuNumerics detect() {
    GgmlCpuNumerics n;
    // RTLD_NOLOAD: only the copy already in the process counts; we never load a CPU backend ourselves.
    void* lib = dlopen("libggml-cpu.so", RTLD_LAZY | RTLD_NOLOAD);
    if (probe(lib, "ggml_cpu_has_avx512")) n.f32_lanes = 16;
    else if (probe(lib, "ggml_cpu_has_avx")) n.f32_lanes = 8;
    else if (lib != nullptr) n.f32_lanes = 4;
    if (lib != nullptr) dlclose(lib);
    return n;
}

}  // namespace

const GgmlCpuNumerics& ggml_cpu_numerics() {
    static const GgmlCpuNumerics numerics = detect();
    return numerics;
}

}  // namespace mustafar::cpu
