// spool: one shard's durable message queue, one LMDB environment in a directory.
//
// Durability: the environment is opened without MDB_NOSYNC, MDB_MAPASYNC or
// MDB_WRITEMAP. apply() returns success only after mdb_txn_commit() has
// written and fsync'd the transaction, so a message whose put was in a
// successful apply() survives a crash or power loss; only then may the session
// answer 250. If apply() fails, none of its ops happened (the transaction was
// aborted) and the caller answers every message of the batch 451 4.3.0.
//
// Layout: three named databases, keys are queue ids as 8 bytes big-endian
// (queue_id.h, so iteration is arrival order):
//   "envelope":  id -> envelope record (envelope.h)
//   "body":      id -> message bytes as received (after dot-unstuffing), or
//                     their head when the message was split (body_split.h)
//   "body_tail": id -> the rest of a split message: its last lines, kept in
//                     leaf pages so the head fills whole overflow pages
//
// Thread rules:
//  - All writes go through apply(), called from ONE thread (the shard's commit
//    thread). LMDB serialises writers anyway; one caller keeps batches whole.
//  - Reads (begin_read, count, stats) may be called from any thread, several
//    at once. The environment uses MDB_NOTLS, so a read_view is not tied to the
//    thread that began it: it may be moved to and used by another thread, but
//    by one thread at a time.
//  - open_read_only() works while the daemon has the spool open (the admin CLI,
//    tools/): it sees every committed transaction as of its begin_read().
//  - Open a given directory at most once per process (LMDB's POSIX locks are
//    per process: closing a second handle drops the first one's locks). The
//    unit tests break this rule only briefly and on purpose.
//
// Lifetimes:
//  - A read_view is one LMDB read transaction. Every string_view it returns
//    points into the memory map and stays valid until the read_view is
//    destroyed or moved from. Keep it open for as long as a send from the map
//    is in flight; do not keep it for minutes (old pages cannot be reused while
//    a reader holds them, which grows the file).
//  - Every read_view must be destroyed before its spool.
//  - The spool_op views passed to apply() are only read during the call.
//
// Limits: the map size (bytes) fixes the largest spool; when it is reached
// apply() fails with spool_error::full. At most 126 concurrent readers (LMDB
// default).
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <type_traits>
#include <utility>

#include "engine/result.h"

struct MDB_env;
struct MDB_txn;

namespace ringmail::store {

enum class spool_error : uint8_t {
    not_found,         // no such id (or, on open_read_only, no spool in the directory)
    exists,            // put on an id that is already queued (MDB_NOOVERWRITE)
    full,              // map full (MDB_MAP_FULL) or disk full (ENOSPC)
    batch_too_large,   // one apply() dirtied too many pages (MDB_TXN_FULL)
    readers_full,      // all reader slots in use (MDB_READERS_FULL)
    map_resized,       // another process grew the map (MDB_MAP_RESIZED): reopen
    io,                // I/O error, including a failed fsync on commit
    corrupted,         // LMDB reports corruption, or a key that is not 8 bytes
    incompatible,      // the files were written by an incompatible LMDB / layout
    read_only,         // apply() on a spool opened read-only
    invalid_argument,  // bad path, map size or op
    no_access,         // permission denied on the directory or files
    other,             // any other LMDB or errno failure
};
const char* to_string(spool_error e);

struct spool_op {
    enum class kind : uint8_t { put, update, remove };
    kind op;
    uint64_t id;
    std::string_view envelope_record;              // put, update
    std::span<const std::string_view> body_parts;  // put: concatenated into the body
};

struct spool_stats {
    uint64_t messages = 0;         // entries in "envelope"
    uint64_t map_size_bytes = 0;   // configured map size
    uint64_t used_bytes = 0;       // high-water mark of pages in use
    uint32_t max_readers = 0;
    uint32_t readers_used = 0;
};

class spool;

// A stored message as views into the map: `head` then `tail`. The tail is
// empty unless the message was split, and then starts a line (head ends with
// CRLF).
struct body_view {
    std::string_view head;
    std::string_view tail;
    std::size_t size() const { return head.size() + tail.size(); }
    bool empty() const { return size() == 0; }
    // The message in one piece: head itself when there is no tail, else a
    // copy in `scratch` (for the rare readers that need one string: DSNs).
    std::string_view joined(std::string& scratch) const;
};

// One read transaction (RAII: aborted in the destructor). Movable, not copyable.
class read_view {
public:
    read_view(read_view&& other) noexcept;
    read_view& operator=(read_view&& other) noexcept;
    read_view(const read_view&) = delete;
    read_view& operator=(const read_view&) = delete;
    ~read_view();

