#include "protocols/smtp/relay_scheduler.h"

#include <algorithm>
#include <chrono>

#include "engine/log.h"
#include "protocols/smtp/client.h"
#include "protocols/smtp/dsn.h"
#include "store/envelope.h"
#include "store/retry_schedule.h"

namespace ringmail::smtp {

namespace {
int64_t unix_now() {
    return std::chrono::duration_cast<std::chrono::seconds>(std::chrono::system_clock::now().time_since_epoch())
        .count();
}
uint64_t unix_now_us() {
    return std::chrono::duration_cast<std::chrono::microseconds>(
               std::chrono::system_clock::now().time_since_epoch())
        .count();
}
store::retry_policy policy_of(const config& cfg) {
    store::retry_policy p;
    p.min_backoff = std::chrono::duration_cast<std::chrono::seconds>(cfg.queue.min_backoff);
    p.max_backoff = std::chrono::duration_cast<std::chrono::seconds>(cfg.queue.max_backoff);
    p.max_age = std::chrono::duration_cast<std::chrono::seconds>(cfg.queue.max_age);
    p.jitter = cfg.queue.jitter;
    return p;
}
}  // namespace

relay_scheduler::relay_scheduler(engine::shard& shard, std::shared_ptr<const config> cfg, store::spool& spool,
                                 store::group_commit& commit, store::queue_id_generator& ids)
    : _shard(shard), _cfg(std::move(cfg)), _spool(spool), _commit(commit), _ids(ids),
      _rng(std::random_device{}()) {}

void relay_scheduler::start() {
    auto view = _spool.begin_read();
    if (!view) {
        log::error("shard {}: cannot read the queue: {}", _shard.index(), store::to_string(view.error()));
    } else {
        size_t loaded = 0, bad = 0;
        int64_t now = unix_now();
        auto walked = view->for_each_envelope([&](uint64_t id, std::string_view record) {
            _ids.observe(id);
            auto env = store::decode(record);
            if (!env) {
                ++bad;
                log::error("{}: unreadable queue record ({}); left in place", store::to_hex(id).view(),
                           store::to_string(env.error()));
                return;
            }
            schedule(id, env->next_attempt <= now ? 0 : env->next_attempt);
            ++loaded;
        });
        (void)walked;
        if (loaded > 0 || bad > 0)
            log::info("shard {}: {} queued messages scheduled ({} unreadable)", _shard.index(), loaded, bad);
    }
    _shard.hold();
    engine::spawn(timer_loop());
    kick();
}

void relay_scheduler::schedule(uint64_t id, int64_t due) {
    if (due == 0) _ready.push_back(id);
    else _deferred.emplace(due, id);
}

void relay_scheduler::enqueue(uint64_t id) {
    _ready.push_back(id);
    kick();
}

void relay_scheduler::flush() {
    for (auto& [due, id] : _deferred) _ready.push_back(id);
    _deferred.clear();
    kick();
}

void relay_scheduler::kick() {
    if (_stopping || _ready.empty()) return;
    if (!_cfg->relay.smarthost) return;  // MX delivery is a later stage; mail waits in the queue
    // Wake idle connections first, then open new ones up to the pool size.
    size_t want = _ready.size();
    while (want > 0 && !_idle.empty()) {
        _idle.back()->wake();
        _idle.pop_back();
        --want;
    }
    while (want > 0 && _connections < _cfg->relay.pool_size) {
        ++_connections;
        _shard.hold();
        engine::spawn(connection_loop());
        --want;
    }
}

void relay_scheduler::stop() {
    _stopping = true;
    for (auto* s : _idle) s->wake();
    _idle.clear();
    if (_timer) _timer->wake();
}

void relay_scheduler::force_stop() {
    for (auto* c : _clients) c->abort();
}

engine::task<void> relay_scheduler::timer_loop() {
    while (!_stopping) {
        int64_t now = unix_now();
        while (!_deferred.empty() && _deferred.begin()->first <= now) {
            _ready.push_back(_deferred.begin()->second);
            _deferred.erase(_deferred.begin());
        }
        kick();
        engine::sleep_op tick(std::chrono::milliseconds(1000));
        _timer = &tick;
        co_await tick;
        _timer = nullptr;
    }
    _shard.release();
}

engine::task<void> relay_scheduler::connection_loop() {
    auto cfg = _cfg;  // one configuration for the connection's life
    client c(*cfg, *cfg->relay.smarthost);
    _clients.push_back(&c);
    bool ok = co_await c.open();
    if (!ok) {
        // The destination is down: every ready message waits for its next
        // attempt instead of each trying (and failing) a connection of its own.
        log::warning("relay {}: {}", c.peer_name(), c.last_error());
        std::deque<uint64_t> ids;
        ids.swap(_ready);
        for (uint64_t id : ids) co_await defer_without_attempt(id, c.last_error());
    } else {
        // Idle time is counted from the last message: being woken for work
        // that another connection took first does not restart the clock, and
        // does not close the connection either (that churn cost a connect and
        // a close per message under load).
        auto idle_since = std::chrono::steady_clock::now();
        while (!_stopping) {
            if (_ready.empty()) {
                auto left = cfg->relay.idle_timeout - std::chrono::duration_cast<std::chrono::milliseconds>(
                                                          std::chrono::steady_clock::now() - idle_since);
                if (left.count() <= 0) break;
                engine::sleep_op wait(left);
                _idle.push_back(&wait);
                co_await wait;
                auto it = std::find(_idle.begin(), _idle.end(), &wait);
                if (it != _idle.end()) _idle.erase(it);
                continue;
            }
            uint64_t id = _ready.front();
            _ready.pop_front();
            if (!co_await deliver(c, id)) break;
            idle_since = std::chrono::steady_clock::now();
        }
        co_await c.quit();
    }
    _clients.erase(std::find(_clients.begin(), _clients.end(), &c));
    --_connections;
    _shard.release();
    if (!_ready.empty()) kick();
}

// Connection failed before the message was tried: count the attempt, keep
// every recipient pending (or expire it), schedule the retry.
engine::task<void> relay_scheduler::defer_without_attempt(uint64_t id, std::string why) {
    auto view = _spool.begin_read();
    if (!view) {
        schedule(id, unix_now() + 60);
        co_return;
    }
    auto rec = view->envelope_record(id);
    auto body = view->body(id);
    if (!rec || !body) co_return;  // gone (removed meanwhile)
    auto decoded = store::decode(*rec);
    if (!decoded) co_return;
    store::envelope env = std::move(*decoded);
    std::vector<rcpt_result> results;
    for (size_t i = 0; i < env.recipients.size(); ++i)
        if (env.recipients[i].state == store::rcpt_state::pending) results.push_back({i, 0, why});
    std::optional<store::read_view> holder(std::move(*view));
    co_await record_attempt(id, env, results, "none", holder, *body);
}

engine::task<bool> relay_scheduler::deliver(client& c, uint64_t id) {
    auto qid = store::to_hex(id);
    auto view = _spool.begin_read();
    if (!view) {
        log::error("{}: cannot read the queue: {}", qid.view(), store::to_string(view.error()));
        schedule(id, unix_now() + 60);
        co_return true;
    }
    auto rec = view->envelope_record(id);
    auto body = view->body(id);
    if (!rec || !body) {
        log::warning("{}: not in the queue any more", qid.view());
        co_return true;
    }
    auto decoded = store::decode(*rec);
    if (!decoded) {
        log::error("{}: unreadable queue record ({})", qid.view(), store::to_string(decoded.error()));
        co_return true;
    }
    store::envelope env = std::move(*decoded);

    std::vector<size_t> todo;
    for (size_t i = 0; i < env.recipients.size(); ++i)
        if (env.recipients[i].state == store::rcpt_state::pending) todo.push_back(i);

    // The body is sent straight from the map: the read view stays open until
    // the send is done (and the DSN, if any, is built).
    std::vector<delivery_outcome> outcomes;
    bool reusable = co_await c.deliver(outbound_message{&env, todo, *body}, outcomes);

    std::vector<rcpt_result> results;
    results.reserve(todo.size());
    for (size_t k = 0; k < todo.size(); ++k) {
        const auto& o = outcomes[k];
        results.push_back({todo[k], o.code,
                           o.code != 0 ? o.reply : (c.last_error().empty() ? "lost connection" : c.last_error())});
    }
    std::optional<store::read_view> holder(std::move(*view));
    co_await record_attempt(id, env, results, c.peer_name(), holder, *body);
    co_return reusable;
}

engine::task<void> relay_scheduler::record_attempt(uint64_t id, store::envelope& env,
                                                   std::vector<rcpt_result>& results, std::string relay,
                                                   std::optional<store::read_view>& view, std::string_view body) {
    auto qid = store::to_hex(id);
    int64_t now = unix_now();
    int64_t delay = now - env.received_at;
    env.attempts += 1;
    auto policy = policy_of(*_cfg);
    bool is_expired = store::expired(policy, env.received_at, now);
    std::vector<dsn_recipient> report;
    size_t still_pending = 0;
    for (const auto& r : results) {
        auto& rc = env.recipients[r.index];
        rc.last_reply = r.reply;
        auto to = log::escaped(rc.address, 256);
        auto said = log::escaped(r.reply, 512);
        if (r.code / 100 == 2) {
            rc.state = store::rcpt_state::delivered;
            log::info("{}: to=<{}> relay={} delay={} status=sent ({})", qid.view(), to, relay, delay, said);
            continue;
        }
        if (r.code / 100 == 5 || is_expired) {
            rc.state = store::rcpt_state::failed;
            bool permanent = r.code / 100 == 5;
            log::info("{}: to=<{}> relay={} delay={} status={} ({})", qid.view(), to, relay, delay,
                      permanent ? "bounced" : "expired, returned to sender", said);
            if (should_bounce(env, rc))
                report.push_back(dsn_recipient{rc.address, rc.orcpt, relay == "none" ? std::string_view() : std::string_view(relay), rc.last_reply,
                                               permanent ? dsn_failure::permanent : dsn_failure::expired});
            continue;
        }
        ++still_pending;
        env.last_error = r.reply;
        log::info("{}: to=<{}> relay={} delay={} status=deferred ({})", qid.view(), to, relay, delay, said);
    }

    // Bounce first, then record the outcome: a crash in between gives a
    // duplicate DSN at worst, never a lost one.
    std::string dsn;
    uint64_t dsn_id = 0;
    if (!report.empty()) {
        dsn_id = _ids.next(unix_now_us());
        dsn = build_dsn(dsn_input{_cfg->server.hostname, env, report, body, now, dsn_id,
                                  dsn_default_max_attached_bytes});
    }
    // Everything that needs the stored body is done: end the read transaction
    // before waiting on commits, so old pages can be reused.
    view.reset();
    if (!dsn.empty()) {
        store::envelope denv;
        denv.id = dsn_id;
        denv.received_at = now;
        denv.client_address = "local";
        denv.helo = _cfg->server.hostname;
        denv.size = dsn.size();
        denv.is_dsn = true;
        denv.next_attempt = now;
        denv.recipients.emplace_back().address = env.sender;
        std::string drec;
        store::encode(denv, drec);
        std::string_view part = dsn;
        auto r = co_await _commit.commit(store::spool_op{store::spool_op::kind::put, dsn_id, drec, {&part, 1}});
        if (r) {
            log::info("{}: sender non-delivery notification: {}", qid.view(), store::to_hex(dsn_id).view());
            enqueue(dsn_id);
        } else {
            log::error("{}: cannot queue the bounce: {}", qid.view(), store::to_string(r.error()));
        }
    }

    result<void, store::spool_error> r{};
    if (still_pending == 0) {
        r = co_await _commit.commit(store::spool_op{store::spool_op::kind::remove, id, {}, {}});
        if (r) log::info("{}: removed", qid.view());
    } else {
        std::uniform_real_distribution<double> u(0.0, 1.0);
        env.next_attempt = now + store::next_delay(policy, env.attempts, u(_rng)).count();
        std::string record;
        store::encode(env, record);
        r = co_await _commit.commit(store::spool_op{store::spool_op::kind::update, id, record, {}});
        schedule(id, env.next_attempt);
    }
    if (!r) log::error("{}: cannot record the delivery outcome: {}", qid.view(), store::to_string(r.error()));
}

}  // namespace ringmail::smtp
