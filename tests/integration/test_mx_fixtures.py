"""Self-tests of the MX delivery test fixtures (dns_server.DnsServer, mx_world.MxWorld,
the counting/behaving sink.Sink). No ringmaild is started here."""
from __future__ import annotations

import socket
import smtplib
import struct
import threading
import time
import tomllib
from pathlib import Path

import pytest
from dnslib import QTYPE, RCODE, DNSRecord

from conftest import default_config, deep_merge, make_message, toml_dump, unique
from dns_server import DnsServer
from mx_world import MxWorld, has_ipv6_loopback

ZONES = {
    "a.test": [("MX", 10, "mx1.a.test"), ("MX", 20, "MX2.a.test.")],
    "mx1.a.test": [("A", "127.0.0.2"), ("AAAA", "::1", 60)],
    "mx2.a.test": [("A", "127.0.0.3")],
    "nomx.test": [("A", "127.0.0.4")],
    "nullmx.test": [("MX", 0, ".")],
    "alias.test": [("CNAME", "mx2.a.test")],
}


@pytest.fixture
def dns():
    with DnsServer(ZONES, servfail={"broken.test"}, silent={"blackhole.test"},
                   truncate_udp={"big.test"}) as d:
        yield d
        assert d.errors == []


def ask(dns: DnsServer, name: str, qtype: str, tcp: bool, timeout: float = 3.0) -> DNSRecord:
    q = DNSRecord.question(name, qtype)
    r = DNSRecord.parse(q.send("127.0.0.1", dns.port, tcp=tcp, timeout=timeout))
    assert r.header.id == q.header.id
    return r


def answers(r: DNSRecord, qtype: str) -> list[str]:
    return sorted(str(rr.rdata) for rr in r.rr if rr.rtype == getattr(QTYPE, qtype))


# --------------------------------------------------------------------------- DNS
@pytest.mark.parametrize("tcp", [False, True], ids=["udp", "tcp"])
def test_dns_answers(dns, tcp):
    assert dns.address == f"127.0.0.1:{dns.port}" and dns.port > 0

    r = ask(dns, "a.test", "MX", tcp)
    assert r.header.rcode == RCODE.NOERROR and r.header.aa == 1
    assert answers(r, "MX") == ["10 mx1.a.test.", "20 MX2.a.test."]
    assert all(rr.ttl == 300 for rr in r.rr)

    r = ask(dns, "MX1.A.Test.", "A", tcp)          # case-insensitive, trailing dot
    assert answers(r, "A") == ["127.0.0.2"]
    assert str(r.rr[0].rname) == "MX1.A.Test."     # owner echoed as asked

    r = ask(dns, "mx1.a.test", "AAAA", tcp)
    assert answers(r, "AAAA") == ["::1"] and r.rr[0].ttl == 60

    r = ask(dns, "nullmx.test", "MX", tcp)
    assert [(rr.rdata.preference, str(rr.rdata.label)) for rr in r.rr] == [(0, ".")]

    r = ask(dns, "nosuch.test", "MX", tcp)
    assert r.header.rcode == RCODE.NXDOMAIN and r.rr == []
    assert [rr.rtype for rr in r.auth] == [QTYPE.SOA]

    r = ask(dns, "nomx.test", "MX", tcp)            # exists, no MX: NOERROR / no data
    assert r.header.rcode == RCODE.NOERROR and r.rr == []
    assert [rr.rtype for rr in r.auth] == [QTYPE.SOA]

    r = ask(dns, "broken.test", "MX", tcp)
    assert r.header.rcode == RCODE.SERVFAIL

    r = ask(dns, "alias.test", "A", tcp)            # CNAME followed inside the zones
    assert [QTYPE[rr.rtype] for rr in r.rr] == ["CNAME", "A"]
    assert answers(r, "A") == ["127.0.0.3"]

    assert dns.queries == [("a.test", "MX"), ("mx1.a.test", "A"), ("mx1.a.test", "AAAA"),
                           ("nullmx.test", "MX"), ("nosuch.test", "MX"), ("nomx.test", "MX"),
                           ("broken.test", "MX"), ("alias.test", "A")]
    assert {p for _, _, p in dns.query_log} == {"tcp" if tcp else "udp"}


