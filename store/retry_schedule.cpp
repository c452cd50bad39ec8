// retry_schedule: exponential back-off with jitter (contract in retry_schedule.h).
#include "store/retry_schedule.h"

#include <algorithm>
#include <cmath>

namespace ringmail::store {

std::chrono::seconds next_delay(const retry_policy& policy, uint32_t attempts_so_far,
                                double uniform01) {
    const int64_t min_s = std::max<int64_t>(policy.min_backoff.count(), 1);
    const int64_t max_s = std::max<int64_t>(policy.max_backoff.count(), 1);

    // base = min * 2^(attempts-1), capped; doubling stops at the cap so it
    // cannot overflow however many attempts were made.
    int64_t base = std::min(min_s, max_s);
    for (uint32_t i = 1; i < attempts_so_far && base < max_s; ++i)
        base = base > max_s / 2 ? max_s : base * 2;

    double u = std::isnan(uniform01) ? 0.5 : std::clamp(uniform01, 0.0, 1.0);
    double j = std::isnan(policy.jitter) ? 0.0 : std::clamp(policy.jitter, 0.0, 1.0);
    double delay = static_cast<double>(base) * (1.0 + j * (2.0 * u - 1.0));
    auto s = static_cast<int64_t>(std::llround(delay));
    return std::chrono::seconds{std::max<int64_t>(s, 1)};
}

bool expired(const retry_policy& policy, int64_t received_at, int64_t now) {
    if (now < received_at) return false;
    // Unsigned difference: now - received_at cannot overflow when now >= received_at.
    uint64_t age = static_cast<uint64_t>(now) - static_cast<uint64_t>(received_at);
    int64_t max_age = policy.max_age.count();
    return max_age <= 0 || age >= static_cast<uint64_t>(max_age);
}

}  // namespace ringmail::store
