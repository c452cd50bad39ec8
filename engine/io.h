// Awaitable io_uring operations for coroutine sessions.
//
// Each awaitable owns its SQE arguments (timespecs, msghdr) and its completion
// record; it lives in the awaiting coroutine's frame, which stays suspended
// (and therefore alive) until the CQE arrives. Results are the raw CQE result:
// >= 0 success, negative errno on failure. An operation with a timeout that
// expires completes with -ETIMEDOUT (the kernel reports -ECANCELED; we
// translate it so callers can tell a timeout from other errors), and
// cancellation at shutdown also surfaces as -ECANCELED/-ETIMEDOUT.
// Deadlines are enforced by the ring's sweep (ring.h, watched_op), at a
// granularity of ring::watch_granularity_ms.
#pragma once

#include <sys/socket.h>
#include <sys/uio.h>

#include <cerrno>
#include <chrono>
#include <coroutine>
#include <cstdint>

#include "engine/ring.h"

namespace ringmail::engine {

using std::chrono::milliseconds;

inline __kernel_timespec to_timespec(milliseconds ms) {
    __kernel_timespec ts{};
    ts.tv_sec = ms.count() / 1000;
    ts.tv_nsec = (ms.count() % 1000) * 1000000;
    return ts;
}

// Base: stores the CQE result and resumes the awaiting coroutine. A timed
// operation is watched by the ring, which cancels it at its deadline.
struct io_awaitable : completion, watched_op {
    std::coroutine_handle<> _waiter;
    int _res = 0;
    uint32_t _flags = 0;

    bool await_ready() const noexcept { return false; }
    void on_cqe(int res, uint32_t flags) override {
        if (watched) this_ring().unwatch(this);
        _res = (expired && res == -ECANCELED) ? -ETIMEDOUT : res;
        _flags = flags;
        _waiter.resume();
    }

protected:
    void submit(io_uring_sqe* s, milliseconds timeout) {
        io_uring_sqe_set_data(s, static_cast<completion*>(this));
        if (timeout.count() > 0) this_ring().watch(this, this, timeout.count());
    }
    io_uring_sqe* get_sqe(milliseconds) { return this_ring().sqe(); }
};

struct send_op : io_awaitable {
    int fd;
    const void* data;
    size_t len;
    milliseconds timeout;
    void await_suspend(std::coroutine_handle<> h) {
        _waiter = h;
        io_uring_sqe* s = get_sqe(timeout);
        io_uring_prep_send(s, fd, data, len, MSG_NOSIGNAL);
        submit(s, timeout);
    }
    int await_resume() const noexcept { return _res; }
};
inline send_op async_send(int fd, const void* data, size_t len, milliseconds timeout) {
    send_op op;
    op.fd = fd;
    op.data = data;
    op.len = len;
    op.timeout = timeout;
    return op;
}

struct sendmsg_op : io_awaitable {
    int fd;
    msghdr msg{};
    milliseconds timeout;
    void await_suspend(std::coroutine_handle<> h) {
        _waiter = h;
        io_uring_sqe* s = get_sqe(timeout);
        io_uring_prep_sendmsg(s, fd, &msg, MSG_NOSIGNAL);
        submit(s, timeout);
    }
    int await_resume() const noexcept { return _res; }
};
inline sendmsg_op async_sendmsg(int fd, iovec* iov, size_t iovcnt, milliseconds timeout) {
    sendmsg_op op;
    op.fd = fd;
    op.timeout = timeout;
    op.msg.msg_iov = iov;
    op.msg.msg_iovlen = iovcnt;
    return op;
}

// Receive into a buffer picked by the kernel from provided-buffer group `group`.
struct recv_buffered_op : io_awaitable {
    int fd;
    uint16_t group;
    milliseconds timeout;
    void await_suspend(std::coroutine_handle<> h) {
        _waiter = h;
        io_uring_sqe* s = get_sqe(timeout);
        io_uring_prep_recv(s, fd, nullptr, 0, 0);
        s->flags |= IOSQE_BUFFER_SELECT;
        s->buf_group = group;
        submit(s, timeout);
    }
    struct result {
        int res;             // bytes, 0 = peer closed, < 0 = -errno (-ENOBUFS: no buffer free)
        int buffer_id;       // -1 when no buffer was consumed
    };
    result await_resume() const noexcept {
        int bid = (_flags & IORING_CQE_F_BUFFER) ? int(_flags >> IORING_CQE_BUFFER_SHIFT) : -1;
        return {_res, bid};
    }
};
inline recv_buffered_op async_recv_buffered(int fd, uint16_t group, milliseconds timeout) {
    recv_buffered_op op;
    op.fd = fd;
    op.group = group;
    op.timeout = timeout;
    return op;
}

// A request/response turn in one submission: send `data` in full (MSG_WAITALL
// resumes short writes in the kernel), then, linked behind it, receive into a
// provided buffer. A failed send cancels the receive. Both halves carry the
// deadline. The coroutine resumes only when BOTH CQEs have arrived, in
// whatever order, so no CQE can reach the awaitable after its frame is gone.
struct send_recv_buffered_op : io_awaitable {
    struct send_half final : completion, watched_op {
        send_recv_buffered_op* parent = nullptr;
        int res = 0;
        void on_cqe(int r, uint32_t) override {
            if (watched) this_ring().unwatch(this);
            res = r;
            parent->one_done();
        }
    };
    send_half _send;
    int _outstanding = 2;

