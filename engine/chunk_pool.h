// chunk_pool / chunk_chain: pooled fixed-size memory for message bodies.
//
// A session receiving a body copies it out of the ring's provided buffers
// (which must go back quickly) into chunks from its shard's pool; the chunks
// are handed to the store as a list of views and copied once more, into the
// LMDB map, at commit. Chunks are recycled per shard, so a steady stream of
// messages allocates nothing. A pool is used by one thread only.
#pragma once

#include <algorithm>
#include <cstddef>
#include <cstring>
#include <string_view>
#include <utility>
#include <vector>

namespace ringmail::engine {

class chunk_pool {
public:
    static constexpr size_t chunk_bytes = 32 * 1024;

    struct chunk {
        chunk* next;
        char data[chunk_bytes];
    };

    explicit chunk_pool(size_t max_idle = 4096) : _max_idle(max_idle) {}
    ~chunk_pool() {
        while (_free) delete std::exchange(_free, _free->next);
    }
    chunk_pool(const chunk_pool&) = delete;
    chunk_pool& operator=(const chunk_pool&) = delete;

    chunk* get() {
        ++_in_use;
        if (_free) {
            --_idle;
            return std::exchange(_free, _free->next);
        }
        return new chunk;  // not value-initialised: no 32 KiB memset per chunk
    }
    void put(chunk* c) {
        --_in_use;
        if (_idle >= _max_idle) {
            delete c;
            return;
        }
        c->next = _free;
        _free = c;
        ++_idle;
    }

    // Bytes of the chunks handed out and not yet put back (bodies being
    // received or waiting for their commit): what [smtp] receive_memory caps.
    size_t in_use_bytes() const { return _in_use * chunk_bytes; }

private:
    chunk* _free = nullptr;
    size_t _in_use = 0;
    size_t _idle = 0;
    size_t _max_idle;
};

// An append-only byte sequence made of pooled chunks.
class chunk_chain {
public:
    explicit chunk_chain(chunk_pool& pool) : _pool(&pool) {}
    ~chunk_chain() { clear(); }
    chunk_chain(chunk_chain&& o) noexcept
        : _pool(o._pool), _chunks(std::move(o._chunks)), _tail_used(o._tail_used), _size(o._size) {
        o._chunks.clear();
        o._tail_used = o._size = 0;
    }
    chunk_chain(const chunk_chain&) = delete;
    chunk_chain& operator=(const chunk_chain&) = delete;

    void append(std::string_view bytes) {
        while (!bytes.empty()) {
            if (_chunks.empty() || _tail_used == chunk_pool::chunk_bytes) {
                _chunks.push_back(_pool->get());
                _tail_used = 0;
            }
            size_t n = std::min(bytes.size(), chunk_pool::chunk_bytes - _tail_used);
            std::memcpy(_chunks.back()->data + _tail_used, bytes.data(), n);
            _tail_used += n;
            _size += n;
            bytes.remove_prefix(n);
        }
    }

    size_t size() const { return _size; }

    // Views of the contents, valid until the chain is cleared or appended to.
    void parts(std::vector<std::string_view>& out) const {
        for (size_t i = 0; i < _chunks.size(); ++i) {
            size_t n = (i + 1 == _chunks.size()) ? _tail_used : chunk_pool::chunk_bytes;
            out.emplace_back(_chunks[i]->data, n);
        }
    }

    // Calls f(view) for each part in order while it returns true.
    template <class F>
    void for_each_part(F&& f) const {
        for (size_t i = 0; i < _chunks.size(); ++i) {
            size_t n = (i + 1 == _chunks.size()) ? _tail_used : chunk_pool::chunk_bytes;
            if (!f(std::string_view(_chunks[i]->data, n))) return;
        }
    }

    // The last `n` bytes (n <= size) copied into `out` — for checks like
    // "does the body end with CRLF" without walking the chain.
    bool ends_with(std::string_view suffix) const {
        if (suffix.size() > _size) return false;
        size_t need = suffix.size();
        size_t ci = _chunks.size();
        size_t used = _tail_used;
        while (need > 0 && ci > 0) {
            --ci;
            size_t n = std::min(need, used);
            if (std::memcmp(_chunks[ci]->data + used - n, suffix.data() + need - n, n) != 0) return false;
            need -= n;
            used = chunk_pool::chunk_bytes;
        }
        return need == 0;
    }

    void clear() {
        for (auto* c : _chunks) _pool->put(c);
        _chunks.clear();
        _tail_used = 0;
        _size = 0;
    }

private:
    chunk_pool* _pool;
    std::vector<chunk_pool::chunk*> _chunks;
    size_t _tail_used = 0;
    size_t _size = 0;
};

}  // namespace ringmail::engine
