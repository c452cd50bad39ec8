"""Mail in through real clients (smtplib, raw sockets, swaks), out to the sink."""
from __future__ import annotations

import hashlib
import re
import shutil
import smtplib
import subprocess

import pytest

from conftest import HOSTNAME, RawSMTP, make_message, queue_id_of, unique
from sink import header_lines, split_message

DELIVERY_TIMEOUT = 30.0


def strip_received(data: bytes) -> tuple[bytes, bytes]:
    """(the first header field, which must be Received:, the rest of the message)."""
    headers, _ = split_message(data)
    fields = header_lines(headers)
    assert fields, f"message has no header: {data[:200]!r}"
    first = fields[0]
    assert first.lower().startswith(b"received:"), \
        f"first header is not Received: {first[:200]!r}"
    return first, data[len(first) + 2:]


def received_count(data: bytes) -> int:
    headers, _ = split_message(data)
    return sum(1 for f in header_lines(headers) if f.lower().startswith(b"received:"))


def assert_relayed_intact(sent: bytes, got: bytes) -> None:
    assert received_count(got) == 1, f"expected exactly one Received:, got {received_count(got)}"
    first, rest = strip_received(got)
    assert HOSTNAME.encode() in first, f"Received: does not name {HOSTNAME}: {first!r}"
    if rest != sent:
        # show where they differ rather than two 10 MB blobs
        i = next((k for k in range(min(len(rest), len(sent))) if rest[k] != sent[k]),
                 min(len(rest), len(sent)))
        raise AssertionError(f"message changed in transit at byte {i} (sent {len(sent)} bytes, "
                             f"got {len(rest)}): sent {sent[max(0, i-40):i+40]!r} got "
                             f"{rest[max(0, i-40):i+40]!r}")


def one_delivery(sink, msgid: str, timeout: float = DELIVERY_TIMEOUT):
    ms = sink.wait_for(lambda ms: [m for m in ms if m.message_id == f"<{msgid}>"], timeout,
                       f"message {msgid}")
    return ms


def test_banner_and_ehlo_keywords(daemon):
    with RawSMTP(daemon.host, daemon.port) as c:
        assert c.banner.code == 220, c.banner
        assert c.banner.lines[0].startswith(f"220 {HOSTNAME} ESMTP"), c.banner
        r = c.ehlo()
        kws = {l[4:].split()[0].upper(): l[4:] for l in r.lines[1:]}
        for k in ("PIPELINING", "SIZE", "8BITMIME", "ENHANCEDSTATUSCODES", "SMTPUTF8",
                  "CHUNKING", "DSN"):
            assert k in kws, f"EHLO does not advertise {k}: {r.lines}"
        assert kws["SIZE"].split()[1:] == [str(20 * 1024 * 1024)], r.lines
        assert "STARTTLS" not in kws, r.lines
        assert c.cmd("QUIT").code == 221


def test_single_message_smtplib(daemon, sink):
    msgid = unique("single")
    body = (b"line one\r\n.starts with a dot\r\n..two dots\r\n.\r\n\r\n"
            b"trailing spaces   \r\n\tTab indented\r\nlast line\r\n")
    msg = make_message(msgid, "single", body)
    c = smtplib.SMTP(timeout=30)
    try:
        code, banner = c.connect(daemon.host, daemon.port)
        assert code == 220 and banner.decode().startswith(HOSTNAME), banner
        c.ehlo("client.example.test")
        assert c.mail("alice@example.test")[0] == 250
        assert c.rcpt("bob@example.test")[0] == 250
        code, resp = c.data(msg)
        assert code == 250, resp
        text = resp.decode()
        assert text.startswith("2.0.0"), text
        qid = queue_id_of(text)
        c.quit()
    finally:
        c.close()
    [m] = one_delivery(sink, msgid)
    assert m.mail_from == "alice@example.test"
    assert m.rcpt_tos == ["bob@example.test"]
    assert_relayed_intact(msg, m.data)
    daemon.wait_log(rf"{qid}: received client=127\.0\.0\.1:\d+ size=\d+ "
                    rf"from=<?alice@example\.test>? nrcpt=1")
    daemon.wait_log(rf"{qid}: to=<?bob@example\.test>? relay={re.escape(sink.address)} "
                    rf"delay=\S+ status=sent")


