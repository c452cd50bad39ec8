// smtp::client with STARTTLS (RFC 3207) on a real io_uring, against the
// Python server tls_smtp_server.py run as a child process on 127.0.0.1 with
// certificates made by the openssl CLI for this run (a test CA, a server
// certificate for mx.test.example / 127.0.0.1, and an unrelated CA).
#include "protocols/smtp/client.h"

#include <poll.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <optional>
#include <sstream>
#include <string>
#include <vector>

#include "engine/ring.h"
#include "engine/task.h"

#ifndef TLS_TEST_SERVER
#error "TLS_TEST_SERVER (path of tls_smtp_server.py) must be defined by the build"
#endif

using namespace ringmail;
using namespace ringmail::engine;
using namespace std::chrono_literals;
namespace fs = std::filesystem;

namespace {

const char* const python = "/usr/bin/python3";

std::string read_file(const fs::path& p) {
    std::ifstream in(p, std::ios::binary);
    std::ostringstream s;
    s << in.rdbuf();
    return s.str();
}

// The Python server as a child process, stopped (SIGTERM) by the destructor.
class smtp_server {
public:
    smtp_server(const fs::path& certs, const fs::path& spool, const std::string& mode, bool chunking,
                bool tls12 = false) {
        int out[2];
        if (::pipe(out) != 0) std::abort();
        _pid = ::fork();
        if (_pid == 0) {
            ::dup2(out[1], 1);
            ::close(out[0]);
            ::close(out[1]);
            std::string cert = (certs / "server.pem").string(), key = (certs / "server.key").string();
            std::string spool_s = spool.string();
            std::vector<const char*> argv{python, TLS_TEST_SERVER, "serve", "--cert", cert.c_str(), "--key",
                                          key.c_str(), "--spool", spool_s.c_str(), "--mode", mode.c_str()};
            if (chunking) argv.push_back("--chunking");
            if (tls12) argv.push_back("--tls12");
            argv.push_back(nullptr);
            ::execv(python, const_cast<char* const*>(argv.data()));
            ::_exit(127);
        }
        ::close(out[1]);
        // "PORT n\n" within 20 s.
        std::string line;
        auto deadline = std::chrono::steady_clock::now() + 20s;
        while (line.find('\n') == std::string::npos && std::chrono::steady_clock::now() < deadline) {
            pollfd p{out[0], POLLIN, 0};
            if (::poll(&p, 1, 200) <= 0) continue;
            char buf[64];
            ssize_t n = ::read(out[0], buf, sizeof buf);
            if (n <= 0) break;
            line.append(buf, static_cast<size_t>(n));
        }
        ::close(out[0]);
        if (line.rfind("PORT ", 0) == 0) _port = static_cast<uint16_t>(std::atoi(line.c_str() + 5));
    }
    ~smtp_server() {
        if (_pid > 0) {
            ::kill(_pid, SIGTERM);
            int status = 0;
            ::waitpid(_pid, &status, 0);
        }
    }
    uint16_t port() const { return _port; }
    net::socket_address address() const {
        auto a = net::parse_socket_address("127.0.0.1:" + std::to_string(_port));
        return *a;
    }

private:
    pid_t _pid = -1;
    uint16_t _port = 0;
};

class ClientTlsTest : public ::testing::Test {
protected:
    static void SetUpTestSuite() {
        char tmpl[] = "/tmp/ringmail-tls-test-XXXXXX";
        ASSERT_NE(::mkdtemp(tmpl), nullptr);
        _certs = tmpl;
        std::string cmd = std::string(python) + " " + TLS_TEST_SERVER + " certs " + _certs.string();
        ASSERT_EQ(std::system(cmd.c_str()), 0) << "making test certificates with openssl failed";
        ASSERT_TRUE(fs::exists(_certs / "server.pem"));
    }
    static void TearDownTestSuite() {
        std::error_code ec;
        fs::remove_all(_certs, ec);
    }

    void SetUp() override {
        set_this_ring(&_ring);
        _spool = _certs / ("spool-" + std::to_string(++_spools));
        fs::create_directories(_spool);
        _cfg.server.hostname = "client.test";
        _cfg.relay.connect_timeout = 5s;
        _cfg.relay.command_timeout = 10s;
        _env.sender = "sender@example.org";
        _env.recipients.push_back(store::recipient{"rcpt@example.net", {}, store::notify_unset, {}, {}});
    }
    void TearDown() override {
        for (int i = 0; i < 5; ++i) _ring.run_once(10ms);
        set_this_ring(nullptr);
    }

