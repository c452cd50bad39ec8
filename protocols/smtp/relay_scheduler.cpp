#include "protocols/smtp/relay_scheduler.h"

#include <algorithm>
#include <chrono>

#include <fmt/format.h>

#include "engine/log.h"
#include "protocols/smtp/ascii.h"
#include "protocols/smtp/client.h"
#include "protocols/smtp/dsn.h"
#include "protocols/smtp/recipient_domains.h"
#include "protocols/smtp/routing.h"
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
int64_t steady_us() {
    return std::chrono::duration_cast<std::chrono::microseconds>(
               std::chrono::steady_clock::now().time_since_epoch())
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

namespace {
// "mx.example[192.0.2.1]:25" -> "mx.example"; "[2001:db8::1]:25" -> "2001:db8::1";
// "192.0.2.1:25" -> "192.0.2.1".
std::string_view peer_host_name(std::string_view peer) {
    if (peer.starts_with('[')) {
        auto close = peer.find(']');
        return close == std::string_view::npos ? peer : peer.substr(1, close - 1);
    }
    if (auto bracket = peer.find('['); bracket != std::string_view::npos) return peer.substr(0, bracket);
    if (auto colon = peer.rfind(':'); colon != std::string_view::npos) return peer.substr(0, colon);
    return peer;
}
}  // namespace

relay_scheduler::relay_scheduler(engine::shard& shard, std::shared_ptr<const config> cfg, store::spool& spool,
                                 store::group_commit& commit, store::queue_id_generator& ids)
    : _shard(shard), _cfg(std::move(cfg)), _spool(spool), _commit(commit), _ids(ids),
      _rng(std::random_device{}()) {}

relay_scheduler::~relay_scheduler() = default;

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
            if (env->next_attempt <= now) _waiting.push_back(id);
            else _deferred.emplace(env->next_attempt, id);
            ++loaded;
        });
        (void)walked;
        if (loaded > 0 || bad > 0)
            log::info("shard {}: {} queued messages scheduled ({} unreadable)", _shard.index(), loaded, bad);
    }
    _shard.hold();
    engine::spawn(timer_loop());
    activate_waiting();
}

void relay_scheduler::set_config(std::shared_ptr<const config> cfg) {
    _cfg = std::move(cfg);
    // Limits follow the new [delivery] / [[shaping]] at once (a rule index
    // that no longer exists falls back to [delivery]).
    for (auto& [key, d] : _destinations) {
        if (key.starts_with("smarthost ")) continue;  // smarthost_destination() refreshes its own
        if (d->rule < 0 || static_cast<size_t>(d->rule) >= _cfg->shaping.size()) d->set_limits(_cfg->delivery.limits);
        else d->set_limits(_cfg->shaping[static_cast<size_t>(d->rule)].limits);
    }
}

void relay_scheduler::schedule(uint64_t id, int64_t due) {
    if (due == 0) {
        _waiting.push_back(id);
        activate_waiting();
    } else {
        _deferred.emplace(due, id);
    }
}

void relay_scheduler::enqueue(uint64_t id) { schedule(id, 0); }

void relay_scheduler::flush() {
    for (auto& [due, id] : _deferred) _waiting.push_back(id);
    _deferred.clear();
    for (auto& [key, d] : _destinations) {
        d->paused_until_us = 0;
        d->failures = 0;
    }
    // Retry now means ask DNS again too: a remembered SERVFAIL would defer
    // everything once more.
    if (_dns) _dns->clear();
    activate_waiting();
}

void relay_scheduler::activate_waiting() {
    while (!_stopping && !_waiting.empty() && _active.size() < active_limit) {
        uint64_t id = _waiting.front();
        _waiting.pop_front();
        activate(id);
    }
}