@pytest.mark.parametrize("tcp", [False, True], ids=["udp", "tcp"])
def test_dns_silent_name_times_out(dns, tcp):
    t0 = time.monotonic()
    with pytest.raises((socket.timeout, TimeoutError)):
        ask(dns, "blackhole.test", "MX", tcp, timeout=1.0)
    assert time.monotonic() - t0 >= 0.9
    assert dns.wait_query("blackhole.test", "MX", timeout=2)
    # the server is still fine afterwards
    assert answers(ask(dns, "a.test", "MX", tcp), "MX")


def test_dns_live_changes(dns):
    dns.set_zone("new.test", [("MX", 5, "mx1.a.test")])
    assert answers(ask(dns, "new.test", "MX", False), "MX") == ["5 mx1.a.test."]
    dns.set_servfail("new.test")
    assert ask(dns, "new.test", "MX", False).header.rcode == RCODE.SERVFAIL
    dns.set_servfail("new.test", False)
    dns.set_zone("New.Test.", [])                   # exists, no data
    r = ask(dns, "new.test", "MX", False)
    assert r.header.rcode == RCODE.NOERROR and r.rr == []
    dns.remove_zone("new.test")
    assert ask(dns, "new.test", "MX", False).header.rcode == RCODE.NXDOMAIN
    with pytest.raises(ValueError):
        dns.set_zone("bad.test", [("A", "not-an-address")])
    with pytest.raises(ValueError):
        dns.set_zone("bad.test", [("MX", "mx.bad.test")])


def test_dns_truncated_udp_then_tcp(dns):
    dns.set_zone("big.test", [("MX", 10, "mx1.a.test")])
    r = ask(dns, "big.test", "MX", False)
    assert r.header.tc == 1 and r.rr == []
    assert answers(ask(dns, "big.test", "MX", True), "MX") == ["10 mx1.a.test."]


def test_dns_several_queries_on_one_tcp_connection(dns):
    """c-ares keeps a TCP connection open and sends several queries on it."""
    qs = [DNSRecord.question("a.test", "MX"), DNSRecord.question("mx2.a.test", "A")]
    with socket.create_connection(("127.0.0.1", dns.port), timeout=3) as s:
        s.sendall(b"".join(struct.pack("!H", len(p)) + p for p in (q.pack() for q in qs)))
        buf = b""
        got = []
        while len(got) < 2:
            chunk = s.recv(4096)
            assert chunk, f"connection closed after {len(got)} answer(s)"
            buf += chunk
            while len(buf) >= 2 and len(buf) >= 2 + struct.unpack("!H", buf[:2])[0]:
                n = struct.unpack("!H", buf[:2])[0]
                got.append(DNSRecord.parse(buf[2:2 + n]))
                buf = buf[2 + n:]
    assert [g.header.id for g in got] == [q.header.id for q in qs]
    assert answers(got[1], "A") == ["127.0.0.3"]


def test_dns_udp_and_tcp_share_the_port(dns):
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as u:
        with pytest.raises(OSError):
            u.bind(("127.0.0.1", dns.port))
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as t:
        with pytest.raises(OSError):
            t.bind(("127.0.0.1", dns.port))
            t.listen()


def test_dns_stop_frees_the_port():
    d = DnsServer({"x.test": [("A", "127.0.0.9")]}).start()
    port = d.port
    d.stop()
    d2 = DnsServer({"x.test": [("A", "127.0.0.9")]}, port=port).start()   # same port again
    try:
        assert d2.port == port
        assert answers(ask(d2, "x.test", "A", True), "A") == ["127.0.0.9"]
    finally:
        d2.stop()


