// Calls into llama.cpp that can throw, made behind a catch: a C++ exception that reaches .NET's P/Invoke
// frame ends the process. llama.cpp throws std::out_of_range from tokenization when an SPM vocabulary has no
// token and no byte token for a character, and std::runtime_error from a grammar sampler that accepts a token
// the grammar does not allow (which its sampling picks when the vocabulary has no allowed token at all).
#include <cmath>
#include <cstdint>
#include <cstring>
#include <exception>
#include <vector>

#include "mustafar.h"

namespace {

// Our own declarations of the llama.h types and functions used here (llama.cpp of LLamaSharp 0.30.0).
struct llama_token_data {
    int32_t id;
    float logit;
    float p;
};
struct llama_token_data_array {
    llama_token_data* data;
    size_t size;
    int64_t selected;  // index into data, -1 before a sampler selects
    bool sorted;
};
using llama_tokenize_fn = int32_t (*)(const void* vocab, const char* text, int32_t text_len, int32_t* tokens, int32_t n_tokens_max,
                                      bool add_special, bool parse_special);
using get_logits_ith_fn = float* (*)(void* ctx, int32_t i);
using sampler_apply_fn = void (*)(void* sampler, llama_token_data_array* cur);
using sampler_accept_fn = void (*)(void* sampler, int32_t token);

void copy_message(const char* what, char* error, int32_t error_size) {
    if (error == nullptr || error_size <= 0) return;
    std::strncpy(error, what, size_t(error_size) - 1);
    error[error_size - 1] = '\0';
}

// Runs fn, turning an exception into MUSTAFAR_CALL_THREW with its message.
template <typename Fn>
int guarded(Fn&& fn, char* error, int32_t error_size) {
    try {
        return fn();
    } catch (const std::exception& e) {
        copy_message(e.what(), error, error_size);
    } catch (...) {
        copy_message("an exception that is not a std::exception", error, error_size);
    }
    return MUSTAFAR_CALL_THREW;
}

}  // namespace

extern "C" {

MUSTAFAR_API int mustafar_tokenize(void* llama_tokenize, const void* vocab, const char* text, int32_t text_len, int32_t* tokens,
                                   int32_t n_tokens_max, int32_t add_special, int32_t parse_special, int32_t* result, char* error,
                                   int32_t error_size) {
    if (llama_tokenize == nullptr || vocab == nullptr || result == nullptr) {
        copy_message("null argument", error, error_size);
        return MUSTAFAR_CALL_THREW;
    }
    return guarded(
        [&] {
            *result = reinterpret_cast<llama_tokenize_fn>(llama_tokenize)(vocab, text, text_len, tokens, n_tokens_max, add_special != 0,
                                                                           parse_special != 0);
            return MUSTAFAR_CALL_OK;
        },
        error, error_size);
}

MUSTAFAR_API int mustafar_sample(const mustafar_llama_api* api, void* ctx, int32_t idx, int32_t n_vocab, void* grammar, void* chain,
                                 int32_t* token, char* error, int32_t error_size) {
    if (api == nullptr || ctx == nullptr || chain == nullptr || token == nullptr || n_vocab <= 0) {
        copy_message("null argument", error, error_size);
        return MUSTAFAR_CALL_THREW;
    }
    const auto apply = reinterpret_cast<sampler_apply_fn>(api->sampler_apply);
    const auto accept = reinterpret_cast<sampler_accept_fn>(api->sampler_accept);
    return guarded(
        [&] {
            const float* logits = reinterpret_cast<get_logits_ith_fn>(api->get_logits_ith)(ctx, idx);
            if (logits == nullptr) {
                copy_message("llama_get_logits_ith returned no logits for this row", error, error_size);
                return MUSTAFAR_CALL_THREW;
            }
            std::vector<llama_token_data> cur(static_cast<size_t>(n_vocab));
            for (int32_t i = 0; i < n_vocab; ++i) cur[size_t(i)] = {i, logits[i], 0.0f};
            llama_token_data_array arr{cur.data(), cur.size(), -1, false};
            if (grammar != nullptr) {
                // The grammar first, on its own, so that a vocabulary with no allowed token is told apart
                // before a later sampler picks a disallowed one (or, all weights being zero, none).
                apply(grammar, &arr);
                bool any = false;
                for (size_t i = 0; i < arr.size && !any; ++i) any = arr.data[i].logit != -INFINITY;
                if (!any) return MUSTAFAR_SAMPLE_NO_ALLOWED_TOKEN;
            }
            apply(chain, &arr);
            if (arr.selected < 0 || size_t(arr.selected) >= arr.size) {
                copy_message("the sampler chain selected no token", error, error_size);
                return MUSTAFAR_CALL_THREW;
            }
            *token = arr.data[arr.selected].id;
            if (grammar != nullptr) accept(grammar, *token);
            accept(chain, *token);
            return MUSTAFAR_CALL_OK;
        },
        error, error_size);
}

}  // extern "C"
