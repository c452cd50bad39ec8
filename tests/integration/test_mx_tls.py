"""Outbound STARTTLS by MX: opportunistic (with the plain fallback after a failed
handshake), required per destination ([[shaping]] tls = "required"), and certificate
checks (tls_verify with a CA file). Certificates are made with openssl at test time."""
from __future__ import annotations

import importlib.util
import re
import ssl
import time
from pathlib import Path

import pytest

from test_mx_delivery import submit

HERE = Path(__file__).resolve().parent
_spec = importlib.util.spec_from_file_location(
    "tls_smtp_server", HERE.parent / "unit" / "smtp" / "tls_smtp_server.py")
tls_smtp_server = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(tls_smtp_server)

MX_NAME = "mx.test.example"  # the name in the test server certificate


@pytest.fixture(scope="module")
def certs(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("certs")
    tls_smtp_server.make_certs(str(d))
    return d


def server_context(certs: Path, max_version=None) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    if max_version is not None:
        ctx.minimum_version = ssl.TLSVersion.MINIMUM_SUPPORTED
        ctx.maximum_version = max_version
        ctx.set_ciphers("ALL:@SECLEVEL=0")
    ctx.load_cert_chain(str(certs / "server.pem"), str(certs / "server.key"))
    return ctx


def test_opportunistic_starttls_is_used_and_logged(start_daemon, mx_world, certs):
    w = mx_world
    w.add_mx("tls.test", 10, MX_NAME, "127.0.0.21")
    s = w.sink("127.0.0.21", tls_context=server_context(certs))
    d = start_daemon("", config=w.config)  # relay.tls defaults to "opportunistic"
    body = b"".join(b".line %d starting with a dot\r\n" % i for i in range(2000))
    stuffed = body.replace(b"\r\n.", b"\r\n..")
    stuffed = b"." + stuffed if stuffed.startswith(b".") else stuffed
    qid = submit(d, ["t@tls.test"], body=stuffed)
    m = s.wait_count(1, 20)[0]
    assert m.tls, "the sink did not see STARTTLS"
    assert m.data.endswith(body)
    d.wait_log(rf"{qid}: to=<t@tls\.test> relay={re.escape(MX_NAME)}\[127\.0\.0\.21\]:\d+ delay=\d+ "
               r"tls=TLSv1\.[23]/\S+ status=sent")


def test_opportunistic_falls_back_to_plain_after_a_failed_handshake(start_daemon, mx_world, certs):
    """The sink offers STARTTLS but only speaks TLS 1.0/1.1, which the client refuses."""
    w = mx_world
    w.add_mx("oldtls.test", 10, MX_NAME, "127.0.0.22")
    s = w.sink("127.0.0.22", tls_context=server_context(certs, ssl.TLSVersion.TLSv1_1))
    d = start_daemon("", config=w.config)
    qid = submit(d, ["o@oldtls.test"])
    m = s.wait_count(1, 20)[0]
    assert not m.tls
    assert re.search(r"retrying without TLS", d.log())
    d.wait_log(rf"{qid}: to=<o@oldtls\.test> relay=\S+ delay=\d+ status=sent")


def test_required_tls_defers_instead_of_falling_back(start_daemon, mx_world, certs):
    w = mx_world
    w.add_mx("strict.test", 10, "mx.strict.test", "127.0.0.23")
    w.add_mx("lax.test", 10, "mx.lax.test", "127.0.0.24")
    strict = w.sink("127.0.0.23")   # no STARTTLS offered
    lax = w.sink("127.0.0.24")
    d = start_daemon("", config=w.daemon_config({
        "queue": {"min_backoff": "1h", "max_backoff": "1h"},
        "shaping": [{"domain": "strict.test", "tls": "required"}]}))
    q1 = submit(d, ["s@strict.test"])
    submit(d, ["l@lax.test"])
    lax.wait_count(1, 20)  # others keep flowing
    d.wait_log(rf"{q1}: to=<s@strict\.test> .*status=deferred \(.*TLS is required but .* does not offer STARTTLS")
    time.sleep(0.5)
    assert strict.snapshot() == [] and strict.mail_attempts == []
    # The same host with STARTTLS: required is satisfied.
    w.set_behaviour("127.0.0.23", "dead")
    strict.tls_context = server_context(certs)
    w.set_behaviour("127.0.0.23", "accept")
    d.ctl("queue", "flush")
    assert strict.wait_count(1, 20)[0].tls


def test_verify_accepts_the_right_ca_and_defers_on_a_wrong_one(start_daemon, mx_world, certs):
    w = mx_world
    w.add_mx("verified.test", 10, MX_NAME, "127.0.0.25")
    s = w.sink("127.0.0.25", tls_context=server_context(certs))
    base = {"queue": {"min_backoff": "1h", "max_backoff": "1h"},
            "shaping": [{"domain": "verified.test", "tls": "required"}]}
    wrong = start_daemon("", config=w.daemon_config({
        **base, "relay": {"smarthost": "", "tls_verify": True, "tls_ca_file": str(certs / "other-ca.pem")}}),
        name="wrongca")
    q = submit(wrong, ["v@verified.test"])
    wrong.wait_log(rf"{q}: to=<v@verified\.test> .*status=deferred \(.*certificate")
    time.sleep(0.5)
    assert s.snapshot() == []
    right = start_daemon("", config=w.daemon_config({
        **base, "relay": {"smarthost": "", "tls_verify": True, "tls_ca_file": str(certs / "ca.pem")}}),
        name="rightca")
    q = submit(right, ["v@verified.test"])
    assert s.wait_count(1, 20)[0].tls
    right.wait_log(rf"{q}: to=<v@verified\.test> .*tls=TLSv1\.[23]/\S+ status=sent")
