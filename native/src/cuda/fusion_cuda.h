// Which later nodes of a graph the CUDA executor runs together with node i, one launch instead of
// several, where the result is bit for bit the unfused one (a decode step at batch 1 is mostly small
// launches besides the weight reads):
// - RMS_NORM, then a MUL of its output by a weight row: one kernel writes both outputs;
// - MUL_MATs on the matrix-vector kernel that read the same activation (the Q, K and V projections;
//   gate and up): one grid. A later product moves forward only when no node it passes reads or
//   writes its output's memory (ggml's allocator reuses memory);
// - two such MUL_MATs of the same rows (gate and up) and the SWIGLU of their outputs: the warp that
//   computes row m of both writes the SWIGLU's row m too;
// - one such MUL_MAT, then an ADD of its output and a residual: the sum in the same pass;
// - a ROPE (normal mode, one token) of such a MUL_MAT's output (Q and K of a decode step): the kernel
//   rotates the pairs of rows it computed and writes the ROPE's output too; a later product whose
//   output reuses the memory of such a MUL_MAT's output joins too when nothing else reads that output,
//   which is then left unwritten (V, in llama.cpp's graph after the roped Q, in Q's memory);
// - a SET_ROWS of one row of such a group's final output (a ROPE's, or a product's own) into an f16 cache:
//   the decode step's K and V, stored as they are computed (into a Mustafar store's pool slot that the
//   host places first).
// - for batched decode steps (2 to 8 columns, the few-column kernel): the products of one activation with their
//   ROPEs (each column a token at its own position), gate and up with their SWIGLU, and one product with its
//   residual ADD, as above; no cache rows.
// MUSTAFAR_NO_FUSION in the environment turns it off, or some of it (FusionSet; for comparisons).
#pragma once
#include <cstdint>
#include <vector>

#include "../ggml_abi.h"

namespace mustafar::cuda {

struct Fusion {
    enum class Kind { none, norm_mul, gemv, few };
    Kind kind = Kind::none;
    std::vector<int> mats;  // gemv, few: the grouped MUL_MATs, node i first
    std::vector<int> ropes; // gemv, few: per MUL_MAT, the fused ROPE of its output or -1
    std::vector<uint8_t> rope_only;  // gemv, few: per MUL_MAT, 1 where only its ROPE's output is written
    std::vector<int> cache_rows;     // gemv: per MUL_MAT, the fused SET_ROWS of its final output or -1
    int add = -1;           // gemv, few: the fused ADD (only with one MUL_MAT)
    int glu = -1;           // gemv, few: the fused SWIGLU (two MUL_MATs, mats[0] its silu operand)
    int mul = -1;           // norm_mul: the MUL
};

// The fusions plan_fusion may choose. MUSTAFAR_NO_FUSION unset: all; a comma list of these names: all but those
// (norm_mul, gemv, few_group for several products of one activation, few_rope, few_glu, few_add); any other value:
// none.
struct FusionSet {
    bool norm_mul = true, gemv = true, few_group = true, few_rope = true, few_glu = true, few_add = true;
    static FusionSet from_env();
    bool any() const { return norm_mul || gemv || few_group || few_rope || few_glu || few_add; }
};

// What to run with node i; `done` marks the nodes already run (moved forward or fused).
Fusion plan_fusion(ggml_cgraph* graph, int i, const std::vector<uint8_t>& done, const FusionSet& set = {});

}  // namespace mustafar::cuda
