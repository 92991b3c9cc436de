#pragma once
#include <string>

namespace mustafar {
// Compares the running libggml-base with the ABI declared in ggml_abi.h.
// Returns an empty string when they match, else a message naming the first difference.
const std::string& abi_mismatch();
}  // namespace mustafar