    // Views into the map, valid while this read_view lives. not_found if absent.
    result<body_view, spool_error> body(uint64_t id) const;
    result<std::string_view, spool_error> envelope_record(uint64_t id) const;

    // Calls fn(uint64_t id, std::string_view record) for every envelope in id
    // (= arrival) order. fn may return void, or bool: false stops the walk.
    template <class Fn>
    result<void, spool_error> for_each_envelope(Fn&& fn) const {
        using fn_t = std::remove_reference_t<Fn>;
        return walk_envelopes(
            [](void* ctx, uint64_t id, std::string_view record) -> bool {
                fn_t& f = *static_cast<fn_t*>(ctx);
                if constexpr (std::is_same_v<decltype(f(id, record)), bool>) {
                    return f(id, record);
                } else {
                    f(id, record);
                    return true;
                }
            },
            const_cast<void*>(static_cast<const void*>(&fn)));
    }

    result<uint64_t, spool_error> count() const;

private:
    friend class spool;
    using visit_fn = bool (*)(void* ctx, uint64_t id, std::string_view record);

    read_view(MDB_txn* txn, unsigned envelope_dbi, unsigned body_dbi, unsigned tail_dbi)
        : _txn(txn), _envelope_dbi(envelope_dbi), _body_dbi(body_dbi), _tail_dbi(tail_dbi) {}
    result<std::string_view, spool_error> get(unsigned dbi, uint64_t id) const;
    result<void, spool_error> walk_envelopes(visit_fn visit, void* ctx) const;

    MDB_txn* _txn = nullptr;
    unsigned _envelope_dbi = 0;
    unsigned _body_dbi = 0;
    unsigned _tail_dbi = 0;  // 0: none (a spool written before tails, read-only)
};

class spool {
public:
    // Opens (creating the directory and files if needed) the spool in `dir`
    // for reading and writing. map_size_bytes: the maximum size of the spool;
    // rounded by LMDB to a page multiple. Runs mdb_reader_check() to clear
    // reader slots left by dead processes.
    static result<spool, spool_error> open(const std::string& dir, size_t map_size_bytes);
    // Opens an existing spool read-only (MDB_RDONLY); never creates anything.
    // Needs write access to lock.mdb (LMDB readers register there).
    static result<spool, spool_error> open_read_only(const std::string& dir);

    spool(spool&& other) noexcept;
    spool& operator=(spool&& other) noexcept;
    spool(const spool&) = delete;
    spool& operator=(const spool&) = delete;
    ~spool();

    // All ops in ONE write transaction, committed (and fsync'd) before return.
    //   put:    envelope and body must not exist (spool_error::exists); the
    //           body is written with MDB_RESERVE and each part memcpy'd once
    //           (into the head and, when split, the tail).
    //   update: replaces the envelope record; nothing if the id is absent.
    //   remove: deletes envelope and body; nothing if the id is absent.
    // (An absent id was removed meanwhile, e.g. by `ringmailctl queue delete`
    // from another process: recording a delivery outcome for it must neither
    // recreate it nor fail the other ops of the batch.)
    // Ops apply in order. Any failure aborts the whole transaction: nothing
    // of the batch is written. An empty span is a no-op success.
    result<void, spool_error> apply(std::span<const spool_op> ops);

    result<read_view, spool_error> begin_read() const;

    result<uint64_t, spool_error> count() const;
    result<spool_stats, spool_error> stats() const;
    // Bytes new messages can still take: pages on LMDB's free list (reused
    // before the file grows) plus the room left to grow, which is the smaller
    // of what the map allows and what the file system has free.
    result<uint64_t, spool_error> free_bytes() const;

    bool is_read_only() const { return _read_only; }
    const std::string& directory() const { return _dir; }

private:
    spool(MDB_env* env, unsigned envelope_dbi, unsigned body_dbi, unsigned tail_dbi, size_t page_size,
          bool read_only, std::string dir)
        : _env(env), _envelope_dbi(envelope_dbi), _body_dbi(body_dbi), _tail_dbi(tail_dbi),
          _page_size(page_size), _read_only(read_only), _dir(std::move(dir)) {}
    static result<spool, spool_error> open_env(const std::string& dir, size_t map_size_bytes,
                                               bool read_only);

    MDB_env* _env = nullptr;
    unsigned _envelope_dbi = 0;
    unsigned _body_dbi = 0;
    unsigned _tail_dbi = 0;
    size_t _page_size = 4096;
    bool _read_only = false;
    std::string _dir;
};

}  // namespace ringmail::store
