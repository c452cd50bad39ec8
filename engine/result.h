// result<T, E>: the value-or-error type returned across layer boundaries.
//
// A small stand-in for C++23 std::expected (GCC 12 in C++20 mode lacks it).
// E is a closed per-layer `enum class`; exceptions are used only at start-up
// and for configuration, never on hot paths (see docs/architecture.md).
#pragma once

#include <cassert>
#include <type_traits>
#include <utility>
#include <variant>

namespace ringmail {

template <class E>
struct unexpected {
    E error;
};

template <class E>
unexpected(E) -> unexpected<E>;

template <class T, class E>
class [[nodiscard]] result {
public:
    result(T value) : _v(std::in_place_index<0>, std::move(value)) {}
    result(unexpected<E> e) : _v(std::in_place_index<1>, e.error) {}

    bool ok() const { return _v.index() == 0; }
    explicit operator bool() const { return ok(); }

    T& value() & { assert(ok()); return std::get<0>(_v); }
    const T& value() const& { assert(ok()); return std::get<0>(_v); }
    T&& value() && { assert(ok()); return std::get<0>(std::move(_v)); }
    T* operator->() { return &value(); }
    const T* operator->() const { return &value(); }
    T& operator*() & { return value(); }
    const T& operator*() const& { return value(); }

    E error() const { assert(!ok()); return std::get<1>(_v); }

private:
    std::variant<T, E> _v;
};

// result<void, E>: success carries no value.
template <class E>
class [[nodiscard]] result<void, E> {
public:
    result() = default;
    result(unexpected<E> e) : _err(e.error), _ok(false) {}

    bool ok() const { return _ok; }
    explicit operator bool() const { return _ok; }
    E error() const { assert(!_ok); return _err; }

private:
    E _err{};
    bool _ok = true;
};

}  // namespace ringmail
