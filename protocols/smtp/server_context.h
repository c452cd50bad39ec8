// server_context: what one shard's SMTP sessions share. Lives on, and is used
// only by, its shard's thread; it outlives every session it serves (the shard
// holds until sessions end before tearing services down).
#pragma once

#include <cstdint>
#include <memory>

#include "engine/chunk_pool.h"
#include "engine/config.h"
#include "engine/connection_limiter.h"
#include "engine/shard.h"
#include "store/group_commit.h"
#include "store/queue_id.h"
#include "store/spool.h"

namespace ringmail::smtp {

class relay_scheduler;
class server_session;

struct server_context {
    engine::shard& shard;
    std::shared_ptr<const config> cfg;  // swapped on reload, on this thread
    store::spool& spool;
    store::group_commit& commit;
    store::queue_id_generator& ids;
    engine::connection_limiter& limiter;
    relay_scheduler& scheduler;

    // Live sessions, for shutdown (intrusive list through server_session).
    server_session* sessions = nullptr;

    // Counters for stats.
    uint64_t messages_received = 0;
    uint64_t connections_accepted = 0;
};

}  // namespace ringmail::smtp
