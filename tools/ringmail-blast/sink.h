// sink: `ringmail-blast sink`, an SMTP server that accepts mail and discards
// it, counting and verifying as it goes.
//
// Contract
//   - Listens on loopback addresses only; one engine::shard per --threads, each
//     with its own SO_REUSEPORT socket per address.
//   - Offers PIPELINING, CHUNKING (BDAT), 8BITMIME, SIZE, ENHANCEDSTATUSCODES.
//     Replies are collected while pipelined input remains and sent when the
//     input runs dry (RFC 2920 §3.1).
//   - A message counts once, when its final reply is 250. Per recipient
//     domain, every accepted recipient of a counted message counts.
//   - Checksums (see common.h) are verified on the unstuffed body of messages
//     that carry X-Blast-Checksum; others are counted but not verified.
//   - Duplicates: a counted message whose Message-ID (64-bit hash of the
//     header value) was counted before. Greylisting remembers Message-IDs the
//     same way (a collision can only make a first attempt pass).
//   - Failure decisions (--tempfail-percent, --permfail-percent,
//     --drop-percent) are a hash of --seed, the shard and a per-shard sequence
//     number: the same arrival order gives the same decisions.
//   - Stops on SIGTERM/SIGINT, after --duration seconds or when --expect
//     messages were counted; prints the summary then (and on SIGUSR1).
#pragma once

#include <cstdint>
#include <string>

namespace ringmail::blast {

struct sink_options {
    std::string listen = "127.0.0.1:10026";  // comma list
    unsigned threads = 1;
    uint64_t expect = 0;        // 0: no limit
    double duration_s = 0;      // 0: no limit
    bool json = false;
    bool quiet = false;
    double tempfail_percent = 0;
    double permfail_percent = 0;
    double drop_percent = 0;
    bool greylist = false;
    unsigned delay_ms = 0;
    unsigned max_connections = 0;  // 0: no limit
    uint64_t seed = 1;
    std::string ids_file;
    uint64_t size_limit = 100 * 1024 * 1024;
    std::string hostname = "sink.blast.test";
};

// Runs the sink until it is told to stop; returns the process exit code.
int run_sink(const sink_options& opts);

}  // namespace ringmail::blast
