#include "engine/shard.h"

#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <sched.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <stdexcept>
#include <string>

#include "engine/log.h"

namespace ringmail::engine {

namespace {
thread_local shard* current_shard = nullptr;
}

shard* shard::current() { return current_shard; }

// Multishot accept on one listening socket; re-armed when the kernel ends it.
struct shard::listener final : completion {
    shard* owner;
    int fd;
    accept_fn on_accept;
    bool closed = false;

    void arm() {
        io_uring_sqe* s = owner->io().sqe();
        io_uring_prep_multishot_accept(s, fd, nullptr, nullptr, SOCK_CLOEXEC);
        io_uring_sqe_set_data(s, static_cast<completion*>(this));
    }
    void on_cqe(int res, uint32_t flags) override {
        if (res >= 0) {
            if (closed) {
                ::close(res);
            } else {
                on_accept(res);
            }
        } else if (res != -ECANCELED && res != -EBADF) {
            log::warning("accept failed: {}", std::strerror(-res));
        }
        if (!(flags & IORING_CQE_F_MORE) && !closed) arm();
    }
    void stop() {
        closed = true;
        io_uring_sqe* s = owner->io().sqe();
        io_uring_prep_cancel(s, static_cast<completion*>(this), 0);
        io_uring_sqe_set_data(s, nullptr);
        ::close(fd);
    }
};

// Reads the control eventfd and runs posted work.
struct shard::control_reader final : completion {
    shard* owner;
    uint64_t value = 0;
    void arm() {
        io_uring_sqe* s = owner->io().sqe();
        io_uring_prep_read(s, owner->_event_fd, &value, sizeof value, 0);
        io_uring_sqe_set_data(s, static_cast<completion*>(this));
    }
    void on_cqe(int, uint32_t) override {
        owner->run_control();
        arm();
    }
};

shard::shard(unsigned index, int cpu, shard_options opts) : _index(index), _cpu(cpu), _opts(opts) {
    _event_fd = eventfd(0, EFD_CLOEXEC);
    if (_event_fd < 0) throw std::runtime_error("eventfd failed");
}

shard::~shard() {
    if (_thread.joinable()) _thread.join();
    if (_event_fd >= 0) ::close(_event_fd);
}

void shard::start(std::function<void(shard&)> setup) {
    _thread = std::thread([this, setup = std::move(setup)]() mutable { thread_main(std::move(setup)); });
}

bool shard::wait_ready() {
    while (_ready.load() == 0) _ready.wait(0);
    return _ready.load() == 1;
}

void shard::post(std::function<void(shard&)> fn) {
    {
        std::lock_guard lock(_mutex);
        _inbox.push_back(std::move(fn));
    }
    uint64_t one = 1;
    (void)!::write(_event_fd, &one, sizeof one);
}

void shard::request_stop() {
    _stop_requested = true;
    uint64_t one = 1;
    (void)!::write(_event_fd, &one, sizeof one);
}

void shard::join() {
    if (_thread.joinable()) _thread.join();
}

void shard::listen(int listen_fd, accept_fn on_accept) {
    auto l = std::make_unique<listener>();
    l->owner = this;
    l->fd = listen_fd;
    l->on_accept = std::move(on_accept);
    l->arm();
    _listeners.push_back(std::move(l));
}

void shard::run_control() {
    std::vector<std::function<void(shard&)>> work;
    {
        std::lock_guard lock(_mutex);
        work.swap(_inbox);
    }
    for (auto& fn : work) fn(*this);
    if (_stop_requested && !_stopping) begin_stop();
}

void shard::begin_stop() {
    _stopping = true;
    for (auto& l : _listeners) l->stop();
    for (auto& hook : _stop_hooks) hook();
}

void shard::thread_main(std::function<void(shard&)> setup) {
    current_shard = this;
    if (_cpu >= 0) {
        cpu_set_t set;
        CPU_ZERO(&set);
        CPU_SET(_cpu, &set);
        pthread_setaffinity_np(pthread_self(), sizeof set, &set);
    }
    std::string name = "shard-" + std::to_string(_index);
    pthread_setname_np(pthread_self(), name.c_str());
    try {
        _ring = std::make_unique<ring>(_opts.ring_entries);
        set_this_ring(_ring.get());
        _buffers = std::make_unique<buffer_ring>(*_ring, 0, _opts.recv_buffers, _opts.recv_buffer_bytes);
        _control = std::make_unique<control_reader>();
        _control->owner = this;
        _control->arm();
        setup(*this);
    } catch (const std::exception& e) {
        _setup_error = e.what();
        _ready = -1;
        _ready.notify_all();
        return;
    }
    _ready = 1;
    _ready.notify_all();

    using clock = std::chrono::steady_clock;
    clock::time_point force_at{}, give_up_at{};
    bool forced = false;
    log::batch_lines_on_this_thread(true);
    for (;;) {
        _ring->run_once(_stopping ? std::chrono::milliseconds(20) : std::chrono::milliseconds(1000));
        log::flush_lines();
        if (_stop_requested && !_stopping) begin_stop();
        if (!_stopping) continue;
        auto now = clock::now();
        if (force_at == clock::time_point{}) {
            force_at = now + _opts.shutdown_timeout;
            give_up_at = force_at + std::chrono::seconds(5);
        }
        if (_holds <= 0) break;
        if (!forced && now >= force_at) {
            forced = true;
            log::warning("shard {}: shutdown timeout, closing {} remaining tasks", _index, _holds);
            for (auto& hook : _force_hooks) hook();
        }
        if (now >= give_up_at) {
            log::error("shard {}: {} tasks did not finish; exiting anyway", _index, _holds);
            break;
        }
    }
    // Let cancellations complete before the ring goes away.
    for (int i = 0; i < 5; ++i) _ring->run_once(std::chrono::milliseconds(1));
    log::batch_lines_on_this_thread(false);
}

int make_listen_socket(const net::socket_address& addr, int backlog) {
    int fd = ::socket(addr.family(), SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) throw std::runtime_error("socket: " + std::string(std::strerror(errno)));
    int one = 1;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof one);
    if (addr.family() == AF_INET6) setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof one);
    if (::bind(fd, addr.sockaddr_ptr(), addr.length()) < 0) {
        int e = errno;
        ::close(fd);
        throw std::runtime_error("cannot listen on " + addr.to_string() + ": " + std::strerror(e));
    }
    if (::listen(fd, backlog) < 0) {
        int e = errno;
        ::close(fd);
        throw std::runtime_error("listen on " + addr.to_string() + ": " + std::strerror(e));
    }
    return fd;
}

