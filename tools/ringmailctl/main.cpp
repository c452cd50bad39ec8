// ringmailctl: the admin CLI. Reads the queue straight from the spool (LMDB
// read-only, safe while ringmaild runs) and signals the daemon for actions.
//   ringmailctl [--config FILE] queue [--json]     list queued messages
//   ringmailctl [--config FILE] queue flush        retry deferred mail now
//   ringmailctl [--config FILE] queue show ID      envelope and message (Postfix: postcat -q)
//   ringmailctl [--config FILE] queue delete ID... | - | ALL
//                                                  remove messages from the queue
#include <fcntl.h>
#include <signal.h>
#include <sys/file.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <map>
#include <optional>
#include <span>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include <fmt/format.h>

#include "engine/config.h"
#include "store/envelope.h"
#include "store/queue_id.h"
#include "store/spool.h"
#include "tools/cli_parse.h"

using namespace ringmail;

namespace {

std::string format_time(int64_t t) {
    if (t <= 0) return "-";
    time_t tt = static_cast<time_t>(t);
    tm parts{};
    gmtime_r(&tt, &parts);
    char buf[32];
    std::strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%SZ", &parts);
    return buf;
}

std::string shard_dir(const config& cfg, unsigned i) { return cfg.server.data_dir + "/shard-" + std::to_string(i); }

// A spool opened read-only with a read transaction on it; errors are printed.
struct reading {
    store::spool spool;
    store::read_view view;
};
std::optional<reading> open_for_reading(const std::string& dir) {
    auto sp = store::spool::open_read_only(dir);
    if (!sp) {
        std::fprintf(stderr, "ringmailctl: cannot open %s: %s\n", dir.c_str(), store::to_string(sp.error()));
        return std::nullopt;
    }
    auto view = sp->begin_read();
    if (!view) {
        std::fprintf(stderr, "ringmailctl: cannot read %s: %s\n", dir.c_str(), store::to_string(view.error()));
        return std::nullopt;
    }
    return reading{std::move(*sp), std::move(*view)};
}

int list_queue(const config& cfg, bool json) {
    nlohmann::json messages = nlohmann::json::array();
    size_t count = 0, recipients = 0;
    bool any_spool = false;
    for (unsigned i = 0; i < 256; ++i) {
        std::string dir = shard_dir(cfg, i);
        if (!std::filesystem::exists(dir)) continue;
        any_spool = true;
        auto r = open_for_reading(dir);
        if (!r) return 1;
        auto walked = r->view.for_each_envelope([&](uint64_t id, std::string_view record) {
            auto env = store::decode(record);
            std::string qid(store::to_hex(id).view());
            if (!env) {
                if (json) messages.push_back({{"id", qid}, {"error", store::to_string(env.error())}});
                else std::printf("%s  (unreadable record: %s)\n", qid.c_str(), store::to_string(env.error()));
                ++count;
                return;
            }
            nlohmann::json rcpts = nlohmann::json::array();
            std::vector<std::string> pending;
            for (const auto& r : env->recipients) {
                const char* state = r.state == store::rcpt_state::pending
                                        ? "pending"
                                        : (r.state == store::rcpt_state::delivered ? "delivered" : "failed");
                rcpts.push_back({{"address", r.address}, {"state", state}, {"last_reply", r.last_reply}});
                if (r.state == store::rcpt_state::pending) pending.push_back(r.address);
            }
            ++count;
            recipients += pending.size();
            if (json) {
                messages.push_back({{"id", qid},
                                    {"shard", i},
                                    {"sender", env->sender},
                                    {"recipients", pending},
                                    {"recipient_status", rcpts},
                                    {"size", env->size},
                                    {"received_at", env->received_at},
                                    {"attempts", env->attempts},
                                    {"next_attempt", env->next_attempt},
                                    {"last_error", env->last_error},
                                    {"is_dsn", env->is_dsn}});
            } else {
                std::printf("%s %8llu %s  <%s>\n", qid.c_str(), static_cast<unsigned long long>(env->size),
                            format_time(env->received_at).c_str(), env->sender.c_str());
                std::printf("    attempts %u, next attempt %s%s%s\n", env->attempts,
                            format_time(env->next_attempt).c_str(), env->last_error.empty() ? "" : ", last error: ",
                            env->last_error.c_str());
                for (const auto& a : pending) std::printf("    <%s>\n", a.c_str());
            }
        });
        if (!walked) {
            std::fprintf(stderr, "ringmailctl: cannot walk %s: %s\n", dir.c_str(), store::to_string(walked.error()));
            return 1;
        }
    }
    if (json) {
        nlohmann::json out{{"messages", messages}, {"count", count}, {"recipients", recipients}};
        std::printf("%s\n", out.dump(2).c_str());
    } else if (!any_spool) {
        std::error_code ec;
        auto where = std::filesystem::absolute(cfg.server.data_dir, ec);
        std::printf("Queue is empty (no spool in %s yet)\n", ec ? cfg.server.data_dir.c_str() : where.c_str());
    } else if (count == 0) {
        std::printf("Queue is empty\n");
    } else {
        std::printf("-- %zu message%s, %zu pending recipient%s\n", count, count == 1 ? "" : "s", recipients,
                    recipients == 1 ? "" : "s");
    }
    return 0;
}

// `queue show`: the envelope, then the message as stored (our Received:
// first), byte for byte. Exit 1 when the id is not in the queue.
int show_message(const config& cfg, const std::string& text) {
    auto id = store::parse_hex(text);
    if (!id) {
        std::fprintf(stderr, "ringmailctl: not a queue id (16 hex digits): %s\n", text.c_str());
        return 2;
    }
    std::string dir = shard_dir(cfg, static_cast<unsigned>(*id & 0xff));
    auto qid = store::to_hex(*id);
    if (!std::filesystem::exists(dir + "/data.mdb")) {
        std::fprintf(stderr, "%s: not in the queue\n", qid.view().data());
        return 1;
    }
    auto r = open_for_reading(dir);
    if (!r) return 1;
    auto rec = r->view.envelope_record(*id);
    auto body = r->view.body(*id);
    if (!rec || !body) {
        std::fprintf(stderr, "%s: not in the queue\n", qid.view().data());
        return 1;
    }
    auto env = store::decode(*rec);
    if (!env) {
        std::fprintf(stderr, "%s: unreadable record: %s\n", qid.view().data(), store::to_string(env.error()));
        return 1;
    }
    std::printf("*** ENVELOPE RECORDS %s ***\n", qid.view().data());
    std::printf("message_size: %llu\n", static_cast<unsigned long long>(env->size));
    std::printf("arrival_time: %s\n", format_time(env->received_at).c_str());
    std::printf("client: %s (helo %s)\n", env->client_address.c_str(), env->helo.c_str());
    std::printf("sender: %s\n", env->sender.c_str());
    for (const auto& r : env->recipients) {
        const char* state = r.state == store::rcpt_state::pending
                                ? "pending"
                                : (r.state == store::rcpt_state::delivered ? "delivered" : "failed");
        std::printf("recipient: %s (%s)%s%s\n", r.address.c_str(), state, r.last_reply.empty() ? "" : ": ",
                    r.last_reply.c_str());
    }
    std::printf("attempts: %u, next attempt %s\n", env->attempts, format_time(env->next_attempt).c_str());
    if (!env->last_error.empty()) std::printf("last_error: %s\n", env->last_error.c_str());
    std::printf("*** MESSAGE CONTENTS %s ***\n", qid.view().data());
    for (std::string_view piece : {body->head, body->tail}) {
        if (!piece.empty()) std::fwrite(piece.data(), 1, piece.size(), stdout);
    }
    std::printf("*** END OF MESSAGE %s ***\n", qid.view().data());
    return 0;
}

// `queue delete`: removes messages straight from the spools (LMDB allows a
// second writer process; ringmaild treats a message removed under it as gone:
// recording its outcome neither recreates it nor fails anything else). A
// message being delivered at that moment may still go out. Exit 1 when an id
// was not in the queue.
int delete_messages(const config& cfg, std::vector<std::string> args) {
    bool all = args.size() == 1 && args[0] == "ALL";
    if (args.size() == 1 && args[0] == "-") {  // ids on stdin, e.g. from `queue --json | jq`
        args.clear();
        char buf[4096];
        while (std::fscanf(stdin, "%4095s", buf) == 1) args.emplace_back(buf);
    }
    std::map<unsigned, std::vector<uint64_t>> by_shard;  // the low byte of an id names its shard
    int missing = 0;
    if (!all) {
        for (const auto& a : args) {
            auto id = store::parse_hex(a);
            if (!id) {
                std::fprintf(stderr, "ringmailctl: not a queue id (16 hex digits): %s\n", a.c_str());
                return 2;
            }
            by_shard[static_cast<unsigned>(*id & 0xff)].push_back(*id);
        }
    } else {
        for (unsigned i = 0; i < 256; ++i)
            if (std::filesystem::exists(shard_dir(cfg, i))) by_shard[i];
    }
    size_t removed = 0;
    for (auto& [shard, ids] : by_shard) {
        std::string dir = shard_dir(cfg, shard);
        if (!std::filesystem::exists(dir + "/data.mdb")) {
            for (uint64_t id : ids) std::fprintf(stderr, "%s: not in the queue\n", store::to_hex(id).view().data());
            missing += static_cast<int>(ids.size());
            continue;
        }
        auto sp = store::spool::open(dir, cfg.store.map_size);
        if (!sp) {
            std::fprintf(stderr, "ringmailctl: cannot open %s: %s\n", dir.c_str(), store::to_string(sp.error()));
            return 1;
        }
        std::vector<store::spool_op> ops;
        {
            auto view = sp->begin_read();
            if (!view) {
                std::fprintf(stderr, "ringmailctl: cannot read %s: %s\n", dir.c_str(), store::to_string(view.error()));
                return 1;
            }
            if (all) {
                auto walked = view->for_each_envelope([&](uint64_t id, std::string_view) { ids.push_back(id); });
                if (!walked) {
                    std::fprintf(stderr, "ringmailctl: cannot walk %s: %s\n", dir.c_str(),
                                 store::to_string(walked.error()));
                    return 1;
                }
            }
            for (uint64_t id : ids) {
                if (view->envelope_record(id)) {
                    ops.push_back(store::spool_op{store::spool_op::kind::remove, id, {}, {}});
                } else {
                    std::fprintf(stderr, "%s: not in the queue\n", store::to_hex(id).view().data());
                    ++missing;
                }
            }
        }
        // In transactions of at most 10,000 (ALL on a large queue would
        // overflow one LMDB write transaction).
        for (size_t first = 0; first < ops.size(); first += 10'000) {
            std::span<const store::spool_op> chunk(ops.data() + first, std::min<size_t>(10'000, ops.size() - first));
            if (auto r = sp->apply(chunk); !r) {
                std::fprintf(stderr, "ringmailctl: cannot remove from %s: %s\n", dir.c_str(),
                             store::to_string(r.error()));
                return 1;
            }
            for (const auto& op : chunk) std::printf("%s: removed\n", store::to_hex(op.id).view().data());
            removed += chunk.size();
        }
    }
    std::printf("-- %zu message%s removed\n", removed, removed == 1 ? "" : "s");
    return missing == 0 ? 0 : 1;
}

int flush_queue(const config& cfg) {
    const char* path = cfg.server.pid_file.c_str();
    // ringmaild holds an exclusive lock on its pid file while it runs: a
    // file nobody locks is left over from a daemon that died, and its pid may
    // belong to another process by now.
    int fd = ::open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        std::fprintf(stderr, "ringmailctl: ringmaild is not running (no pid file %s)\n", path);
        return 1;
    }
    bool running = ::flock(fd, LOCK_SH | LOCK_NB) != 0 && errno == EWOULDBLOCK;
    ::close(fd);
    if (!running) {
        std::fprintf(stderr, "ringmailctl: ringmaild is not running (stale pid file %s)\n", path);
        return 1;
    }
    std::ifstream in(cfg.server.pid_file);
    long pid = 0;
    if (!(in >> pid) || pid <= 1) {
        std::fprintf(stderr, "ringmailctl: ringmaild does not seem to run (no pid in %s)\n", path);
        return 1;
    }
    if (::kill(static_cast<pid_t>(pid), SIGUSR1) != 0) {
        std::fprintf(stderr, "ringmailctl: cannot signal ringmaild (pid %ld): %s\n", pid, std::strerror(errno));
        return 1;
    }
    std::printf("flush requested (pid %ld)\n", pid);
    return 0;
}

}  // namespace

int main(int argc, char** argv) {
    CLI::App app{"ringmailctl: administer a ringmail queue"};
    std::string config_path;
    app.add_option("-c,--config", config_path, "ringmaild's configuration file (default: the embedded default)");
    app.set_version_flag("-V,--version", std::string("ringmailctl ") + RINGMAIL_VERSION);
    app.require_subcommand(1);
    auto* queue = app.add_subcommand("queue", "list queued messages (or: queue flush, show, delete)");
    bool json = false;
    queue->add_flag("--json", json, "print JSON");
    auto* flush = queue->add_subcommand("flush", "ask ringmaild to retry deferred mail now");
    auto* show = queue->add_subcommand("show", "print a queued message's envelope and contents (Postfix: postcat -q)");
    std::string show_id;
    show->add_option("id", show_id, "queue id (16 hex digits)")->required();
    auto* del = queue->add_subcommand("delete", "remove messages from the queue (exit 1 if one was not there)");
    std::vector<std::string> delete_ids;
    del->add_option("ids", delete_ids, "queue ids (16 hex digits), - to read them from stdin, or ALL")->required();
    if (auto status = tools::parse_command_line(app, "ringmailctl", argc, argv)) return *status;

    config cfg;
    try {
        cfg = config_path.empty() ? load_config_string(default_config_toml, "<embedded default>")
                                  : load_config_file(config_path);
    } catch (const config_error& e) {
        std::fprintf(stderr, "ringmailctl: configuration error: %s\n", e.what());
        return 2;
    }
    if (flush->parsed()) return flush_queue(cfg);
    if (del->parsed()) return delete_messages(cfg, delete_ids);
    if (show->parsed()) return show_message(cfg, show_id);
    return list_queue(cfg, json);
}
