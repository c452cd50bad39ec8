// relay_scheduler: one shard's delivery queue towards the smarthost.
//
// Contracts:
// - Owns scheduling only; the message itself stays in the spool. A message id
//   is either ready (waiting for a connection), in flight (one connection
//   owns it), or deferred (due at a time); every id the shard's spool holds
//   is in exactly one of those after start().
// - Outcomes are recorded through the group commit before the next attempt:
//   all recipients done → removed; some temporary failures → envelope
//   updated with attempts, next attempt (exponential back-off with jitter)
//   and last error; permanent failures or expiry → a DSN (RFC 3464) queued
//   to the sender, never to the null sender <>.
// - Connections are pooled per destination (relay.pool_size) and reused
//   while there is work; an idle connection closes after relay.idle_timeout.
// - Shard thread only. flush() and reload come in through shard::post().
#pragma once

#include <cstdint>
#include <deque>
#include <map>
#include <optional>
#include <string>
#include <memory>
#include <random>
#include <vector>

#include "engine/config.h"
#include "engine/io.h"
#include "engine/shard.h"
#include "engine/task.h"
#include "store/envelope.h"
#include "store/group_commit.h"
#include "store/queue_id.h"
#include "store/spool.h"

namespace ringmail::smtp {

class client;

class relay_scheduler {
public:
    relay_scheduler(engine::shard& shard, std::shared_ptr<const config> cfg, store::spool& spool,
                    store::group_commit& commit, store::queue_id_generator& ids);

    // Loads every queued message from the spool and starts the timer.
    void start();
    // A freshly committed message: deliver as soon as a connection is free.
    void enqueue(uint64_t id);
    // Makes every deferred message due now (ringmailctl queue flush).
    void flush();
    void set_config(std::shared_ptr<const config> cfg) { _cfg = std::move(cfg); }
    // Shutdown: no new deliveries; idle connections quit; force() cuts the rest.
    void stop();
    void force_stop();

    size_t ready_count() const { return _ready.size(); }
    size_t deferred_count() const { return _deferred.size(); }

private:
    engine::task<void> timer_loop();
    engine::task<void> connection_loop();
    // One recipient's result of an attempt: code 0 means no answer (temporary).
    struct rcpt_result {
        size_t index;
        int code;
        std::string reply;
    };
    engine::task<bool> deliver(client& c, uint64_t id);
    engine::task<void> defer_without_attempt(uint64_t id, std::string why);
    // Applies the results to the envelope, bounces what failed (DSN), and
    // records the outcome durably; ends `view` once the body is no longer needed.
    engine::task<void> record_attempt(uint64_t id, store::envelope& env, std::vector<rcpt_result>& results,
                                      std::string relay, std::optional<store::read_view>& view,
                                      std::string_view body);
    void kick();
    void schedule(uint64_t id, int64_t due);

    engine::shard& _shard;
    std::shared_ptr<const config> _cfg;
    store::spool& _spool;
    store::group_commit& _commit;
    store::queue_id_generator& _ids;

    std::deque<uint64_t> _ready;
    std::multimap<int64_t, uint64_t> _deferred;  // due (unix s) → id
    unsigned _connections = 0;
    std::vector<engine::sleep_op*> _idle;        // connections waiting for work
    std::vector<client*> _clients;               // open connections, for force_stop
    engine::sleep_op* _timer = nullptr;
    bool _stopping = false;
    std::mt19937_64 _rng;
};

}  // namespace ringmail::smtp
