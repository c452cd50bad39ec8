"""A recording SMTP sink (the smarthost ringmaild relays to), built on aiosmtpd.

Runs in a thread of the test process on loopback. Records every transaction's
envelope and raw message bytes (after SMTP dot-unstuffing, CRLF line endings kept),
and can be told how to answer:

- ``reject_rcpts``: recipients answered ``550 5.1.1`` at RCPT (per-recipient failure);
- ``tempfail_first_per_msgid``: the first DATA of each Message-ID is answered
  ``451 4.3.0`` (greylisting), later ones are accepted;
- ``tempfail_all``: every DATA is answered ``451 4.3.0``;
- ``behave(mode, stage)``: "accept" (default), "tempfail" (451 4.3.0) or "reject"
  (550 5.7.1) at the given stage of every transaction: "mail", "rcpt" (default) or "data";
- ``data_delay``: seconds to wait before answering each DATA (keeps connections open,
  for concurrency tests).

It also counts connections: ``connections`` (peers, in order), ``current_connections``
and ``max_connections`` (the most open at once). ``Sink(host, port)`` binds that exact
address (any 127.0.0.x, or ::1); port 0 (default) picks a free one.

Standalone: ``/usr/bin/python3 tests/integration/sink.py --selftest`` starts a sink,
sends it a message with smtplib and checks what was recorded;
``... sink.py --port 2525`` runs a sink that prints what it receives until Ctrl-C.
"""
from __future__ import annotations

import asyncio
import dataclasses
import email.parser
import email.policy
import socket
import threading
import time
from typing import Callable, Optional

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP

TEMPFAIL_REPLY = "451 4.3.0 sink: greylisted, try again later"
REJECT_REPLY = "550 5.1.1 sink: no such user here"
MODE_TEMPFAIL_REPLY = "451 4.3.0 sink: temporarily refusing everything"
MODE_REJECT_REPLY = "550 5.7.1 sink: refusing everything"
MODES = ("accept", "tempfail", "reject")
STAGES = ("mail", "rcpt", "data")


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def split_message(data: bytes) -> tuple[bytes, bytes]:
    """(header block including the final CRLF, body) of a CRLF message."""
    i = data.find(b"\r\n\r\n")
    if i < 0:
        return data, b""
    return data[: i + 2], data[i + 4 :]


def header_lines(headers: bytes) -> list[bytes]:
    """Unfolded header fields of a header block, in order."""
    fields: list[bytes] = []
    for line in headers.split(b"\r\n"):
        if not line:
            continue
        if line[:1] in (b" ", b"\t") and fields:
            fields[-1] += b"\r\n" + line
        else:
            fields.append(line)
    return fields


def get_header(data: bytes, name: str) -> Optional[str]:
    headers, _ = split_message(data)
    prefix = name.lower().encode() + b":"
    for f in header_lines(headers):
        if f.lower().startswith(prefix):
            return f[len(prefix) :].decode("utf-8", "replace").strip()
    return None


@dataclasses.dataclass
class SinkMessage:
    mail_from: str
    rcpt_tos: list[str]
    mail_options: list[str]
    rcpt_options: list[str]
    data: bytes            # raw bytes as received (after dot-unstuffing)
    peer: tuple
    helo: str
    time: float
    accepted: bool         # False when the sink answered the DATA with a 4xx/5xx
    reply: str
    tls: bool = False      # the transaction ran inside STARTTLS

    @property
    def message_id(self) -> Optional[str]:
        return get_header(self.data, "Message-ID")

    def header(self, name: str) -> Optional[str]:
        return get_header(self.data, name)

    def parsed(self):
        return email.parser.BytesParser(policy=email.policy.default).parsebytes(self.data)


