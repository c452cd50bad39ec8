#include "engine/ring.h"

#include <time.h>

#include <cerrno>
#include <cstring>
#include <stdexcept>
#include <string>

namespace ringmail::engine {

namespace {
thread_local ring* current_ring = nullptr;
}

ring& this_ring() { return *current_ring; }
void set_this_ring(ring* r) { current_ring = r; }

ring::ring(unsigned entries) {
    io_uring_params p{};
    p.flags = IORING_SETUP_SINGLE_ISSUER | IORING_SETUP_DEFER_TASKRUN | IORING_SETUP_SUBMIT_ALL |
              IORING_SETUP_CQSIZE;
    p.cq_entries = entries * 4;
    int rc = io_uring_queue_init_params(entries, &_ring, &p);
    if (rc < 0) {
        // Older kernels: retry without the optional flags.
        p = {};
        rc = io_uring_queue_init_params(entries, &_ring, &p);
    }
    if (rc < 0) throw std::runtime_error(std::string("io_uring_queue_init: ") + std::strerror(-rc));
    _batch.resize(256);
}

ring::~ring() { io_uring_queue_exit(&_ring); }

io_uring_sqe* ring::sqe(unsigned linked) {
    if (io_uring_sq_space_left(&_ring) < linked) io_uring_submit(&_ring);
    io_uring_sqe* s = io_uring_get_sqe(&_ring);
    while (s == nullptr) {  // SQ full even after submit: the kernel is busy; retry
        io_uring_submit(&_ring);
        s = io_uring_get_sqe(&_ring);
    }
    return s;
}

int64_t ring::monotonic_ms() {
    timespec ts{};
    clock_gettime(CLOCK_MONOTONIC_COARSE, &ts);
    return int64_t(ts.tv_sec) * 1000 + ts.tv_nsec / 1000000;
}

void ring::watch(watched_op* op, completion* as_completion, int64_t timeout_ms) {
    op->target = as_completion;
    op->deadline_ms = (_now_ms != 0 ? _now_ms : monotonic_ms()) + timeout_ms;
    op->expired = false;
    op->watched = true;
    op->watch_prev = nullptr;
    op->watch_next = _watched;
    if (_watched) _watched->watch_prev = op;
    _watched = op;
}

void ring::unwatch(watched_op* op) {
    if (!op->watched) return;
    if (op->watch_prev) op->watch_prev->watch_next = op->watch_next;
    else _watched = op->watch_next;
    if (op->watch_next) op->watch_next->watch_prev = op->watch_prev;
    op->watched = false;
}

void ring::sweep_deadlines() {
    for (watched_op* op = _watched; op != nullptr; op = op->watch_next) {
        if (op->expired || op->deadline_ms > _now_ms) continue;
        op->expired = true;
        io_uring_sqe* s = sqe();
        // The completion pointer is the op's user_data (see io_awaitable).
        io_uring_prep_cancel64(s, reinterpret_cast<uint64_t>(op->target), 0);
        io_uring_sqe_set_data(s, nullptr);
    }
}

unsigned ring::run_once(std::chrono::milliseconds max_wait) {
    if (!_posted.empty()) max_wait = std::chrono::milliseconds(0);
    // Deadlines are checked every watch_granularity_ms while any are watched.
    if (_watched != nullptr && max_wait.count() > watch_granularity_ms)
        max_wait = std::chrono::milliseconds(watch_granularity_ms);
    __kernel_timespec ts{};
    ts.tv_sec = max_wait.count() / 1000;
    ts.tv_nsec = (max_wait.count() % 1000) * 1000000;
    io_uring_cqe* first = nullptr;
    int rc = io_uring_submit_and_wait_timeout(&_ring, &first, max_wait.count() > 0 ? 1 : 0, &ts, nullptr);
    (void)rc;  // -ETIME / -EINTR: nothing to dispatch, the loop comes round again
    // The wait may have lasted up to a second: deadlines set by the handlers
    // below count from now, not from before the wait (they fired up to 1 s early).
    _now_ms = monotonic_ms();

    unsigned total = 0;
    for (;;) {
        unsigned n = io_uring_peek_batch_cqe(&_ring, _batch.data(), static_cast<unsigned>(_batch.size()));
        if (n == 0) break;
        // Copy out before advancing so handlers can submit and the CQ can refill.
        struct item {
            completion* c;
            int res;
            uint32_t flags;
        };
        item items[256];
        for (unsigned i = 0; i < n; ++i) {
            items[i] = {reinterpret_cast<completion*>(io_uring_cqe_get_data(_batch[i])), _batch[i]->res,
                        _batch[i]->flags};
        }
        io_uring_cq_advance(&_ring, n);
        for (unsigned i = 0; i < n; ++i) {
            if (items[i].c != nullptr) items[i].c->on_cqe(items[i].res, items[i].flags);
        }
        total += n;
        run_posted();
    }
    run_posted();
    _now_ms = monotonic_ms();
    if (_watched != nullptr && _now_ms >= _next_sweep_ms) {
        _next_sweep_ms = _now_ms + watch_granularity_ms;
        sweep_deadlines();
    }
    return total;
}

void ring::run_posted() {
    while (!_posted.empty()) {
        _running.swap(_posted);
        for (auto h : _running) h.resume();
        _running.clear();
    }
}

}  // namespace ringmail::engine
