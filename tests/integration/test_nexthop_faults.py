"""ringmaild's outbound client against next hops that misbehave (scripted_host.py):
a reply out of step is never taken as a delivery, a 421 ends the connection,
long replies are read, and mail flagged SMTPUTF8 that is plain ASCII still goes
to a next hop without the extension."""
from __future__ import annotations

import email
import email.policy
import os
import shutil
import smtplib
import tempfile
import time
from pathlib import Path

import pytest

from conftest import make_message, start_postfix_smtp_sink, unique
from scripted_host import CLOSE, ScriptedHost
from sink import free_port

# a short retry, and a long one to tell "sent at once" from "deferred"
QUICK_RETRY = {"queue": {"min_backoff": "1s", "max_backoff": "1s", "jitter": 0.0}}
SLOW_RETRY = {"queue": {"min_backoff": "60s", "max_backoff": "60s", "jitter": 0.0},
              "delivery": {"backoff_min": "60s", "backoff_max": "60s"}}


@pytest.fixture
def host():
    h = ScriptedHost()
    yield h
    h.close()


def submit(d, msgid: str, rcpts=("bob@example.test",), sender="alice@example.test", **kw) -> None:
    with smtplib.SMTP(d.host, d.port, timeout=30) as s:
        s.sendmail(sender, list(rcpts), make_message(msgid, body=b"the body " + msgid.encode() + b"\r\n"), **kw)


def wait_log(d, needle: str, timeout: float = 20.0) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        text = d.log()
        if needle in text:
            return text
        time.sleep(0.1)
    raise AssertionError(f"{needle!r} not logged in {timeout}s:\n{d.stderr_tail(40)}")


def test_250_to_data_is_a_protocol_error_not_a_delivery(start_daemon, host):
    """RFC 5321 4.3.2: DATA gets 354 or an error. A next hop (or a desynchronised
    connection) answering 250 has not received the body: the message stays
    queued and is delivered, whole, on a later connection."""
    host.answer = lambda stage, conn, st: "250 2.0.0 ok fine" if stage == "data" and conn == 0 else None
    d = start_daemon(host.address, config=QUICK_RETRY)
    msgid = unique("data250")
    submit(d, msgid)
    log = wait_log(d, "protocol error")
    assert "in reply to DATA" in log
    [(_, _, data)] = host.wait_messages(1, timeout=30)
    assert msgid.encode() in data and b"the body" in data
    assert "status=sent (127.0.0.1" in d.log()
    first = [c for n, c in host.commands if n == 0]
    assert "DATA" in first and "RSET" not in first, f"the out-of-step connection must be closed: {first}"


def test_extra_reply_desynchronises_no_delivery(start_daemon, host):
    """A next hop that sends one reply too many after the end of data: on the
    reused connection every reply is one behind, so the next message's DATA reads
    a stale 250. It must be deferred and retried, not logged as sent unsent."""
    host.answer = (lambda stage, conn, st:
                   "250 2.0.0 queued\r\n250 2.0.0 and again" if stage == "end" and conn == 0 else None)
    d = start_daemon(host.address, config={**QUICK_RETRY, "relay": {"pool_size": 1, "idle_timeout": "10s"}})
    ids = [unique("desync") for _ in range(3)]
    for msgid in ids:
        submit(d, msgid)
    got = host.wait_messages(3, timeout=40)
    bodies = b"".join(m[2] for m in got)
    for msgid in ids:
        assert msgid.encode() in bodies, f"{msgid} lost"
    deadline = time.monotonic() + 20
    while d.queue_json()["count"] != 0 and time.monotonic() < deadline:
        time.sleep(0.2)
    assert d.queue_json()["count"] == 0


def test_421_at_end_of_data_closes_and_the_next_message_goes_at_once(start_daemon, host):
    """421 means the server is closing (RFC 5321 3.8): the next message must not
    be written into that connection (and deferred as "lost connection") but go
    on a new one."""
    host.answer = lambda stage, conn, st: ("421 4.4.2 closing", CLOSE) if stage == "end" and conn == 0 else None
    d = start_daemon(host.address, config={**SLOW_RETRY, "relay": {"pool_size": 1, "idle_timeout": "10s"}})
    first, second = unique("m421a"), unique("m421b")
    with smtplib.SMTP(d.host, d.port, timeout=30) as s:   # both queued together
        for msgid in (first, second):
            s.sendmail("alice@example.test", ["bob@example.test"], make_message(msgid))
    [(_, _, data)] = host.wait_messages(1, timeout=15)
    assert second.encode() in data or first.encode() in data
    time.sleep(0.5)
    log = d.log()
    assert "421 4.4.2 closing" in log
    assert "lost connection" not in log, d.stderr_tail(20)
    assert log.count("status=deferred") == 1, d.stderr_tail(20)
    assert d.queue_json()["count"] == 1   # the one that got the 421 waits for its retry