void relay_scheduler::activate(uint64_t id) {
    if (_active.count(id)) return;  // already being delivered (flush racing a retry)
    std::optional<store::envelope> env;
    {
        auto view = _spool.begin_read();
        if (!view) {
            log::error("{}: cannot read the queue: {}", store::to_hex(id).view(), store::to_string(view.error()));
            _deferred.emplace(unix_now() + 60, id);
            return;
        }
        auto rec = view->envelope_record(id);
        if (!rec) {  // removed meanwhile (ringmailctl queue delete)
            log::info("{}: no longer in the queue (deleted), not retried", store::to_hex(id).view());
            return;
        }
        auto decoded = store::decode(*rec);
        if (!decoded) {
            log::error("{}: unreadable queue record ({})", store::to_hex(id).view(),
                       store::to_string(decoded.error()));
            return;
        }
        env.emplace(std::move(*decoded));
    }  // the read ends before any routing
    auto& st = _active.emplace(id, message_state{std::move(*env), 0, -1, {}}).first->second;
    st.egress = egress_for(st.env);

    if (_cfg->relay.smarthost) {
        delivery_job job{id, {}};
        for (size_t i = 0; i < st.env.recipients.size(); ++i)
            if (st.env.recipients[i].state == store::rcpt_state::pending) job.recipients.push_back(i);
        st.outstanding = 1;
        push_job(smarthost_destination(st.egress), std::move(job));
        return;
    }
    auto groups = group_pending_by_domain(st.env);
    st.outstanding = static_cast<unsigned>(groups.size());
    if (groups.empty()) {  // nothing pending: just finish it
        st.outstanding = 1;
        engine::spawn(finish_job(id, {}, "none", {}, std::nullopt, {}));
        return;
    }
    for (auto& g : groups) engine::spawn(route(id, std::move(g.domain), std::move(g.recipients)));
}

engine::dns::cache* relay_scheduler::dns() {
    if (_dns || _dns_failed) return _dns.get();
    engine::dns::resolver_options o;
    for (const auto& s : _cfg->dns.servers) o.servers.push_back(s.to_string());
    o.timeout = _cfg->dns.timeout;
    o.tries = static_cast<int>(_cfg->dns.tries);
    o.max_in_flight = _cfg->dns.max_queries_in_flight;
    auto made = engine::dns::resolver::create(o);
    if (!made) {
        log::error("shard {}: cannot start the DNS resolver: {}", _shard.index(), engine::dns::describe(made.error()));
        _dns_failed = true;
        return nullptr;
    }
    _resolver = std::move(*made);
    engine::dns::cache_options co;
    auto secs = [](std::chrono::milliseconds ms) { return std::chrono::duration_cast<std::chrono::seconds>(ms); };
    co.min_ttl = secs(_cfg->dns.min_ttl);
    co.max_ttl = secs(_cfg->dns.max_ttl);
    co.negative_ttl = secs(_cfg->dns.negative_ttl);
    co.temporary_ttl = secs(_cfg->dns.temporary_ttl);
    _dns = std::make_unique<engine::dns::cache>(*_resolver, co);
    return _dns.get();
}

engine::task<engine::dns::route> relay_scheduler::resolve(const std::string& domain) {
    engine::dns::route r;
    if (domain.empty()) {
        r.decision = engine::dns::mx_decision::bounce_nxdomain;
        r.detail = "recipient address has no domain";
        co_return r;
    }
    if (domain.front() == '[') {
        auto literal = address_literal(domain);
        if (!literal) {
            r.decision = engine::dns::mx_decision::bounce_nxdomain;
            r.detail = fmt::format("bad address literal {}", domain);
            co_return r;
        }
        r.decision = engine::dns::mx_decision::deliver;
        r.hosts.push_back(engine::dns::mx_host{domain, 0, {*literal}});
        r.key = domain;
        co_return r;
    }
    auto* cache = dns();
    if (!cache) {
        r.detail = "DNS resolver unavailable";
        co_return r;
    }
    engine::dns::route resolved = co_await cache->resolve(domain);
    co_return resolved;
}

engine::task<void> relay_scheduler::route(uint64_t id, std::string domain, std::vector<size_t> recipients) {
    _shard.hold();
    engine::dns::route r = co_await resolve(domain);
    _shard.release();
    if (_stopping) co_return;  // the message stays queued; the next start routes it again
    using engine::dns::mx_decision;
    if (r.decision == mx_decision::deliver) {
        auto it = _active.find(id);
        destination& d = destination_for(r, domain, it == _active.end() ? -1 : it->second.egress);
        size_t per = std::max<unsigned>(1, d.limits.max_recipients);
        size_t chunks = (recipients.size() + per - 1) / per;
        _active[id].outstanding += static_cast<unsigned>(chunks) - 1;
        for (size_t first = 0; first < recipients.size(); first += per) {
            delivery_job job{id, {}};
            auto end = std::min(recipients.size(), first + per);
            job.recipients.assign(recipients.begin() + static_cast<long>(first), recipients.begin() + static_cast<long>(end));
            push_job(d, std::move(job));
        }
        co_return;
    }
    // Named values, not temporaries inside the co_await expression: GCC 12
    // destroys a conditional operator's temporary there twice.
    int code = 451;
    std::string reply;
    if (r.decision == mx_decision::bounce_null_mx) {
        code = 556;
        reply = fmt::format("556 5.1.10 Recipient address rejected: domain {} does not accept mail (null MX)", domain);
    } else if (r.decision == mx_decision::bounce_nxdomain) {
        code = 550;
        std::string why = r.detail.empty() ? "Name service error for name=" + domain : r.detail;
        reply = fmt::format("550 5.1.2 Host or domain name not found. {}", why);
    } else {
        std::string why = r.detail.empty() ? "temporary DNS failure for " + domain : r.detail;
        reply = fmt::format("451 4.4.3 Host or domain name lookup failed: {}", why);
    }
    delivery_job job{id, std::move(recipients)};
    co_await fail_job(std::move(job), code, std::move(reply));
}

