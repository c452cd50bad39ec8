// tls: see tls.h for the contract.
#include "engine/tls.h"

// Debian's libwolfssl is built with a configure-generated options.h that
// must come first, or the struct layouts and APIs seen here differ from the
// library's.
#include <wolfssl/options.h>
#include <wolfssl/ssl.h>
#include <wolfssl/error-ssl.h>
#include <wolfssl/wolfcrypt/error-crypt.h>
#include <wolfssl/wolfcrypt/ecc.h>

#include <arpa/inet.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <climits>
#include <cstring>
#include <mutex>
#include <vector>

#include <fmt/format.h>

#include "engine/io.h"

namespace ringmail::engine::tls {

using std::chrono::milliseconds;
using steady = std::chrono::steady_clock;

std::string_view describe(errc e) {
    switch (e) {
    case errc::none: return "no error";
    case errc::init: return "TLS initialisation failed";
    case errc::ca_load: return "cannot load CA certificates";
    case errc::setup: return "TLS connection setup failed";
    case errc::handshake: return "TLS handshake failed";
    case errc::verify: return "certificate verification failed";
    case errc::io: return "socket error during TLS";
    case errc::timeout: return "timeout during TLS";
    case errc::closed: return "connection closed during TLS";
    case errc::protocol: return "TLS error";
    }
    return "unknown TLS error";
}

namespace {

std::string wolf_error_string(int code) {
    char buf[WOLFSSL_MAX_ERROR_SZ] = {};
    wolfSSL_ERR_error_string_n(static_cast<unsigned long>(code), buf, sizeof buf);
    return fmt::format("{} ({})", buf, code);
}

// What a verification error means, in words a postmaster can act on.
std::string_view verify_reason(int code) {
    switch (code) {
    case ASN_NO_SIGNER_E: return "not issued by a trusted CA";
    case ASN_AFTER_DATE_E: return "expired";
    case ASN_BEFORE_DATE_E: return "not valid yet";
    case ASN_SIG_CONFIRM_E: return "bad signature";
    case ASN_SELF_SIGNED_E: return "self-signed";
    case DOMAIN_NAME_MISMATCH: return "the name does not match";
    case IPADDR_MISMATCH: return "the address does not match";
    default: return {};
    }
}

// Errors that mean "the certificate was not acceptable", as opposed to a
// broken handshake.
bool is_verify_error(int code) {
    switch (code) {
    case ASN_NO_SIGNER_E:
    case ASN_AFTER_DATE_E:
    case ASN_BEFORE_DATE_E:
    case ASN_SIG_CONFIRM_E:
    case ASN_SELF_SIGNED_E:
    case ASN_PATHLEN_INV_E:
    case ASN_PATHLEN_SIZE_E:
    case DOMAIN_NAME_MISMATCH:
    case IPADDR_MISMATCH:
    case VERIFY_CERT_ERROR:
        return true;
    default:
        return false;
    }
}

bool is_ip_literal(const std::string& name) {
    unsigned char buf[sizeof(in6_addr)];
    return ::inet_pton(AF_INET, name.c_str(), buf) == 1 || ::inet_pton(AF_INET6, name.c_str(), buf) == 1;
}

std::once_flag init_once;
int init_rc = 0;

// Remaining time to `deadline`, at least 1 ms (0 would mean "no timeout" to io.h).
milliseconds remaining(steady::time_point deadline) {
    auto left = std::chrono::duration_cast<milliseconds>(deadline - steady::now());
    return std::max(left, milliseconds(1));
}

}  // namespace

// ---------------------------------------------------------------------------
// context

tls_result<std::shared_ptr<context>> context::create_client(const context_options& options) {
    std::call_once(init_once, [] { init_rc = wolfSSL_Init(); });
    if (init_rc != WOLFSSL_SUCCESS)
        return unexpected{error{errc::init, fmt::format("wolfSSL_Init: {}", wolf_error_string(init_rc))}};

    WOLFSSL_CTX* ctx = wolfSSL_CTX_new(wolfSSLv23_client_method());
    if (!ctx) return unexpected{error{errc::init, "wolfSSL_CTX_new failed (out of memory?)"}};
    auto fail = [ctx](errc code, std::string message) {
        wolfSSL_CTX_free(ctx);
        return unexpected{error{code, std::move(message)}};
    };
    // TLS 1.2 and 1.3 only.
    int rc = wolfSSL_CTX_SetMinVersion(ctx, WOLFSSL_TLSV1_2);
    if (rc != WOLFSSL_SUCCESS) return fail(errc::init, fmt::format("cannot set TLS 1.2 as minimum: {}", wolf_error_string(rc)));

    if (options.verify) {
        if (!options.ca_file.empty()) {
            if (::access(options.ca_file.c_str(), R_OK) != 0)
                return fail(errc::ca_load, fmt::format("cannot load CA file {}: {}", options.ca_file, std::strerror(errno)));
            rc = wolfSSL_CTX_load_verify_locations(ctx, options.ca_file.c_str(), nullptr);
            if (rc != WOLFSSL_SUCCESS)
                return fail(errc::ca_load, fmt::format("cannot load CA file {}: no usable PEM certificate in it ({})",
                                                       options.ca_file, wolf_error_string(rc)));
        } else {
            rc = wolfSSL_CTX_load_system_CA_certs(ctx);
            if (rc != WOLFSSL_SUCCESS)
                return fail(errc::ca_load, fmt::format("cannot load the system CA store: {}", wolf_error_string(rc)));
        }
        wolfSSL_CTX_set_verify(ctx, WOLFSSL_VERIFY_PEER, nullptr);
    } else {
        // Opportunistic TLS (RFC 7435): encrypt, accept any certificate.
        wolfSSL_CTX_set_verify(ctx, WOLFSSL_VERIFY_NONE, nullptr);
    }
    return std::shared_ptr<context>(new context(ctx, options));
}

context::~context() { wolfSSL_CTX_free(_ctx); }

tls_result<std::shared_ptr<context>> shared_client_context(const context_options& options) {
    thread_local std::vector<std::shared_ptr<context>> cache;
    for (const auto& c : cache)
        if (c->options() == options) return c;
    auto created = context::create_client(options);
    if (!created) return created;
    cache.push_back(*created);
    return created;
}

// ---------------------------------------------------------------------------
// session

namespace {
// wolfSSL (built with FP_ECC, as Debian's is) keeps a fixed-point ECC cache
// per thread that only wc_ecc_fp_free() on that thread releases: do it when
// a thread that ran a handshake ends.
struct thread_ecc_cache {
    ~thread_ecc_cache() { wc_ecc_fp_free(); }
};
void release_ecc_cache_at_thread_exit() {
    thread_local thread_ecc_cache cache;
    (void)cache;
}
}  // namespace

tls_result<std::unique_ptr<session>> session::create(std::shared_ptr<context> ctx, int fd) {
    release_ecc_cache_at_thread_exit();
    WOLFSSL* ssl = wolfSSL_new(ctx->raw());
    if (!ssl) return unexpected{error{errc::setup, "wolfSSL_new failed (out of memory?)"}};
    return std::unique_ptr<session>(new session(std::move(ctx), ssl, fd));
}

session::session(std::shared_ptr<context> ctx, WOLFSSL* ssl, int fd)
    : _ctx(std::move(ctx)), _ssl(ssl), _fd(fd), _in(new char[in_capacity]) {
    wolfSSL_SSLSetIORecv(_ssl, &session::on_recv);
    wolfSSL_SSLSetIOSend(_ssl, &session::on_send);
    wolfSSL_SetIOReadCtx(_ssl, this);
    wolfSSL_SetIOWriteCtx(_ssl, this);
}

session::~session() { wolfSSL_free(_ssl); }

// wolfSSL wants ciphertext: give what the ring received, or WANT_READ.
int session::on_recv(WOLFSSL*, char* buf, int sz, void* self_ptr) {
    auto* self = static_cast<session*>(self_ptr);
    size_t avail = self->_in_end - self->_in_begin;
    if (avail == 0) return self->_peer_closed ? WOLFSSL_CBIO_ERR_CONN_CLOSE : WOLFSSL_CBIO_ERR_WANT_READ;
    size_t n = std::min(avail, static_cast<size_t>(sz));
    std::memcpy(buf, self->_in.get() + self->_in_begin, n);
    self->_in_begin += n;
    return static_cast<int>(n);
}

// wolfSSL has ciphertext to send: queue it; the coroutine sends it.
int session::on_send(WOLFSSL*, char* buf, int sz, void* self_ptr) {
    auto* self = static_cast<session*>(self_ptr);
    self->_out.append(buf, static_cast<size_t>(sz));
    return sz;
}

error session::last_error(int ret, std::string_view what) {
    int code = wolfSSL_get_error(_ssl, ret);
    if (is_verify_error(code)) {
        std::string_view reason = verify_reason(code);
        return error{errc::verify, fmt::format("certificate verification failed: {}{}{}", reason,
                                               reason.empty() ? "" : ": ", wolf_error_string(code))};
    }
    if (code == SOCKET_ERROR_E || code == WOLFSSL_ERROR_SYSCALL) {
        if (_peer_closed) return error{errc::closed, fmt::format("connection closed by the server during {}", what)};
        return error{errc::io, fmt::format("socket error during {}", what)};
    }
    return error{_established ? errc::protocol : errc::handshake, fmt::format("{}: {}", what, wolf_error_string(code))};
}

task<tls_result<void>> session::flush(milliseconds timeout) {
    size_t off = 0;
    while (off < _out.size()) {
        int n = co_await engine::async_send(_fd, _out.data() + off, _out.size() - off, timeout);
        if (n <= 0) {
            _out.clear();
            _io_errno = n;
            if (n == -ETIMEDOUT) co_return unexpected{error{errc::timeout, "timeout sending TLS data"}};
            co_return unexpected{error{errc::io, fmt::format("sending TLS data: {}", std::strerror(n == 0 ? EPIPE : -n))}};
        }
        off += static_cast<size_t>(n);
    }
    _out.clear();
    co_return tls_result<void>{};
}

task<tls_result<void>> session::fill(milliseconds timeout) {
    // on_recv answers WANT_READ only when everything was handed out.
    _in_begin = _in_end = 0;
    int n = co_await engine::async_recv(_fd, _in.get(), in_capacity, timeout);
    if (n == 0) {
        _peer_closed = true;
        co_return unexpected{error{errc::closed, "connection closed by the server"}};
    }
    if (n < 0) {
        _io_errno = n;
        if (n == -ETIMEDOUT) co_return unexpected{error{errc::timeout, "timeout waiting for TLS data"}};
        co_return unexpected{error{errc::io, fmt::format("receiving TLS data: {}", std::strerror(-n))}};
    }
    _in_end = static_cast<size_t>(n);
    co_return tls_result<void>{};
}

task<tls_result<void>> session::handshake(std::string_view server_name, milliseconds timeout) {
    const auto deadline = steady::now() + timeout;
    std::string name(server_name);
    if (!name.empty()) {
        if (is_ip_literal(name)) {
            // No SNI for addresses (RFC 6066 §3); verify against the IP SANs.
            if (_ctx->options().verify &&
                wolfSSL_X509_VERIFY_PARAM_set1_ip_asc(wolfSSL_get0_param(_ssl), name.c_str()) != WOLFSSL_SUCCESS)
                co_return unexpected{error{errc::setup, fmt::format("cannot set {} as the expected address", name)}};
        } else {
            if (wolfSSL_UseSNI(_ssl, WOLFSSL_SNI_HOST_NAME, name.data(), static_cast<unsigned short>(name.size())) !=
                WOLFSSL_SUCCESS)
                co_return unexpected{error{errc::setup, fmt::format("cannot set SNI {}", name)}};
            if (_ctx->options().verify && wolfSSL_check_domain_name(_ssl, name.c_str()) != WOLFSSL_SUCCESS)
                co_return unexpected{error{errc::setup, fmt::format("cannot set {} as the expected name", name)}};
        }
    }
    for (;;) {
        int ret = wolfSSL_connect(_ssl);
        // Anything wolfSSL queued (hello, finished, or the alert of a failure) goes out first.
        tls_result<void> flushed = co_await flush(remaining(deadline));
        if (ret == WOLFSSL_SUCCESS) {
            if (!flushed) co_return flushed;
            _established = true;
            co_return tls_result<void>{};
        }
        int code = wolfSSL_get_error(_ssl, ret);
        if (code == WOLFSSL_ERROR_WANT_READ) {
            if (!flushed) co_return flushed;
            if (steady::now() >= deadline) co_return unexpected{error{errc::timeout, "timeout during the TLS handshake"}};
            tls_result<void> filled = co_await fill(remaining(deadline));
            if (!filled) {
                error e = filled.error();
                e.message = fmt::format("TLS handshake: {}", e.message);
                co_return unexpected{std::move(e)};
            }
            continue;
        }
        if (code == WOLFSSL_ERROR_WANT_WRITE) continue;  // not produced by on_send; defensive
        co_return unexpected{last_error(ret, "TLS handshake")};
    }
}

task<tls_result<void>> session::write_staged(const char* data, size_t len, milliseconds timeout) {
    while (len > 0) {
        // At most flush_bytes per call, so _out stays bounded.
        int chunk = static_cast<int>(std::min(len, flush_bytes));
        int ret = wolfSSL_write(_ssl, data, chunk);
        if (ret > 0) {
            data += ret;
            len -= static_cast<size_t>(ret);
            if (_out.size() >= flush_bytes) {
                tls_result<void> flushed = co_await flush(timeout);
                if (!flushed) co_return flushed;
            }
            continue;
        }
        int code = wolfSSL_get_error(_ssl, ret);
        if (code == WOLFSSL_ERROR_WANT_READ) {
            // e.g. a renegotiation or key update in progress: send what is queued, read, retry.
            tls_result<void> flushed = co_await flush(timeout);
            if (!flushed) co_return flushed;
            tls_result<void> filled = co_await fill(timeout);
            if (!filled) co_return filled;
            continue;
        }
        co_return unexpected{last_error(ret, "TLS write")};
    }
    co_return tls_result<void>{};
}

task<tls_result<void>> session::write(std::string_view data, milliseconds timeout) {
    tls_result<void> written = co_await write_staged(data.data(), data.size(), timeout);
    if (!written) co_return written;
    tls_result<void> flushed = co_await flush(timeout);
    co_return flushed;
}

task<tls_result<void>> session::write(std::span<const iovec> data, milliseconds timeout) {
    // Many small iovecs (dot-stuffed lines) are coalesced into full records;
    // a large one (a BDAT body) is encrypted straight from where it lies.
    if (!_stage) _stage.reset(new char[stage_bytes]);
    size_t staged = 0;
    for (const iovec& v : data) {
        const char* p = static_cast<const char*>(v.iov_base);
        size_t left = v.iov_len;
        while (left > 0) {
            if (staged == 0 && left >= stage_bytes) {
                tls_result<void> direct = co_await write_staged(p, left, timeout);
                if (!direct) co_return direct;
                left = 0;
                break;
            }
            size_t n = std::min(left, stage_bytes - staged);
            std::memcpy(_stage.get() + staged, p, n);
            staged += n;
            p += n;
            left -= n;
            if (staged == stage_bytes) {
                tls_result<void> full = co_await write_staged(_stage.get(), staged, timeout);
                if (!full) co_return full;
                staged = 0;
            }
        }
    }
    if (staged > 0) {
        tls_result<void> rest = co_await write_staged(_stage.get(), staged, timeout);
        if (!rest) co_return rest;
    }
    tls_result<void> flushed = co_await flush(timeout);
    co_return flushed;
}

task<tls_result<size_t>> session::read(void* buf, size_t len, milliseconds timeout) {
    int want = static_cast<int>(std::min<size_t>(len, INT_MAX));
    for (;;) {
        int ret = wolfSSL_read(_ssl, buf, want);
        if (!_out.empty()) {
            // Post-handshake messages can make wolfSSL answer (key update, alerts).
            tls_result<void> flushed = co_await flush(timeout);
            if (!flushed) co_return unexpected{flushed.error()};
        }
        if (ret > 0) co_return static_cast<size_t>(ret);
        int code = wolfSSL_get_error(_ssl, ret);
        if (code == WOLFSSL_ERROR_ZERO_RETURN) co_return size_t{0};  // close_notify
        if (code == WOLFSSL_ERROR_WANT_READ) {
            tls_result<void> filled = co_await fill(timeout);
            if (!filled) {
                // A TCP close without close_notify: the caller sees end of stream
                // (an SMTP reply is complete or not by itself).
                if (filled.error().code == errc::closed) co_return size_t{0};
                co_return unexpected{filled.error()};
            }
            continue;
        }
        if (_peer_closed) co_return size_t{0};
        co_return unexpected{last_error(ret, "TLS read")};
    }
}

task<void> session::shutdown(milliseconds timeout) {
    if (!_established) co_return;
    wolfSSL_shutdown(_ssl);  // queues close_notify; we do not wait for the peer's
    tls_result<void> flushed = co_await flush(timeout);
    (void)flushed;
}

std::string session::version() const {
    if (!_established) return {};
    const char* v = wolfSSL_get_version(_ssl);
    return v ? v : "";
}

std::string session::cipher() const {
    if (!_established) return {};
    // The IANA name ("TLS_AES_256_GCM_SHA384"), as other MTAs log it, rather
    // than wolfSSL's own ("TLS13-AES256-GCM-SHA384").
    int suite = wolfSSL_get_current_cipher_suite(_ssl);
    const char* c = wolfSSL_get_cipher_name_iana_from_suite(static_cast<unsigned char>((suite >> 8) & 0xff),
                                                            static_cast<unsigned char>(suite & 0xff));
    if (!c || !*c || std::strcmp(c, "None") == 0) c = wolfSSL_CIPHER_get_name(wolfSSL_get_current_cipher(_ssl));
    return c ? c : "";
}

std::string session::description() const {
    if (!_established) return {};
    return fmt::format("{} {}", version(), cipher());
}

}  // namespace ringmail::engine::tls
