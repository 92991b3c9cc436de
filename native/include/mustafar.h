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
#define MUSTAFAR_ABI_VERSION 1

/* Memory held by the KV cache tensors (llama.cpp's cache_k_l* / cache_v_l*) in live buffers. */
typedef struct mustafar_kv_stats {
    uint64_t kv_bytes;        /* bytes allocated for cache tensors in our buffers */
    uint64_t kv_dense_bytes;  /* what the same tensors take in ggml's dense layout */
    uint64_t kv_tensors;      /* number of cache tensors */
    uint64_t kv_elements;     /* elements (cells x channels) over all cache tensors */
} mustafar_kv_stats;

MUSTAFAR_API int mustafar_abi_version(void);
/* "cpu" or "cuda". */
MUSTAFAR_API const char* mustafar_flavour(void);
/* Empty when the running libggml-base is the version we were written for; otherwise why not. */
MUSTAFAR_API const char* mustafar_abi_error(void);
MUSTAFAR_API void mustafar_get_kv_stats(mustafar_kv_stats* out);

#ifdef __cplusplus
}
#endif

#endif