int relay_scheduler::egress_for(const store::envelope& env) const {
    return choose_egress(*_cfg, recipient_domain(env.sender), env.id >> 8);  // low byte: the shard
}

client_options relay_scheduler::options_for(const destination& d, const destination_host& h) const {
    const config& cfg = *_cfg;
    bool smart = d.key.starts_with("smarthost ");
    client_options o = client_options::from_config(cfg.relay, smart ? std::string() : h.name);
    if (d.rule >= 0 && static_cast<size_t>(d.rule) < cfg.shaping.size() && cfg.shaping[static_cast<size_t>(d.rule)].tls)
        o.tls = *cfg.shaping[static_cast<size_t>(d.rule)].tls;
    if (d.egress >= 0 && static_cast<size_t>(d.egress) < cfg.egress.size()) {
        o.source = cfg.egress[static_cast<size_t>(d.egress)].source;
        o.ehlo_name = cfg.egress[static_cast<size_t>(d.egress)].ehlo;
    }
    return o;
}

destination& relay_scheduler::destination_for(const engine::dns::route& r, std::string_view domain, int egress) {
    const config& cfg = *_cfg;
    int rule = shaping_rule_for(cfg, domain, r.hosts);
    std::string key = r.key;
    if (rule >= 0) key += fmt::format("#{}", rule);
    if (egress >= 0) key += fmt::format("@{}", egress);
    auto& slot = _destinations[key];
    if (!slot) {
        slot = std::make_unique<destination>();
        slot->key = key;
        slot->rule = rule;
        slot->egress = egress;
        slot->set_limits(rule < 0 ? cfg.delivery.limits : cfg.shaping[static_cast<size_t>(rule)].limits);
    }
    destination& d = *slot;
    if (d.connections == 0 && d.ready.empty()) {
        // Idle: take the latest answer (TTLs, the order among equal MX).
        d.hosts.clear();
        for (const auto& h : r.hosts) {
            destination_host dh{h.name, h.preference, h.addresses};
            for (auto& a : dh.addresses) a.set_port(cfg.delivery.smtp_port);
            d.hosts.push_back(std::move(dh));
        }
    }
    return d;
}

destination& relay_scheduler::smarthost_destination(int egress) {
    const config& cfg = *_cfg;
    // The keys (one per egress source) are made once per configuration, not per message.
    if (_smarthost_keys_for.get() != &cfg) {
        _smarthost_keys.clear();
        std::string base = "smarthost " + cfg.relay.smarthost->to_string();
        _smarthost_keys.push_back(base);
        for (size_t i = 0; i < cfg.egress.size(); ++i) _smarthost_keys.push_back(fmt::format("{}@{}", base, i));
        _smarthost_keys_for = _cfg;  // held, so its address cannot be reused by a newer one
    }
    const std::string& key = _smarthost_keys[static_cast<size_t>(egress + 1)];
    auto& slot = _destinations[key];
    if (!slot) {
        slot = std::make_unique<destination>();
        slot->key = key;
        slot->egress = egress;
        slot->hosts.push_back(destination_host{cfg.relay.smarthost->host_string(), 0, {*cfg.relay.smarthost}});
    }
    destination_limits l = cfg.delivery.limits;
    l.max_connections = cfg.relay.pool_size;
    if (!(slot->limits == l)) slot->set_limits(l);
    return *slot;
}

void relay_scheduler::push_job(destination& d, delivery_job job) {
    if (d.paused(steady_us())) {
        engine::spawn(fail_job(std::move(job), 0, fmt::format("delivery temporarily suspended: {}", d.pause_reason)));
        return;
    }
    d.ready.push_back(std::move(job));
    kick(d);
}

