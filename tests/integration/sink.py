"""A recording SMTP sink (the smarthost ringmaild relays to), built on aiosmtpd.

Runs in a thread of the test process on loopback. Records every transaction's
envelope and raw message bytes (after SMTP dot-unstuffing, CRLF line endings kept),
and can be told how to answer:

- ``reject_rcpts``: recipients answered ``550 5.1.1`` at RCPT (per-recipient failure);
- ``tempfail_first_per_msgid``: the first DATA of each Message-ID is answered
  ``451 4.3.0`` (greylisting), later ones are accepted;
- ``tempfail_all``: every DATA is answered ``451 4.3.0``.

Standalone: ``/usr/bin/python3 tests/integration/sink.py --selftest`` starts a sink,
sends it a message with smtplib and checks what was recorded;
``... sink.py --port 2525`` runs a sink that prints what it receives until Ctrl-C.
"""
from __future__ import annotations

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

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        with self.sink._lock:
            self.sink.rcpt_attempts.append(address)
            rejected = address.lower() in self.sink.reject_rcpts
        if rejected:
            return REJECT_REPLY
        envelope.rcpt_tos.append(address)
        envelope.rcpt_options.extend(rcpt_options)
        return "250 OK"

    async def handle_DATA(self, server, session, envelope):
        data = bytes(envelope.original_content or b"")
        msgid = get_header(data, "Message-ID")
        with self.sink._lock:
            reply = "250 2.0.0 sink: ok"
            if self.sink.tempfail_all:
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
            )
            self.sink.attempts.append(m)
            if m.accepted:
                self.sink.messages.append(m)
            self.sink._cond.notify_all()
        return reply


class Sink:
    def __init__(self, host: str = "127.0.0.1") -> None:
        self.host = host
        self.port = 0
        self.messages: list[SinkMessage] = []   # accepted transactions
        self.attempts: list[SinkMessage] = []   # every DATA, accepted or not
        self.rcpt_attempts: list[str] = []
        self.reject_rcpts: set[str] = set()
        self.tempfail_first_per_msgid = False
        self.tempfail_all = False
        self._seen_msgids: set[str] = set()
        self._lock = threading.Lock()
        self._cond = threading.Condition(self._lock)
        self._controller: Optional[Controller] = None

    # -- lifecycle ---------------------------------------------------------------
    def start(self) -> "Sink":
        last: Exception | None = None
        for _ in range(20):  # the port is picked then bound: retry if someone took it
            port = free_port(self.host)
            ctl = Controller(
                _Handler(self), hostname=self.host, port=port,
                enable_SMTPUTF8=True, decode_data=False,
                data_size_limit=64 * 1024 * 1024,
                server_hostname="sink.example.test", ready_timeout=10.0,
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
        raise RuntimeError(f"sink: could not start: {last}")

    def stop(self) -> None:
        if self._controller is not None:
            try:
                self._controller.stop()
            finally:
                self._controller = None

    def __enter__(self) -> "Sink":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    # -- behaviour ----------------------------------------------------------------
    def reject(self, *rcpts: str) -> None:
        with self._lock:
            self.reject_rcpts.update(r.lower() for r in rcpts)

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
