// guard_page: copies test input to the very end of a mapping whose next page
// is PROT_NONE, so a parser that reads one byte past its input crashes
// (picohttpparser test.c style).
#pragma once

#include <sys/mman.h>
#include <unistd.h>

#include <cstdlib>
#include <cstring>
#include <string_view>

namespace ringmail::smtp::test {

class guarded_input {
public:
    explicit guarded_input(std::string_view s) {
        const std::size_t page = static_cast<std::size_t>(sysconf(_SC_PAGESIZE));
        const std::size_t data_pages = (s.size() + page - 1) / page + 1;
        _len = (data_pages + 1) * page;
        void* m = mmap(nullptr, _len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        if (m == MAP_FAILED) std::abort();
        _base = static_cast<char*>(m);
        char* guard = _base + data_pages * page;
        if (mprotect(guard, page, PROT_NONE) != 0) std::abort();
        char* start = guard - s.size();
        if (!s.empty()) std::memcpy(start, s.data(), s.size());
        _view = std::string_view(start, s.size());
    }
    ~guarded_input() { munmap(_base, _len); }
    guarded_input(const guarded_input&) = delete;
    guarded_input& operator=(const guarded_input&) = delete;

    std::string_view view() const { return _view; }

private:
    char* _base = nullptr;
    std::size_t _len = 0;
    std::string_view _view;
};

}  // namespace ringmail::smtp::test
