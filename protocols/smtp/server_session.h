// server_session: one inbound SMTP connection (RFC 5321, with PIPELINING
// RFC 2920, SIZE RFC 1870, 8BITMIME RFC 6152, ENHANCEDSTATUSCODES RFC 2034,
// SMTPUTF8 RFC 6531, CHUNKING RFC 3030, DSN RFC 3461).
//
// The session is one coroutine reading like the RFC: greet, then read
// commands and answer them through a command table. Contracts:
// - Framing is strict: only CRLF ends a command line and only CRLF.CRLF ends
//   DATA. A bare CR or LF in a command is answered 500 5.5.2; in message
//   content (DATA or BDAT) the whole message is refused 554 5.6.0 at its end,
//   so no smuggled second message can ever be queued (docs/architecture.md).
// - "250" after DATA/BDAT LAST is sent only after the group commit holding
//   the message succeeded; a failed commit answers 451 4.3.0.
// - Receive buffers from the shard's ring are given back before any wait;
//   bodies go into pooled chunks, then once into the LMDB map.
// - Replies to pipelined commands are collected and sent when the input runs
//   dry (RFC 2920 §3.1), before any wait.
#pragma once

#include "engine/task.h"
#include "protocols/smtp/server_context.h"

namespace ringmail::smtp {

// Serves one accepted connection until it ends; owns and closes `fd`.
engine::task<void> serve(server_context& ctx, int fd);

// Shutdown: idle sessions are told to close (421), busy ones finish their
// transaction first. force_close_sessions() cuts every remaining connection.
void stop_sessions(server_context& ctx);
void force_close_sessions(server_context& ctx);

}  // namespace ringmail::smtp