def test_long_and_many_reply_lines(start_daemon, host):
    """RFC 5321 4.5.3.1: a client should take reply lines longer than 512 octets,
    and replies of many lines: a 550 with a 1000-byte first line bounces with its
    text (not a 'lost connection' deferral), an EHLO of 300 lines works."""
    host.capabilities = tuple(f"X-FILLER-{i} " + "y" * 20 for i in range(300)) + (
        "PIPELINING", "8BITMIME", "SIZE 100000000", "Z" * 1000)
    long_reject = "550-5.7.1 " + "x" * 1000 + "\r\n550 5.7.1 policy says no"
    host.answer = lambda stage, conn, st: long_reject if stage == "rcpt" and "refuse@" in st["line"] else None
    d = start_daemon(host.address, config=QUICK_RETRY)
    submit(d, unique("long"), rcpts=("refuse@example.test", "ok@example.test"))
    log = wait_log(d, "status=bounced")
    assert "xxxxxxxxxx" in log
    assert "lost connection" not in log
    msgs = host.wait_messages(2, timeout=30)   # the message to ok@, then the DSN to alice@
    assert any("ok@example.test" in " ".join(r) for _, r, _ in msgs)
    assert any(b"multipart/report" in data for _, _, data in msgs)


def test_smtputf8_flag_without_utf8_goes_to_a_hop_without_smtputf8(start_daemon, host):
    """Mail sent with SMTPUTF8 whose envelope and headers are ASCII needs no
    downgrade (RFC 6531 3.5 is about UTF-8 that cannot be sent): it is relayed
    without the flag. A UTF-8 recipient to such a hop bounces (5.6.7)."""
    d = start_daemon(host.address, config=QUICK_RETRY)
    msgid = unique("ascii8")
    with smtplib.SMTP(d.host, d.port, timeout=30) as s:
        s.ehlo()
        s.sendmail("alice@example.test", ["bob@example.test"], make_message(msgid),
                   mail_options=["SMTPUTF8"])
    [(mail, rcpts, data)] = host.wait_messages(1, timeout=20)
    assert mail.upper().startswith("MAIL FROM:<ALICE@EXAMPLE.TEST>"), mail   # the message, not a DSN
    assert "SMTPUTF8" not in mail.upper()
    assert rcpts == ["RCPT TO:<bob@example.test>"]
    assert msgid.encode() in data and b"multipart/report" not in data
    with smtplib.SMTP(d.host, d.port, timeout=30) as s:
        s.ehlo()
        s.sendmail("alice@example.test", ["b\u00f6b@example.test"], make_message(unique("utf8")),
                   mail_options=["SMTPUTF8"])
    log = wait_log(d, "does not support SMTPUTF8")
    assert "status=bounced" in log


def test_refused_extra_connection_lowers_concurrency_not_a_pause(start_daemon, host):
    """A next hop that takes one connection at a time and greets a second one with
    421: the destination is not down (one connection delivers), so ringmaild uses
    fewer connections instead of pausing it and deferring everything for minutes
    (Postfix's concurrency feedback)."""
    host.answer = (lambda stage, conn, st:
                   ("421 4.7.0 too many connections", CLOSE) if stage == "greeting" and st["active"] > 1 else None)
    d = start_daemon(host.address, config={**SLOW_RETRY, "relay": {"pool_size": 8, "idle_timeout": "2s"}})
    ids = [unique("conc") for _ in range(30)]
    with smtplib.SMTP(d.host, d.port, timeout=30) as s:
        for msgid in ids:
            s.sendmail("alice@example.test", ["bob@example.test"], make_message(msgid))
    got = host.wait_messages(30, timeout=30)   # a 60 s pause would not make it
    assert {m for m in ids if any(m.encode() in data for _, _, data in got)} == set(ids)
    log = d.log()
    assert "paused" not in log, d.stderr_tail(30)
    assert "status=deferred" not in log, d.stderr_tail(30)
    assert "at most 1 connection(s) for now" in log


def test_quit_after_a_554_greeting_then_retry(start_daemon, host):
    """RFC 5321 3.1: a server that greets with 554 waits for QUIT; the message is
    deferred (Postfix: smtp_skip_5xx_greeting) and delivered when the hop recovers."""
    host.answer = lambda stage, conn, st: "554 5.3.2 not now" if stage == "greeting" and conn == 0 else None
    d = start_daemon(host.address, config={**QUICK_RETRY, "delivery": {"backoff_min": "1s", "backoff_max": "1s"}})
    msgid = unique("g554")
    submit(d, msgid)
    [(_, _, data)] = host.wait_messages(1, timeout=30)
    assert msgid.encode() in data
    assert [c for n, c in host.commands if n == 0] == ["QUIT"], host.commands
    assert "554 5.3.2 not now (while receiving the initial greeting)" in d.log()


