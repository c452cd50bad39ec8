"""Hostile input: each gets a clear reply code (or a close), bounded memory, nothing lost,
nothing smuggled."""
from __future__ import annotations

import smtplib
import socket

import pytest

from conftest import RawSMTP, make_message, queue_id_of, unique

SMUGGLING = [b"\n.\n", b"\r.\r", b"\n.\r\n", b"\r\n.\n", b"\r.\r\n", b"\n.\r"]


def alive(d) -> None:
    """The daemon still runs and serves a new session."""
    assert d.alive(), "ringmaild died:\n" + d.stderr_tail()
    with RawSMTP(d.host, d.port, timeout=20) as c:
        assert c.banner.code == 220, c.banner
        c.ehlo()
        assert c.cmd("QUIT").code == 221


def send_legit(c: RawSMTP, msgid: str) -> str:
    assert c.cmd("MAIL FROM:<alice@example.test>").code == 250
    assert c.cmd("RCPT TO:<bob@example.test>").code == 250
    assert c.cmd("DATA").code == 354
    c.send(make_message(msgid, "legit", b"legit body\r\n") + b".\r\n")
    r = c.reply()
    assert r.code == 250, r
    return queue_id_of(r.text)


@pytest.mark.parametrize("seq", SMUGGLING, ids=[repr(s)[2:-1] for s in SMUGGLING])
def test_smuggling_sequence_rejected(daemon, sink, seq):
    evil_id = unique("smuggled")
    with RawSMTP(daemon.host, daemon.port) as c:
        c.ehlo()
        assert c.cmd("MAIL FROM:<alice@example.test>").code == 250
        assert c.cmd("RCPT TO:<bob@example.test>").code == 250
        assert c.cmd("DATA").code == 354
        payload = (make_message(unique("carrier"), "carrier", b"innocent") + seq
                   + b"MAIL FROM:<evil@attacker.test>\r\nRCPT TO:<victim@example.test>\r\n"
                   + b"DATA\r\n" + make_message(evil_id, "smuggled", b"smuggled body\r\n")
                   + b".\r\n")
        c.send(payload)
        r = c.reply()
        assert r.code == 554 and "5.6.0" in r.text, f"whole message must be refused: {r}"
        # exactly one reply for the whole DATA: the next reply answers our VRFY
        r = c.cmd("VRFY postmaster")
        assert r.code == 252, f"extra replies after DATA (smuggled commands ran?): {r}"
        # the session is still usable
        legit = unique("legit")
        send_legit(c, legit)
        assert c.cmd("QUIT").code == 221
    sink.wait_for(lambda ms: any(m.message_id == f"<{legit}>" for m in ms), 30, "legit message")
    daemon.wait_queue_empty(30)
    for m in sink.snapshot_attempts():
        assert b"smuggled body" not in m.data and "victim@example.test" not in m.rcpt_tos, \
            f"smuggled message reached the sink: {m}"
        assert b"innocent" not in m.data, "the refused carrier message was relayed"
    assert len(sink.snapshot()) == 1


def test_starttls_not_offered(daemon):
    with RawSMTP(daemon.host, daemon.port) as c:
        assert "STARTTLS" not in c.ehlo().text.upper()
        r = c.cmd("STARTTLS")
        assert r.code in (500, 502), r
        # command injection after STARTTLS in one segment: answered as plain commands
        c.send(b"STARTTLS\r\nNOOP\r\n")
        assert c.reply().code in (500, 502)
        assert c.reply().code == 250
        assert c.cmd("QUIT").code == 221


def test_command_line_513_bytes(daemon):
    line = b"NOOP " + b"x" * (513 - 5 - 2) + b"\r\n"      # 513 octets including CRLF
    assert len(line) == 513
    with RawSMTP(daemon.host, daemon.port) as c:
        c.ehlo()
        c.send(line)
        r = c.reply()
        assert r.code == 500 and "5.5.2" in r.text, r
        assert c.cmd("NOOP").code == 250
        r = c.cmd(b"MAIL FROM:<" + b"a" * 600 + b"@example.test>")
        assert r.code == 500 and "5.5.2" in r.text, r
        assert c.cmd("QUIT").code == 221
    alive(daemon)


def test_one_megabyte_command_line(daemon):
    rss_before = daemon.rss_kib()
    for _ in range(3):
        with RawSMTP(daemon.host, daemon.port) as c:
            c.ehlo()
            try:
                c.send(b"NOOP " + b"A" * (1024 * 1024) + b"\r\n")
            except (BrokenPipeError, ConnectionResetError):
                pass   # the daemon may close on an overlong line; it must not die
            try:
                r = c.reply()
                assert r.code in (500, 421), f"overlong line needs 500 5.5.2 or 421: {r}"
                if r.code == 500:
                    assert "5.5.2" in r.text, r
            except (EOFError, ConnectionResetError):
                pass
    alive(daemon)
    rss_after = daemon.rss_kib()
    if rss_before is not None and rss_after is not None:
        assert rss_after - rss_before < 64 * 1024, \
            f"RSS grew from {rss_before} KiB to {rss_after} KiB after three 1 MB lines"


