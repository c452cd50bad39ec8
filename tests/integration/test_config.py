"""Command line and configuration errors."""
from __future__ import annotations

import re

from conftest import REPO, default_config, run_ctl, run_daemon_cmd, toml_dump
from sink import free_port


def project_version() -> str:
    m = re.search(r"version\s*:\s*'([^']+)'", (REPO / "meson.build").read_text())
    assert m, "no version in meson.build"
    return m.group(1)


def test_unknown_key_exit_2_with_location(tmp_path):
    cfg = toml_dump(default_config(tmp_path / "var", free_port(), "127.0.0.1:1"))
    lines = cfg.splitlines()
    at = lines.index("[smtp]") + 1
    lines.insert(at, "frobnication_level = 3")
    path = tmp_path / "bad.toml"
    path.write_text("\n".join(lines) + "\n")
    r = run_daemon_cmd("--config", str(path), timeout=20)
    assert r.returncode == 2, f"exit {r.returncode}, stderr: {r.stderr}"
    want = re.escape(str(path)) + rf":{at + 1}:\d+: .*frobnication_level"
    assert re.search(want, r.stderr), f"expected FILE:{at + 1}:COL and the key in: {r.stderr!r}"


def test_bad_value_exit_2(tmp_path):
    cfg = default_config(tmp_path / "var", free_port(), "127.0.0.1:1")
    cfg["smtp"]["max_recipients"] = "lots"
    path = tmp_path / "bad.toml"
    path.write_text(toml_dump(cfg))
    r = run_daemon_cmd("--config", str(path), timeout=20)
    assert r.returncode == 2, f"exit {r.returncode}, stderr: {r.stderr}"
    assert re.search(re.escape(str(path)) + r":\d+:\d+: .*max_recipients", r.stderr), r.stderr


def test_missing_config_file_fails(tmp_path):
    r = run_daemon_cmd("--config", str(tmp_path / "nope.toml"), timeout=20)
    assert r.returncode != 0
    assert "nope.toml" in r.stderr, r.stderr


def test_version():
    r = run_daemon_cmd("--version")
    assert r.returncode == 0, r.stderr
    assert project_version() in r.stdout + r.stderr, (r.stdout, r.stderr)


def test_daemon_help():
    r = run_daemon_cmd("--help")
    assert r.returncode == 0, r.stderr
    assert "--config" in r.stdout, r.stdout


def test_ctl_help():
    r = run_ctl("--help")
    assert r.returncode == 0, r.stderr
    assert "queue" in r.stdout, r.stdout


def test_listener_port_0_is_shared_by_all_shards(tmp_path):
    """A listener on port 0: the first shard's bind picks the port, every shard listens
    on that same port (SO_REUSEPORT), and the log names it."""
    import socket
    import subprocess
    import time
    from conftest import RINGMAILD

    cfg = default_config(tmp_path / "var", 0, "127.0.0.1:1")
    cfg["server"]["shards"] = 3
    path = tmp_path / "port0.toml"
    path.write_text(toml_dump(cfg))
    err = open(tmp_path / "stderr", "wb")
    proc = subprocess.Popen([str(RINGMAILD), "--config", str(path)], stdin=subprocess.DEVNULL,
                            stdout=subprocess.DEVNULL, stderr=err)
    try:
        deadline = time.monotonic() + 20
        port = None
        while port is None and time.monotonic() < deadline:
            m = re.search(r"listening smtp on 127\.0\.0\.1:(\d+)", (tmp_path / "stderr").read_text())
            if m:
                port = int(m.group(1))
            else:
                time.sleep(0.05)
        assert port and port != 0, (tmp_path / "stderr").read_text()
        # Many connections: with several shards, SO_REUSEPORT spreads them; all must answer.
        for _ in range(24):
            with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
                assert s.recv(512).startswith(b"220 "), "no banner"
    finally:
        proc.terminate()
        assert proc.wait(20) == 0
        err.close()


def test_second_daemon_on_a_port_in_use_is_refused(start_daemon, tmp_path):
    """Each shard listens with SO_REUSEPORT, which would let a second ringmaild of the
    same user join the port and take part of its connections: it must refuse to
    start instead (exit 1, "Address already in use"), and the first keeps them all."""
    first = start_daemon("127.0.0.1:1")
    cfg = default_config(tmp_path / "other-var", first.port, "127.0.0.1:1")
    cfg["server"]["shards"] = 2
    path = tmp_path / "second.toml"
    path.write_text(toml_dump(cfg))
    r = run_daemon_cmd("--config", str(path), timeout=20)
    assert r.returncode == 1, f"exit {r.returncode}, stderr: {r.stderr}"
    assert "Address already in use" in r.stderr and str(first.port) in r.stderr, r.stderr
    assert first.alive()


def test_flush_with_a_stale_pid_file_signals_nobody(tmp_path):
    """A pid file left by a daemon that died (no lock on it) must not make
    `queue flush` signal whatever process has that pid now."""
    import signal
    import subprocess
    victim = subprocess.Popen(["sleep", "30"])
    try:
        cfg = default_config(tmp_path / "var", free_port(), "127.0.0.1:1")
        (tmp_path / "var").mkdir()
        pid_file = tmp_path / "var" / "ringmaild.pid"
        cfg["server"]["pid_file"] = str(pid_file)
        pid_file.write_text(f"{victim.pid}\n")
        path = tmp_path / "stale.toml"
        path.write_text(toml_dump(cfg))
        r = run_ctl("--config", str(path), "queue", "flush")
        assert r.returncode == 1, (r.returncode, r.stdout, r.stderr)
        assert "not running" in r.stderr and "stale" in r.stderr, r.stderr
        assert victim.poll() is None, "the unrelated process was signalled"
    finally:
        victim.send_signal(signal.SIGTERM)
        victim.wait(10)


def test_usage_errors_exit_2_naming_the_program():
    """Unknown options and missing values are usage errors: one line naming the
    program and the problem, exit status 2 (CLI11's own codes are 105-120)."""
    import subprocess
    from conftest import BUILD
    cases = [
        (["--bogus"], "ringmaild", run_daemon_cmd),
        (["--config"], "ringmaild", run_daemon_cmd),
        (["queue", "--bogus"], "ringmailctl", run_ctl),
        ([], "ringmailctl", run_ctl),
    ]
    for args, prog, run in cases:
        r = run(*args)
        assert r.returncode == 2, (args, r.returncode, r.stderr)
        assert r.stderr.startswith(f"{prog}: "), (args, r.stderr)
    r = subprocess.run([str(BUILD / "tools" / "ringmail-blast"), "send", "--messages", "1", "--duration", "1"], stdin=subprocess.DEVNULL,
                       capture_output=True, text=True, timeout=20)
    assert r.returncode == 2 and r.stderr.startswith("ringmail-blast: "), (r.returncode, r.stderr)


def test_config_path_that_is_a_directory_or_unusable_data_dir(tmp_path):
    r = run_daemon_cmd("--config", str(tmp_path), timeout=20)
    assert r.returncode == 2 and "is a directory" in r.stderr, (r.returncode, r.stderr)
    blocker = tmp_path / "file"
    blocker.write_text("not a directory\n")
    cfg = default_config(blocker / "var", free_port(), "127.0.0.1:1")
    path = tmp_path / "dd.toml"
    path.write_text(toml_dump(cfg))
    r = run_daemon_cmd("--config", str(path), timeout=20)
    assert r.returncode == 1, (r.returncode, r.stderr)
    assert "server.data_dir" in r.stderr and "cannot create" in r.stderr, r.stderr
