#include "tools/ringmaild/shard_services.h"

#include <stdexcept>

#include "engine/log.h"
#include "protocols/smtp/server_session.h"

namespace ringmail::daemon {

std::string shard_dir(const config& cfg, unsigned index) {
    return cfg.server.data_dir + "/shard-" + std::to_string(index);
}

void shard_services::setup(engine::shard& shard, std::shared_ptr<const config> cfg,
                           engine::connection_limiter& limiter) {
    auto opened = store::spool::open(shard_dir(*cfg, shard.index()), cfg->store.map_size);
    if (!opened) {
        throw std::runtime_error("cannot open the queue in " + shard_dir(*cfg, shard.index()) + ": " +
                                 store::to_string(opened.error()));
    }
    spool.emplace(std::move(*opened));
    commit = std::make_unique<store::group_commit>(*spool, cfg->store.commit_window, cfg->store.commit_max_batch);
    ids = std::make_unique<store::queue_id_generator>(static_cast<uint8_t>(shard.index()));
    scheduler = std::make_unique<smtp::relay_scheduler>(shard, cfg, *spool, *commit, *ids);
    smtp.reset(new smtp::server_context{shard, cfg, *spool, *commit, *ids, limiter, *scheduler});

    scheduler->start();
    auto* ctx = smtp.get();
    auto* sched = scheduler.get();
    auto* gc = commit.get();
    shard.on_stop([ctx, sched, gc, &shard] {
        log::info("shard {}: stopping; {} messages received, {} commits holding {} queue updates, {} ms committing",
                  shard.index(), ctx->messages_received, gc->transactions(), gc->ops(),
                  gc->apply_microseconds() / 1000);
        smtp::stop_sessions(*ctx);
        sched->stop();
    });
    shard.on_force_stop([ctx, sched] {
        smtp::force_close_sessions(*ctx);
        sched->force_stop();
    });
}

void shard_services::listen(engine::shard& shard, const std::vector<int>& listen_fds) {
    auto* ctx = smtp.get();
    for (int fd : listen_fds) {
        shard.listen(fd, [ctx](int client_fd) { engine::spawn(smtp::serve(*ctx, client_fd)); });
    }
}

void shard_services::reload(engine::shard& shard, std::shared_ptr<const config> cfg) {
    shard.set_shutdown_timeout(cfg->server.shutdown_timeout);
    commit->set_batching(cfg->store.commit_window, cfg->store.commit_max_batch);
    smtp->cfg = cfg;
    scheduler->set_config(cfg);
}

}  // namespace ringmail::daemon
