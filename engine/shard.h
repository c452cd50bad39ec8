// shard: one thread, pinned to one core, with its own io_uring, provided
// buffers, chunk pool and listener sockets (SO_REUSEPORT). Nothing on the hot
// path is shared between shards.
//
// Threads: start(), post(), request_stop() and join() are called from the
// main thread; everything else runs on the shard's own thread. post() is the
// control plane (reload, flush): a mutex-protected queue woken by an eventfd,
// never used per message.
//
// Shutdown: request_stop() cancels the accepts and runs the on_stop hooks
// (sessions finish their current transaction, outbound connections close).
// The thread exits when every held task has released, or when the force
// deadline passes (force hooks then close whatever is left).
#pragma once

#include <atomic>
#include <chrono>
#include <functional>
#include <memory>
#include <mutex>
#include <thread>
#include <vector>

#include "engine/buffer_ring.h"
#include "engine/chunk_pool.h"
#include "engine/net_address.h"
#include "engine/ring.h"

namespace ringmail::engine {

struct shard_options {
    unsigned ring_entries = 4096;
    unsigned recv_buffers = 1024;       // power of two
    size_t recv_buffer_bytes = 16 * 1024;
    std::chrono::milliseconds shutdown_timeout{10000};
};

class shard {
public:
    using accept_fn = std::function<void(int fd)>;

    shard(unsigned index, int cpu, shard_options opts);
    ~shard();
    shard(const shard&) = delete;
    shard& operator=(const shard&) = delete;

    // Main thread. `setup` runs first on the new thread (create services, call listen()).
    void start(std::function<void(shard&)> setup);
    void post(std::function<void(shard&)> fn);
    void request_stop();
    void join();
    // True once setup has run (or failed: see setup_error()).
    bool wait_ready();
    const std::string& setup_error() const { return _setup_error; }

    // Shard thread only.
    unsigned index() const { return _index; }
    ring& io() { return *_ring; }
    buffer_ring& buffers() { return *_buffers; }
    chunk_pool& chunks() { return _chunks; }
    bool stopping() const { return _stopping; }
    void set_shutdown_timeout(std::chrono::milliseconds t) { _opts.shutdown_timeout = t; }
    // Takes ownership of a bound, listening socket and accepts on it (multishot).
    void listen(int listen_fd, accept_fn on_accept);
    void on_stop(std::function<void()> hook) { _stop_hooks.push_back(std::move(hook)); }
    void on_force_stop(std::function<void()> hook) { _force_hooks.push_back(std::move(hook)); }
    // A task that must finish before the shard's thread exits.
    void hold() { ++_holds; }
    void release() { --_holds; }

    // The shard running on the calling thread (nullptr elsewhere).
    static shard* current();

private:
    struct listener;
    struct control_reader;

    void thread_main(std::function<void(shard&)> setup);
    void begin_stop();
    void run_control();

    unsigned _index;
    int _cpu;
    shard_options _opts;
    std::thread _thread;
    std::unique_ptr<ring> _ring;
    std::unique_ptr<buffer_ring> _buffers;
    chunk_pool _chunks;
    std::vector<std::unique_ptr<listener>> _listeners;
    std::unique_ptr<control_reader> _control;
    std::vector<std::function<void()>> _stop_hooks, _force_hooks;
    int _holds = 0;
    bool _stopping = false;

    int _event_fd = -1;
    std::mutex _mutex;
    std::vector<std::function<void(shard&)>> _inbox;
    std::atomic<bool> _stop_requested{false};
    std::atomic<int> _ready{0};  // 0 = starting, 1 = ready, -1 = setup failed
    std::string _setup_error;
};

// Creates a non-blocking TCP listening socket with SO_REUSEPORT bound to addr.
// Throws std::runtime_error with a clear message on failure.
int make_listen_socket(const net::socket_address& addr, int backlog = 4096);

// One SO_REUSEPORT listening socket per shard on `addr`, which is first
// checked to be free: SO_REUSEPORT would otherwise let a second process of
// the same user (another ringmaild) join the port and take half its
// connections. A port 0 becomes the one the kernel picked, shared by all
// (addr is updated). Throws std::runtime_error ("... Address already in use").
std::vector<int> make_listen_group(net::socket_address& addr, unsigned count, int backlog = 4096);

}  // namespace ringmail::engine
