// One-off generator for tests/fuzz/corpus/fuzz_store_envelope/: writes a few
// records made by the real encode(). Not built by meson; rerun by hand when
// the record format changes:
//   clang++ -std=c++20 -I. tests/fuzz/gen_envelope_seeds.cpp store/envelope.cpp \
//     -o /tmp/gen_envelope_seeds && /tmp/gen_envelope_seeds tests/fuzz/corpus/fuzz_store_envelope
#include <cstdio>
#include <fstream>
#include <string>

#include "store/envelope.h"

using namespace ringmail::store;

static void write(const std::string& dir, const char* name, const envelope& e) {
    std::string out;
    encode(e, out);
    std::ofstream(dir + "/" + name, std::ios::binary).write(out.data(), static_cast<std::streamsize>(out.size()));
}

int main(int argc, char** argv) {
    if (argc != 2) {
        std::fprintf(stderr, "usage: %s DIR\n", argv[0]);
        return 2;
    }
    const std::string dir = argv[1];

    envelope empty;
    write(dir, "empty", empty);

    envelope e;
    e.id = 0x0123456789abcdefull;
    e.received_at = 1764000000;
    e.client_address = "127.0.0.1";
    e.helo = "client.example.org";
    e.sender = "alice@example.org";
    e.size = 4242;
    e.body = body_type::eight_bit_mime;
    e.ret = dsn_ret::hdrs;
    e.envid = "QQ+2B123";
    e.attempts = 3;
    e.next_attempt = 1764000900;
    e.last_error = "451 4.7.1 Greylisted\r\ninjected: line";
    e.recipients.push_back({"bob@example.net", "rfc822;bob@example.net",
                            notify_success | notify_failure, rcpt_state::pending, ""});
    e.recipients.push_back({"carol@example.net", "", notify_never, rcpt_state::delivered,
                            "250 2.0.0 Ok: queued"});
    e.recipients.push_back({"dave@example.net", "", notify_unset, rcpt_state::failed,
                            "550 5.1.1 unknown\r\n"});
    write(dir, "three_rcpts", e);

    envelope u;
    u.id = 7;
    u.client_address = "::1";
    u.helo = std::string("helo\0with nul", 13);
    u.sender = "";  // null reverse-path: a bounce
    u.smtputf8 = true;
    u.body = body_type::binary_mime;
    u.is_dsn = true;
    u.received_at = -1;
    u.recipients.push_back({"j\xc3\xb6rg@b\xc3\xbc" "cher.example", "utf-8;j\xc3\xb6rg", notify_delay,
                            rcpt_state::pending, ""});
    write(dir, "utf8_dsn", u);
    return 0;
}
