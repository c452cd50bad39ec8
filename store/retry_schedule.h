// retry_schedule: when to try a deferred message again, and when to give up.
//
// Postfix-like exponential back-off: after the first failed attempt wait
// min_backoff, doubling with every further failure, capped at max_backoff.
// Jitter spreads retries so a burst deferred together (one remote down) does
// not come back together: the delay is base * (1 + jitter * (2u - 1)) for the
// caller's uniform u in [0, 1], so it lies in [base*(1-jitter), base*(1+jitter)]
// (jitter is applied after the cap, so a capped delay may exceed max_backoff by
// up to the jitter fraction). Never less than 1 s.
//
// The random value is a parameter so the functions are pure and deterministic
// for tests; callers draw it from their shard's PRNG. Out-of-range inputs are
// clamped (u to [0, 1], NaN as 0.5; jitter to [0, 1]).
//
// Thread rules: pure functions.
#pragma once

#include <chrono>
#include <cstdint>

namespace ringmail::store {

struct retry_policy {
    std::chrono::seconds min_backoff{300};
    std::chrono::seconds max_backoff{4000};
    std::chrono::seconds max_age{5 * 24 * 3600};  // bounce (4.4.7) after this in queue
    double jitter = 0.2;                          // fraction, +/-
};

// attempts_so_far: failed delivery attempts including the one just made
// (0 is treated as 1). Returns the wait before the next attempt.
std::chrono::seconds next_delay(const retry_policy& policy, uint32_t attempts_so_far,
                                double uniform01);

// True once the message has been queued for max_age or longer
// (received_at, now: unix seconds). A clock before received_at is not expired.
bool expired(const retry_policy& policy, int64_t received_at, int64_t now);

}  // namespace ringmail::store
