// relay_scheduler: one shard's delivery, to the smarthost or by MX.
//
// Contracts:
// - Owns scheduling only; the message itself stays in the spool. A queued
//   message id is waiting (to be activated), active (its envelope in memory,
//   jobs routed or in flight), or deferred (due at a time); every id the
//   shard's spool holds is in exactly one of those after start(). At most
//   `active_limit` messages are active, so memory does not grow with the queue.
// - Routing: with relay.smarthost set, one job per message (all pending
//   recipients) to the smarthost destination. Otherwise pending recipients
//   are grouped by domain; each domain is resolved (MX, then A/AAAA, through
//   the shard's DNS cache) to a destination, and split into transactions of
//   at most the destination's max_recipients. Null MX bounces with
//   556 5.1.10, a non-existent domain with 550 5.1.2; a DNS failure defers.
// - [[egress]]: each message gets a source address (and EHLO name) by its
//   sender's domain, stable across retries; destinations are per source.
// - TLS: STARTTLS per relay.tls (or the destination's [[shaping]] tls);
//   opportunistic falls back to plain text on the same host after a failed
//   handshake, required defers. The log line names the TLS version/cipher.
// - Destinations (destination.h) have their own connection cap, messages per
//   connection, message and connection rates, and pause after every host
//   failed (growing from delivery.backoff_min to backoff_max); jobs for a
//   paused destination are deferred at once without a connection. Scheduling
//   work per message is O(1) amortised: no scans of the queue.
// - Outcomes are recorded through the group commit: each finished job updates
//   the envelope (delivered/failed recipients) so a crash never delivers them
//   again; when the message's last job is done it is removed, or rescheduled
//   (exponential back-off with jitter); permanent failures and expiry queue a
//   DSN (RFC 3464) to the sender, never to the null sender <>.
// - Shard thread only. flush() and reload come in through shard::post().
#pragma once

#include <cstdint>
#include <deque>
#include <map>
#include <memory>
#include <optional>
#include <random>
#include <string>
#include <unordered_map>
#include <vector>

#include "engine/config.h"
#include "engine/dns_cache.h"
#include "engine/dns_resolver.h"
#include "engine/io.h"
#include "engine/shard.h"
#include "engine/task.h"
#include "protocols/smtp/client.h"
#include "protocols/smtp/destination.h"
#include "protocols/smtp/dsn.h"
#include "store/envelope.h"
#include "store/group_commit.h"
#include "store/queue_id.h"
#include "store/spool.h"

namespace ringmail::smtp {

class relay_scheduler {
public:
    relay_scheduler(engine::shard& shard, std::shared_ptr<const config> cfg, store::spool& spool,
                    store::group_commit& commit, store::queue_id_generator& ids);
    ~relay_scheduler();

    // Loads every queued message from the spool and starts the timer.
    void start();
    // A freshly committed message: deliver as soon as a connection is free.
    void enqueue(uint64_t id);
    // Makes every deferred message due now and ends destination pauses
    // (ringmailctl queue flush).
    void flush();
    void set_config(std::shared_ptr<const config> cfg);
    // Shutdown: no new deliveries; idle connections quit; force() cuts the rest.
    void stop();
    void force_stop();

    size_t active_count() const { return _active.size(); }
    size_t deferred_count() const { return _deferred.size(); }
    size_t destination_count() const { return _destinations.size(); }
    // False while the spool has less free space than storage_reserve(): new
    // mail is refused at MAIL (452 4.3.1), so that the queue keeps room to
    // record deliveries and remove what it delivered (LMDB needs free pages
    // even to delete). Checked once a second.
    bool queue_has_room() const { return !_storage_low; }
    static uint64_t storage_reserve(const config& cfg);

    static constexpr size_t active_limit = 20'000;

private:
    // A recipient that failed for good in this round and is to be reported to
    // the sender: one DSN per message and round, sent by its last job.
    struct unreported_failure {
        size_t index;             // into env.recipients
        std::string remote_mta;   // "" = local decision (DNS, expiry)
        std::string diagnostic;   // the remote reply, or ours
        dsn_failure failure;
    };
    struct message_state {
        store::envelope env;
        unsigned outstanding = 0;  // jobs routed or in flight
        int egress = -1;           // [[egress]] index, -1 = none
        std::vector<unreported_failure> to_report;
    };
    // One recipient's result: code 0 means no answer (temporary).
    struct rcpt_result {
        size_t index;
        int code;
        std::string reply;   // for the log and the queue listing
        std::string remote;  // the remote server's reply alone, for the DSN ("" = use reply)
    };

    void schedule(uint64_t id, int64_t due);
    void activate_waiting();
    void activate(uint64_t id);
    engine::task<void> route(uint64_t id, std::string domain, std::vector<size_t> recipients);
    engine::task<engine::dns::route> resolve(const std::string& domain);
    destination& destination_for(const engine::dns::route& r, std::string_view domain, int egress);
    destination& smarthost_destination(int egress);
    int egress_for(const store::envelope& env) const;
    client_options options_for(const destination& d, const destination_host& h) const;
    void push_job(destination& d, delivery_job job);
    // Wakes idle connections and opens new ones for d's ready jobs, leaving
    // out `taken_by_caller` jobs a running connection is about to take.
    void kick(destination& d, size_t taken_by_caller = 0);
    engine::task<void> timer_loop();
    engine::task<void> connection_loop(destination& d);
    engine::task<std::unique_ptr<client>> connect(destination& d, std::shared_ptr<const config> cfg);
    engine::task<bool> deliver(client& c, destination& d, delivery_job job);
    // Every recipient of `job` gets the same result (no connection, DNS, pause).
    // `remote`: the server's own reply for the DSN, when `reply` is more;
    // `relay`: the server that gave it ("none": no server was involved).
    engine::task<void> fail_job(delivery_job job, int code, std::string reply, std::string remote = {},
                                std::string relay = "none");
    // Applies a job's results to the message, bounces what failed (DSN),
    // records the outcome durably; ends `view` once the body is not needed.
    // When it was the message's last job, removes or reschedules it.
    static void encode_reporting_later(message_state& st, std::string& out);
    engine::task<void> finish_job(uint64_t id, std::vector<rcpt_result> results, std::string relay,
                                  std::string tls, std::optional<store::read_view> view, store::body_view body);
    engine::task<void> pace(destination& d, int64_t ms);
    void maybe_forget(destination& d);
    void forget_idle_destinations();
    engine::dns::cache* dns();

    engine::shard& _shard;
    std::shared_ptr<const config> _cfg;
    store::spool& _spool;
    store::group_commit& _commit;
    store::queue_id_generator& _ids;

    std::deque<uint64_t> _waiting;                        // due, not yet active
    std::unordered_map<uint64_t, message_state> _active;
    std::multimap<int64_t, uint64_t> _deferred;           // due (unix s) → id
    std::unordered_map<std::string, std::unique_ptr<destination>> _destinations;
    std::vector<client*> _clients;                        // open connections, for force_stop
    std::vector<std::string> _smarthost_keys;  // [egress + 1] -> destination key
    std::shared_ptr<const config> _smarthost_keys_for;
    std::unique_ptr<engine::dns::resolver> _resolver;
    std::unique_ptr<engine::dns::cache> _dns;
    bool _dns_failed = false;
    engine::sleep_op* _timer = nullptr;
    bool _stopping = false;
    bool _storage_low = false;
    void check_storage();
    std::mt19937_64 _rng;
};

}  // namespace ringmail::smtp
