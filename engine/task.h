// task<T>: a lazily started C++20 coroutine, and spawn() for detached ones.
//
// Contract:
// - A task starts when it is co_awaited. If it completes before suspending,
//   the awaiter just continues; if it suspended, its completion resumes the
//   awaiter by symmetric transfer from the ring loop. Either way a loop of
//   awaits does not grow the native stack.
// - spawn(task) starts a task that nobody awaits; its frame frees itself at
//   the end. Sessions, listeners and delivery connections are spawned tasks.
// - A frame is never destroyed while it is suspended on an io_uring
//   operation: every operation completes (deadline cancellation by the ring make
//   sure of that), so buffers and SQE arguments kept in the frame stay valid.
// - An exception escaping a spawned task is a bug: it is logged and the
//   process aborts (hot paths return result<> values instead).
#pragma once

#include <coroutine>
#include <cstdio>
#include <cstdlib>
#include <exception>
#include <optional>
#include <utility>

namespace ringmail::engine {

template <class T>
class task;

namespace detail {

struct promise_base {
    std::coroutine_handle<> continuation = std::noop_coroutine();
    bool detached = false;
    bool completed = false;          // reached final_suspend
    bool awaiter_suspended = false;  // the awaiter is suspended, waiting for us

    std::suspend_always initial_suspend() noexcept { return {}; }

    struct final_awaiter {
        bool await_ready() noexcept { return false; }
        template <class P>
        std::coroutine_handle<> await_suspend(std::coroutine_handle<P> h) noexcept {
            auto& p = h.promise();
            if (p.detached) {
                h.destroy();
                return std::noop_coroutine();
            }
            p.completed = true;
            // Finished without ever suspending: the awaiter has not suspended
            // either and simply continues when await_suspend returns false.
            return p.awaiter_suspended ? p.continuation : std::noop_coroutine();
        }
        void await_resume() noexcept {}
    };
    final_awaiter final_suspend() noexcept { return {}; }

    void unhandled_exception() noexcept {
        try {
            throw;
        } catch (const std::exception& e) {
            std::fprintf(stderr, "ringmail: fatal: exception escaped a task: %s\n", e.what());
        } catch (...) {
            std::fprintf(stderr, "ringmail: fatal: unknown exception escaped a task\n");
        }
        std::abort();
    }
};

template <class T>
struct promise : promise_base {
    std::optional<T> value;
    task<T> get_return_object() noexcept;
    template <class U>
    void return_value(U&& v) { value.emplace(std::forward<U>(v)); }
};

template <>
struct promise<void> : promise_base {
    task<void> get_return_object() noexcept;
    void return_void() noexcept {}
};

}  // namespace detail

template <class T = void>
class [[nodiscard]] task {
public:
    using promise_type = detail::promise<T>;
    using handle = std::coroutine_handle<promise_type>;

    explicit task(handle h) noexcept : _h(h) {}
    task(task&& o) noexcept : _h(std::exchange(o._h, {})) {}
    task& operator=(task&& o) noexcept {
        if (this != &o) {
            if (_h) _h.destroy();
            _h = std::exchange(o._h, {});
        }
        return *this;
    }
    task(const task&) = delete;
    task& operator=(const task&) = delete;
    ~task() {
        if (_h) _h.destroy();
    }

    bool await_ready() const noexcept { return false; }
    // Runs the task until it first suspends. A task that completes right away
    // (e.g. a reply already in the buffer) lets the awaiter continue without
    // suspending, so a loop of such awaits never nests stack frames (GCC does
    // not always turn symmetric transfer into a tail call, e.g. under ASan).
    bool await_suspend(std::coroutine_handle<> awaiter) noexcept {
        auto& p = _h.promise();
        p.continuation = awaiter;
        _h.resume();
        if (p.completed) return false;
        p.awaiter_suspended = true;
        return true;
    }
    T await_resume() {
        if constexpr (!std::is_void_v<T>) return std::move(*_h.promise().value);
    }

    // Starts the task detached: the frame destroys itself when it finishes.
    void start_detached() && {
        auto h = std::exchange(_h, {});
        h.promise().detached = true;
        h.resume();
    }

private:
    handle _h;
};

namespace detail {
template <class T>
task<T> promise<T>::get_return_object() noexcept {
    return task<T>{std::coroutine_handle<promise<T>>::from_promise(*this)};
}
inline task<void> promise<void>::get_return_object() noexcept {
    return task<void>{std::coroutine_handle<promise<void>>::from_promise(*this)};
}
}  // namespace detail

// Runs t to its first suspension now; it then continues on the ring's completions.
inline void spawn(task<void> t) { std::move(t).start_detached(); }

}  // namespace ringmail::engine