@pytest.mark.parametrize("ehlo_reply, refusal, bounces", [("550 5.7.1 go away", "550 5.7.1 go away", True),
                                                          ("451 4.3.0 later", "550 5.7.1 go away", True),
                                                          ("450 4.7.1 not now", "450 4.7.1 not now", False)],
                         ids=["5xx-bounces", "ehlo-4xx-helo-5xx-bounces", "4xx-defers"])
def test_ehlo_and_helo_refused(start_daemon, host, ehlo_reply, refusal, bounces):
    """A next hop that refuses EHLO and answers HELO with a 5xx will not take
    the mail: it bounces at once (Postfix: "refused to talk to me", whatever
    EHLO got) instead of waiting max_age; a 4xx is temporary and the mail waits."""
    host.answer = lambda stage, conn, st: ({"ehlo": ehlo_reply, "helo": refusal}.get(stage) if conn == 0 else None)
    d = start_daemon(host.address, config=SLOW_RETRY)
    msgid = unique("helo5xx")
    submit(d, msgid)
    if not bounces:
        wait_log(d, "status=deferred")
        assert "status=bounced" not in d.log()
        assert d.queue_json()["count"] == 1
        return
    wait_log(d, "status=bounced")
    assert "refused to talk to me: " + refusal in d.log()
    # the DSN goes out on the next connection (the host talks to it)
    [(_, rcpts, data)] = host.wait_messages(1, timeout=30)
    raw = data.decode("utf-8", "replace")
    assert rcpts == ["RCPT TO:<alice@example.test>"], rcpts
    assert "Diagnostic-Code: smtp; " + refusal in raw, raw[:3000]
    assert "Status: 5.7.1" in raw and msgid in raw, raw[:3000]
    first = [c.split()[0] for n, c in host.commands if n == 0]
    assert first == ["EHLO", "HELO", "QUIT"], first


def _eight_bit_message(msgid: str) -> bytes:
    return (f"From: alice@example.test\r\nTo: bob@example.test\r\nMessage-ID: <{msgid}>\r\n"
            "Subject: 8-bit\r\nMIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=\"XYZ\"\r\n"
            "Content-Transfer-Encoding: 8bit\r\n\r\n"
            "--XYZ\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n\r\n"
            "Gr\u00fc\u00dfe aus K\u00f6ln, \u20ac 5 = f\u00fcnf Euro \r\n" + "\u00e9" * 60 + "\r\n.leading dot\r\n"
            "--XYZ\r\nContent-Type: text/plain\r\n\r\nplain ascii part\r\n--XYZ--\r\n").encode()


@pytest.mark.parametrize("eight_bit_hop", [False, True], ids=["7bit-hop-converts", "8bitmime-hop-unchanged"])
def test_8bit_mime_to_a_hop_without_8bitmime_is_converted(start_daemon, eight_bit_hop):
    """RFC 6152 §3: 8-bit MIME content must not go to a server that did not offer
    8BITMIME; as Postfix does, the 8-bit parts go quoted-printable. A hop that
    offers 8BITMIME gets the message as it came."""
    caps = ("PIPELINING", "SIZE", "8BITMIME") if eight_bit_hop else ("PIPELINING", "SIZE")
    h = ScriptedHost(capabilities=caps)
    try:
        d = start_daemon(h.address)
        msgid = unique("8bit")
        original = _eight_bit_message(msgid)
        with smtplib.SMTP(d.host, d.port, timeout=30) as s:
            s.sendmail("alice@example.test", ["bob@example.test"], original, mail_options=["BODY=8BITMIME"])
        [(mail, _, data)] = h.wait_messages(1, timeout=30)
        if eight_bit_hop:
            assert "BODY=8BITMIME" in mail
            assert data.endswith(original), data[-300:]
            return
        assert "BODY=8BITMIME" not in mail
        assert all(b < 0x80 for b in data), "8-bit octets sent to a 7-bit hop"
        assert all(len(line) <= 998 for line in data.split(b"\r\n"))
        # a MIME reader finds the same text in each part
        sent = email.message_from_bytes(data, policy=email.policy.default)
        orig = email.message_from_bytes(original, policy=email.policy.default)
        assert sent["Content-Transfer-Encoding"] == "7bit"
        got_parts = [p.get_content() for p in sent.iter_parts()]
        want_parts = [p.get_content() for p in orig.iter_parts()]
        assert got_parts == want_parts, (got_parts, want_parts)
        assert list(sent.iter_parts())[0]["Content-Transfer-Encoding"] == "quoted-printable"
        assert f"<{msgid}>" == sent["Message-ID"]
    finally:
        h.close()