class _Handler:
    def __init__(self, sink: "Sink") -> None:
        self.sink = sink

    async def handle_MAIL(self, server, session, envelope, address, mail_options):
        with self.sink._lock:
            self.sink.mail_attempts.append(address)
            refusal = self.sink._mode_reply("mail")
        if refusal:
            return refusal
        envelope.mail_from = address
        envelope.mail_options.extend(mail_options)
        return "250 OK"

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        with self.sink._lock:
            self.sink.rcpt_attempts.append(address)
            rejected = address.lower() in self.sink.reject_rcpts
            refusal = self.sink._mode_reply("rcpt")
        if refusal:
            return refusal
        if rejected:
            return REJECT_REPLY
        if self.sink.max_rcpts_per_transaction and len(envelope.rcpt_tos) >= self.sink.max_rcpts_per_transaction:
            return "452 4.5.3 sink: too many recipients"
        envelope.rcpt_tos.append(address)
        envelope.rcpt_options.extend(rcpt_options)
        return "250 OK"

    async def handle_DATA(self, server, session, envelope):
        data = bytes(envelope.original_content or b"")
        msgid = get_header(data, "Message-ID")
        delay = self.sink.data_delay
        if delay:
            await asyncio.sleep(delay)
        with self.sink._lock:
            reply = "250 2.0.0 sink: ok"
            refusal = self.sink._mode_reply("data")
            if refusal:
                reply = refusal
            elif self.sink.tempfail_all:
                reply = TEMPFAIL_REPLY
            elif self.sink.tempfail_first_per_msgid and msgid is not None \
                    and msgid not in self.sink._seen_msgids:
                reply = TEMPFAIL_REPLY
            if msgid is not None:
                self.sink._seen_msgids.add(msgid)
            mail_from = envelope.mail_from
            m = SinkMessage(
                mail_from="" if mail_from in (None, "<>") else mail_from,
                rcpt_tos=list(envelope.rcpt_tos),
                mail_options=list(envelope.mail_options),
                rcpt_options=list(envelope.rcpt_options),
                data=data,
                peer=tuple(session.peer) if session.peer else (),
                helo=session.host_name or "",
                time=time.monotonic(),
                accepted=reply.startswith("250"),
                reply=reply,
                tls=bool(getattr(session, "ssl", None)),
            )
            self.sink.attempts.append(m)
            if m.accepted:
                self.sink.messages.append(m)
            self.sink._cond.notify_all()
        return reply


