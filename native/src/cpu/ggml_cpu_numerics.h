// How ggml's CPU backend (the reference llama.cpp runs without us) computes flash attention, so
// that our dense path can make the same numerical choices: it rounds the query to f16 and
// accumulates V in f16 on its per-row path, uses f32 tiles for prompt batches of 64 rows or more,
// and splits long single-token decodes into one KV chunk per thread.
#pragma once
#include <cstdint>

namespace mustafar::cpu {

struct GgmlCpuNumerics {
    int f32_lanes = 8;  // GGML_F32_EPR of the loaded libggml-cpu: 16 with AVX-512, 8 with AVX, 4 with SSE
    static constexpr int64_t kTileRows = 64;        // GGML_FA_TILE_Q
    static constexpr int64_t kSplitMinKv = 512;     // single-token decodes over >= 512 cells are split
};

// Probes the libggml-cpu.so loaded in the process (the avx2/avx512/... variant LLamaSharp chose).
const GgmlCpuNumerics& ggml_cpu_numerics();

}  // namespace mustafar::cpu
