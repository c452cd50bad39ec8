"""Fixtures for the integration suite: a real ringmaild from the build tree on loopback,
with its own temporary data_dir and config, relaying to a recording aiosmtpd sink.

Run with Debian's python: ``/usr/bin/python3 -m pytest tests/integration -q``.
``RINGMAIL_BUILD_DIR`` (default ``build``) selects the build tree, e.g. a sanitizer one.
"""
from __future__ import annotations

import json
import os
import re
import signal
import smtplib
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Optional

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from sink import Sink, free_port  # noqa: E402

REPO = Path(__file__).resolve().parents[2]
BUILD = Path(os.environ.get("RINGMAIL_BUILD_DIR", "build"))
if not BUILD.is_absolute():
    BUILD = REPO / BUILD
RINGMAILD = BUILD / "tools" / "ringmaild"
RINGMAILCTL = BUILD / "tools" / "ringmailctl"

HOSTNAME = "relay.example.test"
READY_TIMEOUT = 20.0
STOP_TIMEOUT = 15.0
QUEUE_ID_RE = re.compile(r"\b([0-9A-Fa-f]{16})\b")


# --------------------------------------------------------------------------- config
def _toml_value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return str(v)
    if isinstance(v, str):
        return json.dumps(v)  # a JSON string is a valid TOML basic string
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(_toml_value(x) for x in v) + "]"
    raise TypeError(f"cannot write {v!r} as TOML")


def toml_dump(cfg: dict) -> str:
    """Tables of scalars/arrays, and arrays of tables (a list of dicts)."""
    out: list[str] = []
    for table, body in cfg.items():
        if isinstance(body, list):
            for entry in body:
                out.append(f"[[{table}]]")
                out += [f"{k} = {_toml_value(v)}" for k, v in entry.items()]
                out.append("")
        else:
            out.append(f"[{table}]")
            out += [f"{k} = {_toml_value(v)}" for k, v in body.items()]
            out.append("")
    return "\n".join(out)


def deep_merge(base: dict, over: dict) -> dict:
    res = dict(base)
    for k, v in over.items():
        if isinstance(v, dict) and isinstance(res.get(k), dict):
            res[k] = deep_merge(res[k], v)
        else:
            res[k] = v
    return res


def default_config(data_dir: Path, port: int, smarthost: str) -> dict:
    return {
        "server": {"hostname": HOSTNAME, "data_dir": str(data_dir), "shards": 2},
        "listener": [{"protocol": "smtp", "address": f"127.0.0.1:{port}"}],
        "relay": {"smarthost": smarthost, "allow_networks": ["127.0.0.0/8"], "pool_size": 4},
        "queue": {"min_backoff": "1s", "max_backoff": "2s", "max_age": "5d"},
        "delivery": {"backoff_min": "1s", "backoff_max": "2s"},
        "smtp": {"message_size_limit": "20MiB", "max_recipients": 100},
    }


