#include "store/group_commit.h"

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

// The group-commit window: flush when it expires.
struct group_commit::window_timer final : engine::completion {
    group_commit* gc;
    __kernel_timespec ts{};
    void arm(std::chrono::milliseconds d) {
        ts = engine::to_timespec(d);
        io_uring_sqe* s = this_ring().sqe();
        io_uring_prep_timeout(s, &ts, 0, 0);
        io_uring_sqe_set_data(s, static_cast<engine::completion*>(this));
    }
    void on_cqe(int, uint32_t) override {
        gc->_timer_armed = false;
        if (!gc->_in_flight && !gc->_pending.empty()) gc->flush();
    }
};

group_commit::group_commit(spool& s, std::chrono::milliseconds window, size_t max_batch)
    : _spool(s), _window(window), _max_batch(max_batch == 0 ? 1 : max_batch) {
    _done_fd = eventfd(0, EFD_CLOEXEC);
    if (_done_fd < 0) throw std::runtime_error("group_commit: eventfd failed");
    _reader = std::make_unique<done_reader>();
    _reader->gc = this;
    _reader->arm();
    _timer = std::make_unique<window_timer>();
    _timer->gc = this;
    _thread = std::thread([this] { thread_main(); });
}

group_commit::~group_commit() {
    {
        std::lock_guard lock(_mutex);
        _quit = true;
    }
    _cv.notify_one();
    _thread.join();
    // The pending eventfd read is cancelled when the ring is torn down; the
    // shard destroys its services only after its loop has ended.
    ::close(_done_fd);
}

void group_commit::enqueue(waiter* w) {
    _pending.push_back(w);
    if (_in_flight) return;  // goes with the next batch when this one is done
    if (_pending.size() >= _max_batch || _window.count() == 0) {
        flush();
    } else if (!_timer_armed) {
        _timer_armed = true;
        _timer->arm(_window);
    }
}

void group_commit::flush() {
    size_t n = std::min(_pending.size(), _max_batch);
    _flight.assign(_pending.begin(), _pending.begin() + static_cast<long>(n));
    _pending.erase(_pending.begin(), _pending.begin() + static_cast<long>(n));
    _flight_ops.clear();
    for (auto* w : _flight) _flight_ops.push_back(w->op);
    _in_flight = true;
    {
        std::lock_guard lock(_mutex);
        _has_work = true;
    }
    _cv.notify_one();
}

void group_commit::on_done() {
    if (!_in_flight) return;
    result<void, spool_error> r{};
    {
        std::lock_guard lock(_mutex);
        if (_has_work) return;  // spurious: not finished yet
        r = _flight_result;
    }
    _in_flight = false;
    ++_transactions;
    _ops_done += _flight.size();
    // Start the next batch before waking sessions, so the disk stays busy.
    std::vector<waiter*> finished;
    finished.swap(_flight);
    if (!_pending.empty()) flush();
    for (auto* w : finished) {
        w->outcome = r;
        this_ring().post(w->handle);
    }
}

void group_commit::thread_main() {
    pthread_setname_np(pthread_self(), "commit");
    std::unique_lock lock(_mutex);
    for (;;) {
        _cv.wait(lock, [this] { return _has_work || _quit; });
        if (_has_work) {
            lock.unlock();
            auto r = _spool.apply(_flight_ops);
            lock.lock();
            _flight_result = r;
            _has_work = false;
            uint64_t one = 1;
            (void)!::write(_done_fd, &one, sizeof one);
            continue;
        }
        if (_quit) return;
    }
}

}  // namespace ringmail::store
