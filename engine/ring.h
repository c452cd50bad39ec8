// ring: one io_uring per shard thread, and the completion dispatch loop.
//
// Contract:
// - Created on, and used only by, its shard's thread (IORING_SETUP_SINGLE_ISSUER
//   | DEFER_TASKRUN). `this_ring()` is that thread's ring.
// - Every SQE carries a `completion*` as user_data (or 0 for CQEs nobody wants,
//   such as cancellations). The completion object must stay alive until its
//   CQE has been dispatched; for coroutine awaitables it lives in the frame,
//   which cannot be destroyed while suspended on it (see task.h).
// - CQEs are copied out in batches and the CQ advanced before dispatch, so a
//   handler may submit freely.
#pragma once

#include <liburing.h>

#include <chrono>
#include <coroutine>
#include <cstdint>
#include <vector>

namespace ringmail::engine {

struct completion {
    virtual void on_cqe(int res, uint32_t flags) = 0;

protected:
    ~completion() = default;
};

// An operation with a deadline, watched by its ring (intrusive list). When the
// deadline passes, the ring cancels the operation (IORING_OP_ASYNC_CANCEL by
// user_data) and marks it expired; its CQE then arrives as -ECANCELED.
// Cheaper than a linked timeout per operation: no timer armed and disarmed,
// no extra CQE; deadlines are checked every `watch_granularity`.
struct completion;
struct watched_op {
    completion* target = nullptr;  // the operation's user_data
    watched_op* watch_prev = nullptr;
    watched_op* watch_next = nullptr;
    int64_t deadline_ms = 0;
    bool expired = false;
    bool watched = false;
};

class ring {
public:
    explicit ring(unsigned entries);
    ~ring();
    ring(const ring&) = delete;
    ring& operator=(const ring&) = delete;

    // An SQE with room for `linked - 1` more right behind it in the same
    // submission (linked SQEs must not be split across submissions).
    io_uring_sqe* sqe(unsigned linked = 1);

    // Submits pending SQEs, waits up to `max_wait` for at least one CQE, and
    // dispatches every CQE available. Returns the number dispatched.
    unsigned run_once(std::chrono::milliseconds max_wait);

    // Resume `h` after the current CQE batch (used to avoid deep recursion
    // when one completion wakes many coroutines).
    void post(std::coroutine_handle<> h) { _posted.push_back(h); }

    io_uring* raw() { return &_ring; }

    // Monotonic milliseconds, refreshed once per run_once() turn.
    int64_t now_ms() const { return _now_ms; }
    static constexpr int64_t watch_granularity_ms = 100;
    // `op` must be the completion* of an SQE already queued on this ring.
    void watch(watched_op* op, completion* as_completion, int64_t timeout_ms);
    void unwatch(watched_op* op);

private:
    void run_posted();
    void sweep_deadlines();
    static int64_t monotonic_ms();

    io_uring _ring{};
    std::vector<io_uring_cqe*> _batch;
    std::vector<std::coroutine_handle<>> _posted;
    std::vector<std::coroutine_handle<>> _running;
    watched_op* _watched = nullptr;
    int64_t _now_ms = 0;
    int64_t _next_sweep_ms = 0;
};

// The calling thread's ring (set by the shard that owns the thread).
ring& this_ring();
void set_this_ring(ring* r);

}  // namespace ringmail::engine