# --------------------------------------------------------------------------- daemon
class Daemon:
    """One ringmaild process (restartable on the same config and data_dir)."""

    def __init__(self, workdir: Path, config: dict, name: str = "ringmaild") -> None:
        self.workdir = workdir
        self.name = name
        self.config = config
        self.config_path = workdir / "ringmail.toml"
        self.config_path.write_text(toml_dump(config))
        self.data_dir = Path(config["server"]["data_dir"])
        self.data_dir.mkdir(parents=True, exist_ok=True)
        host, _, port = config["listener"][0]["address"].rpartition(":")
        self.host, self.port = host, int(port)
        self.proc: Optional[subprocess.Popen] = None
        self.runs = 0
        self.stderr_paths: list[Path] = []
        self.exit_codes: list[Optional[int]] = []
        self.killed = False          # this run was SIGKILLed deliberately by the test
        self.stopped = False         # this run was stopped by terminate()

    # -- lifecycle
    def start(self, wait: bool = True) -> "Daemon":
        assert self.proc is None or self.proc.poll() is not None, "already running"
        if not RINGMAILD.exists():
            raise AssertionError(f"{RINGMAILD} does not exist (build it first: ninja -C {BUILD})")
        self.runs += 1
        self.killed = False
        self.stopped = False
        path = self.workdir / f"{self.name}.stderr.{self.runs}.log"
        self.stderr_paths.append(path)
        with open(path, "wb") as err:
            self.proc = subprocess.Popen(
                [str(RINGMAILD), "--config", str(self.config_path)],
                stdin=subprocess.DEVNULL, stdout=err, stderr=err, cwd=self.workdir,
                start_new_session=True)
        if wait:
            self.wait_ready()
        return self

    def wait_ready(self, timeout: float = READY_TIMEOUT) -> None:
        deadline = time.monotonic() + timeout
        last = ""
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(
                    f"ringmaild exited with {self.proc.returncode} before it was ready:\n"
                    + self.stderr_tail())
            try:
                with socket.create_connection((self.host, self.port), timeout=2) as s:
                    s.settimeout(max(0.5, min(5.0, deadline - time.monotonic())))
                    banner = b""
                    while b"\r\n" not in banner:
                        chunk = s.recv(4096)
                        if not chunk:
                            break
                        banner += chunk
                    if banner.startswith(b"220 ") or banner.startswith(b"220-"):
                        try:
                            s.sendall(b"QUIT\r\n")
                        except OSError:
                            pass
                        return
                    last = f"banner {banner!r}"
            except OSError as e:
                last = str(e)
            time.sleep(0.05)  # polling interval, not synchronisation
        raise AssertionError(f"ringmaild not ready on {self.host}:{self.port} after "
                             f"{timeout:.0f}s ({last}):\n" + self.stderr_tail())

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def terminate(self, timeout: float = STOP_TIMEOUT) -> Optional[int]:
        """SIGTERM and wait; SIGKILL if it does not exit in time. Returns the exit code
        (None if it had to be killed)."""
        if self.proc is None or self.proc.poll() is not None:
            return self.proc.returncode if self.proc else None
        self.stopped = True
        self.proc.send_signal(signal.SIGTERM)
        try:
            rc = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)
            rc = None
        self.exit_codes.append(rc)
        return rc

    def kill9(self) -> None:
        self.killed = True
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)

    def restart(self) -> "Daemon":
        return self.start()

    # -- inspection
    def stderr_text(self) -> str:
        parts = []
        for i, p in enumerate(self.stderr_paths, 1):
            try:
                parts.append(f"--- run {i} ---\n" + p.read_text(errors="replace"))
            except OSError:
                pass
        return "\n".join(parts)

    def log(self) -> str:
        """stderr of every run so far (the daemon logs to stderr)."""
        return self.stderr_text()

    def stderr_tail(self, lines: int = 150) -> str:
        text = self.stderr_text().splitlines()
        return "\n".join(text[-lines:])

    def wait_log(self, pattern: str, timeout: float = 20.0) -> re.Match:
        rx = re.compile(pattern, re.M)
        deadline = time.monotonic() + timeout
        while True:
            m = rx.search(self.log())
            if m:
                return m
            if time.monotonic() > deadline:
                raise AssertionError(f"no log line matching {pattern!r} in {timeout:.0f}s:\n"
                                     + self.stderr_tail())
            time.sleep(0.1)

    def rss_kib(self) -> Optional[int]:
        try:
            for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
        except OSError:
            return None
        return None

    # -- ringmailctl
    def ctl(self, *args: str, timeout: float = 30.0) -> subprocess.CompletedProcess:
        return run_ctl("--config", str(self.config_path), *args, timeout=timeout)

    def queue_json(self) -> dict:
        r = self.ctl("queue", "--json")
        assert r.returncode == 0, f"ringmailctl queue --json exited {r.returncode}: {r.stderr}"
        try:
            doc = json.loads(r.stdout)
        except ValueError as e:
            raise AssertionError(f"ringmailctl queue --json printed invalid JSON ({e}): "
                                 f"{r.stdout[:2000]!r}") from e
        assert isinstance(doc.get("messages"), list) and "count" in doc, doc
        return doc

    def wait_queue_empty(self, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        doc: dict = {}
        while time.monotonic() < deadline:
            doc = self.queue_json()
            if doc["count"] == 0:
                return
            time.sleep(0.2)
        raise AssertionError(f"queue not empty after {timeout:.0f}s: {json.dumps(doc)[:3000]}")


def run_ctl(*args: str, timeout: float = 30.0) -> subprocess.CompletedProcess:
    if not RINGMAILCTL.exists():
        raise AssertionError(f"{RINGMAILCTL} does not exist (build it first)")
    return subprocess.run([str(RINGMAILCTL), *args], stdin=subprocess.DEVNULL,
                          capture_output=True, text=True, timeout=timeout)


def run_daemon_cmd(*args: str, timeout: float = 30.0) -> subprocess.CompletedProcess:
    if not RINGMAILD.exists():
        raise AssertionError(f"{RINGMAILD} does not exist (build it first)")
    return subprocess.run([str(RINGMAILD), *args], stdin=subprocess.DEVNULL,
                          capture_output=True, text=True, timeout=timeout)


# --------------------------------------------------------------------------- fixtures
_ACTIVE_KEY = pytest.StashKey[list]()


@pytest.fixture
def sink():
    s = Sink().start()
    yield s
    s.stop()


@pytest.fixture
def start_daemon(request, tmp_path):
    """Factory: start_daemon(sink_or_smarthost, config={overrides}) -> running Daemon.

    Every daemon is stopped (SIGTERM, then SIGKILL) when the test ends, and must exit 0
    on that SIGTERM unless the test killed it deliberately."""
    daemons: list[Daemon] = []
    request.node.stash[_ACTIVE_KEY] = daemons

    def factory(smarthost, config: Optional[dict] = None, wait: bool = True,
                name: str = "ringmaild") -> Daemon:
        if isinstance(smarthost, Sink):
            smarthost = smarthost.address
        workdir = tmp_path / f"{name}{len(daemons)}"
        workdir.mkdir()
        cfg = default_config(workdir / "var", free_port(), smarthost)
        if config:
            cfg = deep_merge(cfg, config)
        d = Daemon(workdir, cfg, name=name)
        daemons.append(d)
        d.start(wait=wait)
        return d

    yield factory

    problems = []
    for d in daemons:
        was_running = d.alive()
        rc = d.terminate()
        if was_running and rc != 0 and not d.killed:
            problems.append(f"{d.name} pid {d.pid}: SIGTERM at test end gave exit code "
                            f"{rc if rc is not None else 'none (had to SIGKILL)'}")
        elif not was_running and d.proc is not None and not d.killed and not d.stopped:
            problems.append(f"{d.name} pid {d.pid} died during the test with exit code "
                            f"{d.proc.returncode}")
    if problems:
        pytest.fail("; ".join(problems) + "\n" + "\n".join(d.stderr_tail(80) for d in daemons),
                    pytrace=False)


@pytest.fixture
def daemon(start_daemon, sink):
    """A ringmaild with the default config relaying to the `sink` fixture."""
    return start_daemon(sink)


@pytest.fixture
def mx_world():
    """An MxWorld (tests/integration/mx_world.py), started: `.dns` (a DnsServer with no
    zones yet), `.port` (P, shared by every sink), `.sink("127.0.0.x", behaviour=...)`,
    `.add_mx(...)`, and `.config`, the daemon fragment for MX delivery:
    {"dns": {"servers": ["127.0.0.1:DNSPORT"]}, "delivery": {"smtp_port": P},
    "relay": {"smarthost": ""}} -- e.g. start_daemon("", config=mx_world.config)."""
    from mx_world import MxWorld  # noqa: PLC0415 - only MX tests need dnslib

    w = MxWorld().start()
    yield w
    w.stop()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    rep = outcome.get_result()
    if rep.failed:
        for d in item.stash.get(_ACTIVE_KEY, []):
            rep.sections.append((f"{d.name} stderr ({d.workdir})", d.stderr_tail(200)))
        s = item.funcargs.get("sink") if hasattr(item, "funcargs") else None
        if isinstance(s, Sink):
            rep.sections.append(("sink", s.describe(50)))
        w = item.funcargs.get("mx_world") if hasattr(item, "funcargs") else None
        if w is not None and hasattr(w, "describe"):
            rep.sections.append(("mx world", w.describe()))


# --------------------------------------------------------------------------- clients
class SMTPReply:
    def __init__(self, code: int, lines: list[str]) -> None:
        self.code, self.lines = code, lines

    @property
    def text(self) -> str:
        return "\n".join(self.lines)

    def __repr__(self) -> str:
        return f"<{self.code} {self.text!r}>"


class RawSMTP:
    """A raw-socket SMTP client for what smtplib cannot do (pipelining, smuggling,
    BDAT, oversized lines)."""

    def __init__(self, host: str, port: int, timeout: float = 30.0, read_banner: bool = True):
        self.sock = socket.create_connection((host, port), timeout=timeout)
        self.buf = b""
        self.banner = self.reply() if read_banner else None

    def close(self) -> None:
        try:
            self.sock.close()
        except OSError:
            pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def _line(self) -> Optional[bytes]:
        while b"\r\n" not in self.buf:
            chunk = self.sock.recv(65536)
            if not chunk:
                return None
            self.buf += chunk
        line, self.buf = self.buf.split(b"\r\n", 1)
        return line

    def reply(self) -> SMTPReply:
        """Reads one (possibly multi-line) reply; raises EOFError on close."""
        lines: list[str] = []
        while True:
            line = self._line()
            if line is None:
                raise EOFError(f"connection closed (partial reply {lines!r}, buffered {self.buf!r})")
            text = line.decode("utf-8", "replace")
            if len(text) < 3 or not text[:3].isdigit():
                raise AssertionError(f"malformed reply line {text!r}")
            lines.append(text)
            if len(text) == 3 or text[3] == " ":
                return SMTPReply(int(text[:3]), lines)
            assert text[3] == "-", f"malformed reply line {text!r}"

    def cmd(self, line: str | bytes) -> SMTPReply:
        if isinstance(line, str):
            line = line.encode()
        self.send(line + b"\r\n")
        return self.reply()

    def ehlo(self, name: str = "client.example.test") -> SMTPReply:
        r = self.cmd(f"EHLO {name}")
        assert r.code == 250, r
        return r

    def closed_by_peer(self, timeout: float = 10.0) -> bool:
        """True if the server closes the connection (EOF or reset) within timeout."""
        self.sock.settimeout(timeout)
        try:
            while True:
                chunk = self.sock.recv(65536)
                if not chunk:
                    return True
                self.buf += chunk
        except (ConnectionResetError, BrokenPipeError):
            return True
        except socket.timeout:
            return False


def make_message(msgid: str, subject: str = "test", body: bytes = b"hello\r\n",
                 sender: str = "alice@example.test", to: str = "bob@example.test",
                 extra: bytes = b"") -> bytes:
    """A CRLF message with the given Message-ID (without angle brackets)."""
    return (f"From: <{sender}>\r\nTo: <{to}>\r\nSubject: {subject}\r\n"
            f"Message-ID: <{msgid}>\r\nDate: Mon, 24 Nov 2025 10:00:00 +0000\r\n"
            "MIME-Version: 1.0\r\n").encode() + extra + b"\r\n" + body


def start_postfix_smtp_sink(*args: str, port: int, stdout=subprocess.DEVNULL) -> subprocess.Popen:
    """Postfix's smtp-sink on 127.0.0.1:port (as nobody), once it answers;
    pytest.skip when Postfix is not installed. The caller kills it."""
    binary = Path("/usr/sbin/smtp-sink")
    if not binary.exists():
        pytest.skip(f"{binary} not installed (Debian package postfix)")
    p = subprocess.Popen([str(binary), "-u", "nobody", *args, f"127.0.0.1:{port}", "100"],
                         stdin=subprocess.DEVNULL, stdout=stdout, stderr=subprocess.STDOUT,
                         start_new_session=True)
    deadline = time.monotonic() + 10
    while True:
        try:
            smtplib.SMTP("127.0.0.1", port, timeout=2).quit()
            return p
        except OSError:
            if time.monotonic() > deadline:
                p.kill()
                raise AssertionError("smtp-sink did not start")
            time.sleep(0.05)


def queue_id_of(reply_text: str) -> str:
    m = QUEUE_ID_RE.search(reply_text)
    assert m, f"no 16-hex-digit queue id in reply {reply_text!r}"
    return m.group(1)


def unique(prefix: str = "t") -> str:
    return f"{prefix}.{os.getpid()}.{time.monotonic_ns()}@client.example.test"
