// request_deadline: how long an SMTP server session may wait for its next
// read. Like Postfix's smtpd_per_request_deadline, but always on: a timeout
// per read alone lets a client hold a session for ever with one byte every
// few minutes.
//
//  - A command line must arrive whole within command_timeout of the first
//    wait for it, however the client splits it: reads that bring only part
//    of a line do not extend the time. Each complete line starts a fresh
//    deadline (the caller says so with new_request).
//  - Message content (DATA, a BDAT chunk) gets data_timeout, and each byte
//    received extends the deadline by 1/min_data_rate s, never to more than
//    data_timeout from now: a client that keeps up min_data_rate is never cut
//    off, a slower one after about data_timeout. min_data_rate 0 = each read
//    restarts data_timeout (a timeout per read).
//
// No I/O, no clock of its own: the caller passes the ring's time.
#pragma once

#include <algorithm>
#include <chrono>
#include <cstdint>

namespace ringmail::smtp {

struct request_timing {
    std::chrono::milliseconds command_timeout;
    std::chrono::milliseconds data_timeout;
    uint64_t min_data_rate = 0;  // bytes per second; 0 = no rate rule
};

class request_deadline {
public:
    enum class kind : uint8_t { none, command, content };

    // The timeout for the read about to start at now_ms. `reading` is what
    // the read is for; new_request: no part of a command line is held from
    // earlier reads, or a command was completed since the last call.
    std::chrono::milliseconds before_read(kind reading, bool new_request, int64_t now_ms,
                                          const request_timing& t) {
        if (reading != _kind || (reading == kind::command && new_request)) {
            _kind = reading;
            _deadline_ms = now_ms + (reading == kind::content ? t.data_timeout : t.command_timeout).count();
        }
        return std::chrono::milliseconds(std::max<int64_t>(1, _deadline_ms - now_ms));
    }

    // After a read that brought n bytes of message content at now_ms.
    void content_received(uint64_t n, int64_t now_ms, const request_timing& t) {
        const int64_t cap = now_ms + t.data_timeout.count();
        if (t.min_data_rate == 0) {
            _deadline_ms = cap;
            return;
        }
        // n is one read (at most a receive buffer): no overflow.
        const auto credit_ms = static_cast<int64_t>(std::min<uint64_t>(n, uint64_t(1) << 40) * 1000 / t.min_data_rate);
        _deadline_ms = std::min(cap, _deadline_ms + credit_ms);
    }

private:
    kind _kind = kind::none;
    int64_t _deadline_ms = 0;
};

}  // namespace ringmail::smtp
