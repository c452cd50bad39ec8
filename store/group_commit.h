// group_commit: batches spool writes from one shard into few write
// transactions, each committed (and fsync'ed by LMDB) on the shard's commit
// thread, so the ring never blocks on the disk.
//
// Durability contract: `co_await commit(op)` resumes only after the write
// transaction holding `op` has committed (mdb_txn_commit returned 0, which
// includes the fsync), or with the error that failed that whole transaction.
// The caller must keep everything the op points at (envelope record, body
// parts) alive until then; it sends its "250" only on success, and a 4xx
// (452 4.3.1 when the spool is full, else 451 4.3.0) on failure.
//
// Batching: the commit thread takes every op queued while it was busy into
// its next transaction, so the batch size grows with load and the disk never
// waits for the shard; when it was idle, it first waits for company, at most
// `window` and no longer than commits have recently been taking (a moving
// average), so a fast disk is not slowed down by a window sized for a slow
// one. The shard hands ops over through a short mutex-protected queue and
// gets finished batches back through an eventfd read on its ring, where it
// resumes the waiting coroutines. commit() is called on the shard thread only.
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <coroutine>
#include <memory>
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

    // New batching parameters (reload); taken by the next batch.
    void set_batching(std::chrono::milliseconds window, size_t max_batch);

    // Transactions and ops committed so far, and time spent in them (stats).
    uint64_t transactions() const { return _transactions.load(std::memory_order_relaxed); }
    uint64_t ops() const { return _ops_done.load(std::memory_order_relaxed); }
    uint64_t apply_microseconds() const { return _apply_us.load(std::memory_order_relaxed); }

private:
    struct done_reader;

    void enqueue(waiter* w);
    void on_done();
    void thread_main();

    spool& _spool;
    std::unique_ptr<done_reader> _reader;
    int _done_fd = -1;

    // Shared with the commit thread, under _mutex.
    std::mutex _mutex;
    std::condition_variable _cv;
    std::vector<waiter*> _incoming;  // queued by the shard
    std::vector<waiter*> _finished;  // committed (outcome set), to resume on the shard
    std::chrono::milliseconds _window;
    size_t _max_batch;
    bool _quit = false;

    // Shard thread scratch.
    std::vector<waiter*> _resume;

    std::atomic<uint64_t> _transactions{0}, _ops_done{0}, _apply_us{0};
    std::thread _thread;
};

}  // namespace ringmail::store
