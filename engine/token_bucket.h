// token_bucket: a rate limit ("100/s") as evenly spaced permits (GCRA with a
// burst of one), so a destination sees a steady flow rather than bursts.
//
// Contract: take(now) either grants a permit (returns 0) or returns how many
// milliseconds to wait before asking again; an unlimited rate always grants.
// Pure and single-threaded; time comes from the caller (tests need no clock).
#pragma once

#include <algorithm>
#include <cstdint>

#include "engine/config.h"

namespace ringmail::engine {

class token_bucket {
public:
    void configure(rate_limit r) {
        _interval_us = r.unlimited() ? 0 : std::max<int64_t>(1, r.per.count() * 1000 / r.count);
    }
    bool unlimited() const { return _interval_us == 0; }

    // now in microseconds of a monotonic clock.
    int64_t take(int64_t now_us) {
        if (_interval_us == 0) return 0;
        if (_next_us <= now_us) {
            _next_us = now_us + _interval_us;
            return 0;
        }
        return (_next_us - now_us + 999) / 1000;
    }

private:
    int64_t _interval_us = 0;  // 0 = unlimited
    int64_t _next_us = 0;      // earliest time of the next permit
};

}  // namespace ringmail::engine
