#include "store/spool.h"

#include <gtest/gtest.h>
#include <lmdb.h>

#include <cstdlib>
#include <filesystem>
#include <string>
#include <thread>
#include <vector>

#include "store/envelope.h"
#include "store/queue_id.h"

namespace ringmail::store {
namespace {

constexpr size_t map_bytes = 256u << 20;

// A stored message in one string (head, then the tail of a split one).
std::string whole(const body_view& b) { return std::string(b.head) + std::string(b.tail); }

class spool_test : public ::testing::Test {
protected:
    void SetUp() override {
        char tmpl[] = "/tmp/ringmail-spool-test-XXXXXX";
        ASSERT_NE(mkdtemp(tmpl), nullptr);
        _root = tmpl;
        _dir = _root + "/shard-0";
    }
    void TearDown() override {
        std::error_code ec;
        std::filesystem::remove_all(_root, ec);
    }

    spool open_rw(size_t bytes = map_bytes) {
        auto s = spool::open(_dir, bytes);
        EXPECT_TRUE(s.ok()) << to_string(s.error());
        return std::move(s).value();
    }

    std::string _root;
    std::string _dir;
};

std::string record_for(uint64_t id, std::string_view sender, uint32_t attempts = 0) {
    envelope e;
    e.id = id;
    e.sender = sender;
    e.attempts = attempts;
    e.recipients.push_back({"rcpt@example.net", "", notify_unset, rcpt_state::pending, ""});
    std::string rec;
    encode(e, rec);
    return rec;
}

std::string pattern(size_t n, unsigned seed) {
    std::string s(n, '\0');
    uint32_t x = seed * 2654435761u + 1;
    for (size_t i = 0; i < n; ++i) {
        x = x * 1664525u + 1013904223u;
        s[i] = static_cast<char>(x >> 24);
    }
    return s;
}

TEST_F(spool_test, put_read_update_remove_reopen) {
    const uint64_t id_a = make_queue_id(1'000'000, 0);
    const uint64_t id_b = make_queue_id(1'000'001, 0);
    const uint64_t id_c = make_queue_id(1'000'002, 0);

    // A 10 MiB body arriving in several chunks of uneven size.
    std::string big = pattern(10u << 20, 1);
    std::vector<std::string_view> big_parts;
    for (size_t off = 0, step = 65536 + 17; off < big.size(); off += step)
        big_parts.push_back(std::string_view(big).substr(off, step));
    const std::string small_a = "Subject: a\r\n\r\nhello\r\n";
    const std::string binary = std::string("bin\0\r\n\xff\x00tail", 12);
    std::string_view parts_a[] = {std::string_view(small_a).substr(0, 5),
                                  std::string_view(small_a).substr(5)};
    std::string_view parts_c[] = {binary, "", binary};

    std::string rec_a = record_for(id_a, "a@x"), rec_b = record_for(id_b, "b@x"),
                rec_c = record_for(id_c, "");
    {
        spool s = open_rw();
        spool_op ops[] = {
            {spool_op::kind::put, id_a, rec_a, parts_a},
            {spool_op::kind::put, id_b, rec_b, big_parts},
            {spool_op::kind::put, id_c, rec_c, parts_c},
        };
        auto r = s.apply(ops);
        ASSERT_TRUE(r.ok()) << to_string(r.error());
        EXPECT_EQ(s.count().value(), 3u);

        auto view = s.begin_read();
        ASSERT_TRUE(view.ok());
        EXPECT_EQ(whole(view->body(id_a).value()), small_a);
        EXPECT_TRUE(whole(view->body(id_b).value()) == big);
        EXPECT_EQ(whole(view->body(id_c).value()), binary + binary);
        EXPECT_EQ(view->envelope_record(id_b).value(), rec_b);
        auto missing = view->body(id_c + 1);
        ASSERT_FALSE(missing.ok());
        EXPECT_EQ(missing.error(), spool_error::not_found);

        // update replaces only the envelope
        std::string rec_b2 = record_for(id_b, "b@x", 3);
        spool_op upd[] = {{spool_op::kind::update, id_b, rec_b2, {}}};
        ASSERT_TRUE(s.apply(upd).ok());
        {
            auto v2 = s.begin_read();
            ASSERT_TRUE(v2.ok());
            auto env = decode(v2->envelope_record(id_b).value());
            ASSERT_TRUE(env.ok());
            EXPECT_EQ(env->attempts, 3u);
            EXPECT_TRUE(whole(v2->body(id_b).value()) == big);
        }
        // the older view still sees its snapshot
        EXPECT_EQ(view->envelope_record(id_b).value(), rec_b);

        spool_op rm[] = {{spool_op::kind::remove, id_a, {}, {}}};
        ASSERT_TRUE(s.apply(rm).ok());
        EXPECT_EQ(whole(view->body(id_a).value()), small_a);  // snapshot again
        auto v3 = s.begin_read();
        ASSERT_TRUE(v3.ok());
        EXPECT_EQ(v3->body(id_a).error(), spool_error::not_found);
        EXPECT_EQ(v3->envelope_record(id_a).error(), spool_error::not_found);
        EXPECT_EQ(v3->count().value(), 2u);
    }
    // reopen after close: durable state is there
    spool s = open_rw();
    EXPECT_EQ(s.count().value(), 2u);
    auto view = s.begin_read();
    ASSERT_TRUE(view.ok());
    EXPECT_TRUE(whole(view->body(id_b).value()) == big);
    EXPECT_EQ(whole(view->body(id_c).value()), binary + binary);
    EXPECT_EQ(decode(view->envelope_record(id_b).value())->attempts, 3u);
}

TEST_F(spool_test, for_each_in_arrival_order) {
    spool s = open_rw();
    const uint64_t ids[] = {make_queue_id(300, 1), make_queue_id(100, 1), make_queue_id(200, 1),
                            make_queue_id(256, 1)};  // 256 vs 255 byte-order trap
    std::vector<std::string> recs;
    for (uint64_t id : ids) recs.push_back(record_for(id, "s@x"));
    std::vector<spool_op> ops;
    for (size_t i = 0; i < 4; ++i) ops.push_back({spool_op::kind::put, ids[i], recs[i], {}});
    ASSERT_TRUE(s.apply(ops).ok());

    auto view = s.begin_read();
    ASSERT_TRUE(view.ok());
    std::vector<uint64_t> seen;
    auto r = view->for_each_envelope([&](uint64_t id, std::string_view rec) {
        seen.push_back(id);
        EXPECT_EQ(decode(rec)->id, id);
    });
    ASSERT_TRUE(r.ok());
    std::vector<uint64_t> want = {make_queue_id(100, 1), make_queue_id(200, 1),
                                  make_queue_id(256, 1), make_queue_id(300, 1)};
    EXPECT_EQ(seen, want);

    seen.clear();
    ASSERT_TRUE(view->for_each_envelope([&](uint64_t id, std::string_view) {
                        seen.push_back(id);
                        return seen.size() < 2;  // stop after two
                    }).ok());
    EXPECT_EQ(seen.size(), 2u);
    EXPECT_EQ(whole(view->body(make_queue_id(100, 1)).value()), "");  // empty body stored
}

TEST_F(spool_test, failing_batch_leaves_nothing) {
    spool s = open_rw();
    std::string rec = record_for(1, "x@y");
    spool_op first[] = {{spool_op::kind::put, 1, rec, {}}};
    ASSERT_TRUE(s.apply(first).ok());

    std::string_view body[] = {"new body"};
    std::string rec_changed = record_for(1, "changed@y", 5);
    spool_op dup[] = {
        {spool_op::kind::put, 2, rec, body},
        {spool_op::kind::update, 1, rec_changed, {}},
        {spool_op::kind::put, 1, rec, body},  // duplicate id
    };
    auto r = s.apply(dup);
    ASSERT_FALSE(r.ok());
    EXPECT_EQ(r.error(), spool_error::exists);

    auto view = s.begin_read();
    ASSERT_TRUE(view.ok());
    EXPECT_EQ(view->count().value(), 1u);
    EXPECT_EQ(view->envelope_record(1).value(), rec);  // the update in the failed batch did not happen
    EXPECT_EQ(view->body(2).error(), spool_error::not_found);
    EXPECT_TRUE(s.apply({}).ok());
}

// An update or remove of an absent id (removed meanwhile, e.g. by ringmailctl
// in another process) does nothing, and does not fail the rest of the batch.
TEST_F(spool_test, update_and_remove_of_an_absent_id_do_nothing) {
    spool s = open_rw();
    std::string rec = record_for(3, "x@y");
    std::string_view body[] = {"body"};
    spool_op absent_update[] = {{spool_op::kind::put, 3, rec, body}, {spool_op::kind::update, 99, rec, {}}};
    ASSERT_TRUE(s.apply(absent_update).ok());
    spool_op absent_remove[] = {{spool_op::kind::put, 4, rec, body}, {spool_op::kind::remove, 98, {}, {}}};
    ASSERT_TRUE(s.apply(absent_remove).ok());
    auto view = s.begin_read();
    ASSERT_TRUE(view.ok());
    EXPECT_EQ(view->count().value(), 2u);
    EXPECT_EQ(view->envelope_record(3).value(), rec);
    EXPECT_EQ(view->envelope_record(4).value(), rec);
    EXPECT_EQ(view->envelope_record(99).error(), spool_error::not_found);  // not recreated by the update
}

TEST_F(spool_test, map_full_is_reported_and_spool_stays_usable) {
    spool s = open_rw(1u << 20);
    std::string big = pattern(2u << 20, 2);
    std::string_view parts[] = {big};
    std::string rec = record_for(1, "x@y");
    spool_op ops[] = {{spool_op::kind::put, 1, rec, parts}};
    auto r = s.apply(ops);
    ASSERT_FALSE(r.ok());
    EXPECT_EQ(r.error(), spool_error::full);

    std::string_view small[] = {"fits"};
    spool_op ok_ops[] = {{spool_op::kind::put, 2, rec, small}};
    ASSERT_TRUE(s.apply(ok_ops).ok());
    EXPECT_EQ(s.count().value(), 1u);
}

TEST_F(spool_test, read_only_open_sees_data_while_writer_open) {
    spool rw = open_rw();
    std::string rec = record_for(7, "x@y");
    std::string_view body[] = {"the body"};
    spool_op ops[] = {{spool_op::kind::put, 7, rec, body}};
    ASSERT_TRUE(rw.apply(ops).ok());

    auto ro = spool::open_read_only(_dir);
    ASSERT_TRUE(ro.ok()) << to_string(ro.error());
    EXPECT_TRUE(ro->is_read_only());
    {
        auto view = ro->begin_read();
        ASSERT_TRUE(view.ok());
        EXPECT_EQ(whole(view->body(7).value()), "the body");
        EXPECT_EQ(view->envelope_record(7).value(), rec);
    }
    auto denied = ro->apply(ops);
    ASSERT_FALSE(denied.ok());
    EXPECT_EQ(denied.error(), spool_error::read_only);

    // a later commit by the writer is visible to a new read view
    spool_op ops2[] = {{spool_op::kind::put, 8, rec, body}};
    ASSERT_TRUE(rw.apply(ops2).ok());
    EXPECT_EQ(ro->count().value(), 2u);

    auto st = ro->stats();
    ASSERT_TRUE(st.ok());
    EXPECT_EQ(st->messages, 2u);
    EXPECT_GE(st->map_size_bytes, map_bytes);
    EXPECT_GT(st->used_bytes, 0u);
}

TEST_F(spool_test, open_read_only_missing_dir_fails) {
    auto ro = spool::open_read_only(_root + "/nope");
    ASSERT_FALSE(ro.ok());
    EXPECT_EQ(ro.error(), spool_error::not_found);
    auto bad = spool::open(_dir, 0);
    ASSERT_FALSE(bad.ok());
    EXPECT_EQ(bad.error(), spool_error::invalid_argument);
}

TEST_F(spool_test, read_views_move_between_threads_and_run_concurrently) {
    spool s = open_rw();
    std::string rec = record_for(1, "x@y");
    std::string body = pattern(100000, 3);
    std::string_view parts[] = {body};
    spool_op ops[] = {{spool_op::kind::put, 1, rec, parts}};
    ASSERT_TRUE(s.apply(ops).ok());

    // Begun here, used and destroyed on another thread (MDB_NOTLS).
    auto view = s.begin_read();
    ASSERT_TRUE(view.ok());
    read_view moved = std::move(view).value();
    bool same = false;
    std::thread t([&, v = std::move(moved)]() mutable { same = whole(v.body(1).value()) == body; });
    t.join();
    EXPECT_TRUE(same);

    // Several readers at once on other threads while this thread writes.
    std::vector<std::thread> readers;
    std::vector<int> ok(4, 0);
    for (size_t i = 0; i < 4; ++i) {
        readers.emplace_back([&, i] {
            for (int n = 0; n < 50; ++n) {
                auto v = s.begin_read();
                if (v.ok() && v->body(1).ok() && whole(v->body(1).value()) == body) ++ok[i];
            }
        });
    }
    std::vector<std::string> recs;
    for (uint64_t id = 2; id < 40; ++id) recs.push_back(record_for(id, "x@y"));
    for (uint64_t id = 2; id < 40; ++id) {
        spool_op put[] = {{spool_op::kind::put, id, recs[id - 2], parts}};
        ASSERT_TRUE(s.apply(put).ok());
    }
    for (auto& r : readers) r.join();
    for (int n : ok) EXPECT_EQ(n, 50);
    EXPECT_EQ(s.count().value(), 39u);
}

TEST(spool_error_strings, all_named) {
    for (int e = 0; e <= static_cast<int>(spool_error::other); ++e)
        EXPECT_STRNE(to_string(static_cast<spool_error>(e)), "unknown spool error");
}

TEST_F(spool_test, free_bytes_falls_with_puts_and_comes_back_with_removes) {
    spool s = open_rw();
    auto before = s.free_bytes();
    ASSERT_TRUE(before.ok());
    EXPECT_GT(*before, 1u << 20);
    std::string big(400 * 1024, 'x');
    std::string_view body[] = {big};
    std::string rec = record_for(7, "x@y");
    spool_op put[] = {{spool_op::kind::put, 7, rec, body}};
    ASSERT_TRUE(s.apply(put).ok());
    auto after_put = s.free_bytes();
    ASSERT_TRUE(after_put.ok());
    EXPECT_LE(*after_put + big.size(), *before);
    spool_op remove[] = {{spool_op::kind::remove, 7, {}, {}}};
    ASSERT_TRUE(s.apply(remove).ok());
    auto after_remove = s.free_bytes();
    ASSERT_TRUE(after_remove.ok());
    EXPECT_GE(*after_remove, *after_put + big.size());  // its pages are on the free list
}

}  // namespace
}  // namespace ringmail::store

