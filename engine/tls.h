// tls: client-side TLS (wolfSSL) driven by the shard's io_uring.
//
// How the bytes move:
// - wolfSSL never touches the socket. Its I/O callbacks only move bytes
//   between wolfSSL and two in-memory buffers owned by the session: the
//   receive callback hands out what the ring has already received (or
//   answers WOLFSSL_CBIO_ERR_WANT_READ when that is empty), the send callback
//   appends ciphertext to the outbound buffer and never blocks.
// - The coroutine methods below do the socket I/O with the io.h awaitables:
//   after each wolfSSL call they send what wolfSSL queued, and on WANT_READ
//   they receive more and call wolfSSL again. No blocking call, no thread.
//
// Contracts:
// - One wolfSSL_Init per process (std::call_once in the first context).
// - A context is expensive (the system CA store is parsed once per context)
//   and is shared by the sessions of one shard: shared_client_context()
//   keeps one per (verify, ca_file) per thread. A context is never shared
//   between threads by this module.
// - A session is bound to one connected fd and used by one coroutine at a
//   time (no concurrent read and write). It does not own or close the fd.
// - Every socket wait carries a timeout; handshake() bounds the whole
//   handshake by its `timeout`.
// - Errors are values: tls::error holds a closed code and a readable message
//   (wolfSSL_ERR_error_string of wolfSSL's error, plus context).
// - Memory per session: one 17 KiB receive buffer (a TLS record and header)
//   and an outbound buffer that write() flushes every ~64 KiB.
#pragma once

#include <sys/uio.h>

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <string_view>

#include "engine/result.h"
#include "engine/task.h"

// wolfSSL's opaque types; the implementation includes <wolfssl/options.h>
// before <wolfssl/ssl.h>, as the Debian build requires.
struct WOLFSSL_CTX;
struct WOLFSSL;

namespace ringmail::engine::tls {

enum class errc : std::uint8_t {
    none,
    init,          // wolfSSL_Init / context creation failed
    ca_load,       // the CA file or system store could not be loaded
    setup,         // per-connection setup (SNI, name check) failed
    handshake,     // the TLS handshake failed (protocol error, alert, garbage)
    verify,        // certificate chain or name verification failed
    io,            // socket error while talking TLS
    timeout,       // a socket wait timed out
    closed,        // the peer closed the TCP connection in mid-TLS
    protocol,      // a TLS error after the handshake
};

std::string_view describe(errc e);

struct error {
    errc code = errc::none;
    std::string message;  // readable, e.g. "certificate verification failed: ASN no signer error ..."
};

template <class T>
using tls_result = ringmail::result<T, error>;

struct context_options {
    bool verify = false;   // check the peer's chain (and name, see session::handshake)
    std::string ca_file;   // PEM file of trusted CAs; empty = the system CA store (when verify)
    bool operator==(const context_options&) const = default;
};

// A client TLS context: TLS 1.2 and 1.3, wolfSSL_CTX underneath.
class context {
public:
    static tls_result<std::shared_ptr<context>> create_client(const context_options& options);
    ~context();
    context(const context&) = delete;
    context& operator=(const context&) = delete;

    const context_options& options() const { return _options; }
    WOLFSSL_CTX* raw() const { return _ctx; }

private:
    context(WOLFSSL_CTX* ctx, context_options options) : _ctx(ctx), _options(std::move(options)) {}
    WOLFSSL_CTX* _ctx;
    context_options _options;
};

// The calling thread's context for `options`, created on first use and kept
// for the life of the thread (a small cache: one entry per distinct options).
tls_result<std::shared_ptr<context>> shared_client_context(const context_options& options);

// One TLS connection over a connected socket.
class session {
public:
    // The session keeps `ctx` alive. `fd` must stay open while the session is used.
    static tls_result<std::unique_ptr<session>> create(std::shared_ptr<context> ctx, int fd);
    ~session();
    session(const session&) = delete;
    session& operator=(const session&) = delete;

    // Client handshake. `server_name` is sent as SNI (unless it is an IP
    // literal, RFC 6066 §3) and, when the context verifies, checked against
    // the certificate (DNS names against SAN/CN, IP literals against IP SANs;
    // an empty name checks the chain only). `timeout` bounds the whole handshake.
    task<tls_result<void>> handshake(std::string_view server_name, std::chrono::milliseconds timeout);

    // Sends all of `data` (or all iovecs, coalesced into full records).
    // `timeout` bounds each socket send.
    task<tls_result<void>> write(std::string_view data, std::chrono::milliseconds timeout);
    task<tls_result<void>> write(std::span<const iovec> data, std::chrono::milliseconds timeout);

    // Reads up to `len` plaintext bytes; 0 = the peer ended TLS (close_notify)
    // or closed the connection cleanly. `timeout` bounds each socket receive.
    task<tls_result<size_t>> read(void* buf, size_t len, std::chrono::milliseconds timeout);

    // Sends close_notify (does not wait for the peer's). Best effort.
    task<void> shutdown(std::chrono::milliseconds timeout);

    // After a successful handshake: "TLSv1.3", "TLS_AES_256_GCM_SHA384".
    std::string version() const;
    std::string cipher() const;
    // "TLSv1.3 TLS_AES_256_GCM_SHA384", or "" before the handshake.
    std::string description() const;

    bool established() const { return _established; }

private:
    session(std::shared_ptr<context> ctx, WOLFSSL* ssl, int fd);
    static int on_recv(WOLFSSL* ssl, char* buf, int sz, void* self);
    static int on_send(WOLFSSL* ssl, char* buf, int sz, void* self);

    // Sends everything in _out. On failure returns the error.
    task<tls_result<void>> flush(std::chrono::milliseconds timeout);
    // Receives more ciphertext into _in. 0 bytes = peer closed (an error here).
    task<tls_result<void>> fill(std::chrono::milliseconds timeout);
    // Feeds plaintext in [_stage, _stage + _stage_len) to wolfSSL_write.
    task<tls_result<void>> write_staged(const char* data, size_t len, std::chrono::milliseconds timeout);
    error last_error(int ret, std::string_view what);

    std::shared_ptr<context> _ctx;
    WOLFSSL* _ssl;
    int _fd;
    bool _established = false;
    bool _peer_closed = false;   // recv returned 0
    int _io_errno = 0;           // last socket error (negative errno), for messages
    // Inbound ciphertext: [_in_begin, _in_end) not yet given to wolfSSL.
    size_t _in_begin = 0;
    size_t _in_end = 0;
    // Outbound ciphertext queued by wolfSSL, not yet sent.
    std::string _out;
    // Plaintext coalescing for write(iovecs).
    std::unique_ptr<char[]> _stage;
    static constexpr size_t in_capacity = 17 * 1024;   // > 16 KiB record + header
    static constexpr size_t flush_bytes = 64 * 1024;
    static constexpr size_t stage_bytes = 16 * 1024;    // one full TLS record of plaintext
    std::unique_ptr<char[]> _in;
};

}  // namespace ringmail::engine::tls