void relay_scheduler::kick(destination& d, size_t taken_by_caller) {
    if (_stopping || d.ready.size() <= taken_by_caller) return;
    // Wake idle connections first, then open new ones up to the cap.
    size_t want = d.ready.size() - taken_by_caller;
    while (want > 0 && !d.idle.empty()) {
        d.idle.back()->wake();
        d.idle.pop_back();
        --want;
    }
    unsigned cap = d.proven ? d.limits.max_connections : 1;
    if (d.window != 0) cap = std::min(cap, d.window);
    while (want > 0 && d.connections < cap) {
        ++d.connections;
        _shard.hold();
        engine::spawn(connection_loop(d));
        --want;
    }
}

void relay_scheduler::stop() {
    _stopping = true;
    for (auto& [key, d] : _destinations) {
        for (auto* s : d->idle) s->wake();
        d->idle.clear();
    }
    if (_timer) _timer->wake();
}

void relay_scheduler::force_stop() {
    for (auto* c : _clients) c->abort();
}

// Postfix's rule: room for 1.5 maximum-size messages (64 MiB when unlimited).
uint64_t relay_scheduler::storage_reserve(const config& cfg) {
    uint64_t limit = cfg.smtp.message_size_limit;
    return limit != 0 ? limit + limit / 2 : uint64_t(64) << 20;
}

void relay_scheduler::check_storage() {
    auto free = _spool.free_bytes();
    if (!free) return;  // keep the last verdict
    uint64_t reserve = storage_reserve(*_cfg);
    bool low = *free < reserve;
    if (low && !_storage_low)
        log::warning("shard {}: queue storage low ({} KiB free, {} KiB reserved): refusing new mail with 452 4.3.1 "
                     "until deliveries free space (or raise [store] map_size, or free disk space)",
                     _shard.index(), *free / 1024, reserve / 1024);
    else if (!low && _storage_low)
        log::info("shard {}: queue storage available again ({} KiB free): accepting mail", _shard.index(),
                  *free / 1024);
    _storage_low = low;
}

engine::task<void> relay_scheduler::timer_loop() {
    unsigned ticks = 0;
    while (!_stopping) {
        int64_t now = unix_now();
        check_storage();
        if (++ticks % 60 == 0) forget_idle_destinations();
        while (!_deferred.empty() && _deferred.begin()->first <= now) {
            _waiting.push_back(_deferred.begin()->second);
            _deferred.erase(_deferred.begin());
        }
        activate_waiting();
        engine::sleep_op tick(std::chrono::milliseconds(1000));
        _timer = &tick;
        co_await tick;
        _timer = nullptr;
    }
    _shard.release();
}

