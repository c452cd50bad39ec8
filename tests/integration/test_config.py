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
