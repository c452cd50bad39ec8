// spool: LMDB-backed durable queue (contract in spool.h).
#include "store/spool.h"

#include <lmdb.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <system_error>

#include "store/body_split.h"
#include "store/queue_id.h"

namespace ringmail::store {

static_assert(std::is_same_v<MDB_dbi, unsigned int>, "spool.h stores MDB_dbi as unsigned");

const char* to_string(spool_error e) {
    switch (e) {
        case spool_error::not_found: return "not found";
        case spool_error::exists: return "already exists";
        case spool_error::full: return "spool full";
        case spool_error::batch_too_large: return "batch too large for one transaction";
        case spool_error::readers_full: return "too many concurrent readers";
        case spool_error::map_resized: return "map grown by another process; reopen";
        case spool_error::io: return "I/O error";
        case spool_error::corrupted: return "spool corrupted";
        case spool_error::incompatible: return "incompatible spool format";
        case spool_error::read_only: return "spool opened read-only";
        case spool_error::invalid_argument: return "invalid argument";
        case spool_error::no_access: return "permission denied";
        case spool_error::other: return "spool error";
    }
    return "unknown spool error";
}

namespace {

constexpr const char* envelope_db_name = "envelope";
constexpr const char* body_db_name = "body";
constexpr const char* tail_db_name = "body_tail";
constexpr unsigned max_named_dbs = 4;
constexpr unsigned max_readers = 16384;  // concurrent read transactions per spool

spool_error classify(int rc) {
    switch (rc) {
        case MDB_NOTFOUND: return spool_error::not_found;
        case MDB_KEYEXIST: return spool_error::exists;
        case MDB_MAP_FULL: return spool_error::full;
        case ENOSPC: return spool_error::full;
        case MDB_TXN_FULL: return spool_error::batch_too_large;
        case MDB_READERS_FULL: return spool_error::readers_full;
        case MDB_MAP_RESIZED: return spool_error::map_resized;
        case EIO: return spool_error::io;
        case MDB_CORRUPTED:
        case MDB_PAGE_NOTFOUND:
        case MDB_PANIC:
            return spool_error::corrupted;
        case MDB_INVALID:
        case MDB_VERSION_MISMATCH:
        case MDB_INCOMPATIBLE:
            return spool_error::incompatible;
        case EACCES:
        case EPERM:
        case EROFS:
            return spool_error::no_access;
        case ENOENT: return spool_error::not_found;
        case EINVAL:
        case MDB_BAD_VALSIZE:
            return spool_error::invalid_argument;
        default: return spool_error::other;
    }
}

unexpected<spool_error> fail(int rc) { return unexpected{classify(rc)}; }

struct spool_dbis {
    MDB_dbi envelope, body, tail;
};

// Aborts a write/read txn unless released (commit path).
struct txn_guard {
    MDB_txn* txn;
    ~txn_guard() {
        if (txn) mdb_txn_abort(txn);
    }
    MDB_txn* release() {
        MDB_txn* t = txn;
        txn = nullptr;
        return t;
    }
};

// Reserves `len` bytes for `key` in `dbi` and copies bytes [from, from + len)
// of the concatenated parts into them: the one copy into the map.
int put_range(MDB_txn* txn, MDB_dbi dbi, MDB_val* key, std::span<const std::string_view> parts, size_t from,
              size_t len) {
    MDB_val val{len, nullptr};
    if (int rc = mdb_put(txn, dbi, key, &val, MDB_NOOVERWRITE | MDB_RESERVE)) return rc;
    char* dst = static_cast<char*>(val.mv_data);
    size_t off = 0;  // where the current part starts
    for (std::string_view part : parts) {
        size_t lo = std::max(off, from), hi = std::min(off + part.size(), from + len);
        if (lo < hi) {
            std::memcpy(dst, part.data() + (lo - off), hi - lo);
            dst += hi - lo;
        }
        off += part.size();
        if (off >= from + len) break;
    }
    return 0;
}

int put_op(MDB_txn* txn, const spool_dbis& dbs, size_t page_size, const spool_op& op) {
    queue_key key_bytes = to_key(op.id);
    MDB_val key{key_bytes.size(), key_bytes.data()};

    switch (op.op) {
        case spool_op::kind::put: {
            MDB_val rec{op.envelope_record.size(), const_cast<char*>(op.envelope_record.data())};
            if (int rc = mdb_put(txn, dbs.envelope, &key, &rec, MDB_NOOVERWRITE)) return rc;
            size_t total = 0;
            for (std::string_view part : op.body_parts) total += part.size();
            size_t head = split_point(op.body_parts, total, page_size);
            if (int rc = put_range(txn, dbs.body, &key, op.body_parts, 0, head)) return rc;
            if (head < total) return put_range(txn, dbs.tail, &key, op.body_parts, head, total - head);
            return 0;
        }
        case spool_op::kind::update: {
            MDB_val existing;
            if (int rc = mdb_get(txn, dbs.envelope, &key, &existing)) return rc == MDB_NOTFOUND ? 0 : rc;
            MDB_val rec{op.envelope_record.size(), const_cast<char*>(op.envelope_record.data())};
            return mdb_put(txn, dbs.envelope, &key, &rec, 0);
        }
        case spool_op::kind::remove: {
            // A body (or tail) missing under a present envelope is tolerated
            // on remove: the goal state (none present) is reached either way.
            for (MDB_dbi dbi : {dbs.envelope, dbs.body, dbs.tail}) {
                if (int rc = mdb_del(txn, dbi, &key, nullptr); rc != 0 && rc != MDB_NOTFOUND) return rc;
            }
            return 0;
        }
    }
    return EINVAL;
}

}  // namespace

// ---- read_view ------------------------------------------------------------

read_view::read_view(read_view&& other) noexcept
    : _txn(std::exchange(other._txn, nullptr)),
      _envelope_dbi(other._envelope_dbi),
      _body_dbi(other._body_dbi),
      _tail_dbi(other._tail_dbi) {}

read_view& read_view::operator=(read_view&& other) noexcept {
    if (this != &other) {
        if (_txn) mdb_txn_abort(_txn);
        _txn = std::exchange(other._txn, nullptr);
        _envelope_dbi = other._envelope_dbi;
        _body_dbi = other._body_dbi;
        _tail_dbi = other._tail_dbi;
    }
    return *this;
}

read_view::~read_view() {
    if (_txn) mdb_txn_abort(_txn);
}

result<std::string_view, spool_error> read_view::get(unsigned dbi, uint64_t id) const {
    if (!_txn) return unexpected{spool_error::invalid_argument};
    queue_key key_bytes = to_key(id);
    MDB_val key{key_bytes.size(), key_bytes.data()};
    MDB_val val;
    if (int rc = mdb_get(_txn, dbi, &key, &val)) return fail(rc);
    return std::string_view{static_cast<const char*>(val.mv_data), val.mv_size};
}

result<body_view, spool_error> read_view::body(uint64_t id) const {
    auto head = get(_body_dbi, id);
    if (!head) return unexpected{head.error()};
    body_view b{*head, {}};
    if (_tail_dbi != 0) {
        auto tail = get(_tail_dbi, id);
        if (tail) {
            b.tail = *tail;
        } else if (tail.error() != spool_error::not_found) {
            return unexpected{tail.error()};
        }
    }
    return b;
}

std::string_view body_view::joined(std::string& scratch) const {
    if (tail.empty()) return head;
    scratch.reserve(size());
    scratch.assign(head);
    scratch.append(tail);
    return scratch;
}

result<std::string_view, spool_error> read_view::envelope_record(uint64_t id) const {
    return get(_envelope_dbi, id);
}

result<void, spool_error> read_view::walk_envelopes(visit_fn visit, void* ctx) const {
    if (!_txn) return unexpected{spool_error::invalid_argument};
    MDB_cursor* cursor;
    if (int rc = mdb_cursor_open(_txn, _envelope_dbi, &cursor)) return fail(rc);
    MDB_val key, val;
    int rc = mdb_cursor_get(cursor, &key, &val, MDB_FIRST);
    while (rc == 0) {
        if (key.mv_size != sizeof(uint64_t)) {
            mdb_cursor_close(cursor);
            return unexpected{spool_error::corrupted};
        }
        uint64_t id = from_key(static_cast<const unsigned char*>(key.mv_data));
        if (!visit(ctx, id, {static_cast<const char*>(val.mv_data), val.mv_size})) break;
        rc = mdb_cursor_get(cursor, &key, &val, MDB_NEXT);
    }
    mdb_cursor_close(cursor);
    if (rc != 0 && rc != MDB_NOTFOUND) return fail(rc);
    return {};
}

result<uint64_t, spool_error> read_view::count() const {
    if (!_txn) return unexpected{spool_error::invalid_argument};
    MDB_stat st;
    if (int rc = mdb_stat(_txn, _envelope_dbi, &st)) return fail(rc);
    return static_cast<uint64_t>(st.ms_entries);
}

// ---- spool ----------------------------------------------------------------

result<spool, spool_error> spool::open(const std::string& dir, size_t map_size_bytes) {
    if (dir.empty() || map_size_bytes == 0) return unexpected{spool_error::invalid_argument};
    std::error_code ec;
    std::filesystem::create_directories(dir, ec);
    if (ec) return fail(ec.value());
    return open_env(dir, map_size_bytes, false);
}

result<spool, spool_error> spool::open_read_only(const std::string& dir) {
    if (dir.empty()) return unexpected{spool_error::invalid_argument};
    return open_env(dir, 0, true);
}

result<spool, spool_error> spool::open_env(const std::string& dir, size_t map_size_bytes,
                                           bool read_only) {
    MDB_env* env;
    if (int rc = mdb_env_create(&env)) return fail(rc);
    // Closes env on every early return below.
    struct env_guard {
        MDB_env* env;
        ~env_guard() {
            if (env) mdb_env_close(env);
        }
    } guard{env};

    if (int rc = mdb_env_set_maxdbs(env, max_named_dbs)) return fail(rc);
    // A delivery keeps its read transaction open while the body is sent from
    // the map, so a shard needs a slot per concurrent delivery (LMDB's
    // default is 126). 64 bytes a slot in the lock file.
    if (int rc = mdb_env_set_maxreaders(env, max_readers)) return fail(rc);
    // Read-only: map size 0 adopts the size recorded by the writer.
    if (!read_only) {
        if (int rc = mdb_env_set_mapsize(env, map_size_bytes)) return fail(rc);
    }
    // Durable: no MDB_NOSYNC / MDB_MAPASYNC / MDB_WRITEMAP (spool.h contract).
    // MDB_NOTLS: read txns are begun and used on threads other than the writer.
    unsigned flags = MDB_NOTLS | (read_only ? MDB_RDONLY : 0u);
    if (int rc = mdb_env_open(env, dir.c_str(), flags, 0600)) return fail(rc);

    int dead = 0;
    if (int rc = mdb_reader_check(env, &dead)) return fail(rc);

    MDB_txn* txn;
    if (int rc = mdb_txn_begin(env, nullptr, read_only ? MDB_RDONLY : 0u, &txn)) return fail(rc);
    txn_guard tg{txn};
    unsigned db_flags = read_only ? 0u : MDB_CREATE;
    MDB_dbi env_dbi, body_dbi, tail_dbi = 0;
    if (int rc = mdb_dbi_open(txn, envelope_db_name, db_flags, &env_dbi)) return fail(rc);
    if (int rc = mdb_dbi_open(txn, body_db_name, db_flags, &body_dbi)) return fail(rc);
    // A spool written before tails existed has none until the daemon opens
    // it for writing; read-only, it is read without.
    if (int rc = mdb_dbi_open(txn, tail_db_name, db_flags, &tail_dbi); rc != 0) {
        if (!(read_only && rc == MDB_NOTFOUND)) return fail(rc);
        tail_dbi = 0;
    }
    MDB_stat st;
    if (int rc = mdb_env_stat(env, &st)) return fail(rc);
    // Commit (also for the read txn) so the dbi handles stay valid env-wide.
    if (int rc = mdb_txn_commit(tg.release())) return fail(rc);

    MDB_env* e = guard.env;
    guard.env = nullptr;
    return spool{e, env_dbi, body_dbi, tail_dbi, st.ms_psize, read_only, dir};
}

spool::spool(spool&& other) noexcept
    : _env(std::exchange(other._env, nullptr)),
      _envelope_dbi(other._envelope_dbi),
      _body_dbi(other._body_dbi),
      _tail_dbi(other._tail_dbi),
      _page_size(other._page_size),
      _read_only(other._read_only),
      _dir(std::move(other._dir)) {}

spool& spool::operator=(spool&& other) noexcept {
    if (this != &other) {
        if (_env) mdb_env_close(_env);
        _env = std::exchange(other._env, nullptr);
        _envelope_dbi = other._envelope_dbi;
        _body_dbi = other._body_dbi;
        _tail_dbi = other._tail_dbi;
        _page_size = other._page_size;
        _read_only = other._read_only;
        _dir = std::move(other._dir);
    }
    return *this;
}

spool::~spool() {
    if (_env) mdb_env_close(_env);
}

result<void, spool_error> spool::apply(std::span<const spool_op> ops) {
    if (!_env) return unexpected{spool_error::invalid_argument};
    if (_read_only) return unexpected{spool_error::read_only};
    if (ops.empty()) return {};

    MDB_txn* txn;
    if (int rc = mdb_txn_begin(_env, nullptr, 0, &txn)) return fail(rc);
    txn_guard tg{txn};
    for (const spool_op& op : ops) {
        if (int rc = put_op(txn, {_envelope_dbi, _body_dbi, _tail_dbi}, _page_size, op)) return fail(rc);
    }
    // Writes the pages and fsyncs; on failure LMDB has already freed the txn.
    if (int rc = mdb_txn_commit(tg.release())) return fail(rc);
    return {};
}

result<read_view, spool_error> spool::begin_read() const {
    if (!_env) return unexpected{spool_error::invalid_argument};
    MDB_txn* txn;
    // MDB_MAP_RESIZED (a writer in another process grew the map) surfaces as
    // spool_error::map_resized: adopting the new size is only safe with no
    // txn open in this process, which only the caller knows; it reopens.
    int rc = mdb_txn_begin(_env, nullptr, MDB_RDONLY, &txn);
    if (rc) return fail(rc);
    return read_view{txn, _envelope_dbi, _body_dbi, _tail_dbi};
}

result<uint64_t, spool_error> spool::count() const {
    auto view = begin_read();
    if (!view) return unexpected{view.error()};
    return view->count();
}

result<uint64_t, spool_error> spool::free_bytes() const {
    MDB_txn* txn;
    if (int rc = mdb_txn_begin(_env, nullptr, MDB_RDONLY, &txn)) return fail(rc);
    txn_guard tg{txn};
    MDB_envinfo info;
    MDB_stat st;
    if (int rc = mdb_env_info(_env, &info)) return fail(rc);
    if (int rc = mdb_env_stat(_env, &st)) return fail(rc);
    // The free list (DBI 0): one record per freeing transaction, each an
    // array of page numbers whose first word is its length.
    uint64_t free_pages = 0;
    MDB_cursor* cur;
    if (int rc = mdb_cursor_open(txn, 0, &cur)) return fail(rc);
    MDB_val k, v;
    for (int rc = mdb_cursor_get(cur, &k, &v, MDB_FIRST); rc == 0; rc = mdb_cursor_get(cur, &k, &v, MDB_NEXT)) {
        if (v.mv_size >= sizeof(size_t)) {
            size_t n;
            std::memcpy(&n, v.mv_data, sizeof n);
            free_pages += n;
        }
    }
    mdb_cursor_close(cur);
    uint64_t psize = st.ms_psize;
    uint64_t used_end = static_cast<uint64_t>(info.me_last_pgno + 1) * psize;
    uint64_t map_room = info.me_mapsize > used_end ? info.me_mapsize - used_end : 0;
    std::error_code ec;
    auto disk = std::filesystem::space(_dir, ec);
    uint64_t grow = ec ? map_room : std::min<uint64_t>(map_room, disk.available);
    return free_pages * psize + grow;
}

result<spool_stats, spool_error> spool::stats() const {
    auto view = begin_read();
    if (!view) return unexpected{view.error()};
    auto n = view->count();
    if (!n) return unexpected{n.error()};
    MDB_envinfo info;
    MDB_stat st;
    if (int rc = mdb_env_info(_env, &info)) return fail(rc);
    if (int rc = mdb_env_stat(_env, &st)) return fail(rc);
    spool_stats s;
    s.messages = *n;
    s.map_size_bytes = info.me_mapsize;
    s.used_bytes = static_cast<uint64_t>(info.me_last_pgno + 1) * st.ms_psize;
    s.max_readers = info.me_maxreaders;
    s.readers_used = info.me_numreaders;
    return s;
}

}  // namespace ringmail::store