# --------------------------------------------------------------------------- sinks
def send(host: str, port: int, rcpt: str, msgid: str) -> None:
    with smtplib.SMTP(host, port, timeout=10) as c:
        c.sendmail("alice@example.test", [rcpt], make_message(msgid, to=rcpt))


def test_sinks_on_two_addresses_share_a_port(mx_world):
    s2 = mx_world.sink("127.0.0.2")
    s3 = mx_world.sink("127.0.0.3")
    P = mx_world.port
    assert (s2.host, s2.port) == ("127.0.0.2", P) and (s3.host, s3.port) == ("127.0.0.3", P)
    m2, m3 = unique("to2"), unique("to3")
    send("127.0.0.2", P, "bob@two.test", m2)
    send("127.0.0.3", P, "carol@three.test", m3)
    send("127.0.0.3", P, "dave@three.test", unique("to3b"))
    assert [m.message_id for m in s2.wait_count(1, 5)] == [f"<{m2}>"]
    got3 = s3.wait_count(2, 5)
    assert [m.rcpt_tos for m in got3] == [["carol@three.test"], ["dave@three.test"]]
    assert got3[0].message_id == f"<{m3}>"
    assert len(s2.snapshot()) == 1                       # nothing of 127.0.0.3's
    assert s2.connection_count == 1 and s3.connection_count == 2
    assert all(m.peer and m.peer[0].startswith("127.") for m in got3)
    # nothing on 127.0.0.1:P, nor on a "dead" host
    mx_world.sink("127.0.0.4", behaviour="dead")
    for host in ("127.0.0.1", "127.0.0.4"):
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection((host, P), timeout=3).close()


def test_connection_counter_reaches_three(mx_world):
    s = mx_world.sink("127.0.0.2")
    P = mx_world.port
    assert s.connection_count == 0 and s.max_connections == 0   # start-up probe uncounted
    clients = [smtplib.SMTP("127.0.0.2", P, timeout=10) for _ in range(3)]
    try:
        for c in clients:
            assert c.ehlo()[0] == 250
        s.wait_connections(lambda k: k.current_connections == 3, 5, "3 open")
        assert s.max_connections == 3
    finally:
        for c in clients:
            c.quit()
    s.wait_connections(lambda k: k.current_connections == 0, 5, "all closed")
    assert s.max_connections == 3 and s.connection_count == 3

    # three concurrent transactions held open by a slow DATA
    s.reset_connection_stats()
    assert s.max_connections == 0
    s.data_delay = 1.0
    errors: list[BaseException] = []

    def one(i: int) -> None:
        try:
            send("127.0.0.2", P, f"u{i}@x.test", unique(f"conc{i}"))
        except BaseException as e:  # noqa: BLE001
            errors.append(e)

    ts = [threading.Thread(target=one, args=(i,)) for i in range(3)]
    for t in ts:
        t.start()
    for t in ts:
        t.join(20)
    assert not errors, errors
    assert s.max_connections == 3
    assert len(s.snapshot()) == 3


