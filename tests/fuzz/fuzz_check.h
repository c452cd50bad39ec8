// fuzz_check.h: FUZZ_CHECK(cond) for the libFuzzer targets in tests/fuzz/.
//
// Unlike assert() it is active in every build type (meson's b_ndebug may
// define NDEBUG) and says which invariant broke before aborting, so libFuzzer
// records the input as a crash.
#pragma once

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string_view>

#define FUZZ_CHECK(cond)                                                          \
    do {                                                                          \
        if (!(cond)) {                                                            \
            std::fprintf(stderr, "%s:%d: FUZZ_CHECK failed: %s\n", __FILE__,      \
                         __LINE__, #cond);                                        \
            std::abort();                                                         \
        }                                                                         \
    } while (0)

namespace ringmail::fuzz {

// Whether `part` is a view into `whole` (an empty view anywhere is fine).
inline bool within(std::string_view part, std::string_view whole) {
    if (part.empty()) return true;
    const auto b = reinterpret_cast<std::uintptr_t>(whole.data());
    const auto p = reinterpret_cast<std::uintptr_t>(part.data());
    return p >= b && p - b <= whole.size() && part.size() <= whole.size() - (p - b);
}

}  // namespace ringmail::fuzz
