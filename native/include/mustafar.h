/* Mustafar ggml backend: the small C API that the .NET side calls besides ggml's own backend API.
 * The backend itself is registered through ggml_backend_load(path) (entry point ggml_backend_init). */
#ifndef MUSTAFAR_H
#define MUSTAFAR_H

#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define MUSTAFAR_API __attribute__((visibility("default")))

/* Bumped whenever this header changes; the .NET side refuses a library with another number. */
#define MUSTAFAR_ABI_VERSION 3

/* Memory held by the KV cache tensors (llama.cpp's cache_k_l* / cache_v_l*) in live buffers. */
typedef struct mustafar_kv_stats {
    uint64_t kv_bytes;        /* bytes allocated for cache tensors in our buffers */
    uint64_t kv_dense_bytes;  /* what the same tensors take as a dense f16 cache */
    uint64_t kv_tensors;      /* number of cache tensors */
    uint64_t kv_elements;     /* elements (cells x channels) over all cache tensors */
    uint64_t rows_dense;      /* cache rows (cell x tensor) held dense: the local windows */
    uint64_t rows_compressed; /* cache rows held pruned and compressed */
} mustafar_kv_stats;

/* How the cache tensors allocated from now on are stored. Call it before llama.cpp creates the
 * context (which allocates the cache) and hold it fixed while it does. k_sparsity < 0 stores the
 * caches dense, in ggml's layout (only owner counts); a null config also forgets the owner. */
typedef struct mustafar_cache_config {
    double k_sparsity;     /* fraction of each key vector pruned, 0 .. 0.9 */
    double v_sparsity;     /* fraction of each value vector pruned, 0 .. 0.9 */
    int32_t local_window;  /* most recent tokens per sequence kept dense */
    int32_t head_dim_k;
    int32_t head_dim_v;
    int32_t n_seq_max;     /* sequences the context decodes at once */
    int32_t n_ubatch;      /* most tokens in one micro-batch */
    int64_t owner;         /* tag of the caches allocated under this config, for mustafar_get_kv_stats */
} mustafar_cache_config;

/* 0 on success; otherwise the config is refused (see mustafar_last_error). */
MUSTAFAR_API int mustafar_set_cache_config(const mustafar_cache_config* config);
MUSTAFAR_API const char* mustafar_last_error(void);

MUSTAFAR_API int mustafar_abi_version(void);
/* "cpu" or "cuda". */
MUSTAFAR_API const char* mustafar_flavour(void);
/* Empty when the running libggml-base is the version we were written for; otherwise why not. */
MUSTAFAR_API const char* mustafar_abi_error(void);
/* Sums over the live caches allocated under config.owner == owner (owner 0: every cache). */
MUSTAFAR_API void mustafar_get_kv_stats(int64_t owner, mustafar_kv_stats* out);

/* Calls into llama.cpp that can throw, behind a catch (a C++ exception that reaches .NET ends the process).
 * They return one of these; on MUSTAFAR_CALL_THREW, error holds why (at most error_size bytes with the 0). */
#define MUSTAFAR_CALL_OK 0
#define MUSTAFAR_CALL_THREW 1
#define MUSTAFAR_SAMPLE_NO_ALLOWED_TOKEN 2

/* llama.cpp's llama_tokenize (its address in llama_tokenize; the other arguments and *result as llama.h
 * gives them). llama.cpp throws, for one, when an SPM vocabulary has neither a token nor a byte token for a
 * character of the text. */
MUSTAFAR_API int mustafar_tokenize(void* llama_tokenize, const void* vocab, const char* text, int32_t text_len, int32_t* tokens,
                                   int32_t n_tokens_max, int32_t add_special, int32_t parse_special, int32_t* result, char* error,
                                   int32_t error_size);

/* Addresses of llama.h functions in the loaded libllama. */
typedef struct mustafar_llama_api {
    void* get_logits_ith; /* llama_get_logits_ith */
    void* sampler_apply;  /* llama_sampler_apply */
    void* sampler_accept; /* llama_sampler_accept */
} mustafar_llama_api;

/* What llama_sampler_sample(chain, ctx, idx) does, with an optional grammar sampler applied (and accepting)
 * on its own before the chain: the token in *token. MUSTAFAR_SAMPLE_NO_ALLOWED_TOKEN when the grammar allows
 * no token of the vocabulary (llama.cpp would go on to pick a disallowed one and throw, or abort). */
MUSTAFAR_API int mustafar_sample(const mustafar_llama_api* api, void* ctx, int32_t idx, int32_t n_vocab, void* grammar, void* chain,
                                 int32_t* token, char* error, int32_t error_size);

#ifdef __cplusplus
}
#endif

#endif