def test_pipelined_commands_raw_socket(daemon, sink):
    msgid = unique("pipe")
    msg = make_message(msgid, "pipelined", b"pipelined body\r\n")
    with RawSMTP(daemon.host, daemon.port) as c:
        assert "PIPELINING" in c.ehlo().text
        c.send(b"MAIL FROM:<alice@example.test>\r\nRCPT TO:<bob@example.test>\r\n"
               b"RCPT TO:<carol@example.test>\r\nDATA\r\n")
        codes = [c.reply().code for _ in range(4)]
        assert codes == [250, 250, 250, 354], codes
        c.send(msg + b".\r\nQUIT\r\n")
        r = c.reply()
        assert r.code == 250, r
        queue_id_of(r.text)
        assert c.reply().code == 221
    ms = one_delivery(sink, msgid)
    sink.wait_for(lambda ms: sorted(r for m in ms if m.message_id == f"<{msgid}>"
                                    for r in m.rcpt_tos) == ["bob@example.test",
                                                              "carol@example.test"],
                  DELIVERY_TIMEOUT, "both recipients")
    for m in sink.with_message_id(f"<{msgid}>"):
        assert_relayed_intact(msg, m.data)


def test_three_recipients(daemon, sink):
    msgid = unique("multi")
    msg = make_message(msgid, "three", b"to three people\r\n")
    rcpts = ["r1@example.test", "r2@example.org", "r3@example.net"]
    with smtplib.SMTP(daemon.host, daemon.port, timeout=30) as c:
        assert c.sendmail("alice@example.test", rcpts, msg) == {}
    sink.wait_for(lambda ms: sorted(r for m in ms if m.message_id == f"<{msgid}>"
                                    for r in m.rcpt_tos) == sorted(rcpts),
                  DELIVERY_TIMEOUT, "all three recipients")
    copies = sink.with_message_id(f"<{msgid}>")
    got = sorted(r for m in copies for r in m.rcpt_tos)
    assert got == sorted(rcpts), f"each recipient exactly once: {got}"
    for m in copies:
        assert m.mail_from == "alice@example.test"
        assert_relayed_intact(msg, m.data)


def test_8bit_body(daemon, sink):
    msgid = unique("8bit")
    body = "Grüße aus Köln, ça va? 日本語\r\n".encode() + b"raw latin-1: caf\xe9\r\n" \
        + bytes(range(0x80, 0x100)).replace(b"\r", b"").replace(b"\n", b"") + b"\r\n"
    msg = make_message(msgid, "8bit", body,
                       extra=b"Content-Type: text/plain; charset=utf-8\r\n"
                             b"Content-Transfer-Encoding: 8bit\r\n")
    with smtplib.SMTP(daemon.host, daemon.port, timeout=30) as c:
        c.ehlo("client.example.test")
        assert c.has_extn("8bitmime")
        assert c.sendmail("alice@example.test", ["bob@example.test"], msg,
                          mail_options=["BODY=8BITMIME"]) == {}
    [m] = one_delivery(sink, msgid)
    assert_relayed_intact(msg, m.data)
    assert "BODY=8BITMIME" in [o.upper() for o in m.mail_options], \
        f"8-bit message relayed without BODY=8BITMIME: {m.mail_options}"


def test_smtputf8_addresses(daemon, sink):
    msgid = unique("utf8")
    sender, rcpt = "jörg@exämple.test", "zoë@例え.test"
    msg = make_message(msgid, "utf8", "Hallo Zoë\r\n".encode(), sender=sender, to=rcpt)
    with smtplib.SMTP(daemon.host, daemon.port, timeout=30) as c:
        c.ehlo("client.example.test")
        assert c.has_extn("smtputf8")
        assert c.sendmail(sender, [rcpt], msg, mail_options=["SMTPUTF8", "BODY=8BITMIME"]) == {}
    [m] = one_delivery(sink, msgid)
    assert m.mail_from == sender
    assert m.rcpt_tos == [rcpt]
    assert "SMTPUTF8" in [o.upper() for o in m.mail_options], m.mail_options
    assert_relayed_intact(msg, m.data)
    # RFC 6532: the Received: field may name the UTF-8 recipient as it is
    first, _ = strip_received(m.data)
    assert f"for <{rcpt}>".encode() in first, first


def test_10mb_message(daemon, sink):
    msgid = unique("big")
    lines = []
    size = 0
    i = 0
    while size < 10 * 1024 * 1024:
        # 998 octets + CRLF: the longest line RFC 5321 allows; content varies per line
        seed = hashlib.sha256(str(i).encode()).hexdigest()
        line = (f"{i:08d} " + seed * 16)[:998].encode() + b"\r\n"
        lines.append(line)
        size += len(line)
        i += 1
    body = b"".join(lines)
    msg = make_message(msgid, "ten megabytes", body)
    with smtplib.SMTP(daemon.host, daemon.port, timeout=120) as c:
        assert c.sendmail("alice@example.test", ["bob@example.test"], msg) == {}
    [m] = one_delivery(sink, msgid, timeout=120)
    assert_relayed_intact(msg, m.data)


