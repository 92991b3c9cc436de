// The pass/fail counter of the native test programs: each check prints FAIL with its name when it fails.
#pragma once
#include <cstdio>
#include <string>

namespace mustafar::testing {

inline int g_failed = 0, g_checks = 0;

inline void check(bool ok, const std::string& what) {
    ++g_checks;
    if (!ok) {
        ++g_failed;
        std::printf("FAIL %s\n", what.c_str());
        std::fflush(stdout);  // a run cut short by a time limit still shows the failures it met
    }
}

}  // namespace mustafar::testing