    // Runs the ring until `t` finishes (or 30 s pass).
    template <class T>
    std::optional<T> run(task<T> t) {
        std::optional<T> out;
        spawn([](task<T> t, std::optional<T>& out) -> task<void> { out.emplace(co_await std::move(t)); }(std::move(t),
                                                                                                           out));
        auto deadline = std::chrono::steady_clock::now() + 30s;
        while (!out && std::chrono::steady_clock::now() < deadline) _ring.run_once(50ms);
        return out;
    }

    bool open(smtp::client& c) {
        auto r = run(c.open());
        EXPECT_TRUE(r.has_value()) << "open() did not finish";
        return r.value_or(false);
    }

    // Delivers `body` to one recipient; returns the reply code (0 = none).
    int deliver(smtp::client& c, const std::string& body) {
        static const size_t first = 0;
        smtp::outbound_message m;
        m.envelope = &_env;
        m.recipients = std::span<const size_t>(&first, 1);
        m.body = store::body_view{body, {}};
        std::vector<smtp::delivery_outcome> outcomes;
        auto ok = run(c.deliver(m, outcomes));
        EXPECT_TRUE(ok.has_value() && *ok) << c.last_error();
        if (outcomes.size() != 1) return 0;
        return outcomes[0].code;
    }

    void quit(smtp::client& c) {
        auto done = run([](smtp::client& c) -> task<bool> {
            co_await c.quit();
            co_return true;
        }(c));
        EXPECT_TRUE(done.has_value());
    }

    std::string stored_body(int n) const { return read_file(_spool / (std::to_string(n) + ".eml")); }
    std::string stored_meta(int n) const { return read_file(_spool / (std::to_string(n) + ".meta")); }

    static smtp::client_options opts(tls_policy p, bool verify = false, std::string ca = {}, std::string name = {}) {
        smtp::client_options o;
        o.tls = p;
        o.tls_verify = verify;
        o.tls_ca_file = std::move(ca);
        o.tls_name = std::move(name);
        return o;
    }

    static std::string test_body() {
        std::string b = "Subject: tls test\r\n\r\nfirst line\r\n.leading dot must survive\r\n..two dots\r\n.\r\n";
        // ~200 KB of lines, some starting with a dot, so the dot-stuffed
        // iovec path spans many TLS records.
        for (int i = 0; b.size() < 200 * 1024; ++i) {
            if (i % 7 == 0) b += '.';
            b += "line ";
            b += std::to_string(i);
            b.append(61, 'x');
            b += "\r\n";
        }
        b += "last line\r\n";
        return b;
    }

