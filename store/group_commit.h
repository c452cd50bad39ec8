// group_commit: batches spool writes from one shard into few write
// transactions, each committed (and fsync'ed by LMDB) on the shard's commit
// thread, so the ring never blocks on the disk.
//
// Durability contract: `co_await commit(op)` resumes only after the write
// transaction holding `op` has committed (mdb_txn_commit returned 0, which
// includes the fsync), or with the error that failed that whole transaction.
// The caller must keep everything the op points at (envelope record, body
// parts) alive until then; it sends its "250" only on success, and "451 4.3.0"
// on failure.
//
// Batching: while one transaction is being committed, new ops accumulate and
// go together in the next one (so batch size grows with load); when idle, the
// first op waits at most `window` for company. Shard thread only, except the
// internal commit thread.
#pragma once

#include <chrono>
#include <condition_variable>
#include <coroutine>
#include <mutex>
#include <thread>
#include <vector>

#include "engine/io.h"
#include "engine/result.h"
#include "store/spool.h"

namespace ringmail::store {

class group_commit {
public:
    group_commit(spool& s, std::chrono::milliseconds window, size_t max_batch);
    ~group_commit();
    group_commit(const group_commit&) = delete;
    group_commit& operator=(const group_commit&) = delete;

    struct waiter {
        spool_op op;
        std::coroutine_handle<> handle;
        result<void, spool_error> outcome{};
    };

    struct awaitable {
        group_commit& gc;
        waiter w;
        bool await_ready() const noexcept { return false; }
        void await_suspend(std::coroutine_handle<> h) {
            w.handle = h;
            gc.enqueue(&w);
        }
        result<void, spool_error> await_resume() const noexcept { return w.outcome; }
    };

    awaitable commit(spool_op op) { return awaitable{*this, waiter{op, {}, {}}}; }

    // New batching parameters (reload); take effect from the next op.
    void set_batching(std::chrono::milliseconds window, size_t max_batch) {
        _window = window;
        _max_batch = max_batch == 0 ? 1 : max_batch;
    }

    // Number of transactions and ops committed so far (for stats/benchmarks).
    uint64_t transactions() const { return _transactions; }
    uint64_t ops() const { return _ops_done; }
    bool idle() const { return _pending.empty() && !_in_flight; }

private:
    struct done_reader;
    struct window_timer;

    void enqueue(waiter* w);
    void flush();
    void on_done();
    void thread_main();

    spool& _spool;
    std::chrono::milliseconds _window;
    size_t _max_batch;

    // Shard thread state.
    std::vector<waiter*> _pending;
    std::vector<waiter*> _flight;
    std::vector<spool_op> _flight_ops;
    bool _in_flight = false;
    bool _timer_armed = false;
    uint64_t _transactions = 0, _ops_done = 0;
    std::unique_ptr<done_reader> _reader;
    std::unique_ptr<window_timer> _timer;

    // Hand-off to the commit thread (one batch at a time).
    int _done_fd = -1;
    std::mutex _mutex;
    std::condition_variable _cv;
    bool _has_work = false;
    bool _quit = false;
    result<void, spool_error> _flight_result{};
    std::thread _thread;
};

}  // namespace ringmail::store