// Tries the destination's hosts in order, each address in order (IPv6, then
// IPv4), until one greets; nullptr when none did.
engine::task<std::unique_ptr<client>> relay_scheduler::connect(destination& d, std::shared_ptr<const config> cfg) {
    auto hosts = d.hosts;  // the list may be replaced while we wait
    d.loop_reason.clear();
    d.refusal_code = 0;
    // RFC 5321 §5.1: random order among equal preferences, drawn per
    // connection so the load spreads over them (the list is sorted).
    for (size_t i = 0; i < hosts.size();) {
        size_t j = i;
        while (j < hosts.size() && hosts[j].preference == hosts[i].preference) ++j;
        std::shuffle(hosts.begin() + static_cast<long>(i), hosts.begin() + static_cast<long>(j), _rng);
        i = j;
    }
    // Postfix's smtp_mx_address_limit: a destination whose hosts all time out
    // must not hold a connection slot for hosts x addresses x connect_timeout.
    const unsigned limit = cfg->delivery.max_mx_addresses;
    unsigned tried = 0;
    for (const auto& h : hosts) {
        for (const auto& a : h.addresses) {
            if (_stopping) co_return nullptr;
            if (limit != 0 && tried++ == limit) {
                log::info("delivery to {}: {} addresses tried, the limit ([delivery] max_mx_addresses)", d.key, limit);
                co_return nullptr;
            }
            client_options options = options_for(d, h);
            std::string peer = h.name != a.host_string() ? fmt::format("{}[{}]:{}", h.name, a.host_string(), a.port())
                                                         : a.to_string();
            auto c = std::make_unique<client>(*cfg, a, options);
            c->set_peer_name(peer);
            _clients.push_back(c.get());
            bool ok = co_await c->open();
            _clients.erase(std::find(_clients.begin(), _clients.end(), c.get()));
            if (!ok && c->tls_failed() && options.tls == tls_policy::opportunistic && !_stopping) {
                // Opportunistic TLS: the same host again, in plain text.
                log::info("delivery to {}: {}; retrying without TLS", d.key, c->last_error());
                c = std::make_unique<client>(*cfg, a, options.without_tls());
                c->set_peer_name(peer);
                _clients.push_back(c.get());
                bool plain = co_await c->open();
                _clients.erase(std::find(_clients.begin(), _clients.end(), c.get()));
                ok = plain;
            }
            if (ok) {
                if (!c->tls_description().empty())
                    log::info("{}: TLS connection established: {}", c->peer_name(), c->tls_description());
                co_return c;
            }
            d.pause_reason = c->last_error();
            if (!c->helo_refusal().empty()) {
                // A hard "no" to HELO ends the attempt: as in Postfix (a 5xx
                // from smtp_helo fails the recipients; only soft errors move
                // on to the next MX), whatever order the hosts came in.
                d.refusal_code = std::atoi(c->helo_refusal().c_str());
                d.refusal_reason = c->last_error();
                d.refusal_reply = c->helo_refusal();
                d.refusal_peer = c->peer_name();
                log::info("delivery to {}: {}", d.key, c->last_error());
                co_return nullptr;
            }
            if (!c->loops_back()) {
                log::info("delivery to {}: {}", d.key, c->last_error());
            } else {
                // We are this MX. RFC 5321 §5.1: hosts as preferred as we are,
                // or less, must not be used. Most preferred: the mail has nowhere
                // to go (bounce); else it waits for the better hosts (defer).
                log::warning("delivery to {}: {} (if it is another server, give one of the two another "
                             "[server] hostname)", d.key, c->last_error());
                if (h.preference == hosts.front().preference) d.loop_reason = c->last_error();
                else d.pause_reason = c->last_error() + "; waiting for a more preferred MX host";
                co_return nullptr;
            }
        }
    }
    if (hosts.empty()) d.pause_reason = "no address to connect to";
    co_return nullptr;
}

