"""SIGHUP: reloadable keys take effect for new sessions; restart-only keys are kept
(with a warning); a broken file keeps the running configuration."""
from __future__ import annotations

import re
import signal

import pytest

from conftest import RawSMTP, deep_merge, toml_dump
from sink import free_port


def reload(d, changes: dict | None = None, text: str | None = None) -> None:
    """Rewrites the config file, sends SIGHUP and waits for the outcome line."""
    before = len(re.findall(r"configuration reloaded|reload failed", d.log()))
    if text is None:
        d.config = deep_merge(d.config, changes or {})
        text = toml_dump(d.config)
    d.config_path.write_text(text)
    d.proc.send_signal(signal.SIGHUP)
    d.wait_log(rf"(?s)(?:.*?(?:configuration reloaded|reload failed)){{{before + 1}}}", 15)


def rcpt_codes(d, n: int) -> list[int]:
    with RawSMTP(d.host, d.port) as c:
        c.ehlo()
        assert c.cmd("MAIL FROM:<alice@example.test>").code == 250
        codes = [c.cmd(f"RCPT TO:<r{i}@example.test>").code for i in range(n)]
        c.cmd("QUIT")
        return codes


def test_reload_max_recipients(start_daemon, sink):
    d = start_daemon(sink, config={"smtp": {"max_recipients": 3}})
    assert rcpt_codes(d, 5) == [250, 250, 250, 452, 452]
    old = RawSMTP(d.host, d.port)       # a session opened before the reload
    try:
        old.ehlo()
        reload(d, {"smtp": {"max_recipients": 5}})
        assert "configuration reloaded" in d.log()
        assert rcpt_codes(d, 6) == [250] * 5 + [452]
        assert old.cmd("NOOP").code == 250  # the old session is not disturbed
    finally:
        old.close()


def test_reload_log_level(start_daemon, sink):
    d = start_daemon(sink, config={"log": {"level": "info"}})
    assert not re.search(r"debug: ", d.log())
    reload(d, {"log": {"level": "debug"}})
    with RawSMTP(d.host, d.port) as c:
        c.ehlo()
        c.cmd("QUIT")
    d.wait_log(r"debug: connect from 127\.0\.0\.1", 10)


def test_reload_listener_change_needs_restart(start_daemon, sink):
    d = start_daemon(sink)
    new_port = free_port()
    cfg = dict(d.config)
    cfg["listener"] = [{"protocol": "smtp", "address": f"127.0.0.1:{new_port}"}]
    reload(d, text=toml_dump(cfg))
    d.wait_log(r"warning: reload: 'listener[^']*' changed but needs a restart", 5)
    with RawSMTP(d.host, d.port) as c:        # still the old address
        assert c.banner.code == 220
        c.cmd("QUIT")
    import socket
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", new_port), timeout=2).close()
    # restore, so the fixture's checks and a later restart use the running address
    d.config_path.write_text(toml_dump(d.config))


def test_reload_broken_config_keeps_running(start_daemon, sink):
    d = start_daemon(sink, config={"smtp": {"max_recipients": 3}})
    good = d.config_path.read_text()
    reload(d, text=good + "\n[smtp]\nmax_recipients = \"lots\"\n")
    d.wait_log(r"error: reload failed, keeping the running configuration", 5)
    assert d.alive()
    assert rcpt_codes(d, 4) == [250, 250, 250, 452]   # the old limit still applies
    reload(d, text="this is [not toml\n")
    assert d.alive()
    assert len(re.findall(r"reload failed", d.log())) == 2
    assert rcpt_codes(d, 4) == [250, 250, 250, 452]
    # and a good file afterwards is taken
    d.config_path.write_text(good)
    reload(d, {"smtp": {"max_recipients": 4}})
    assert rcpt_codes(d, 5) == [250, 250, 250, 250, 452]


def test_reload_hostname(start_daemon, sink):
    d = start_daemon(sink)
    reload(d, {"server": {"hostname": "renamed.example.test"}})
    with RawSMTP(d.host, d.port) as c:
        assert "renamed.example.test" in c.banner.text, c.banner
