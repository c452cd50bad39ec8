"""When a DSN must (not) be sent: null sender, bounces of bounces, NOTIFY=NEVER,
max_age expiry; and `queue flush` after the smarthost comes back."""
from __future__ import annotations

import re
import smtplib
import time

import pytest
from aiosmtpd.controller import Controller

import sink as sink_mod
from conftest import RawSMTP, make_message, queue_id_of, unique
from sink import Sink, free_port


def submit(d, msgid: str, sender: str, rcpts, rcpt_params: str = "") -> str:
    with RawSMTP(d.host, d.port) as c:
        c.ehlo()
        r = c.cmd(f"MAIL FROM:<{sender}>")
        assert r.code == 250, r
        for rc in rcpts:
            r = c.cmd(f"RCPT TO:<{rc}>{rcpt_params}")
            assert r.code == 250, r
        assert c.cmd("DATA").code == 354
        c.send(make_message(msgid, "dsn rules", b"body\r\n", sender=sender or "nobody@example.test")
               + b".\r\n")
        r = c.reply()
        assert r.code == 250, r
        assert c.cmd("QUIT").code == 221
        return queue_id_of(r.text)


def dsns(s: Sink):
    return [m for m in s.snapshot_attempts() if m.mail_from == ""
            and "multipart/report" in (m.header("Content-Type") or "")]


def test_no_dsn_to_null_sender(daemon, sink):
    sink.reject("carol@example.test")
    qid = submit(daemon, unique("null"), "", ["carol@example.test"])
    daemon.wait_log(rf"{qid}: to=<?carol@example\.test>? .*status=bounced")
    daemon.wait_log(rf"{qid}: removed")
    daemon.wait_queue_empty(10)      # a DSN would be queued before the removal
    assert not re.search(rf"{qid}: sender non-delivery notification", daemon.log())
    assert dsns(sink) == []


def test_bounce_of_a_bounce_is_dropped(daemon, sink):
    """The DSN to alice is refused 550 as well: no DSN about the DSN."""
    sink.reject("carol@example.test", "alice@example.test")
    qid = submit(daemon, unique("double"), "alice@example.test", ["carol@example.test"])
    m = daemon.wait_log(rf"{qid}: sender non-delivery notification: ([0-9A-Fa-f]{{16}})")
    dsn_id = m.group(1)
    daemon.wait_log(rf"{dsn_id}: to=<?alice@example\.test>? .*status=bounced")
    daemon.wait_log(rf"{dsn_id}: removed")
    daemon.wait_queue_empty(10)
    assert not re.search(rf"{dsn_id}: sender non-delivery notification", daemon.log())
    assert len(re.findall(r"sender non-delivery notification", daemon.log())) == 1
    assert sink.rcpt_attempts.count("alice@example.test") == 1, sink.rcpt_attempts
    assert "" not in sink.rcpt_attempts


def test_notify_never_no_dsn(daemon, sink):
    sink.reject("carol@example.test")
    qid = submit(daemon, unique("never"), "alice@example.test", ["carol@example.test"],
                 " NOTIFY=NEVER")
    daemon.wait_log(rf"{qid}: to=<?carol@example\.test>? .*status=bounced")
    daemon.wait_log(rf"{qid}: removed")
    daemon.wait_queue_empty(10)
    assert not re.search(rf"{qid}: sender non-delivery notification", daemon.log())
    assert dsns(sink) == []


def test_notify_failure_only_still_bounces(daemon, sink):
    """Control for the test above: NOTIFY=FAILURE does produce the DSN."""
    sink.reject("carol@example.test")
    submit(daemon, unique("failure"), "alice@example.test", ["carol@example.test"],
           " NOTIFY=FAILURE")
    sink.wait_for(lambda ms: [m for m in ms if m.mail_from == ""
                              and m.rcpt_tos == ["alice@example.test"]], 30, "the DSN")


class _TempfailNonNull(sink_mod._Handler):
    """451 for every DATA except from the null sender (so DSNs get through)."""

    async def handle_DATA(self, server, session, envelope, *a):
        with self.sink._lock:
            self.sink.tempfail_all = envelope.mail_from not in (None, "", "<>")
        return await super().handle_DATA(server, session, envelope)


def test_max_age_expiry_dsn(start_daemon, sink):
    sink._controller.handler = _TempfailNonNull(sink)
    d = start_daemon(sink, config={"queue": {"min_backoff": "1s", "max_backoff": "1s",
                                             "max_age": "2s", "jitter": 0.0}})
    msgid = unique("expire")
    qid = submit(d, msgid, "alice@example.test", ["bob@example.test"])
    [report] = sink.wait_for(lambda ms: [m for m in ms if m.mail_from == ""
                                         and m.rcpt_tos == ["alice@example.test"]],
                             30, "the expiry DSN")
    raw = report.data.decode("utf-8", "replace")
    assert re.search(r"Action:\s*failed", raw, re.I), raw[:3000]
    assert re.search(r"Status:\s*4\.\d{1,3}\.\d{1,3}", raw), raw[:3000]
    assert re.search(r"Final-Recipient:\s*rfc822;\s*bob@example\.test", raw, re.I), raw[:3000]
    assert f"<{msgid}>" in raw
    d.wait_log(rf"{qid}: to=<?bob@example\.test>? .*status=expired")
    d.wait_queue_empty(15)
    assert not sink.with_message_id(f"<{msgid}>"), "expired message was delivered after all"


def test_max_age_expiry_when_smarthost_unreachable(start_daemon):
    d = start_daemon(f"127.0.0.1:{free_port()}",
                     config={"queue": {"min_backoff": "1s", "max_backoff": "1s",
                                       "max_age": "2s", "jitter": 0.0}})
    qid = submit(d, unique("expire-down"), "alice@example.test", ["bob@example.test"])
    deadline = time.monotonic() + 20
    doc = {}
    while time.monotonic() < deadline:
        doc = d.queue_json()
        ids = [m["id"] for m in doc["messages"]]
        if qid not in ids and any(m["sender"] == "" for m in doc["messages"]):
            return   # expired; the DSN waits for the smarthost
        time.sleep(0.2)
    raise AssertionError(f"{qid} not expired after 20 s with max_age 2s: {doc}")


def test_flush_after_smarthost_comes_back(start_daemon):
    port = free_port()
    d = start_daemon(f"127.0.0.1:{port}",
                     config={"queue": {"min_backoff": "1h", "max_backoff": "1h"}})
    msgid = unique("back")
    qid = submit(d, msgid, "alice@example.test", ["bob@example.test"])
    deadline = time.monotonic() + 20
    while True:
        ms = [m for m in d.queue_json()["messages"] if m["id"] == qid]
        if ms and ms[0]["attempts"] >= 1:
            break
        assert time.monotonic() < deadline, "never deferred"
        time.sleep(0.1)
    s = Sink()
    s.port = port
    ctl = Controller(sink_mod._Handler(s), hostname="127.0.0.1", port=port,
                     enable_SMTPUTF8=True, decode_data=False, ready_timeout=10.0)
    ctl.start()
    try:
        t0 = time.monotonic()
        r = d.ctl("queue", "flush")
        assert r.returncode == 0, r.stderr
        s.wait_for(lambda ms: [m for m in ms if m.message_id == f"<{msgid}>"], 15,
                   "delivery after flush")
        assert time.monotonic() - t0 < 15
        d.wait_queue_empty(10)
    finally:
        ctl.stop()