    static inline fs::path _certs;
    static inline int _spools = 0;
    fs::path _spool;
    ring _ring{256};
    config _cfg;
    store::envelope _env;
};

TEST_F(ClientTlsTest, opportunistic_starttls_delivers_over_tls) {
    smtp_server srv(_certs, _spool, "starttls", false);
    ASSERT_NE(srv.port(), 0);
    smtp::client c(_cfg, srv.address(), opts(tls_policy::opportunistic));
    ASSERT_TRUE(open(c)) << c.last_error();
    EXPECT_FALSE(c.tls_failed());
    std::string desc = c.tls_description();
    EXPECT_EQ(desc.rfind("TLSv1.", 0), 0u) << desc;
    EXPECT_NE(desc.find(' '), std::string::npos) << desc;  // version and cipher

    std::string body = test_body();
    EXPECT_EQ(deliver(c, body), 250);
    // A second message on the same TLS connection.
    EXPECT_EQ(deliver(c, "Subject: two\r\n\r\nsecond\r\n"), 250);
    quit(c);

    EXPECT_EQ(stored_body(1), body);  // DATA path: dot-stuffed on the wire, intact here
    // The server saw the same protocol and cipher (Python names TLS 1.3 suites as IANA does).
    EXPECT_EQ(stored_meta(1), "tls=" + desc + "\n");
    EXPECT_EQ(stored_body(2), "Subject: two\r\n\r\nsecond\r\n");
}

TEST_F(ClientTlsTest, opportunistic_starttls_with_chunking) {
    smtp_server srv(_certs, _spool, "starttls", true);
    ASSERT_NE(srv.port(), 0);
    smtp::client c(_cfg, srv.address(), opts(tls_policy::opportunistic));
    ASSERT_TRUE(open(c)) << c.last_error();
    EXPECT_FALSE(c.tls_description().empty());
    std::string body = test_body();
    EXPECT_EQ(deliver(c, body), 250);  // MAIL, RCPT, BDAT and the body in one TLS write
    quit(c);
    EXPECT_EQ(stored_body(1), body);
    EXPECT_EQ(stored_meta(1).rfind("tls=TLSv1.", 0), 0u) << stored_meta(1);
}

TEST_F(ClientTlsTest, tls12_server) {
    smtp_server srv(_certs, _spool, "starttls", true, true);
    ASSERT_NE(srv.port(), 0);
    smtp::client c(_cfg, srv.address(), opts(tls_policy::opportunistic));
    ASSERT_TRUE(open(c)) << c.last_error();
    EXPECT_EQ(c.tls_description().rfind("TLSv1.2 TLS_", 0), 0u) << c.tls_description();
    std::string body = test_body();
    EXPECT_EQ(deliver(c, body), 250);
    quit(c);
    EXPECT_EQ(stored_body(1), body);
    EXPECT_EQ(stored_meta(1).rfind("tls=TLSv1.2 ", 0), 0u) << stored_meta(1);
}

TEST_F(ClientTlsTest, opportunistic_without_starttls_is_plain) {
    smtp_server srv(_certs, _spool, "plain", false);
    ASSERT_NE(srv.port(), 0);
    smtp::client c(_cfg, srv.address(), opts(tls_policy::opportunistic));
    ASSERT_TRUE(open(c)) << c.last_error();
    EXPECT_EQ(c.tls_description(), "");
    std::string body = test_body();
    EXPECT_EQ(deliver(c, body), 250);
    quit(c);
    EXPECT_EQ(stored_body(1), body);
    EXPECT_EQ(stored_meta(1), "tls=none\n");
}

TEST_F(ClientTlsTest, policy_none_ignores_starttls) {
    smtp_server srv(_certs, _spool, "starttls", false);
    ASSERT_NE(srv.port(), 0);
    smtp::client c(_cfg, srv.address());  // the old two-argument form: plain
    ASSERT_TRUE(open(c)) << c.last_error();
    EXPECT_EQ(c.tls_description(), "");
    EXPECT_EQ(deliver(c, "Subject: plain\r\n\r\n.dot\r\n"), 250);
    quit(c);
    EXPECT_EQ(stored_body(1), "Subject: plain\r\n\r\n.dot\r\n");
    EXPECT_EQ(stored_meta(1), "tls=none\n");
}

TEST_F(ClientTlsTest, required_without_starttls_fails) {
    smtp_server srv(_certs, _spool, "plain", false);
    ASSERT_NE(srv.port(), 0);
    smtp::client c(_cfg, srv.address(), opts(tls_policy::required));
    EXPECT_FALSE(open(c));
    EXPECT_NE(c.last_error().find("does not offer STARTTLS"), std::string::npos) << c.last_error();
    EXPECT_EQ(c.tls_description(), "");
}

TEST_F(ClientTlsTest, required_with_starttls_works) {
    smtp_server srv(_certs, _spool, "starttls", false);
    ASSERT_NE(srv.port(), 0);
    smtp::client c(_cfg, srv.address(), opts(tls_policy::required));
    ASSERT_TRUE(open(c)) << c.last_error();
    EXPECT_FALSE(c.tls_description().empty());
    EXPECT_EQ(deliver(c, "Subject: req\r\n\r\nbody\r\n"), 250);
    quit(c);
    EXPECT_EQ(stored_meta(1).rfind("tls=TLSv1.", 0), 0u);
}

TEST_F(ClientTlsTest, starttls_refused_sets_tls_failed) {
    smtp_server srv(_certs, _spool, "refuse", false);
    ASSERT_NE(srv.port(), 0);
    smtp::client c(_cfg, srv.address(), opts(tls_policy::opportunistic));
    EXPECT_FALSE(open(c));
    EXPECT_TRUE(c.tls_failed());
    EXPECT_NE(c.last_error().find("454 4.7.0 TLS not available (in reply to STARTTLS)"), std::string::npos)
        << c.last_error();
}

TEST_F(ClientTlsTest, handshake_garbage_fails_then_plain_retry_delivers) {
    smtp_server srv(_certs, _spool, "garbage", false);
    ASSERT_NE(srv.port(), 0);
    smtp::client c(_cfg, srv.address(), opts(tls_policy::opportunistic));
    EXPECT_FALSE(open(c));
    EXPECT_TRUE(c.tls_failed());
    EXPECT_NE(c.last_error().find("TLS handshake"), std::string::npos) << c.last_error();

    // What the caller does for opportunistic TLS: reconnect in plain text.
    smtp::client retry(_cfg, srv.address(), c.options().without_tls());
    ASSERT_TRUE(open(retry)) << retry.last_error();
    EXPECT_EQ(retry.tls_description(), "");
    EXPECT_EQ(deliver(retry, "Subject: retry\r\n\r\nplain\r\n"), 250);
    quit(retry);
    EXPECT_EQ(stored_meta(1), "tls=none\n");
}

TEST_F(ClientTlsTest, handshake_times_out) {
    smtp_server srv(_certs, _spool, "stall", false);
    ASSERT_NE(srv.port(), 0);
    _cfg.relay.command_timeout = 1s;
    smtp::client c(_cfg, srv.address(), opts(tls_policy::opportunistic));
    auto start = std::chrono::steady_clock::now();
    EXPECT_FALSE(open(c));
    auto took = std::chrono::steady_clock::now() - start;
    EXPECT_TRUE(c.tls_failed());
    EXPECT_NE(c.last_error().find("timeout"), std::string::npos) << c.last_error();
    EXPECT_GE(took, 900ms);
    EXPECT_LT(took, 5s);
}

TEST_F(ClientTlsTest, plaintext_after_220_is_refused) {
    smtp_server srv(_certs, _spool, "inject", false);
    ASSERT_NE(srv.port(), 0);
    smtp::client c(_cfg, srv.address(), opts(tls_policy::opportunistic));
    EXPECT_FALSE(open(c));
    EXPECT_TRUE(c.tls_failed());
    EXPECT_NE(c.last_error().find("in the clear after its 220"), std::string::npos) << c.last_error();
}

TEST_F(ClientTlsTest, verify_with_wrong_ca_fails) {
    smtp_server srv(_certs, _spool, "starttls", false);
    ASSERT_NE(srv.port(), 0);
    smtp::client c(_cfg, srv.address(),
                   opts(tls_policy::required, true, (_certs / "other-ca.pem").string(), "mx.test.example"));
    EXPECT_FALSE(open(c));
    EXPECT_TRUE(c.tls_failed());
    EXPECT_NE(c.last_error().find("certificate verification failed: not issued by a trusted CA"), std::string::npos)
        << c.last_error();
}

TEST_F(ClientTlsTest, verify_with_system_store_rejects_test_ca) {
    smtp_server srv(_certs, _spool, "starttls", false);
    ASSERT_NE(srv.port(), 0);
    smtp::client c(_cfg, srv.address(), opts(tls_policy::required, true, "", "mx.test.example"));
    EXPECT_FALSE(open(c));
    EXPECT_TRUE(c.tls_failed());
    // Either the system store does not know the test CA, or there is no
    // system store on this machine; both must fail, never fall through.
    EXPECT_TRUE(c.last_error().find("certificate verification failed") != std::string::npos ||
                c.last_error().find("system CA store") != std::string::npos)
        << c.last_error();
}

TEST_F(ClientTlsTest, verify_with_right_ca_and_name_works) {
    smtp_server srv(_certs, _spool, "starttls", true);
    ASSERT_NE(srv.port(), 0);
    smtp::client c(_cfg, srv.address(),
                   opts(tls_policy::required, true, (_certs / "ca.pem").string(), "mx.test.example"));
    ASSERT_TRUE(open(c)) << c.last_error();
    EXPECT_FALSE(c.tls_description().empty());
    std::string body = test_body();
    EXPECT_EQ(deliver(c, body), 250);
    quit(c);
    EXPECT_EQ(stored_body(1), body);
}

TEST_F(ClientTlsTest, verify_with_right_ca_and_wrong_name_fails) {
    smtp_server srv(_certs, _spool, "starttls", false);
    ASSERT_NE(srv.port(), 0);
    smtp::client c(_cfg, srv.address(),
                   opts(tls_policy::required, true, (_certs / "ca.pem").string(), "other.test.example"));
    EXPECT_FALSE(open(c));
    EXPECT_TRUE(c.tls_failed());
    EXPECT_NE(c.last_error().find("certificate verification failed: the name does not match"), std::string::npos)
        << c.last_error();
}

TEST_F(ClientTlsTest, verify_ip_literal_name_against_ip_san) {
    smtp_server srv(_certs, _spool, "starttls", false);
    ASSERT_NE(srv.port(), 0);
    // No tls_name: the destination address (a smarthost given as an address).
    smtp::client ok(_cfg, srv.address(), opts(tls_policy::required, true, (_certs / "ca.pem").string()));
    ASSERT_TRUE(open(ok)) << ok.last_error();
    quit(ok);
    smtp::client bad(_cfg, srv.address(),
                     opts(tls_policy::required, true, (_certs / "ca.pem").string(), "127.0.0.2"));
    EXPECT_FALSE(open(bad));
    EXPECT_NE(bad.last_error().find("certificate verification failed"), std::string::npos) << bad.last_error();
}

TEST_F(ClientTlsTest, missing_ca_file_fails_with_reason) {
    smtp_server srv(_certs, _spool, "starttls", false);
    ASSERT_NE(srv.port(), 0);
    smtp::client c(_cfg, srv.address(),
                   opts(tls_policy::required, true, (_certs / "no-such-ca.pem").string(), "mx.test.example"));
    EXPECT_FALSE(open(c));
    EXPECT_NE(c.last_error().find("cannot load CA file"), std::string::npos) << c.last_error();
    EXPECT_NE(c.last_error().find("No such file or directory"), std::string::npos) << c.last_error();
}

}  // namespace