def test_sink_behaviours(mx_world):
    P = mx_world.port
    tf = mx_world.sink("127.0.0.2", behaviour="tempfail")
    rj = mx_world.sink("127.0.0.3", behaviour="reject")
    dd = mx_world.sink("127.0.0.5", behaviour="tempfail", stage="data")
    with pytest.raises(smtplib.SMTPRecipientsRefused) as e:
        send("127.0.0.2", P, "bob@x.test", unique("tf"))
    assert e.value.recipients["bob@x.test"][0] == 451
    with pytest.raises(smtplib.SMTPRecipientsRefused) as e:
        send("127.0.0.3", P, "bob@x.test", unique("rj"))
    assert e.value.recipients["bob@x.test"][0] == 550
    with pytest.raises(smtplib.SMTPDataError) as e:
        send("127.0.0.5", P, "bob@x.test", unique("dd"))
    assert e.value.smtp_code == 451
    mx_world.set_behaviour("127.0.0.3", "reject", stage="mail")
    with pytest.raises(smtplib.SMTPSenderRefused) as e:
        send("127.0.0.3", P, "bob@x.test", unique("rjm"))
    assert e.value.smtp_code == 550
    assert tf.snapshot() == [] and rj.snapshot() == [] and dd.snapshot() == []
    assert tf.rcpt_attempts == ["bob@x.test"] and len(dd.snapshot_attempts()) == 1

    # dead <-> alive on the same port; dying drops the open connections
    held = smtplib.SMTP("127.0.0.2", P, timeout=10)
    tf.wait_connections(lambda k: k.current_connections == 1, 5, "1 open")
    mx_world.set_behaviour("127.0.0.2", "dead")
    assert not tf.running
    with pytest.raises((smtplib.SMTPServerDisconnected, ConnectionError)):
        held.noop()
    held.close()
    assert tf.current_connections == 0
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.2", P), timeout=3).close()
    mx_world.set_behaviour("127.0.0.2", "accept")
    assert tf.running and tf.port == P
    msgid = unique("back")
    send("127.0.0.2", P, "bob@x.test", msgid)
    assert tf.wait_count(1, 5)[0].message_id == f"<{msgid}>"


def test_ipv6_loopback_sink(mx_world):
    if not has_ipv6_loopback():
        pytest.skip("no IPv6 loopback on this machine")
    s4 = mx_world.sink("127.0.0.2")
    s6 = mx_world.sink("::1")
    P = mx_world.port
    assert s6.port == P and s6.address == f"[::1]:{P}"
    msgid = unique("v6")
    send("::1", P, "bob@six.test", msgid)
    [m] = s6.wait_count(1, 5)
    assert m.message_id == f"<{msgid}>" and m.peer[0] == "::1"
    assert s4.snapshot() == [] and s6.connection_count == 1


def test_world_moves_to_a_new_port_before_anyone_saw_it():
    with MxWorld() as w:
        first = w._port
        with socket.socket() as squatter:   # someone takes P on 127.0.0.2 first
            squatter.bind(("127.0.0.2", first))
            squatter.listen()
            s = w.sink("127.0.0.2")
            assert s.running and w.port != first and s.port == w.port
        # once P has been read it never changes: a clash is an error
        with socket.socket() as squatter:
            squatter.bind(("127.0.0.3", w.port))
            squatter.listen()
            with pytest.raises(RuntimeError, match="127.0.0.3"):
                w.sink("127.0.0.3")


def test_add_mx_and_config_fragment(mx_world, tmp_path: Path):
    mx_world.add_mx("a.test", 10, "mx1.a.test", "127.0.0.2", "::1", ttl=30)
    mx_world.add_mx("a.test", 20, "mx2.a.test", "127.0.0.3")
    r = ask(mx_world.dns, "a.test", "MX", False)
    assert answers(r, "MX") == ["10 mx1.a.test.", "20 mx2.a.test."]
    assert answers(ask(mx_world.dns, "mx1.a.test", "AAAA", True), "AAAA") == ["::1"]

    frag = mx_world.config
    assert frag == {"dns": {"servers": [f"127.0.0.1:{mx_world.dns.port}"]},
                    "delivery": {"smtp_port": mx_world.port},
                    "relay": {"smarthost": ""}}
    cfg = deep_merge(default_config(tmp_path / "var", 2525, "127.0.0.1:25"),
                     mx_world.daemon_config({"queue": {"min_backoff": "2s"}}))
    doc = tomllib.loads(toml_dump(cfg))
    assert doc["dns"]["servers"] == [mx_world.dns.address]
    assert doc["delivery"]["smtp_port"] == mx_world.port
    assert doc["relay"]["smarthost"] == ""
    assert doc["relay"]["allow_networks"] == ["127.0.0.0/8"]      # merged, not replaced
    assert doc["queue"]["min_backoff"] == "2s" and doc["queue"]["max_age"] == "5d"
    assert doc["listener"][0]["address"] == "127.0.0.1:2525"
