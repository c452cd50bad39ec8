// ringmaild: the ringmail daemon. Loads the configuration, binds the
// listeners, starts one shard per core and waits for signals:
//   SIGTERM, SIGINT  clean shutdown (stop accepting, finish transactions, exit 0)
//   SIGHUP           reload the configuration (keys needing a restart are reported)
//   SIGUSR1          flush the queue: retry deferred mail now (ringmailctl queue flush)
#include <fcntl.h>
#include <signal.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

// Route operator new/delete to mimalloc, except under AddressSanitizer,
// which must see every allocation to find heap errors.
#if !defined(__SANITIZE_ADDRESS__)
#include <mimalloc-new-delete.h>
#endif

#include <CLI/CLI.hpp>
#include <cstdio>
#include <filesystem>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "engine/config.h"
#include "engine/connection_limiter.h"
#include "engine/log.h"
#include "engine/shard.h"
#include "tools/ringmaild/shard_services.h"
#include "tools/cli_parse.h"

using namespace ringmail;

namespace {

std::shared_ptr<const config> load(const std::string& path) {
    if (path.empty()) return std::make_shared<const config>(load_config_string(default_config_toml, "<embedded default>"));
    return std::make_shared<const config>(load_config_file(path));
}

// Holds an exclusive lock on the pid file so two daemons never share a data_dir.
int lock_pid_file(const std::string& path) {
    int fd = ::open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644);
    if (fd < 0) throw std::runtime_error("cannot open pid file " + path + ": " + std::strerror(errno));
    if (::flock(fd, LOCK_EX | LOCK_NB) != 0) {
        throw std::runtime_error("another ringmaild is running with pid file " + path);
    }
    std::string pid = std::to_string(::getpid()) + "\n";
    if (::ftruncate(fd, 0) != 0 || ::pwrite(fd, pid.data(), pid.size(), 0) != ssize_t(pid.size()))
        throw std::runtime_error("cannot write pid file " + path);
    return fd;
}

}  // namespace