    void one_done() {
        if (--_outstanding == 0) _waiter.resume();
    }
    void on_cqe(int res, uint32_t flags) override {
        if (watched) this_ring().unwatch(this);
        _res = (expired && res == -ECANCELED) ? -ETIMEDOUT : res;
        _flags = flags;
        one_done();
    }
    int fd = -1;
    const void* data = nullptr;
    size_t len = 0;
    uint16_t group = 0;
    milliseconds timeout{0};

    void await_suspend(std::coroutine_handle<> h) {
        _waiter = h;
        _send.parent = this;  // the awaitable has its final address now (in the frame)
        io_uring_sqe* s = this_ring().sqe(2);  // both in the same submission
        io_uring_prep_send(s, fd, data, len, MSG_NOSIGNAL | MSG_WAITALL);
        s->flags |= IOSQE_IO_LINK;
        io_uring_sqe_set_data(s, static_cast<completion*>(&_send));
        if (timeout.count() > 0) this_ring().watch(&_send, &_send, timeout.count());
        io_uring_sqe* r = this_ring().sqe();
        io_uring_prep_recv(r, fd, nullptr, 0, 0);
        r->flags |= IOSQE_BUFFER_SELECT;
        r->buf_group = group;
        submit(r, timeout);
    }
    struct result {
        bool sent;       // the whole of data went out
        int res;         // receive: bytes, 0 = closed, < 0 = -errno
        int buffer_id;   // -1 when no buffer was consumed
    };
    result await_resume() const noexcept {
        int bid = (_flags & IORING_CQE_F_BUFFER) ? int(_flags >> IORING_CQE_BUFFER_SHIFT) : -1;
        return {_send.res == static_cast<int>(len), _res, bid};
    }
};
inline send_recv_buffered_op async_send_recv_buffered(int fd, const void* data, size_t len, uint16_t group,
                                                      milliseconds timeout) {
    send_recv_buffered_op op;
    op.fd = fd;
    op.data = data;
    op.len = len;
    op.group = group;
    op.timeout = timeout;
    return op;
}

struct recv_op : io_awaitable {
    int fd;
    void* data;
    size_t len;
    milliseconds timeout;
    void await_suspend(std::coroutine_handle<> h) {
        _waiter = h;
        io_uring_sqe* s = get_sqe(timeout);
        io_uring_prep_recv(s, fd, data, len, 0);
        submit(s, timeout);
    }
    int await_resume() const noexcept { return _res; }
};
inline recv_op async_recv(int fd, void* data, size_t len, milliseconds timeout) {
    recv_op op;
    op.fd = fd;
    op.data = data;
    op.len = len;
    op.timeout = timeout;
    return op;
}

struct read_op : io_awaitable {
    int fd;
    void* data;
    size_t len;
    void await_suspend(std::coroutine_handle<> h) {
        _waiter = h;
        io_uring_sqe* s = get_sqe(milliseconds(0));
        io_uring_prep_read(s, fd, data, static_cast<unsigned>(len), 0);
        submit(s, milliseconds(0));
    }
    int await_resume() const noexcept { return _res; }
};
inline read_op async_read(int fd, void* data, size_t len) {
    read_op op;
    op.fd = fd;
    op.data = data;
    op.len = len;
    return op;
}

struct connect_op : io_awaitable {
    int fd;
    const sockaddr* addr;
    socklen_t addrlen;
    milliseconds timeout;
    void await_suspend(std::coroutine_handle<> h) {
        _waiter = h;
        io_uring_sqe* s = get_sqe(timeout);
        io_uring_prep_connect(s, fd, addr, addrlen);
        submit(s, timeout);
    }
    int await_resume() const noexcept { return _res; }
};
inline connect_op async_connect(int fd, const sockaddr* addr, socklen_t len, milliseconds timeout) {
    connect_op op;
    op.fd = fd;
    op.addr = addr;
    op.addrlen = len;
    op.timeout = timeout;
    return op;
}

// A timer. Returns 0 when it expired, -ECANCELED when woken early by wake().
// Waking is done by removing the timeout, so the coroutine always resumes from
// exactly one CQE.
struct sleep_op : completion {
    std::coroutine_handle<> _waiter;
    __kernel_timespec _ts{};
    int _res = 0;
    bool _pending = false;

    explicit sleep_op(milliseconds d) : _ts(to_timespec(d)) {}
    bool await_ready() const noexcept { return false; }
    void await_suspend(std::coroutine_handle<> h) {
        _waiter = h;
        _pending = true;
        io_uring_sqe* s = this_ring().sqe();
        io_uring_prep_timeout(s, &_ts, 0, 0);
        io_uring_sqe_set_data(s, static_cast<completion*>(this));
    }
    int await_resume() const noexcept { return _res == -ETIME ? 0 : _res; }
    void on_cqe(int res, uint32_t) override {
        _res = res;
        _pending = false;
        _waiter.resume();
    }
    // Ends the sleep early (no-op when it already fired).
    void wake() {
        if (!_pending) return;
        io_uring_sqe* s = this_ring().sqe();
        io_uring_prep_timeout_remove(s, reinterpret_cast<__u64>(static_cast<completion*>(this)), 0);
        io_uring_sqe_set_data(s, nullptr);
    }
};

}  // namespace ringmail::engine
