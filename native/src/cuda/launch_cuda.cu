// launch_cuda.h: whether launches ask for programmatic dependent launch.
#include "launch_cuda.h"

#include <cstdlib>
#include <cstring>

namespace mustafar::cuda {

bool hopper_or_newer() {
    // Decided once: the library serves one device, and a launch must not pay for an attribute query.
    static const bool on = [] {
        int device = 0, major = 0;
        if (cudaGetDevice(&device) != cudaSuccess || cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, device) != cudaSuccess) {
            cudaGetLastError();  // no device: plain launches, whose own errors will be reported
            return false;
        }
        return major >= 9;
    }();
    return on;
}

bool early_launch() {
    static const bool on = [] {
        const char* env = std::getenv("MUSTAFAR_PDL");
        return !(env != nullptr && std::strcmp(env, "0") == 0) && hopper_or_newer();
    }();
    return on;
}

}  // namespace mustafar::cuda
