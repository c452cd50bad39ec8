#include "store/group_commit.h"

#include <pthread.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include <stdexcept>

namespace ringmail::store {

using engine::this_ring;

// Completion of the eventfd read: the commit thread finished a batch.
struct group_commit::done_reader final : engine::completion {
    group_commit* gc;
    uint64_t value = 0;
    void arm() {
        io_uring_sqe* s = this_ring().sqe();
        io_uring_prep_read(s, gc->_done_fd, &value, sizeof value, 0);
        io_uring_sqe_set_data(s, static_cast<engine::completion*>(this));
    }
    void on_cqe(int, uint32_t) override {
        arm();
        gc->on_done();
    }
};

group_commit::group_commit(spool& s, std::chrono::milliseconds window, size_t max_batch)
    : _spool(s), _window(window), _max_batch(max_batch == 0 ? 1 : max_batch) {
    _done_fd = eventfd(0, EFD_CLOEXEC);
    if (_done_fd < 0) throw std::runtime_error("group_commit: eventfd failed");
    _reader = std::make_unique<done_reader>();
    _reader->gc = this;
    _reader->arm();
    _thread = std::thread([this] { thread_main(); });
}

group_commit::~group_commit() {
    {
        std::lock_guard lock(_mutex);
        _quit = true;
    }
    _cv.notify_one();
    _thread.join();
    // The pending eventfd read ends with the ring: the shard destroys its
    // services only after its loop has ended.
    ::close(_done_fd);
}

void group_commit::set_batching(std::chrono::milliseconds window, size_t max_batch) {
    std::lock_guard lock(_mutex);
    _window = window;
    _max_batch = max_batch == 0 ? 1 : max_batch;
}

void group_commit::enqueue(waiter* w) {
    bool was_empty;
    {
        std::lock_guard lock(_mutex);
        was_empty = _incoming.empty();
        _incoming.push_back(w);
    }
    if (was_empty) _cv.notify_one();
}

void group_commit::on_done() {
    {
        std::lock_guard lock(_mutex);
        _resume.swap(_finished);
    }
    for (auto* w : _resume) this_ring().post(w->handle);
    _resume.clear();
}

void group_commit::thread_main() {
    pthread_setname_np(pthread_self(), "commit");
    // Created on a pinned shard thread, it would inherit that core and could
    // never run beside its shard: let it run anywhere.
    cpu_set_t all;
    CPU_ZERO(&all);
    for (int c = 0; c < CPU_SETSIZE; ++c) CPU_SET(c, &all);
    pthread_setaffinity_np(pthread_self(), sizeof all, &all);
    std::vector<waiter*> batch;
    std::vector<spool_op> ops;
    std::unique_lock lock(_mutex);
    bool idle = true;
    // Moving average of how long a commit takes on this disk (starts at the
    // window, so the first batches wait the configured time).
    std::chrono::microseconds recent_commit = _window;
    for (;;) {
        _cv.wait(lock, [this] { return !_incoming.empty() || _quit; });
        if (_incoming.empty()) return;  // quit, nothing left
        if (idle && _window.count() > 0 && _incoming.size() < _max_batch && !_quit) {
            // First op after a quiet spell: give others a moment to join, but
            // no longer than a commit has been taking: waiting longer than the
            // disk adds latency without making the next batch any cheaper.
            auto wait = std::min<std::chrono::microseconds>(_window, recent_commit);
            _cv.wait_for(lock, wait, [this] { return _incoming.size() >= _max_batch || _quit; });
        }
        size_t n = std::min(_incoming.size(), _max_batch);
        batch.assign(_incoming.begin(), _incoming.begin() + static_cast<long>(n));
        _incoming.erase(_incoming.begin(), _incoming.begin() + static_cast<long>(n));
        lock.unlock();

        ops.clear();
        for (auto* w : batch) ops.push_back(w->op);
        auto t0 = std::chrono::steady_clock::now();
        auto r = _spool.apply(ops);
        auto us = std::chrono::duration_cast<std::chrono::microseconds>(std::chrono::steady_clock::now() - t0);
        for (auto* w : batch) w->outcome = r;
        _transactions.fetch_add(1, std::memory_order_relaxed);
        _ops_done.fetch_add(n, std::memory_order_relaxed);
        _apply_us.fetch_add(static_cast<uint64_t>(us.count()), std::memory_order_relaxed);
        recent_commit = (3 * recent_commit + us) / 4;

        lock.lock();
        _finished.insert(_finished.end(), batch.begin(), batch.end());
        idle = _incoming.empty();
        uint64_t one = 1;
        (void)!::write(_done_fd, &one, sizeof one);
    }
}

}  // namespace ringmail::store
