"""Relay control: only clients in [relay] allow_networks may relay."""
from __future__ import annotations

from conftest import RawSMTP


def test_relay_refused_outside_allow_networks(start_daemon, sink):
    # 10.9.9.0/24 is only a filter: nothing ever connects to or from it.
    d = start_daemon(sink, config={"relay": {"allow_networks": ["10.9.9.0/24"]}})
    with RawSMTP(d.host, d.port) as c:
        c.ehlo()
        r = c.cmd("MAIL FROM:<alice@example.test>")
        assert r.code == 250, r
        r = c.cmd("RCPT TO:<victim@elsewhere.test>")
        assert r.code == 554 and "5.7.1" in r.text, r
        assert "victim@elsewhere.test" in r.text, r
        r = c.cmd("DATA")
        assert 500 <= r.code < 600, f"DATA without an accepted recipient must fail: {r}"
        assert c.cmd("RSET").code == 250
        assert c.cmd("QUIT").code == 221
    # the refusal is final: nothing reaches the smarthost and nothing is queued
    assert d.queue_json()["count"] == 0
    assert sink.snapshot_attempts() == []


def test_relay_allowed_inside_allow_networks(start_daemon, sink):
    d = start_daemon(sink, config={"relay": {"allow_networks": ["10.9.9.0/24", "127.0.0.1/32"]}})
    with RawSMTP(d.host, d.port) as c:
        c.ehlo()
        assert c.cmd("MAIL FROM:<alice@example.test>").code == 250
        r = c.cmd("RCPT TO:<bob@elsewhere.test>")
        assert r.code == 250, r


def _send_to_postmaster(d, rcpt: str = "<Postmaster>") -> None:
    with RawSMTP(d.host, d.port) as c:
        c.ehlo()
        assert c.cmd("MAIL FROM:<stranger@example.test>").code == 250
        r = c.cmd(f"RCPT TO:{rcpt}")
        assert r.code == 250, f"RFC 5321 4.5.1: every client may write to the postmaster: {r}"
        # any other recipient stays refused in the same transaction
        r = c.cmd("RCPT TO:<victim@elsewhere.test>")
        assert r.code == 554 and "5.7.1" in r.text, r
        assert c.cmd("DATA").code == 354
        c.send(b"Subject: to the postmaster\r\n\r\nhello\r\n.\r\n")
        r = c.reply()
        assert r.code == 250, r
        assert c.cmd("QUIT").code == 221


def test_postmaster_accepted_from_outside_allow_networks(start_daemon, sink):
    # a client that may not relay still reaches this server's postmaster,
    # which (no local mailboxes) is relay.postmaster, relayed onwards
    d = start_daemon(sink, config={"relay": {"allow_networks": ["10.9.9.0/24"],
                                             "postmaster": "ops@admin.example.test"}})
    _send_to_postmaster(d, "<postMASTER>")
    [m] = sink.wait_count(1, timeout=20)
    assert m.rcpt_tos == ["ops@admin.example.test"]
    assert m.mail_from == "stranger@example.test"
    assert b"hello" in m.data


def test_postmaster_defaults_to_postmaster_at_hostname(start_daemon, sink):
    d = start_daemon(sink, config={"relay": {"allow_networks": ["10.9.9.0/24"]}})
    _send_to_postmaster(d)
    [m] = sink.wait_count(1, timeout=20)
    assert m.rcpt_tos == [f"postmaster@{d.config['server']['hostname']}"]