engine::task<void> relay_scheduler::connection_loop(destination& d) {
    int64_t wait_ms = d.connection_rate.take(steady_us());
    while (wait_ms > 0 && !_stopping) {
        co_await pace(d, wait_ms);
        wait_ms = d.connection_rate.take(steady_us());
    }
    // The clients keep a reference to the configuration: hold it for the
    // connection's life, whatever a SIGHUP does meanwhile.
    std::shared_ptr<const config> cfg = _cfg;
    std::unique_ptr<client> c;
    if (!_stopping) {
        std::unique_ptr<client> opened = co_await connect(d, cfg);
        c = std::move(opened);
    }
    if (!c && !_stopping && !d.loop_reason.empty()) {
        std::deque<delivery_job> jobs;
        jobs.swap(d.ready);
        std::string why = fmt::format("554 5.4.6 {}", d.loop_reason);
        for (auto& job : jobs) co_await fail_job(std::move(job), 554, why);
    } else if (!c && !_stopping && d.proven && d.connections > 1) {
        // Other connections to this destination deliver: it is not down, it
        // takes fewer connections (e.g. "421 too many connections"). As in
        // Postfix, lower the concurrency instead of pausing the destination;
        // the jobs stay for the working connections.
        d.window = d.connections - 1;
        d.window_credit = 0;
        log::info("delivery to {}: at most {} connection(s) for now: {}", d.key, d.window, d.pause_reason);
    } else if (!c && !_stopping && d.refusal_code / 100 == 5) {
        // A host answered HELO with a 5xx: the mail bounces rather than
        // waiting days for a server that said no.
        std::deque<delivery_job> jobs;
        jobs.swap(d.ready);
        int code = d.refusal_code;
        std::string why = d.refusal_reason, remote = d.refusal_reply, relay = d.refusal_peer;
        log::info("delivery to {}: host {} refused to talk to me: {}", d.key, relay, remote);
        for (auto& job : jobs) co_await fail_job(std::move(job), code, why, remote, relay);
    } else if (!c) {
        if (!_stopping) {
            d.window = 0;
            // Every host failed: pause the destination (growing intervals) and
            // defer what waits for it, rather than each job trying on its own.
            // Connections failing together are one failed round: only the
            // first of them lengthens the pause.
            if (!d.paused(steady_us())) d.failures += 1;
            d.proven = false;
            auto base = std::chrono::duration_cast<std::chrono::microseconds>(_cfg->delivery.backoff_min).count();
            auto cap = std::chrono::duration_cast<std::chrono::microseconds>(_cfg->delivery.backoff_max).count();
            int64_t pause = base;
            for (unsigned i = 1; i < d.failures && pause < cap; ++i) pause *= 2;
            pause = std::min(pause, cap);
            if (!d.paused(steady_us())) {
                d.paused_until_us = steady_us() + pause;
                log::warning("destination {} paused for {} s: {}", d.key, pause / 1'000'000, d.pause_reason);
            }
            std::deque<delivery_job> jobs;
            jobs.swap(d.ready);
            std::string why = d.pause_reason;
            for (auto& job : jobs) co_await fail_job(std::move(job), 0, why);
        }
    } else {
        d.failures = 0;
        if (!d.proven) {
            d.proven = true;
            kick(d, 1);  // the probe got through: open the rest (it takes one job itself)
        }
        _clients.push_back(c.get());
        // Idle time is counted from the last message: being woken for work
        // that another connection took first does not restart the clock.
        auto idle_since = std::chrono::steady_clock::now();
        unsigned sent = 0;
        while (!_stopping && sent < d.limits.max_messages_per_connection) {
            if (d.ready.empty()) {
                auto left = _cfg->relay.idle_timeout - std::chrono::duration_cast<std::chrono::milliseconds>(
                                                           std::chrono::steady_clock::now() - idle_since);
                if (left.count() <= 0) break;
                engine::sleep_op wait(left);
                d.idle.push_back(&wait);
                co_await wait;
                auto it = std::find(d.idle.begin(), d.idle.end(), &wait);
                if (it != d.idle.end()) d.idle.erase(it);
                continue;
            }
            int64_t pace_ms = d.message_rate.take(steady_us());
            if (pace_ms > 0) {
                co_await pace(d, pace_ms);
                continue;
            }
            delivery_job job = std::move(d.ready.front());
            d.ready.pop_front();
            ++sent;
            bool reusable = co_await deliver(*c, d, std::move(job));
            if (!reusable) break;
            if (d.window != 0 && ++d.window_credit >= d.window) {
                d.window_credit = 0;
                d.window = d.window + 1 >= d.limits.max_connections ? 0 : d.window + 1;
                if (!d.ready.empty()) kick(d);
            }
            idle_since = std::chrono::steady_clock::now();
        }
        co_await c->quit();
        _clients.erase(std::find(_clients.begin(), _clients.end(), c.get()));
    }
    --d.connections;
    _shard.release();
    if (!d.ready.empty()) kick(d);
    else maybe_forget(d);
}

// Waits for a rate limit's next permit; shutdown (or new work) ends the wait
// early, the caller then asks the limit again.
engine::task<void> relay_scheduler::pace(destination& d, int64_t ms) {
    engine::sleep_op wait{std::chrono::milliseconds(ms)};
    d.idle.push_back(&wait);
    co_await wait;
    auto it = std::find(d.idle.begin(), d.idle.end(), &wait);
    if (it != d.idle.end()) d.idle.erase(it);
}

// Once a minute: paused destinations nobody used since their pause ended.
void relay_scheduler::forget_idle_destinations() {
    int64_t now = steady_us();
    std::erase_if(_destinations, [now](const auto& kv) {
        const destination& d = *kv.second;
        return d.connections == 0 && d.ready.empty() && !d.paused(now);
    });
}

// An unused destination is dropped, unless it is paused (the pause must last).
void relay_scheduler::maybe_forget(destination& d) {
    if (d.connections != 0 || !d.ready.empty() || d.paused(steady_us())) return;
    _destinations.erase(d.key);
}

engine::task<void> relay_scheduler::fail_job(delivery_job job, int code, std::string reply, std::string remote,
                                             std::string relay) {
    std::vector<rcpt_result> results;
    results.reserve(job.recipients.size());
    for (size_t i : job.recipients) results.push_back({i, code, reply, remote});
    co_await finish_job(job.id, std::move(results), std::move(relay), {}, std::nullopt, {});
}