def test_overlong_text_line_in_data(daemon, sink):
    msgid = unique("longline")
    with RawSMTP(daemon.host, daemon.port) as c:
        c.ehlo()
        assert c.cmd("MAIL FROM:<alice@example.test>").code == 250
        assert c.cmd("RCPT TO:<bob@example.test>").code == 250
        assert c.cmd("DATA").code == 354
        c.send(make_message(msgid, "long line", b"short\r\n" + b"y" * 2000 + b"\r\nend\r\n")
               + b".\r\n")
        r = c.reply()
        assert 500 <= r.code < 600, f"a 2002-octet text line must be refused: {r}"
    daemon.wait_queue_empty(10)
    assert not any(m.message_id == f"<{msgid}>" for m in sink.snapshot_attempts())
    alive(daemon)


def test_longest_line_starting_with_a_dot_is_accepted(daemon, sink):
    """A 998-octet line that starts with '.' is 999 octets + CRLF on the wire after
    dot-stuffing; RFC 5321 §4.5.3.1.6 does not count that dot, so it is legal (and
    a line one octet longer is not)."""
    msgid = unique("dotline")
    line = b"." + b"d" * 997
    msg = make_message(msgid, "dot line", b"first\r\n" + line + b"\r\nlast\r\n")
    with RawSMTP(daemon.host, daemon.port) as c:
        c.ehlo()
        assert c.cmd("MAIL FROM:<alice@example.test>").code == 250
        assert c.cmd("RCPT TO:<bob@example.test>").code == 250
        assert c.cmd("DATA").code == 354
        c.send(msg.replace(b"\r\n.", b"\r\n..") + b".\r\n")
        r = c.reply()
        assert r.code == 250, r
        assert c.cmd("MAIL FROM:<alice@example.test>").code == 250
        assert c.cmd("RCPT TO:<bob@example.test>").code == 250
        assert c.cmd("DATA").code == 354
        longer = make_message(unique("dotline2"), "dot line", b"." + b"d" * 998 + b"\r\n")
        c.send(longer.replace(b"\r\n.", b"\r\n..") + b".\r\n")
        assert c.reply().code == 554
    got = sink.wait_for(lambda ms: [m for m in ms if m.message_id == f"<{msgid}>"], 30, msgid)
    assert got[0].data.endswith(msg), "the message changed on the way"


def test_talking_before_banner(daemon):
    with RawSMTP(daemon.host, daemon.port, read_banner=False) as c:
        c.send(b"EHLO early.example.test\r\n")
        try:
            r = c.reply()
            assert r.code in (220, 554), f"first reply must be the banner or 554: {r}"
            if r.code == 220:
                r2 = c.reply()
                assert 200 <= r2.code < 600, r2
        except (EOFError, ConnectionResetError):
            pass   # a close after the 554 is fine
    alive(daemon)


def test_too_many_errors(start_daemon, sink):
    d = start_daemon(sink, config={"smtp": {"max_errors": 10}})
    with RawSMTP(d.host, d.port) as c:
        c.ehlo()
        codes = []
        got_421 = None
        for i in range(1, 16):
            try:
                r = c.cmd(f"XYZZY{i}")
            except (EOFError, ConnectionResetError, BrokenPipeError) as e:
                raise AssertionError(f"closed without 421 after {codes}: {e}")
            codes.append(r.code)
            if r.code == 421:
                assert "4.7.0" in r.text, r
                got_421 = i
                break
            assert r.code == 500 and "5.5.1" in r.text, r
        assert got_421 is not None and got_421 <= 11, f"no 421 after max_errors=10: {codes}"
        assert c.closed_by_peer(10), "connection not closed after 421"
    alive(d)