namespace ringmail::store {
namespace {

std::string crlf_lines(size_t total, char first) {
    std::string s;
    for (int i = 0; s.size() < total; ++i) s += first + std::to_string(i) + std::string(70, 'q') + "\r\n";
    s.resize(total);
    return s;
}

// A 4 KiB message with our Received: field takes one overflow page and a
// tail in a shared leaf page, not two overflow pages; it reads back whole,
// in the order put; removing it removes the tail too (the id can be put again).
TEST_F(spool_test, messages_just_over_a_page_take_one_page_and_a_tail) {
    constexpr int n = 200;
    const std::string body = crlf_lines(4269, '.');
    spool s = open_rw();
    uint64_t before = s.stats().value().used_bytes;
    std::vector<std::string> recs;
    for (int i = 0; i < n; ++i) recs.push_back(record_for(make_queue_id(1000 + i, 0), "r@x"));
    // the body handed over in pieces cut at odd places, as the session does
    std::string_view b = body;
    std::string_view parts[] = {b.substr(0, 1000), b.substr(1000, 3100), b.substr(4100)};
    std::vector<spool_op> ops;
    for (int i = 0; i < n; ++i) ops.push_back({spool_op::kind::put, make_queue_id(1000 + i, 0), recs[i], parts});
    ASSERT_TRUE(s.apply(ops).ok());
    uint64_t grown = s.stats().value().used_bytes - before;
    EXPECT_LT(grown, uint64_t{n} * 4096 * 13 / 10) << "about one page a message, not two";
    {
        auto view = s.begin_read();
        ASSERT_TRUE(view.ok());
        auto got = view->body(make_queue_id(1000, 0)).value();
        EXPECT_FALSE(got.tail.empty());
        EXPECT_TRUE(got.head.ends_with("\r\n"));
        EXPECT_EQ(got.size(), body.size());
        EXPECT_TRUE(whole(got) == body);
        std::string scratch;
        EXPECT_TRUE(got.joined(scratch) == body);
    }
    std::vector<spool_op> rms;
    for (int i = 0; i < n; ++i) rms.push_back({spool_op::kind::remove, make_queue_id(1000 + i, 0), {}, {}});
    ASSERT_TRUE(s.apply(rms).ok());
    ASSERT_TRUE(s.apply(ops).ok()) << "a tail was left behind";
    auto view = s.begin_read();
    ASSERT_TRUE(view.ok());
    EXPECT_TRUE(whole(view->body(make_queue_id(1000 + n - 1, 0)).value()) == body);
}

// A spool written before tails existed (no "body_tail" database) still opens
// read-only (ringmailctl next to an older daemon) and its bodies read whole;
// opened for writing, it gains the database.
TEST_F(spool_test, spool_without_tails_opens_read_only_and_upgrades) {
    std::filesystem::create_directories(_dir);
    const std::string body = crlf_lines(5000, 'x');
    {
        MDB_env* env;
        ASSERT_EQ(mdb_env_create(&env), 0);
        ASSERT_EQ(mdb_env_set_maxdbs(env, 4), 0);
        ASSERT_EQ(mdb_env_open(env, _dir.c_str(), 0, 0600), 0);
        MDB_txn* txn;
        ASSERT_EQ(mdb_txn_begin(env, nullptr, 0, &txn), 0);
        MDB_dbi e, b;
        ASSERT_EQ(mdb_dbi_open(txn, "envelope", MDB_CREATE, &e), 0);
        ASSERT_EQ(mdb_dbi_open(txn, "body", MDB_CREATE, &b), 0);
        uint64_t id = make_queue_id(5, 0);
        queue_key k = to_key(id);
        std::string rec = record_for(id, "a@x");
        MDB_val key{k.size(), k.data()}, rv{rec.size(), rec.data()}, bv{body.size(), const_cast<char*>(body.data())};
        ASSERT_EQ(mdb_put(txn, e, &key, &rv, 0), 0);
        ASSERT_EQ(mdb_put(txn, b, &key, &bv, 0), 0);
        ASSERT_EQ(mdb_txn_commit(txn), 0);
        mdb_env_close(env);
    }
    {
        auto ro = spool::open_read_only(_dir);
        ASSERT_TRUE(ro.ok()) << to_string(ro.error());
        auto view = ro->begin_read();
        ASSERT_TRUE(view.ok());
        auto got = view->body(make_queue_id(5, 0)).value();
        EXPECT_TRUE(got.tail.empty());
        EXPECT_TRUE(got.head == body);
    }
    spool s = open_rw();
    auto view = s.begin_read();
    ASSERT_TRUE(view.ok());
    EXPECT_TRUE(whole(view->body(make_queue_id(5, 0)).value()) == body);
    spool_op rm[] = {{spool_op::kind::remove, make_queue_id(5, 0), {}, {}}};
    EXPECT_TRUE(s.apply(rm).ok());
}

}  // namespace
}  // namespace ringmail::store