engine::task<bool> relay_scheduler::deliver(client& c, destination& d, delivery_job job) {
    auto it = _active.find(job.id);
    if (it == _active.end()) co_return true;
    const store::envelope& env = it->second.env;  // stable: erased only after this job finishes
    auto view = _spool.begin_read();
    if (!view) {
        // No read transaction (e.g. every reader slot busy): try again later,
        // never drop the job (the message would sit unscheduled until restart).
        std::string why = fmt::format("cannot read the queue: {}", store::to_string(view.error()));
        log::error("{}: {}", store::to_hex(job.id).view(), why);
        co_await fail_job(std::move(job), 0, std::move(why));
        co_return true;
    }
    std::optional<store::body_view> body;
    if (auto b = view->body(job.id)) body = *b;
    if (!body) {
        // Removed meanwhile: nothing to record (an update would recreate it).
        log::warning("{}: not in the queue any more", store::to_hex(job.id).view());
        if (--it->second.outstanding == 0) _active.erase(it);
        co_return true;
    }
    // The body is sent straight from the map: the read view stays open until
    // the send is done (and the DSN, if any, is built).
    std::vector<delivery_outcome> outcomes;
    bool reusable = co_await c.deliver(outbound_message{&env, job.recipients, *body}, outcomes);
    // RFC 5321 §4.5.3.1.10: 452 to a RCPT after others were accepted means
    // "too many recipients": those go in a new transaction right away (as in
    // Postfix), not after a back-off. (452 for all of them is an ordinary
    // deferral: the next hop may be out of storage.)
    bool some_accepted = std::any_of(outcomes.begin(), outcomes.end(), [](const delivery_outcome& o) {
        return o.code / 100 == 2;
    });
    delivery_job again{job.id, {}};
    std::vector<rcpt_result> results;
    results.reserve(job.recipients.size());
    for (size_t k = 0; k < job.recipients.size(); ++k) {
        const auto& o = outcomes[k];
        if (some_accepted && o.code == 452) {
            again.recipients.push_back(job.recipients[k]);
            continue;
        }
        results.push_back({job.recipients[k], o.code,
                           o.code != 0 ? o.reply : (c.last_error().empty() ? "lost connection" : c.last_error()),
                           o.remote});
    }
    if (!again.recipients.empty()) {
        log::info("{}: {} recipient(s) over the recipient limit of {}: sent in a new transaction",
                  store::to_hex(job.id).view(), again.recipients.size(), c.peer_name());
        if (auto a = _active.find(job.id); a != _active.end()) {
            a->second.outstanding += 1;  // before this job counts itself out
            d.ready.push_front(std::move(again));
        }
    }
    std::optional<store::read_view> holder(std::move(*view));
    co_await finish_job(job.id, std::move(results), c.peer_name(), c.tls_description(), std::move(holder), *body);
    co_return reusable;
}

// The envelope as stored while other jobs of the message are still out: the
// recipients that failed in this round are written as pending, since their
// DSN is sent only by the message's last job (a crash before it retries them).
void relay_scheduler::encode_reporting_later(message_state& st, std::string& out) {
    for (const auto& f : st.to_report) st.env.recipients[f.index].state = store::rcpt_state::pending;
    store::encode(st.env, out);
    for (const auto& f : st.to_report) st.env.recipients[f.index].state = store::rcpt_state::failed;
}

