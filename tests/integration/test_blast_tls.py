"""ringmail-blast send --starttls / --auth (issue 4).

Against aiosmtpd (STARTTLS with a test certificate, AUTH PLAIN/LOGIN with an
authenticator): every transaction runs inside TLS and after a successful AUTH,
every body arrives intact (X-Blast-Checksum recomputed here), a wrong password
fails the run and is reported, a server without STARTTLS (or AUTH) stops the run
with a clear error. Pipelined windows and BDAT over TLS are checked against
tests/unit/smtp/tls_smtp_server.py (aiosmtpd offers neither PIPELINING nor
CHUNKING). Certificates are made with openssl at test time; loopback only.
"""
from __future__ import annotations

import importlib.util
import json
import re
import ssl
import subprocess
import threading
import time
from pathlib import Path
from typing import Optional

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword

from conftest import BUILD
from sink import free_port

HERE = Path(__file__).resolve().parent
_spec = importlib.util.spec_from_file_location(
    "tls_smtp_server", HERE.parent / "unit" / "smtp" / "tls_smtp_server.py")
tls_smtp_server = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(tls_smtp_server)

BLAST = BUILD / "tools" / "ringmail-blast"
USER, PASSWORD = "blaster", "s3cret:with:colons"


@pytest.fixture(autouse=True)
def _need_blast():
    if not BLAST.exists():
        raise AssertionError(f"{BLAST} does not exist (build it first: ninja -C {BUILD} tools/ringmail-blast)")