class _CountingSMTP(SMTP):
    """aiosmtpd's SMTP session, counting connections on the sink."""

    def __init__(self, sink: "Sink", *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self._sink = sink
        self._counted = False

    def connection_made(self, transport) -> None:
        first = self.transport is None
        super().connection_made(transport)
        if first:
            self._counted = self._sink._conn_opened(transport.get_extra_info("peername"))
            self._sink._transports.add(transport)

    def connection_lost(self, error) -> None:
        self._sink._transports.discard(self.transport)
        if self._counted:
            self._counted = False
            self._sink._conn_closed()
        super().connection_lost(error)


class _SinkController(Controller):
    def __init__(self, sink: "Sink", handler, **kwargs) -> None:
        super().__init__(handler, **kwargs)
        self._sink = sink

    def factory(self):
        return _CountingSMTP(self._sink, self.handler, **self.SMTP_kwargs)

    def start(self):
        # Bind here, in the caller's thread: a port clash raises at once (aiosmtpd would
        # only report it after ready_timeout), and the listener is ready before the loop.
        fam = socket.AF_INET6 if ":" in self.hostname else socket.AF_INET
        sock = socket.socket(fam, socket.SOCK_STREAM)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # TIME_WAIT only
            if fam == socket.AF_INET6:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            sock.bind((self.hostname, self.port))
            sock.listen(128)
        except OSError:
            sock.close()
            raise
        self._sock = sock
        try:
            super().start()
        except BaseException:
            sock.close()
            raise

    def _create_server(self):
        return self.loop.create_server(self._factory_invoker, sock=self._sock,
                                       ssl=self.ssl_context)

    def _trigger_server(self):
        # aiosmtpd connects once at start to make sure the server answers; that
        # connection is not the test's: bind it first so its peer can be left uncounted.
        fam = socket.AF_INET6 if ":" in self.hostname else socket.AF_INET
        with socket.socket(fam, socket.SOCK_STREAM) as s:
            s.settimeout(1.0)
            s.bind((self.hostname, 0))
            self._sink._ignore_peer(s.getsockname()[:2])
            s.connect((self.hostname, self.port))
            try:
                s.recv(1024)
            except socket.timeout:
                pass


class Sink:
    def __init__(self, host: str = "127.0.0.1", port: int = 0, tls_context=None,
                 greeting_name: str = "sink.example.test") -> None:
        self.greeting_name = greeting_name  # the name in its 220 greeting and EHLO reply
        self.size_limit = 64 * 1024 * 1024  # announced as SIZE (set before start)
        self.host = host
        self.tls_context = tls_context  # an ssl.SSLContext: offer STARTTLS
        self.port = port
        self.fixed_port = port      # nonzero: start() binds exactly this port, no retry
        self.messages: list[SinkMessage] = []   # accepted transactions
        self.attempts: list[SinkMessage] = []   # every DATA, accepted or not
        self.rcpt_attempts: list[str] = []
        self.mail_attempts: list[str] = []
        self.reject_rcpts: set[str] = set()
        self.max_rcpts_per_transaction = 0  # > 0: RCPTs beyond it get 452 4.5.3
        self.mode = "accept"
        self.fail_stage = "rcpt"
        self.data_delay = 0.0
        self.connections: list[tuple] = []      # peer of every connection, in order
        self.current_connections = 0
        self.max_connections = 0
        self._ignored_peers: set[tuple] = set()
        self._transports: set = set()             # open client connections (loop thread)
        self.tempfail_first_per_msgid = False
        self.tempfail_all = False
        self._seen_msgids: set[str] = set()
        self._lock = threading.RLock()   # re-entrant: wait_* predicates may use properties
        self._cond = threading.Condition(self._lock)
        self._controller: Optional[Controller] = None

    # -- lifecycle ---------------------------------------------------------------
    def start(self) -> "Sink":
        assert self._controller is None, "sink already running"
        last: Exception | None = None
        for _ in range(1 if self.fixed_port else 20):
            # the port is picked then bound: retry if someone took it (not for a fixed port)
            port = self.fixed_port or free_port(self.host)
            ctl = _SinkController(
                self, _Handler(self), hostname=self.host, port=port,
                enable_SMTPUTF8=True, decode_data=False,
                data_size_limit=self.size_limit,
                server_hostname=self.greeting_name, ready_timeout=10.0,
                **({"tls_context": self.tls_context, "require_starttls": False}
                   if self.tls_context is not None else {}),
            )
            try:
                ctl.start()
            except Exception as e:  # noqa: BLE001 - port race, retry
                last = e
                try:
                    ctl.stop(no_assert=True)
                except Exception:  # noqa: BLE001
                    pass
                continue
            self._controller, self.port = ctl, port
            return self
        raise RuntimeError(f"sink: could not start on {self.host} port "
                           f"{self.fixed_port or '(any)'}: {last}")

    def stop(self) -> None:
        """Stops listening and closes the open client connections (as a host that dies)."""
        if self._controller is not None:
            try:
                self._controller.loop.call_soon_threadsafe(self._close_transports)
                self._controller.stop()
            finally:
                self._controller = None

    def __enter__(self) -> "Sink":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    @property
    def running(self) -> bool:
        return self._controller is not None

    @property
    def address(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"

    # -- behaviour ----------------------------------------------------------------
    def reject(self, *rcpts: str) -> None:
        with self._lock:
            self.reject_rcpts.update(r.lower() for r in rcpts)

    def behave(self, mode: str, stage: Optional[str] = None) -> None:
        """Every transaction from now on: "accept", "tempfail" (451) or "reject" (550),
        at `stage` "mail", "rcpt" (the default) or "data"."""
        if mode not in MODES:
            raise ValueError(f"sink mode {mode!r}: one of {MODES}")
        if stage is not None and stage not in STAGES:
            raise ValueError(f"sink stage {stage!r}: one of {STAGES}")
        with self._lock:
            self.mode = mode
            if stage is not None:
                self.fail_stage = stage

    def _mode_reply(self, stage: str) -> Optional[str]:
        """Called with the lock held."""
        if self.mode == "accept" or stage != self.fail_stage:
            return None
        return MODE_TEMPFAIL_REPLY if self.mode == "tempfail" else MODE_REJECT_REPLY

    def _close_transports(self) -> None:
        for t in list(self._transports):
            t.close()

    # -- connection counting (called from the sink's event loop thread) -------------
    def _ignore_peer(self, peer: tuple) -> None:
        with self._lock:
            self._ignored_peers.add(tuple(peer))

    def _conn_opened(self, peer) -> bool:
        peer = tuple(peer[:2]) if peer else ()
        with self._cond:
            if peer in self._ignored_peers:
                self._ignored_peers.discard(peer)
                return False
            self.connections.append(peer)
            self.current_connections += 1
            self.max_connections = max(self.max_connections, self.current_connections)
            self._cond.notify_all()
            return True

    def _conn_closed(self) -> None:
        with self._cond:
            self.current_connections -= 1
            self._cond.notify_all()

    @property
    def connection_count(self) -> int:
        with self._lock:
            return len(self.connections)

    def reset_connection_stats(self) -> None:
        """max_connections := current_connections, and forget the connection list."""
        with self._lock:
            self.connections.clear()
            self.max_connections = self.current_connections

    def wait_connections(self, predicate: Callable[["Sink"], object], timeout: float,
                         what: str = "connection state") -> None:
        """Waits until predicate(sink) is truthy (e.g. lambda s: s.current_connections
        == 0); the predicate reads the counters with the sink's lock held."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while not predicate(self):
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(
                        f"sink {self.address}: timed out after {timeout:.0f}s waiting for "
                        f"{what}: {len(self.connections)} connection(s), "
                        f"{self.current_connections} open, max {self.max_connections}")
                self._cond.wait(min(left, 0.2))

    # -- inspection ---------------------------------------------------------------
    def snapshot(self) -> list[SinkMessage]:
        with self._lock:
            return list(self.messages)

    def snapshot_attempts(self) -> list[SinkMessage]:
        with self._lock:
            return list(self.attempts)

    def with_message_id(self, msgid: str) -> list[SinkMessage]:
        return [m for m in self.snapshot() if m.message_id == msgid]

    def wait_for(self, predicate: Callable[[list[SinkMessage]], object], timeout: float,
                 what: str = "condition") -> object:
        """Waits until predicate(accepted messages) is truthy; returns its value.

        Raises AssertionError with a description of what arrived on timeout."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                value = predicate(list(self.messages))
                if value:
                    return value
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                self._cond.wait(min(left, 0.2))
        raise AssertionError(
            f"sink: timed out after {timeout:.0f}s waiting for {what}; it has "
            f"{len(self.messages)} accepted / {len(self.attempts)} attempted: "
            + self.describe())

    def wait_count(self, n: int, timeout: float) -> list[SinkMessage]:
        self.wait_for(lambda ms: len(ms) >= n, timeout, f"{n} message(s)")
        return self.snapshot()

    def describe(self, limit: int = 20) -> str:
        with self._lock:
            atts = list(self.attempts)
        out = []
        for m in atts[-limit:]:
            out.append(f"[{m.reply.split()[0]}] from=<{m.mail_from}> to={m.rcpt_tos} "
                       f"msgid={m.message_id} size={len(m.data)}")
        return "\n  " + "\n  ".join(out) if out else "(nothing)"


def _selftest() -> int:
    import smtplib

    with Sink() as sink:
        sink.reject("nobody@example.test")
        sink.tempfail_first_per_msgid = True
        msg = (b"From: a@example.test\r\nTo: b@example.test\r\nSubject: self test\r\n"
               b"Message-ID: <selftest@example.test>\r\n\r\nline 1\r\n.leading dot\r\n")
        with smtplib.SMTP(sink.host, sink.port, timeout=10) as c:
            try:
                c.sendmail("a@example.test", ["b@example.test", "nobody@example.test"], msg)
                raise AssertionError("first attempt should have been greylisted")
            except smtplib.SMTPDataError as e:
                assert e.smtp_code == 451, e
            refused = c.sendmail("a@example.test", ["b@example.test", "nobody@example.test"], msg)
            assert "nobody@example.test" in refused, refused
        ms = sink.wait_count(1, 5)
        assert ms[0].data == msg, (ms[0].data, msg)
        assert ms[0].rcpt_tos == ["b@example.test"], ms[0].rcpt_tos
        assert ms[0].message_id == "<selftest@example.test>"
        assert len(sink.snapshot_attempts()) == 2
        print("sink selftest ok:", sink.describe())
    return 0


def _serve(port: int) -> int:
    sink = Sink()
    sink.port = port
    ctl = Controller(_Handler(sink), hostname="127.0.0.1", port=port, enable_SMTPUTF8=True)
    ctl.start()
    print(f"sink listening on 127.0.0.1:{port}; Ctrl-C stops", flush=True)
    seen = 0
    try:
        while True:
            with sink._cond:
                sink._cond.wait(1.0)
                new = sink.attempts[seen:]
                seen = len(sink.attempts)
            for m in new:
                print(f"[{m.reply}] from=<{m.mail_from}> to={m.rcpt_tos} size={len(m.data)}",
                      flush=True)
    except KeyboardInterrupt:
        pass
    finally:
        ctl.stop()
    return 0


if __name__ == "__main__":
    import argparse
    import sys

    ap = argparse.ArgumentParser(description="recording SMTP sink")
    ap.add_argument("--selftest", action="store_true")
    ap.add_argument("--port", type=int, default=2525)
    a = ap.parse_args()
    sys.exit(_selftest() if a.selftest else _serve(a.port))
