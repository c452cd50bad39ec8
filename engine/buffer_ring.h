// buffer_ring: a provided-buffer ring (io_uring_register_buf_ring) per shard.
//
// Receives pick a buffer from the group; the session that got it must hand it
// back with recycle() as soon as it has consumed the bytes (copied the few it
// keeps into its own memory). A dry ring makes every receive on the shard fail
// with -ENOBUFS, so buffers are never held across an await.
#pragma once

#include <liburing.h>

#include <cstddef>
#include <cstdint>
#include <string_view>

#include "engine/ring.h"

namespace ringmail::engine {

class buffer_ring {
public:
    // count must be a power of two (kernel requirement), at most 32768.
    buffer_ring(ring& r, uint16_t group_id, unsigned count, size_t buffer_bytes);
    ~buffer_ring();
    buffer_ring(const buffer_ring&) = delete;
    buffer_ring& operator=(const buffer_ring&) = delete;

    uint16_t group() const { return _group; }
    std::string_view view(int buffer_id, size_t len) const {
        return {_memory + size_t(buffer_id) * _buffer_bytes, len};
    }
    // Gives the buffer back to the kernel.
    void recycle(int buffer_id);

private:
    ring& _ring;
    io_uring_buf_ring* _br = nullptr;
    char* _memory = nullptr;
    size_t _ring_bytes = 0;
    size_t _buffer_bytes;
    unsigned _count;
    uint16_t _group;
};

}  // namespace ringmail::engine
