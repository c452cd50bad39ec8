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