std::vector<int> make_listen_group(net::socket_address& addr, unsigned count, int backlog) {
    if (addr.port() != 0) {
        // A bind without SO_REUSEPORT fails on a port anyone listens on,
        // whatever options that listener set (SO_REUSEADDR still allows
        // TIME_WAIT leftovers of our own earlier run). A process killed a
        // moment ago (kill -9, then a restart) may still hold its listeners
        // while the kernel tears its io_uring down: a busy port is tried
        // again for up to 2 s before it counts as taken.
        for (int attempt = 0;; ++attempt) {
            int probe = ::socket(addr.family(), SOCK_STREAM | SOCK_CLOEXEC, 0);
            if (probe < 0) throw std::runtime_error("socket: " + std::string(std::strerror(errno)));
            int one = 1;
            setsockopt(probe, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
            if (addr.family() == AF_INET6) setsockopt(probe, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof one);
            int rc = ::bind(probe, addr.sockaddr_ptr(), addr.length());
            int e = errno;
            ::close(probe);
            if (rc == 0) break;
            if (e != EADDRINUSE || attempt == 20)
                throw std::runtime_error("cannot listen on " + addr.to_string() + ": " + std::strerror(e));
            ::usleep(100'000);
        }
    }
    std::vector<int> fds;
    try {
        for (unsigned i = 0; i < count; ++i) {
            fds.push_back(make_listen_socket(addr, backlog));
            if (i == 0 && addr.port() == 0) {
                net::socket_address actual;
                actual.set_length(net::socket_address::capacity());
                if (::getsockname(fds[0], actual.sockaddr_ptr(), actual.length_ptr()) == 0) addr.set_port(actual.port());
            }
        }
    } catch (...) {
        for (int fd : fds) ::close(fd);
        throw;
    }
    return fds;
}

}  // namespace ringmail::engine
