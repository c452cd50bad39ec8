"""Permanent failures at the smarthost: per-recipient results and an RFC 3464 DSN."""
from __future__ import annotations

import re
import smtplib

from conftest import make_message, queue_id_of, unique


def test_one_recipient_bounces(daemon, sink):
    sink.reject("carol@example.test")
    msgid = unique("bounce")
    rcpts = ["bob@example.test", "carol@example.test", "dave@example.test"]
    msg = make_message(msgid, "Quarterly report 42", b"please read\r\n")
    with smtplib.SMTP(daemon.host, daemon.port, timeout=30) as c:
        c.ehlo("client.example.test")
        assert c.mail("alice@example.test")[0] == 250
        for r in rcpts:
            assert c.rcpt(r)[0] == 250
        code, resp = c.data(msg)
        assert code == 250, resp
        qid = queue_id_of(resp.decode())

    def dsn(ms):
        return [m for m in ms if m.mail_from == "" and m.rcpt_tos == ["alice@example.test"]]

    [report] = sink.wait_for(dsn, 60, "a DSN to alice@example.test from <>")
    sink.wait_for(lambda ms: sorted(r for m in ms if m.message_id == f"<{msgid}>"
                                    for r in m.rcpt_tos) == ["bob@example.test",
                                                              "dave@example.test"],
                  60, "the two good recipients")
    daemon.wait_queue_empty(30)

    # the good recipients got it exactly once; the refused one was tried once, not retried
    got = sorted(r for m in sink.with_message_id(f"<{msgid}>") for r in m.rcpt_tos)
    assert got == ["bob@example.test", "dave@example.test"], got
    assert sink.rcpt_attempts.count("carol@example.test") == 1, sink.rcpt_attempts
    assert len(dsn(sink.snapshot())) == 1, "exactly one DSN"

    p = report.parsed()
    assert p.get_content_type() == "multipart/report", p.get_content_type()
    assert p.get_param("report-type") == "delivery-status", p.get("Content-Type")
    raw = report.data.decode("utf-8", "replace")
    parts = [part.get_content_type() for part in p.walk()]
    assert "message/delivery-status" in parts, parts
    assert "message/rfc822" in parts or "text/rfc822-headers" in parts, parts
    assert re.search(r"Final-Recipient:\s*rfc822;\s*carol@example\.test", raw, re.I), raw[:4000]
    assert re.search(r"Action:\s*failed", raw, re.I), raw[:4000]
    # the remote reply's own enhanced code, host and words (RFC 3464 §2.3)
    assert re.search(r"^Status: 5\.1\.1\r?$", raw, re.M), raw[:4000]
    assert re.search(r"^Remote-MTA: dns; 127\.0\.0\.1\r?$", raw, re.M), raw[:4000]
    assert re.search(r"^Diagnostic-Code: smtp; 550 5\.1\.1 sink: no such user here\r?$", raw, re.M), raw[:4000]
    assert "bob@example.test" not in re.findall(r"Final-Recipient:\s*rfc822;\s*(\S+)", raw, re.I)
    # the original headers are attached
    assert f"<{msgid}>" in raw and "Quarterly report 42" in raw, raw[:4000]
    daemon.wait_log(rf"{qid}: to=<?carol@example\.test>? relay=\S+ delay=\S+ status=bounced")
    daemon.wait_log(rf"{qid}: to=<?bob@example\.test>? relay=\S+ delay=\S+ status=sent")


def test_bounce_of_a_split_message_returns_all_of_it(daemon, sink):
    """A message just over one page is stored as a head and a tail
    (store/body_split.h); with RET=FULL its DSN returns the whole message,
    last line included."""
    sink.reject("erin@example.test")
    msgid = unique("splitbounce")
    body = b"".join(b"line %04d of the report, long enough to fill a page\r\n" % i for i in range(80))
    body += b"THE-LAST-LINE-IS-IN-THE-TAIL\r\n"
    msg = make_message(msgid, "split bounce", body)
    assert 4096 < len(msg) < 6000
    with smtplib.SMTP(daemon.host, daemon.port, timeout=30) as c:
        c.ehlo("client.example.test")
        assert c.mail("alice@example.test", ["RET=FULL"])[0] == 250
        assert c.rcpt("erin@example.test")[0] == 250
        code, resp = c.data(msg)
        assert code == 250, resp

    [report] = sink.wait_for(lambda ms: [m for m in ms if m.mail_from == ""
                                         and f"<{msgid}>".encode() in m.data], 60, "the DSN")
    raw = report.data
    assert b"THE-LAST-LINE-IS-IN-THE-TAIL" in raw, raw[-600:]
    assert b"line 0079 of the report" in raw and b"line 0000 of the report" in raw