int main(int argc, char** argv) {
    CLI::App app{"ringmaild: high-throughput mail transfer engine (SMTP relay with a durable queue)"};
    std::string config_path;
    bool check_only = false;
    app.add_option("-c,--config", config_path, "configuration file (TOML); default: the embedded default config");
    app.add_flag("--check-config", check_only, "validate the configuration and exit");
    app.set_version_flag("-V,--version", std::string("ringmaild ") + RINGMAIL_VERSION);
    app.footer(
        "Signals: TERM/INT shut down cleanly, HUP reloads the configuration, USR1 retries deferred mail now.\n"
        "Documentation: docs/configuration.md, docs/operations.md");
    if (auto status = tools::parse_command_line(app, "ringmaild", argc, argv)) return *status;

    log::set_program_name("ringmaild");
    std::shared_ptr<const config> cfg;
    try {
        cfg = load(config_path);
    } catch (const config_error& e) {
        std::fprintf(stderr, "ringmaild: configuration error: %s\n", e.what());
        return 2;
    }
    if (check_only) {
        std::printf("configuration ok\n");
        return 0;
    }
    log::set_level(cfg->log.level);

    // Signals are taken synchronously by this thread; shards inherit the mask.
    sigset_t signals;
    sigemptyset(&signals);
    for (int s : {SIGTERM, SIGINT, SIGHUP, SIGUSR1}) sigaddset(&signals, s);
    pthread_sigmask(SIG_BLOCK, &signals, nullptr);
    ::signal(SIGPIPE, SIG_IGN);

    unsigned nshards = shard_count(cfg->server);
    engine::connection_limiter limiter;
    limiter.set_limits(cfg->smtp.max_connections, cfg->smtp.max_connections_per_ip);

    int pid_fd = -1;
    std::vector<std::vector<int>> listen_fds(nshards);
    std::vector<listener_config> bound = cfg->listeners;  // with real ports once bound
    try {
        if (std::error_code ec; (std::filesystem::create_directories(cfg->server.data_dir, ec), ec))
            throw std::runtime_error("server.data_dir " + cfg->server.data_dir + ": cannot create: " + ec.message());
        pid_fd = lock_pid_file(cfg->server.pid_file);
        // Spool directories beyond the shard count would hold mail nobody delivers.
        for (unsigned i = nshards; i < 256; ++i) {
            if (std::filesystem::exists(daemon::shard_dir(*cfg, i))) {
                throw std::runtime_error("data_dir has a queue for shard " + std::to_string(i) + " but only " +
                                         std::to_string(nshards) +
                                         " shards are configured: set server.shards to at least " +
                                         std::to_string(i + 1) + " so its mail is delivered");
            }
        }
        // Every shard binds its own SO_REUSEPORT socket to the same address
        // (a port 0 resolved once, so the log shows the real one).
        for (auto& l : bound) {
            std::vector<int> fds = engine::make_listen_group(l.address, nshards);
            for (unsigned i = 0; i < nshards; ++i) listen_fds[i].push_back(fds[i]);
        }
    } catch (const std::exception& e) {
        std::fprintf(stderr, "ringmaild: %s\n", e.what());
        return 1;
    }

    engine::shard_options opts;
    opts.shutdown_timeout = cfg->server.shutdown_timeout;
    unsigned cores = std::max(1u, std::thread::hardware_concurrency());
    std::vector<std::unique_ptr<engine::shard>> shards;
    std::vector<std::unique_ptr<daemon::shard_services>> services;
    for (unsigned i = 0; i < nshards; ++i) {
        shards.push_back(std::make_unique<engine::shard>(i, static_cast<int>(i % cores), opts));
        services.push_back(std::make_unique<daemon::shard_services>());
    }
    for (unsigned i = 0; i < nshards; ++i) {
        auto* svc = services[i].get();
        shards[i]->start([svc, cfg, &limiter](engine::shard& s) { svc->setup(s, cfg, limiter); });
    }
    bool ok = true;
    for (auto& s : shards) {
        if (!s->wait_ready()) {
            std::fprintf(stderr, "ringmaild: shard %u: %s\n", s->index(), s->setup_error().c_str());
            ok = false;
        }
    }
    if (!ok) {
        for (auto& s : shards) s->request_stop();
        for (auto& s : shards) s->join();
        return 1;
    }
    // Accept only once every shard has its queue open: a client must never get a
    // banner from a daemon that cannot yet take its mail on every shard.
    for (unsigned i = 0; i < nshards; ++i)
        shards[i]->post([svc = services[i].get(), fds = listen_fds[i]](engine::shard& s) { svc->listen(s, fds); });
    for (const auto& l : bound) log::info("listening {} on {}", to_string(l.protocol), l.address.to_string());
    log::info("ringmaild {} ready: {} shards, data_dir {}, {}", RINGMAIL_VERSION, nshards, cfg->server.data_dir,
              cfg->relay.smarthost ? "smarthost " + cfg->relay.smarthost->to_string()
                                   : fmt::format("MX delivery (DNS {}, port {})",
                                                 cfg->dns.servers.empty() ? std::string("from /etc/resolv.conf")
                                                                          : cfg->dns.servers.front().to_string(),
                                                 cfg->delivery.smtp_port));

    for (;;) {
        siginfo_t info{};
        int sig = sigwaitinfo(&signals, &info);
        if (sig < 0) continue;
        if (sig == SIGTERM || sig == SIGINT) {
            log::info("signal {}: shutting down", sig == SIGTERM ? "TERM" : "INT");
            break;
        }
        if (sig == SIGUSR1) {
            log::info("flush requested: retrying deferred mail now");
            for (auto& s : shards)
                s->post([svc = services[s->index()].get()](engine::shard&) { svc->scheduler->flush(); });
            continue;
        }
        if (sig == SIGHUP) {
            std::shared_ptr<const config> fresh;
            try {
                fresh = load(config_path);
            } catch (const config_error& e) {
                log::error("reload failed, keeping the running configuration: {}", e.what());
                continue;
            }
            for (const auto& key : restart_required_changes(*cfg, *fresh))
                log::warning("reload: '{}' changed but needs a restart to take effect", key);
            // Keys needing a restart keep their running values.
            auto merged = std::make_shared<config>(*fresh);
            keep_restart_values(*cfg, *merged);
            cfg = merged;
            log::set_level(cfg->log.level);
            limiter.set_limits(cfg->smtp.max_connections, cfg->smtp.max_connections_per_ip);
            for (auto& s : shards)
                s->post([svc = services[s->index()].get(), cfg](engine::shard& sh) { svc->reload(sh, cfg); });
            log::info("configuration reloaded");
        }
    }

    for (auto& s : shards) s->request_stop();
    for (auto& s : shards) s->join();
    services.clear();
    shards.clear();
    if (pid_fd >= 0) {
        ::unlink(cfg->server.pid_file.c_str());
        ::close(pid_fd);
    }
    log::info("stopped");
    return 0;
}
