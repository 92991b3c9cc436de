#pragma once
#include "ggml_abi.h"

namespace mustafar {
void init_device(ggml_backend_device& device, ggml_backend_reg_t reg);
}
