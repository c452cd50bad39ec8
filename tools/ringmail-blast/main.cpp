// ringmail-blast: SMTP load generator (`send`) and counting sink (`sink`) for
// benchmarking and testing ringmail on loopback.
//   ringmail-blast send --to 127.0.0.1:2525 --connections 50 --messages 100000 --size 4096 [--json]
//   ringmail-blast sink --listen 127.0.0.1:10026 [--expect 100000] [--duration 60] [--json]
#include <CLI/CLI.hpp>
#include <cstdio>
#include <string>

#include "tools/ringmail-blast/send.h"
#include "tools/ringmail-blast/sink.h"
#include "tools/cli_parse.h"

using namespace ringmail::blast;

namespace {
// Unsigned options: CLI11 would read "-5" as 2^64 - 5 (an endless run).
const CLI::Validator not_negative(
    [](std::string& text) {
        return !text.empty() && text[0] == '-' ? std::string("must not be negative") : std::string();
    },
    "");
}  // namespace

int main(int argc, char** argv) {
    CLI::App app{"ringmail-blast: SMTP load generator and sink (loopback only)"};
    app.set_version_flag("-V,--version", std::string("ringmail-blast ") + RINGMAIL_VERSION);
    app.require_subcommand(1);

    send_options so;
    auto* send = app.add_subcommand("send", "send mail as fast as possible (or at --rate) and report throughput");
    send->add_option("--to", so.to, "destination host:port (repeatable or comma list; loopback only)")
        ->delimiter(',');
    send->add_option("--connections", so.connections, "concurrent connections")->capture_default_str();
    auto* messages = send->add_option("--messages", so.messages, "messages to send in total")
                         ->check(not_negative);
    auto* duration = send->add_option("--duration", so.duration_s, "send for this many seconds");
    messages->excludes(duration);
    send->add_option("--size", so.size,
                     "message size in bytes, headers included (4096, 4k, 1m; at most 64m; below ~300 a message is "
                     "only its headers) or a distribution 1k:70,16k:25,1m:5 "
                     "(every size with a weight)")
        ->capture_default_str();
    send->add_option("--rcpts", so.rcpts, "recipients per message")->capture_default_str();
    auto* domains = send->add_option("--domains", so.domains, "spread recipients over d1..dN.example.test")
                        ->capture_default_str();
    send->add_option("--domain-list", so.domain_list, "recipient domains, comma list")->excludes(domains);
    send->add_option("--from", so.from, "envelope sender")->capture_default_str();
    send->add_option("--helo", so.helo, "EHLO name")->capture_default_str();
    send->add_option("--pipelining", so.pipelining, "on|off: pipeline MAIL/RCPT/DATA when offered")
        ->check(CLI::IsMember({"on", "off"}))
        ->capture_default_str();
    send->add_flag("--bdat", so.bdat, "use BDAT instead of DATA when CHUNKING is offered");
    send->add_option("--window", so.window,
                     "transactions in flight per connection when PIPELINING is offered: with --bdat up to N whole "
                     "transactions per write; with DATA, N >= 2 pipelines the next message's commands after the "
                     "end-of-data dot (ignored with --rate)")
        ->check(CLI::Range(1u, 1024u))
        ->capture_default_str();
    send->add_option("--rate", so.rate, "open loop: messages per second in total (default: closed loop)");
    send->add_option("--seed", so.seed, "seed for Message-IDs and size picks (default: from the clock, printed at the end)")
        ->check(not_negative);
    send->add_option("--threads", so.threads, "engine shards (connections are split among them)")
        ->capture_default_str();
    send->add_option("--timeout", so.timeout_s, "seconds to wait for any reply or write")->capture_default_str();
    send->add_flag("--json", so.json, "print one JSON object at the end");
    send->add_flag("-q,--quiet", so.quiet, "no progress lines");
    send->add_flag("--allow-failures", so.allow_failures, "exit 0 even if some messages or recipients were refused or lost");
    send->add_flag("--starttls", so.starttls,
                   "STARTTLS after EHLO, then EHLO again; everything after it goes through TLS (no certificate "
                   "check). Exits 1 if the server does not offer STARTTLS");
    send->add_option("--auth", so.auth,
                     "USER:PASSWORD: AUTH PLAIN (or LOGIN when PLAIN is not offered) after EHLO (and STARTTLS); a "
                     "connection not answered 235 ends; exits 1 if none authenticated or AUTH is not offered. "
                     "Without --starttls the password goes in the clear (a warning is printed)");

    sink_options ko;
    auto* sink = app.add_subcommand("sink", "accept and discard mail, verifying checksums and counting");
    sink->add_option("--listen", ko.listen, "address(es) to listen on, comma list (loopback only)")
        ->capture_default_str();
    sink->add_option("--threads", ko.threads, "engine shards (SO_REUSEPORT)")->capture_default_str();
    sink->add_option("--expect", ko.expect,
                     "exit after this many messages were accepted (messages already in flight are still taken; "
                     "JSON: expect_reached_at); 0 = no limit")
        ->check(not_negative);
    sink->add_option("--duration", ko.duration_s, "exit after this many seconds; 0 = no limit");
    sink->add_flag("--json", ko.json, "print one JSON object at the end");
    sink->add_flag("-q,--quiet", ko.quiet, "no progress lines");
    sink->add_option("--tempfail-percent", ko.tempfail_percent, "answer 451 4.7.1 to this share of recipients");
    sink->add_option("--permfail-percent", ko.permfail_percent, "answer 550 5.1.1 to this share of recipients");
    sink->add_option("--drop-percent", ko.drop_percent, "drop the connection mid-DATA for this share of messages");
    sink->add_flag("--greylist", ko.greylist, "answer 451 to the first attempt of each Message-ID");
    sink->add_option("--delay-ms", ko.delay_ms, "delay every reply by this many milliseconds");
    sink->add_option("--max-connections", ko.max_connections, "answer 421 beyond this many connections");
    sink->add_option("--seed", ko.seed, "seed for the failure decisions")
        ->check(not_negative)
        ->capture_default_str();
    sink->add_option("--ids-file", ko.ids_file, "append the Message-ID of each accepted message to this file, one a line (messages without one are not listed; a duplicate is listed again)");
    sink->add_option("--hostname", ko.hostname, "name in the greeting")->capture_default_str();
    sink->add_option("--size-limit", ko.size_limit,
                     "SIZE announced in EHLO; bigger messages get 552 (at MAIL with SIZE=, else at the end)")
        ->check(not_negative)
        ->capture_default_str();

    app.footer(
        "Checksum: X-Blast-Checksum is FNV-1a 64 (16 hex digits) of the unstuffed body after the first CRLFCRLF.\n"
        "Sink signals: TERM/INT print the summary and exit, USR1 prints the summary to stderr.");
    if (auto status = ringmail::tools::parse_command_line(app, "ringmail-blast", argc, argv)) return *status;

    so.seed_given = send->count("--seed") > 0;  // --seed 0 is a seed too
    if (send->parsed()) return run_send(so);
    return run_sink(ko);
}
