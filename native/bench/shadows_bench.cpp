// Host time of recording graph inputs' host copies (shadows.h), as the CUDA flavour's set_tensor does for
// every upload: a prompt's mask over a long shared cache is tens to hundreds of MB a micro-batch. Prints a
// table and, given a path, writes it there.
//   shadows_bench [results.md]
#include <chrono>
#include <cstdio>
#include <string>
#include <vector>

#include "shadows.h"

namespace {

// Mean ms per record of `sizes` (MB) recorded in turn to one device address, twice over.
double ms_per_record(const std::vector<size_t>& sizes) {
    std::vector<uint8_t> host(size_t(256) << 20, 1);
    mustafar::HostShadows shadows;
    const void* device = reinterpret_cast<const void*>(uintptr_t(0x7f0000000000));
    double total = 0;
    int n = 0;
    for (int round = 0; round < 2; ++round)
        for (size_t mb : sizes) {
            ++host[size_t(n) % host.size()];
            const auto t0 = std::chrono::steady_clock::now();
            shadows.record(device, host.data(), mb << 20);
            total += std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
            ++n;
        }
    return total / n;
}

}  // namespace

int main(int argc, char** argv) {
    struct Row {
        const char* what;
        std::vector<size_t> sizes;
    };
    std::vector<Row> rows = {
        {"8 MB, 64 times (a batch-8 decode step's mask over 512K cells)", std::vector<size_t>(64, 8)},
        {"128 MB, 32 times (a 512-token micro-batch over 128K cells)", std::vector<size_t>(32, 128)},
        {"64 to 127 MB, growing by 1 MB (a prompt's micro-batches)", {}},
    };
    for (size_t mb = 64; mb < 128; ++mb) rows[2].sizes.push_back(mb);
    std::string table = "| uploads to one address | ms per record |\n|---|---|\n";
    for (const Row& r : rows) {
        char line[160];
        std::snprintf(line, sizeof line, "| %s | %.2f |\n", r.what, ms_per_record(r.sizes));
        table += line;
    }
    std::fputs(table.c_str(), stdout);
    if (argc > 1) {
        FILE* f = std::fopen(argv[1], "w");
        if (f == nullptr) return 1;
        std::fputs(table.c_str(), f);
        std::fclose(f);
    }
    return 0;
}