def test_reply_codes(daemon):
    cases = [
        # (commands before, command, code, enhanced status)
        ([], "FROBNICATE", 500, "5.5.1"),
        ([], "RCPT TO:<bob@example.test>", 503, "5.5.1"),
        ([], "DATA", 503, "5.5.1"),
        ([], "VRFY bob@example.test", 252, None),
        ([], "MAIL FROM:<alice@example.test> FROBNICATE=1", 555, "5.5.4"),
        (["MAIL FROM:<alice@example.test>"], "RCPT TO:<bob@example.test> FROBNICATE=1", 555, "5.5.4"),
        ([], "MAIL FROM:<alice@@example..test>", 501, "5.1.7"),
        ([], "MAIL FROM:<alice example.test>", 501, "5.1.7"),
        (["MAIL FROM:<alice@example.test>"], "RCPT TO:<bob@@example..test>", 501, "5.1.3"),
        (["MAIL FROM:<alice@example.test>"], "MAIL FROM:<alice@example.test>", 503, "5.5.1"),
    ]
    problems = []
    for before, cmd, code, esc in cases:
        with RawSMTP(daemon.host, daemon.port) as c:
            c.ehlo()
            for b in before:
                r = c.cmd(b)
                assert r.code == 250, (b, r)
            r = c.cmd(cmd)
            if r.code != code or (esc and esc not in r.text):
                problems.append(f"{cmd!r}: expected {code} {esc or ''}, got {r}")
    assert not problems, "\n".join(problems)
    alive(daemon)


def test_101_recipients(daemon, sink):
    msgid = unique("many")
    rcpts = [f"r{i:03d}@example.test" for i in range(101)]
    with smtplib.SMTP(daemon.host, daemon.port, timeout=60) as c:
        c.ehlo("client.example.test")
        assert c.mail("alice@example.test")[0] == 250
        for r in rcpts[:100]:
            code, resp = c.rcpt(r)
            assert code == 250, (r, code, resp)
        code, resp = c.rcpt(rcpts[100])
        assert code == 452 and b"4.5.3" in resp, (code, resp)
        code, resp = c.data(make_message(msgid, "hundred", b"to a hundred\r\n"))
        assert code == 250, resp
    sink.wait_for(lambda ms: len({r for m in ms if m.message_id == f"<{msgid}>"
                                  for r in m.rcpt_tos}) >= 100, 60, "100 recipients")
    got = sorted(r for m in sink.with_message_id(f"<{msgid}>") for r in m.rcpt_tos)
    assert got == rcpts[:100], "the 101st must not be delivered, the others once each"


def test_oversize_message(start_daemon, sink):
    limit = 1024 * 1024
    d = start_daemon(sink, config={"smtp": {"message_size_limit": "1MiB"}})
    big_id, small_id = unique("big"), unique("small")
    with RawSMTP(d.host, d.port) as c:
        r = c.ehlo()
        assert f"SIZE {limit}" in r.text, r
        # declared too big: refused at MAIL
        r = c.cmd(f"MAIL FROM:<alice@example.test> SIZE={limit + 1000}")
        assert r.code == 552 and "5.3.4" in r.text, r
        # undeclared and too big: refused at the end of DATA
        assert c.cmd("MAIL FROM:<alice@example.test>").code == 250
        assert c.cmd("RCPT TO:<bob@example.test>").code == 250
        assert c.cmd("DATA").code == 354
        line = b"z" * 500 + b"\r\n"
        c.send(make_message(big_id, "too big", line * (3 * limit // len(line) // 2)) + b".\r\n")
        r = c.reply()
        assert r.code == 552 and "5.3.4" in r.text, r
        # the session goes on
        send_legit(c, small_id)
        assert c.cmd("QUIT").code == 221
    sink.wait_for(lambda ms: any(m.message_id == f"<{small_id}>" for m in ms), 30, "small message")
    d.wait_queue_empty(30)
    assert not any(m.message_id == f"<{big_id}>" for m in sink.snapshot_attempts())


def test_dsn_parameters_that_decode_to_control_characters_are_refused(daemon):
    """RFC 3461 §4.2/§4.4: ENVID and an ORCPT address are printable ASCII in xtext;
    "+0D+0A" (CR LF) or "+00" must not be accepted and carried to DSNs or the next
    hop. AUTH= needs the AUTH extension, which is not offered (RFC 4954 §5)."""
    with RawSMTP(daemon.host, daemon.port) as c:
        c.ehlo()
        r = c.cmd("MAIL FROM:<a@example.test> ENVID=abc+0D+0AX-Injected:+20yes")
        assert r.code == 501, r
        r = c.cmd("MAIL FROM:<a@example.test> AUTH=<>")
        assert r.code == 555, r
        assert c.cmd("MAIL FROM:<a@example.test> ENVID=ok+20id").code == 250
        r = c.cmd("RCPT TO:<b@example.test> ORCPT=rfc822;orig+0D+0AX-Injected:+20yes@example.test")
        assert r.code == 501, r
        assert c.cmd("RCPT TO:<b@example.test> ORCPT=rfc822;b@example.test").code == 250
        assert c.cmd("QUIT").code == 221
    alive(daemon)