def test_sizes_around_page_boundaries_with_dot_lines(daemon, sink):
    """Messages whose stored size crosses one and two 4 KiB pages are kept as a
    head and a tail of last lines (store/body_split.h); every line starts with
    '.', so the tail does too and must be dot-stuffed on the way out exactly
    like the rest. Each message arrives byte-identical."""
    sent = {}
    with smtplib.SMTP(daemon.host, daemon.port, timeout=60) as c:
        for target in list(range(3900, 4700, 41)) + list(range(8000, 8700, 67)):
            msgid = unique(f"page{target}")
            msg = make_message(msgid, f"size {target}", b"")
            i = 0
            while len(msg) < target:
                # lines of varied length, each starting with a dot
                msg += b"." + str(i).encode() + b"x" * (i * 7 % 90) + b"\r\n"
                i += 1
            assert c.sendmail("alice@example.test", ["bob@example.test"], msg) == {}
            sent[msgid] = msg
    for msgid, msg in sent.items():
        [m] = one_delivery(sink, msgid)
        assert_relayed_intact(msg, m.data)


def test_bdat_chunks(daemon, sink):
    msgid = unique("bdat")
    # No dot-stuffing with BDAT: ".\r\n" and ".dot" are plain content, and the chunk
    # boundaries fall inside a line and between CR and LF.
    msg = make_message(msgid, "bdat", b"first\r\n.\r\n.dot line\r\nsplit here\r\nend\r\n")
    cut1 = msg.index(b"split") + 3
    cut2 = msg.index(b"end\r\n") + 4      # between CR and LF
    chunks = [msg[:cut1], msg[cut1:cut2], msg[cut2:]]
    with RawSMTP(daemon.host, daemon.port) as c:
        assert "CHUNKING" in c.ehlo().text
        assert c.cmd("MAIL FROM:<alice@example.test>").code == 250
        assert c.cmd("RCPT TO:<bob@example.test>").code == 250
        for ch in chunks[:-1]:
            c.send(f"BDAT {len(ch)}\r\n".encode() + ch)
            r = c.reply()
            assert r.code == 250, r
        c.send(f"BDAT {len(chunks[-1])} LAST\r\n".encode() + chunks[-1])
        r = c.reply()
        assert r.code == 250, r
        queue_id_of(r.text)
        # and BDAT 0 LAST with everything in one earlier chunk
        msgid2 = unique("bdat0")
        msg2 = make_message(msgid2, "bdat zero last", b"one chunk\r\n")
        assert c.cmd("MAIL FROM:<alice@example.test>").code == 250
        assert c.cmd("RCPT TO:<bob@example.test>").code == 250
        c.send(f"BDAT {len(msg2)}\r\n".encode() + msg2)
        assert c.reply().code == 250
        r = c.cmd("BDAT 0 LAST")
        assert r.code == 250, r
        assert c.cmd("QUIT").code == 221
    [m] = one_delivery(sink, msgid)
    assert_relayed_intact(msg, m.data)
    [m2] = one_delivery(sink, msgid2)
    assert_relayed_intact(msg2, m2.data)


@pytest.mark.skipif(shutil.which("swaks") is None, reason="swaks not installed")
def test_swaks(daemon, sink):
    msgid = unique("swaks")
    r = subprocess.run(
        ["swaks", "--server", daemon.host, "--port", str(daemon.port),
         "--helo", "client.example.test", "--from", "alice@example.test",
         "--to", "bob@example.test", "--header", f"Message-Id: <{msgid}>",
         "--header", "Subject: via swaks", "--body", "sent by swaks\nsecond line",
         "--timeout", "30"],
        stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, f"swaks exited {r.returncode}:\n{r.stdout}\n{r.stderr}"
    assert re.search(r"<[-~]\s+250[ -]2\.0\.0 .*[0-9A-Fa-f]{16}", r.stdout), r.stdout
    [m] = one_delivery(sink, msgid)
    assert m.mail_from == "alice@example.test" and m.rcpt_tos == ["bob@example.test"]
    assert received_count(m.data) == 1
    assert b"sent by swaks\r\nsecond line" in m.data
    assert m.header("Subject") == "via swaks"
