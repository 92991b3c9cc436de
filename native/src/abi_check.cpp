#include "abi_check.h"

#include <cstring>

#include "ggml_abi.h"

namespace mustafar {
namespace {

std::string check() {
    const char* version = ggml_version();
    if (version == nullptr || std::strcmp(version, kGgmlExpectedVersion) != 0) {
        return std::string("libggml-base reports ggml version '") + (version ? version : "(null)") +
               "', but libggml-mustafar was built for ggml " + kGgmlExpectedVersion +
               " (LLamaSharp.Backend.Cpu 0.30.0); use the matching LLamaSharp packages";
    }
    // ggml_tensor_overhead() = sizeof(ggml_object) (32) + sizeof(ggml_tensor).
    if (ggml_tensor_overhead() != 32 + sizeof(ggml_tensor)) {
        return "libggml-base's ggml_tensor size differs from the declared layout (overhead " +
               std::to_string(ggml_tensor_overhead()) + ")";
    }
    struct Expected {
        ggml_op op;
        const char* name;
    };
    static const Expected ops[] = {
        {GGML_OP_NONE, "NONE"},       {GGML_OP_DUP, "DUP"},         {GGML_OP_CPY, "CPY"},
        {GGML_OP_CONT, "CONT"},       {GGML_OP_RESHAPE, "RESHAPE"}, {GGML_OP_VIEW, "VIEW"},
        {GGML_OP_PERMUTE, "PERMUTE"}, {GGML_OP_TRANSPOSE, "TRANSPOSE"}, {GGML_OP_GET_ROWS, "GET_ROWS"},
        {GGML_OP_SET_ROWS, "SET_ROWS"}, {GGML_OP_FLASH_ATTN_EXT, "FLASH_ATTN_EXT"}, {GGML_OP_ADD, "ADD"},
        {GGML_OP_SUB, "SUB"},         {GGML_OP_MUL, "MUL"},         {GGML_OP_DIV, "DIV"},
        {GGML_OP_RMS_NORM, "RMS_NORM"}, {GGML_OP_MUL_MAT, "MUL_MAT"}, {GGML_OP_SCALE, "SCALE"},
        {GGML_OP_ROPE, "ROPE"},       {GGML_OP_UNARY, "UNARY"},     {GGML_OP_GLU, "GLU"},
    };
    for (const auto& e : ops) {
        const char* name = ggml_op_name(e.op);
        if (name == nullptr || std::strcmp(name, e.name) != 0) {
            return std::string("ggml op id ") + std::to_string(int(e.op)) + " is '" + (name ? name : "(null)") +
                   "' in the running libggml-base, expected '" + e.name + "'";
        }
    }
    if (std::strcmp(ggml_unary_op_name(kGgmlUnaryOpSilu), "SILU") != 0 || std::strcmp(ggml_glu_op_name(kGgmlGluOpSwiglu), "SWIGLU") != 0)
        return "ggml's unary or glu op ids differ from the declared ones (SILU, SWIGLU)";
    struct ExpectedType {
        ggml_type type;
        const char* name;
        size_t size;
    };
    static const ExpectedType types[] = {
        {GGML_TYPE_F32, "f32", 4}, {GGML_TYPE_F16, "f16", 2}, {GGML_TYPE_I32, "i32", 4},
        {GGML_TYPE_I64, "i64", 8}, {GGML_TYPE_BF16, "bf16", 2}, {GGML_TYPE_Q8_0, "q8_0", 34},
        {GGML_TYPE_Q4_0, "q4_0", 18}, {GGML_TYPE_Q4_1, "q4_1", 20}, {GGML_TYPE_Q5_0, "q5_0", 22},
        {GGML_TYPE_Q5_1, "q5_1", 24}, {GGML_TYPE_Q2_K, "q2_K", 84}, {GGML_TYPE_Q3_K, "q3_K", 110},
        {GGML_TYPE_Q4_K, "q4_K", 144}, {GGML_TYPE_Q5_K, "q5_K", 176}, {GGML_TYPE_Q6_K, "q6_K", 210},
        {GGML_TYPE_IQ4_NL, "iq4_nl", 18}, {GGML_TYPE_IQ4_XS, "iq4_xs", 136},
    };
    for (const auto& e : types) {
        const char* name = ggml_type_name(e.type);
        if (name == nullptr || std::strcmp(name, e.name) != 0 || ggml_type_size(e.type) != e.size) {
            return std::string("ggml type id ") + std::to_string(int(e.type)) + " is '" + (name ? name : "(null)") +
                   "' in the running libggml-base, expected '" + e.name + "'";
        }
    }
    return {};
}

}  // namespace

const std::string& abi_mismatch() {
    static const std::string result = check();
    return result;
}

}  // namespace mustafar
