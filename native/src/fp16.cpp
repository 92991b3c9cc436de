#include "fp16.h"

namespace mustafar {
const Fp16Table& fp16_table() {
    static const Fp16Table table;
    return table;
}
}  // namespace mustafar
