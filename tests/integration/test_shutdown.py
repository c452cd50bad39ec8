"""SIGTERM and persistence across restarts."""
from __future__ import annotations

import smtplib
import time

from conftest import STOP_TIMEOUT, make_message, queue_id_of, unique
from sink import free_port


def test_sigterm_idle_exits_zero(daemon):
    t0 = time.monotonic()
    rc = daemon.terminate()
    assert rc == 0, f"exit code {rc} after SIGTERM:\n{daemon.stderr_tail()}"
    assert time.monotonic() - t0 < STOP_TIMEOUT


def test_queued_message_survives_restart(start_daemon):
    d = start_daemon(f"127.0.0.1:{free_port()}")      # unreachable smarthost: stays queued
    msgid = unique("persist")
    with smtplib.SMTP(d.host, d.port, timeout=30) as c:
        c.ehlo("client.example.test")
        assert c.mail("alice@example.test")[0] == 250
        assert c.rcpt("bob@example.test")[0] == 250
        assert c.rcpt("carol@example.test")[0] == 250
        code, resp = c.data(make_message(msgid, "persist", b"keep me\r\n"))
        assert code == 250, resp
        qid = queue_id_of(resp.decode())
    assert d.terminate() == 0, d.stderr_tail()
    d.restart()
    doc = d.queue_json()
    ids = {m["id"]: m for m in doc["messages"]}
    assert qid in ids, f"{qid} lost across restart: {doc}"
    assert ids[qid]["sender"] == "alice@example.test"
    assert sorted(ids[qid]["recipients"]) == ["bob@example.test", "carol@example.test"]