engine::task<void> relay_scheduler::finish_job(uint64_t id, std::vector<rcpt_result> results, std::string relay,
                                               std::string tls, std::optional<store::read_view> view,
                                               store::body_view body) {
    // The sent line names the TLS version and cipher when the session was
    // encrypted: "tls=TLSv1.3/TLS_AES_256_GCM_SHA384".
    std::replace(tls.begin(), tls.end(), ' ', '/');
    // The DSN's Remote-MTA is the host's name: "mx.example[192.0.2.1]:25" -> "mx.example".
    std::string_view remote_mta = relay == "none" ? std::string_view() : peer_host_name(relay);
    auto it = _active.find(id);
    if (it == _active.end()) co_return;
    message_state& st = it->second;
    store::envelope& env = st.env;
    auto qid = store::to_hex(id);
    int64_t now = unix_now();
    int64_t delay = now - env.received_at;
    auto policy = policy_of(*_cfg);
    bool is_expired = store::expired(policy, env.received_at, now);
    bool delivered = false;  // some recipient delivered in this job
    for (const auto& r : results) {
        auto& rc = env.recipients[r.index];
        rc.last_reply = r.reply;
        auto to = log::escaped(rc.address, 256);
        auto said = log::escaped(r.reply, 512);
        if (r.code / 100 == 2) {
            rc.state = store::rcpt_state::delivered;
            delivered = true;
            if (tls.empty())
                log::info("{}: to=<{}> relay={} delay={} status=sent ({})", qid.view(), to, relay, delay, said);
            else
                log::info("{}: to=<{}> relay={} delay={} tls={} status=sent ({})", qid.view(), to, relay, delay, tls,
                          said);
            continue;
        }
        if (r.code / 100 == 5 || is_expired) {
            rc.state = store::rcpt_state::failed;
            bool permanent = r.code / 100 == 5;
            log::info("{}: to=<{}> relay={} delay={} status={} ({})", qid.view(), to, relay, delay,
                      permanent ? "bounced" : env.sender.empty() ? "expired" : "expired, returned to sender",
                      said);
            st.to_report.push_back(unreported_failure{r.index, std::string(remote_mta),
                                                      r.remote.empty() ? rc.last_reply : r.remote,
                                                      permanent ? dsn_failure::permanent : dsn_failure::expired});
            continue;
        }
        env.last_error = r.reply;
        log::info("{}: to=<{}> relay={} delay={} status=deferred ({})", qid.view(), to, relay, delay, said);
    }

    if (--st.outstanding > 0) {
        // Other jobs of this message are still out. Record deliveries now, so a
        // crash does not deliver them twice; failures wait for the message's
        // last job, which reports them all in one DSN, and are stored as still
        // pending until then, so a crash retries them rather than losing the
        // bounce.
        view.reset();
        if (!delivered) co_return;
        std::string record;
        encode_reporting_later(st, record);
        auto r = co_await _commit.commit(store::spool_op{store::spool_op::kind::update, id, record, {}});
        if (!r) log::error("{}: cannot record the delivery outcome: {}", qid.view(), store::to_string(r.error()));
        co_return;
    }

    // The message's last job. Bounce first, then record the outcome: a crash
    // in between gives a duplicate DSN at worst, never a lost one.
    std::vector<dsn_recipient> report;
    for (const auto& f : st.to_report) {
        const auto& rc = env.recipients[f.index];
        if (should_bounce(env, rc))
            report.push_back(dsn_recipient{rc.address, rc.orcpt, f.remote_mta, f.diagnostic, f.failure});
    }
    std::string dsn;
    uint64_t dsn_id = 0;
    if (!report.empty()) {
        if (!view) {
            auto opened = _spool.begin_read();
            if (opened) {
                auto b = opened->body(id);
                if (b) body = *b;
                view.emplace(std::move(*opened));
            }
        }
        dsn_id = _ids.next(unix_now_us());
        std::string joined;  // a split message in one piece for the DSN (rare)
        dsn = build_dsn(dsn_input{_cfg->server.hostname, env, report, body.joined(joined), now, dsn_id,
                                  dsn_default_max_attached_bytes});
    }
    // Everything that needs the stored body is done: end the read transaction
    // before waiting on commits, so old pages can be reused.
    view.reset();
    report.clear();
    if (!dsn.empty()) {
        store::envelope denv;
        denv.id = dsn_id;
        denv.received_at = now;
        denv.client_address = "local";
        denv.helo = _cfg->server.hostname;
        denv.size = dsn.size();
        denv.is_dsn = true;
        // The original attached as it came: 8-bit in it makes the DSN 8-bit
        // (BODY=8BITMIME to hops that have it, converted for those that do not).
        denv.body = has_8bit_octets(dsn) ? store::body_type::eight_bit_mime : store::body_type::seven_bit;
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

    // Remove the message, or count the attempt and reschedule it.
    store::envelope done = std::move(_active.find(id)->second.env);
    _active.erase(id);
    bool pending = std::any_of(done.recipients.begin(), done.recipients.end(),
                               [](const store::recipient& rc) { return rc.state == store::rcpt_state::pending; });
    done.attempts += 1;
    result<void, store::spool_error> r{};
    if (!pending) {
        r = co_await _commit.commit(store::spool_op{store::spool_op::kind::remove, id, {}, {}});
        if (r) log::info("{}: removed", qid.view());
    } else {
        std::uniform_real_distribution<double> u(0.0, 1.0);
        done.next_attempt = now + store::next_delay(policy, done.attempts, u(_rng)).count();
        std::string record;
        store::encode(done, record);
        r = co_await _commit.commit(store::spool_op{store::spool_op::kind::update, id, record, {}});
        _deferred.emplace(done.next_attempt, id);
    }
    if (!r) log::error("{}: cannot record the delivery outcome: {}", qid.view(), store::to_string(r.error()));
    activate_waiting();
}

}  // namespace ringmail::smtp
