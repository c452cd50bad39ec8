#include "engine/buffer_ring.h"

#include <sys/mman.h>

#include <cstring>
#include <stdexcept>
#include <string>

namespace ringmail::engine {

buffer_ring::buffer_ring(ring& r, uint16_t group_id, unsigned count, size_t buffer_bytes)
    : _ring(r), _buffer_bytes(buffer_bytes), _count(count), _group(group_id) {
    _ring_bytes = count * sizeof(io_uring_buf);
    void* mem = mmap(nullptr, _ring_bytes, PROT_READ | PROT_WRITE, MAP_ANONYMOUS | MAP_PRIVATE, -1, 0);
    if (mem == MAP_FAILED) throw std::runtime_error("buffer_ring: mmap failed");
    _br = static_cast<io_uring_buf_ring*>(mem);
    io_uring_buf_ring_init(_br);
    io_uring_buf_reg reg{};
    reg.ring_addr = reinterpret_cast<uint64_t>(_br);
    reg.ring_entries = count;
    reg.bgid = group_id;
    int rc = io_uring_register_buf_ring(_ring.raw(), &reg, 0);
    if (rc < 0) throw std::runtime_error(std::string("io_uring_register_buf_ring: ") + std::strerror(-rc));
    void* bufs = mmap(nullptr, count * buffer_bytes, PROT_READ | PROT_WRITE, MAP_ANONYMOUS | MAP_PRIVATE, -1, 0);
    if (bufs == MAP_FAILED) throw std::runtime_error("buffer_ring: mmap of buffers failed");
    _memory = static_cast<char*>(bufs);
    int mask = io_uring_buf_ring_mask(count);
    for (unsigned i = 0; i < count; ++i) {
        io_uring_buf_ring_add(_br, _memory + i * buffer_bytes, static_cast<unsigned>(buffer_bytes),
                              static_cast<unsigned short>(i), mask, static_cast<int>(i));
    }
    io_uring_buf_ring_advance(_br, static_cast<int>(count));
}

buffer_ring::~buffer_ring() {
    io_uring_unregister_buf_ring(_ring.raw(), _group);
    munmap(_br, _ring_bytes);
    munmap(_memory, _count * _buffer_bytes);
}

void buffer_ring::recycle(int buffer_id) {
    io_uring_buf_ring_add(_br, _memory + size_t(buffer_id) * _buffer_bytes, static_cast<unsigned>(_buffer_bytes),
                          static_cast<unsigned short>(buffer_id), io_uring_buf_ring_mask(_count), 0);
    io_uring_buf_ring_advance(_br, 1);
}

}  // namespace ringmail::engine
