// launch_cuda.h: whether launches ask for programmatic dependent launch.
#include "launch_cuda.h"

#include <cstdlib>
#include <cstring>

namespace mustafar::cuda {

bool early_launch() {
    // Decided once: the library serves one device, and a launch must not pay for an attribute query.
    static const bool on = [] {
        const char* env = std::getenv("MUSTAFAR_PDL");
        if (env != nullptr && std::strcmp(env, "0") == 0) return false;
        int device = 0, major = 0;
        if (cudaGetDevice(&device) != cudaSuccess || cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, device) != cudaSuccess) {
            cudaGetLastError();  // no device: plain launches, whose own errors will be reported
            return false;
        }
        return major >= 9;
    }();
    return on;
}

}  // namespace mustafar::cuda
