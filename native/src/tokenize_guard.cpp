// mustafar_tokenize: llama.cpp's llama_tokenize called behind a catch. llama.cpp throws from inside
// tokenization (std::out_of_range from its byte-fallback lookup when an SPM vocabulary has no token and no
// byte token for a character), and a C++ exception that reaches .NET's P/Invoke frame ends the process.
#include <cstdint>
#include <cstring>
#include <exception>

#include "mustafar.h"

namespace {

// llama.h's llama_tokenize (our own declaration; the .NET side passes its address from the loaded libllama).
using llama_tokenize_fn = int32_t (*)(const void* vocab, const char* text, int32_t text_len, int32_t* tokens, int32_t n_tokens_max,
                                      bool add_special, bool parse_special);

void copy_message(const char* what, char* error, int32_t error_size) {
    if (error == nullptr || error_size <= 0) return;
    std::strncpy(error, what, size_t(error_size) - 1);
    error[error_size - 1] = '\0';
}

}  // namespace

extern "C" MUSTAFAR_API int mustafar_tokenize(void* llama_tokenize, const void* vocab, const char* text, int32_t text_len, int32_t* tokens,
                                              int32_t n_tokens_max, int32_t add_special, int32_t parse_special, int32_t* result, char* error,
                                              int32_t error_size) {
    if (llama_tokenize == nullptr || vocab == nullptr || result == nullptr) {
        copy_message("null argument", error, error_size);
        return 1;
    }
    try {
        *result = reinterpret_cast<llama_tokenize_fn>(llama_tokenize)(vocab, text, text_len, tokens, n_tokens_max, add_special != 0, parse_special != 0);
        return 0;
    } catch (const std::exception& e) {
        copy_message(e.what(), error, error_size);
    } catch (...) {
        copy_message("an exception that is not a std::exception", error, error_size);
    }
    return 1;
}