def test_8bit_mime_to_postfix_smtp_sink_without_8bitmime(start_daemon):
    """The same against a peer we did not write: Postfix's smtp-sink with -8 (no
    8BITMIME), dumping what it received; Python's MIME reader finds the parts."""
    # smtp-sink writes as nobody: a directory it can reach (pytest's are 0700)
    dump = Path(tempfile.mkdtemp(prefix="ringmail-smtp-sink-", dir="/tmp"))
    try:
        os.chmod(dump, 0o777)
        port = free_port()
        p = start_postfix_smtp_sink("-8", "-d", f"{dump}/%M.", port=port)
        try:
            d = start_daemon(f"127.0.0.1:{port}")
            msgid = unique("8bitpf")
            original = _eight_bit_message(msgid)
            with smtplib.SMTP(d.host, d.port, timeout=30) as s:
                s.sendmail("alice@example.test", ["bob@example.test"], original, mail_options=["BODY=8BITMIME"])
            deadline = time.monotonic() + 30
            while not any(dump.iterdir()) and time.monotonic() < deadline:
                time.sleep(0.1)
            time.sleep(0.2)  # the dump file is complete once smtp-sink answered
            [f] = list(dump.iterdir())
            data = f.read_bytes()
        finally:
            p.kill()
            p.wait(5)
    finally:
        shutil.rmtree(dump, ignore_errors=True)
    assert all(b < 0x80 for b in data), "8-bit octets sent to a hop without 8BITMIME"
    assert b"X-Mail-Args: <alice@example.test>\n" in data or b"X-Mail-Args: <alice@example.test>\r\n" in data, data[:300]
    sent = email.message_from_bytes(data, policy=email.policy.default)
    orig = email.message_from_bytes(original, policy=email.policy.default)
    assert sent["Message-ID"] == f"<{msgid}>"
    # smtp-sink's dump has LF line ends: compare the text line by line
    def lines(m):
        return [q.get_content().replace("\r\n", "\n") for q in m.iter_parts()]
    assert lines(sent) == lines(orig)


def test_bounce_of_8bit_mail_is_converted_too(start_daemon):
    """The DSN of 8-bit mail attaches it as it came: the DSN is 8-bit mail
    itself, and a hop without 8BITMIME gets it converted (it used to go out
    raw, without BODY=8BITMIME either)."""
    h = ScriptedHost(capabilities=("PIPELINING", "SIZE"))
    h.answer = lambda stage, conn, st: "550 5.1.1 no such user" if stage == "rcpt" and "bob@" in st["line"] else None
    try:
        d = start_daemon(h.address)
        msgid = unique("8bitdsn")
        with smtplib.SMTP(d.host, d.port, timeout=30) as s:
            s.sendmail("alice@example.test", ["bob@example.test"], _eight_bit_message(msgid),
                       mail_options=["BODY=8BITMIME"])
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            dsns = [m for m in h.messages if m[1] == ["RCPT TO:<alice@example.test>"]]
            if dsns:
                break
            time.sleep(0.1)
        assert dsns, h.commands[-20:]
        [(mail, _, data)] = dsns
        assert mail.startswith("MAIL FROM:<>"), mail
        assert msgid.encode() in data, data[:2000]
        assert all(b < 0x80 for b in data), "8-bit octets in a DSN sent to a hop without 8BITMIME"
    finally:
        h.close()


def test_8bit_mail_that_cannot_be_converted_bounces(start_daemon):
    """An 8-bit message/partial must not be re-encoded (RFC 2046 §5.2.2): for a
    hop without 8BITMIME it bounces 5.6.3 (conversion required, not possible)."""
    h = ScriptedHost(capabilities=("PIPELINING", "SIZE"))
    try:
        d = start_daemon(h.address)
        msgid = unique("partial")
        msg = (f"From: alice@example.test\r\nMessage-ID: <{msgid}>\r\nMIME-Version: 1.0\r\n"
               "Content-Type: message/partial; id=\"p1\"; number=1; total=2\r\n"
               "Content-Transfer-Encoding: 8bit\r\n\r\nK\u00f6ln\r\n").encode()
        with smtplib.SMTP(d.host, d.port, timeout=30) as s:
            s.sendmail("alice@example.test", ["bob@example.test"], msg, mail_options=["BODY=8BITMIME"])
        log = wait_log(d, "status=bounced")
        assert "554 5.6.3 8-bit message/partial cannot be converted to 7 bit" in log, log[-2000:]
        assert not [m for m in h.messages if m[1] == ["RCPT TO:<bob@example.test>"]], "sent unconverted"
    finally:
        h.close()
