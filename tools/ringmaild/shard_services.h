// shard_services: the per-shard objects ringmaild wires together (spool,
// group commit, relay scheduler, SMTP server context), created on the shard's
// thread by setup() and destroyed on the main thread after the shard's thread
// has ended.
#pragma once

#include <memory>
#include <optional>
#include <vector>

#include "engine/config.h"
#include "engine/connection_limiter.h"
#include "engine/shard.h"
#include "protocols/smtp/relay_scheduler.h"
#include "protocols/smtp/server_context.h"
#include "store/group_commit.h"
#include "store/queue_id.h"
#include "store/spool.h"

namespace ringmail::daemon {

struct shard_services {
    std::optional<store::spool> spool;
    std::unique_ptr<store::group_commit> commit;
    std::unique_ptr<store::queue_id_generator> ids;
    std::unique_ptr<smtp::relay_scheduler> scheduler;
    std::unique_ptr<smtp::server_context> smtp;

    // On the shard's thread: opens the spool and starts delivery. Throws
    // std::runtime_error on failure.
    void setup(engine::shard& shard, std::shared_ptr<const config> cfg, engine::connection_limiter& limiter);
    // On the shard's thread, once every shard is set up: accept on these sockets.
    void listen(engine::shard& shard, const std::vector<int>& listen_fds);
    // On the shard's thread (through shard::post): apply a reloaded config.
    void reload(engine::shard& shard, std::shared_ptr<const config> cfg);
};

// The spool directory of shard `index`.
std::string shard_dir(const config& cfg, unsigned index);

}  // namespace ringmail::daemon
