"""A next hop that misbehaves on cue: a small SMTP server on loopback whose every
reply can be replaced, for testing ringmaild's outbound client against servers
that are not polite (tests/integration/test_nexthop_faults.py).

``ScriptedHost(answer)`` listens on 127.0.0.1 (free port) and serves each
connection in a thread. ``answer(stage, conn, state)`` is asked before every
reply: stage is "greeting", "ehlo", "helo", "mail", "rcpt", "data" (the reply to
the DATA command), "end" (after the final dot) or "rset"/"quit"/"other";
``conn`` counts connections from 0; ``state["line"]`` is the command being
answered, ``state["messages"]`` the messages taken on this connection and
``state["active"]`` the connections open when this one came (itself included). It returns None for the normal reply, a
string (one reply, CRLF added; may hold several lines separated by CRLF),
CLOSE to close the connection without a reply, or (reply, CLOSE) to close it
right after the reply. EHLO's normal reply offers
``capabilities`` (PIPELINING, 8BITMIME, SIZE by default: no SMTPUTF8).

Messages that got a 2xx to their final dot are recorded in ``messages`` as
(mail_from_line, rcpt_lines, data_bytes), data dot-unstuffed; ``connections``
counts connections.
"""
from __future__ import annotations

import socket
import threading
import time
from typing import Callable, Optional

CLOSE = object()

DEFAULT_CAPABILITIES = ("PIPELINING", "8BITMIME", "SIZE 100000000")


class ScriptedHost:
    def __init__(self, answer: Optional[Callable] = None,
                 capabilities: tuple[str, ...] = DEFAULT_CAPABILITIES) -> None:
        self.answer = answer or (lambda stage, conn, state: None)
        self.capabilities = capabilities
        self.messages: list[tuple[str, list[str], bytes]] = []
        self.commands: list[tuple[int, str]] = []   # (connection, command line)
        self.connections = 0
        self.active = 0            # connections open now
        self._lock = threading.Lock()
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._sock.bind(("127.0.0.1", 0))
        self._sock.listen(64)
        self.port = self._sock.getsockname()[1]
        self._closed = False
        threading.Thread(target=self._accept, daemon=True).start()

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def close(self) -> None:
        self._closed = True
        try:
            self._sock.close()
        except OSError:
            pass

    def wait_messages(self, n: int, timeout: float) -> list:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self._lock:
                if len(self.messages) >= n:
                    return list(self.messages)
            time.sleep(0.05)
        with self._lock:
            raise AssertionError(f"{len(self.messages)} of {n} messages after {timeout}s; "
                                 f"commands: {self.commands[-20:]}")

    # ------------------------------------------------------------ serving
    def _accept(self) -> None:
        while not self._closed:
            try:
                conn, _ = self._sock.accept()
            except OSError:
                return
            with self._lock:
                index = self.connections
                self.connections += 1
            threading.Thread(target=self._serve, args=(conn, index), daemon=True).start()

    def _serve(self, conn: socket.socket, index: int) -> None:
        conn.settimeout(30)
        f = conn.makefile("rb")
        with self._lock:
            self.active += 1
            state: dict = {"messages": 0, "active": self.active}

        def reply(stage: str, normal: str, r=None, asked: bool = False) -> bool:
            """Sends the scripted (r, when already asked) or the normal reply;
            False when the script closed."""
            if not asked:
                r = self.answer(stage, index, state)
            if r is CLOSE:
                conn.close()
                return False
            then_close = isinstance(r, tuple)
            text = normal if r is None else (r[0] if then_close else r)
            conn.sendall(text.encode() + b"\r\n")
            if then_close:
                conn.close()
                return False
            return True

        try:
            if not reply("greeting", "220 scripted.example.test ESMTP"):
                return
            mail, rcpts = "", []
            while True:
                line = f.readline()
                if not line:
                    return
                cmd = line.rstrip(b"\r\n").decode("utf-8", "replace")
                with self._lock:
                    self.commands.append((index, cmd))
                state["line"] = cmd
                verb = cmd.split(" ", 1)[0].upper()
                if verb == "EHLO":
                    lines = ["scripted.example.test", *self.capabilities]
                    normal = "\r\n".join(f"250{'-' if i < len(lines) - 1 else ' '}{t}" for i, t in enumerate(lines))
                    ok = reply("ehlo", normal)
                elif verb == "HELO":
                    ok = reply("helo", "250 scripted.example.test")
                elif verb == "MAIL":
                    mail, rcpts = cmd, []
                    ok = reply("mail", "250 2.1.0 Ok")
                elif verb == "RCPT":
                    rcpts.append(cmd)
                    ok = reply("rcpt", "250 2.1.5 Ok")
                elif verb == "DATA":
                    r = self.answer("data", index, state)
                    if r is not None:       # refused (or a bogus reply): no data follows
                        if not reply("data", "354 unused", r, asked=True):
                            return
                        continue
                    conn.sendall(b"354 go ahead\r\n")
                    data = b""
                    while True:
                        l = f.readline()
                        if not l:
                            return
                        if l == b".\r\n":
                            break
                        data += l[1:] if l.startswith(b".") else l
                    state["messages"] += 1
                    r = self.answer("end", index, state)
                    text = "250 2.0.0 queued" if r is None else (r[0] if isinstance(r, tuple) else r)
                    if isinstance(text, str) and text.startswith("2"):
                        with self._lock:
                            self.messages.append((mail, rcpts, data))
                    ok = reply("end", "250 2.0.0 queued", r, asked=True)
                elif verb == "RSET":
                    ok = reply("rset", "250 2.0.0 Ok")
                elif verb == "QUIT":
                    reply("quit", "221 2.0.0 Bye")
                    return
                else:
                    ok = reply("other", "502 5.5.2 Error: command not recognized")
                if not ok:
                    return
        except OSError:
            return
        finally:
            with self._lock:
                self.active -= 1
            try:
                conn.close()
            except OSError:
                pass