@pytest.fixture(scope="module")
def certs(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("certs")
    tls_smtp_server.make_certs(str(d))
    return d


def server_context(certs: Path) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(str(certs / "server.pem"), str(certs / "server.key"))
    return ctx


def fnv1a(data: bytes) -> int:
    h = 0xcbf29ce484222325
    for b in data:
        h ^= b
        h = (h * 0x100000001b3) & 0xFFFFFFFFFFFFFFFF
    return h


def checksum_ok(message: bytes) -> bool:
    """X-Blast-Checksum is FNV-1a 64 of every byte after the first CRLFCRLF."""
    head, sep, body = message.partition(b"\r\n\r\n")
    m = re.search(rb"^X-Blast-Checksum: ([0-9a-f]{16})\r?$", head, re.M)
    return bool(sep) and m is not None and int(m.group(1), 16) == fnv1a(body)


def message_id(message: bytes) -> Optional[bytes]:
    m = re.search(rb"^Message-ID: (<[^>]+>)", message, re.M)
    return m.group(1) if m else None


class Recorder:
    """aiosmtpd handler: what each transaction looked like."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.messages: list[dict] = []
        self.logins: list[tuple[str, bytes, bool]] = []

    async def handle_DATA(self, server, session, envelope):
        data = envelope.original_content if envelope.original_content is not None else envelope.content
        with self.lock:
            self.messages.append({"tls": bool(getattr(session, "ssl", None)),
                                  "authenticated": bool(session.authenticated),
                                  "login": session.auth_data.login if isinstance(session.auth_data, LoginPassword)
                                  else None,
                                  "checksum_ok": checksum_ok(data), "id": message_id(data)})
        return "250 2.0.0 ok"

    def authenticate(self, server, session, envelope, mechanism, auth_data):
        ok = (isinstance(auth_data, LoginPassword) and auth_data.login == USER.encode()
              and auth_data.password == PASSWORD.encode())
        with self.lock:
            self.logins.append((mechanism, auth_data.login if isinstance(auth_data, LoginPassword) else b"",
                                       ok))
        # handled=False: aiosmtpd answers the failure itself (535).
        return AuthResult(success=ok, handled=False, auth_data=auth_data if ok else None)


@pytest.fixture
def smtpd(certs):
    """Factory: an aiosmtpd server on loopback; returns (address, recorder)."""
    controllers: list[Controller] = []

    def factory(tls: bool = True, auth: bool = True, auth_require_tls: bool = True,
                exclude: tuple[str, ...] = ()) -> tuple[str, Recorder]:
        rec = Recorder()
        kwargs: dict = {"decode_data": False}
        if tls:
            kwargs.update(tls_context=server_context(certs), require_starttls=False)
        if auth:
            kwargs.update(authenticator=rec.authenticate, auth_require_tls=auth_require_tls,
                          auth_exclude_mechanism=list(exclude))
        port = free_port()
        c = Controller(rec, hostname="127.0.0.1", port=port, **kwargs)
        c.start()
        controllers.append(c)
        return f"127.0.0.1:{port}", rec

    yield factory
    for c in controllers:
        c.stop()


def blast(to: str, *args: str, timeout: float = 60) -> tuple[int, dict, str]:
    """Runs `ringmail-blast send --json`; returns (exit code, summary, stderr)."""
    r = subprocess.run([str(BLAST), "send", "--to", to, "--json", "--quiet", "--timeout", "10", *args],
                       stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=timeout)
    try:
        doc = json.loads(r.stdout)
    except ValueError as e:
        raise AssertionError(f"blast send exited {r.returncode} without JSON ({e}): "
                             f"stdout {r.stdout!r} stderr {r.stderr!r}") from e
    return r.returncode, doc, r.stderr


def assert_all_intact(rec: Recorder, n: int, tls: bool, authenticated: bool) -> None:
    msgs = rec.messages
    assert len(msgs) == n, len(msgs)
    assert sum(m["checksum_ok"] for m in msgs) == n, [m for m in msgs if not m["checksum_ok"]][:3]
    assert len({m["id"] for m in msgs}) == n, "duplicate or missing Message-IDs"
    assert all(m["tls"] == tls for m in msgs), [m for m in msgs if m["tls"] != tls][:3]
    assert all(m["authenticated"] == authenticated for m in msgs), msgs[:3]
    if authenticated:
        assert all(m["login"] == USER.encode() for m in msgs), msgs[:3]


# --------------------------------------------------------------------------- STARTTLS + AUTH
@pytest.mark.parametrize("mechanism", ["PLAIN", "LOGIN"])
def test_starttls_and_auth(smtpd, mechanism):
    """AUTH PLAIN is used when offered; LOGIN when PLAIN is not (aiosmtpd offers AUTH only
    inside TLS here, as auth_require_tls defaults to True)."""
    exclude = ("PLAIN",) if mechanism == "LOGIN" else ()
    addr, rec = smtpd(exclude=exclude)
    rc, sent, err = blast(addr, "--starttls", "--auth", f"{USER}:{PASSWORD}", "--connections", "4",
                          "--messages", "200", "--size", "1k:70,20k:30", "--rcpts", "2")
    assert rc == 0, (sent, err)
    assert sent["messages"] == 200 and sent["errors"] == 0 and sent["replies"] == {"250": 200}, sent
    assert sent["tls_connections"] == 4 and sent["auth_connections"] == 4 and sent["auth_failures"] == 0, sent
    assert "in the clear" not in err, err
    assert_all_intact(rec, 200, tls=True, authenticated=True)
    assert {a[0] for a in rec.logins} == {mechanism}, rec.logins
    assert all(a[2] for a in rec.logins) and len(rec.logins) == 4, rec.logins


def test_starttls_without_auth(smtpd):
    addr, rec = smtpd(auth=False)
    rc, sent, err = blast(addr, "--starttls", "--connections", "3", "--messages", "150", "--threads", "2")
    assert rc == 0, (sent, err)
    assert sent["messages"] == 150 and sent["tls_connections"] == 3 and sent["auth_connections"] == 0, sent
    assert_all_intact(rec, 150, tls=True, authenticated=False)


def test_wrong_password_fails_the_run(smtpd):
    addr, rec = smtpd()
    rc, sent, err = blast(addr, "--starttls", "--auth", f"{USER}:wrong", "--connections", "3",
                          "--messages", "50")
    assert rc != 0, (sent, err)
    assert sent["auth_failures"] == 3 and sent["auth_connections"] == 0, sent
    assert sent["tls_connections"] == 3 and sent["messages"] == 0, sent
    assert "535" in sent.get("last_auth_error", ""), sent
    assert "AUTH failed on 3 connection(s)" in err and "535" in err, err
    assert "no connection could authenticate" in err, err
    assert rec.messages == [], rec.messages
    assert len(rec.logins) == 3 and not any(a[2] for a in rec.logins), rec.logins


def test_wrong_password_fails_even_with_allow_failures_in_duration_mode(smtpd):
    addr, _ = smtpd()
    rc, sent, err = blast(addr, "--starttls", "--auth", f"{USER}:wrong", "--connections", "2",
                          "--duration", "1", "--allow-failures")
    assert rc == 1, (sent, err)
    assert sent["auth_failures"] == 2 and sent["messages"] == 0, sent


def test_auth_in_the_clear_warns_but_works(smtpd):
    addr, rec = smtpd(tls=False, auth_require_tls=False)
    rc, sent, err = blast(addr, "--auth", f"{USER}:{PASSWORD}", "--connections", "2", "--messages", "40")
    assert rc == 0, (sent, err)
    assert "warning" in err and "in the clear" in err, err
    assert sent["auth_connections"] == 2 and sent["tls_connections"] == 0, sent
    assert_all_intact(rec, 40, tls=False, authenticated=True)


def test_starttls_not_offered_is_an_error(smtpd):
    addr, rec = smtpd(tls=False, auth=False)
    t0 = time.monotonic()
    rc, sent, err = blast(addr, "--starttls", "--connections", "4", "--messages", "100")
    assert rc == 1, (sent, err)
    assert "does not offer STARTTLS" in err, err
    assert "does not offer STARTTLS" in sent.get("error", ""), sent
    assert sent["messages"] == 0 and sent["tls_connections"] == 0, sent
    assert rec.messages == [], "mail was sent in the clear"
    assert time.monotonic() - t0 < 10


def test_auth_not_offered_is_an_error(smtpd):
    """aiosmtpd offers AUTH only inside TLS: without --starttls there is none to use."""
    addr, rec = smtpd()
    rc, sent, err = blast(addr, "--auth", f"{USER}:{PASSWORD}", "--connections", "2", "--messages", "10")
    assert rc == 1, (sent, err)
    assert "does not offer AUTH" in err and "--starttls" in err, err
    assert rec.messages == [] and rec.logins == []


def test_auth_usage_error():
    r = subprocess.run([str(BLAST), "send", "--to", "127.0.0.1:1", "--messages", "1", "--auth", "nocolon"],
                       capture_output=True, text=True, timeout=10)
    assert r.returncode == 2 and "USER:PASSWORD" in r.stderr, r


# --------------------------------------------------------------------------- pipelining and BDAT over TLS
@pytest.fixture
def tls_server(certs, tmp_path):
    """tests/unit/smtp/tls_smtp_server.py (PIPELINING, CHUNKING, STARTTLS): returns (address, spool)."""
    procs: list[subprocess.Popen] = []

    def start(mode: str = "starttls") -> tuple[str, Path]:
        spool = tmp_path / f"spool-{len(procs)}"
        spool.mkdir()
        p = subprocess.Popen(["/usr/bin/python3", str(HERE.parent / "unit" / "smtp" / "tls_smtp_server.py"), "serve",
                              "--cert", str(certs / "server.pem"), "--key", str(certs / "server.key"),
                              "--spool", str(spool), "--mode", mode, "--chunking"],
                             stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, start_new_session=True)
        procs.append(p)
        line = p.stdout.readline()
        m = re.match(r"PORT (\d+)", line)
        assert m, f"tls_smtp_server did not start: {line!r}"
        return f"127.0.0.1:{m.group(1)}", spool

    yield start
    for p in procs:
        p.kill()
        p.wait(5)


@pytest.mark.parametrize("mode", [["--bdat", "--window", "16"], ["--window", "2"], ["--bdat"], []],
                         ids=["bdat-window16", "data-window2", "bdat", "data"])
def test_pipelined_windows_and_bdat_over_tls(tls_server, mode):
    addr, spool = tls_server()
    rc, sent, err = blast(addr, "--starttls", "--connections", "3", "--messages", "300",
                          "--size", "1k:60,40k:30,100k:10", *mode)
    assert rc == 0, (sent, err)
    assert sent["messages"] == 300 and sent["tls_connections"] == 3, sent
    metas = sorted(spool.glob("*.meta"))
    assert len(metas) == 300, len(metas)
    for meta in metas:
        assert meta.read_text().startswith("tls=TLSv1."), (meta, meta.read_text())
    ids = set()
    for eml in spool.glob("*.eml"):
        data = eml.read_bytes()
        assert checksum_ok(data), eml
        ids.add(message_id(data))
    assert len(ids) == 300
    assert sent["bytes"] == sum(e.stat().st_size for e in spool.glob("*.eml")), sent


def test_handshake_failure_is_reported(tls_server):
    """The server offers STARTTLS but answers the ClientHello with garbage: connect errors, the
    TLS error in the report, non-zero exit."""
    addr, spool = tls_server("garbage")
    rc, sent, err = blast(addr, "--starttls", "--connections", "1", "--messages", "5")
    assert rc != 0, (sent, err)
    assert sent["connect_errors"] >= 1 and sent["tls_connections"] == 0 and sent["messages"] == 0, sent
    assert "TLS" in sent.get("last_connect_error", ""), sent
    assert list(spool.glob("*.eml")) == []
