"""MX delivery (no smarthost): ringmaild resolves recipient domains through a real DNS
server on loopback (dnslib, tests/integration/dns_server.py) and delivers to recording
sinks on 127.0.0.x (and ::1) that share one port, `[delivery] smtp_port`."""
from __future__ import annotations

import re
import time

import pytest

from conftest import RawSMTP, make_message, queue_id_of, unique
from mx_world import has_ipv6_loopback

SENDER = "alice@origin.test"


def submit(d, rcpts, sender: str = SENDER, msgid: str | None = None, body: bytes = b"hello\r\n") -> str:
    msgid = msgid or unique("mx")
    with RawSMTP(d.host, d.port) as c:
        c.ehlo()
        assert c.cmd(f"MAIL FROM:<{sender}>").code == 250
        for rc in rcpts:
            r = c.cmd(f"RCPT TO:<{rc}>")
            assert r.code == 250, r
        assert c.cmd("DATA").code == 354
        c.send(make_message(msgid, "mx test", body, sender=sender) + b".\r\n")
        r = c.reply()
        assert r.code == 250, r
        c.cmd("QUIT")
        return queue_id_of(r.text)


def origin(w):
    """origin.test, the senders' domain: bounces land on its sink (127.0.0.2)."""
    w.add_mx("origin.test", 10, "mx.origin.test", "127.0.0.2")
    return w.sink("127.0.0.2")


def dsns(sink):
    return [m for m in sink.snapshot() if m.mail_from == ""
            and "multipart/report" in (m.header("Content-Type") or "")]


def test_each_domain_goes_to_its_own_mx(start_daemon, mx_world):
    w = mx_world
    w.add_mx("a.test", 10, "mx.a.test", "127.0.0.3")
    w.add_mx("b.test", 10, "mx.b.test", "127.0.0.4")
    sa, sb = w.sink("127.0.0.3"), w.sink("127.0.0.4")
    d = start_daemon("", config=w.config)
    qid = submit(d, ["x@a.test", "y@A.test", "z@b.test"])
    ma = sa.wait_count(1, 20)
    mb = sb.wait_count(1, 20)
    # Two recipients at one domain: one transaction; the other domain separately.
    assert sorted(ma[0].rcpt_tos) == ["x@a.test", "y@A.test"]
    assert mb[0].rcpt_tos == ["z@b.test"]
    d.wait_log(rf"{qid}: removed")
    assert re.search(rf"{qid}: to=<x@a\.test> relay=mx\.a\.test\[127\.0\.0\.3\]:{w.port} .*status=sent", d.log())
    d.wait_queue_empty(10)
    time.sleep(0.5)
    assert len(sa.snapshot()) == 1 and len(sb.snapshot()) == 1  # no duplicates


def test_dead_primary_falls_to_secondary(start_daemon, mx_world):
    w = mx_world
    w.add_mx("c.test", 10, "mx1.c.test", "127.0.0.5")
    w.add_mx("c.test", 20, "mx2.c.test", "127.0.0.6")
    w.sink("127.0.0.5", behaviour="dead")
    s2 = w.sink("127.0.0.6")
    d = start_daemon("", config=w.config)
    qid = submit(d, ["u@c.test"])
    s2.wait_count(1, 20)
    d.wait_log(rf"{qid}: to=<u@c\.test> relay=mx2\.c\.test\[127\.0\.0\.6\].*status=sent")
    assert re.search(r"connect to mx1\.c\.test\[127\.0\.0\.5\]:\d+: Connection refused", d.log())


def test_no_mx_falls_back_to_address(start_daemon, mx_world):
    w = mx_world
    w.dns.set_zone("nomx.test", [("A", "127.0.0.7")])
    s = w.sink("127.0.0.7")
    d = start_daemon("", config=w.config)
    submit(d, ["v@nomx.test"])
    assert s.wait_count(1, 20)[0].rcpt_tos == ["v@nomx.test"]
    assert ("nomx.test", "MX") in w.dns.queries


def test_null_mx_bounces_556(start_daemon, mx_world):
    w = mx_world
    home = origin(w)
    w.dns.set_zone("nullmx.test", [("MX", 0, ".")])
    d = start_daemon("", config=w.config)
    qid = submit(d, ["n@nullmx.test"])
    d.wait_log(rf"{qid}: to=<n@nullmx\.test> relay=none .*status=bounced \(556 5\.1\.10")
    home.wait_for(lambda ms: dsns(home), 20, "a DSN to the sender")
    report = dsns(home)[0]
    assert report.rcpt_tos == [SENDER]
    assert b"5.1.10" in report.data and b"n@nullmx.test" in report.data
    d.wait_queue_empty(10)


def test_nxdomain_bounces(start_daemon, mx_world):
    w = mx_world
    home = origin(w)
    d = start_daemon("", config=w.config)
    qid = submit(d, ["n@nosuch.test"])
    d.wait_log(rf"{qid}: to=<n@nosuch\.test> relay=none .*status=bounced \(550 5\.1\.2")
    home.wait_for(lambda ms: dsns(home), 20, "a DSN to the sender")
    assert b"5.1.2" in dsns(home)[0].data
    d.wait_queue_empty(10)


def test_servfail_and_silent_dns_defer(start_daemon, mx_world):
    w = mx_world
    home = origin(w)
    w.dns.set_servfail("broken.test")
    w.dns.set_silent("blackhole.test")
    d = start_daemon("", config=w.daemon_config({"dns": {"timeout": "300ms", "tries": 1},
                                                 "queue": {"min_backoff": "1h", "max_backoff": "1h"}}))
    q1 = submit(d, ["s@broken.test"])
    q2 = submit(d, ["t@blackhole.test"])
    d.wait_log(rf"{q1}: to=<s@broken\.test> relay=none .*status=deferred \(451 4\.4\.3")
    d.wait_log(rf"{q2}: to=<t@blackhole\.test> relay=none .*status=deferred \(451 4\.4\.3")
    doc = d.queue_json()
    assert {m["id"] for m in doc["messages"]} >= {q1, q2}
    time.sleep(0.5)
    assert dsns(home) == []  # temporary: no bounce


def test_dns_answers_are_cached(start_daemon, mx_world):
    w = mx_world
    w.add_mx("cached.test", 10, "mx.cached.test", "127.0.0.8")
    s = w.sink("127.0.0.8")
    d = start_daemon("", config=w.daemon_config({"server": {"shards": 1}}))
    for _ in range(5):
        submit(d, ["c@cached.test"])
    s.wait_count(5, 20)
    assert len(w.dns.queries_for("cached.test", "MX")) == 1, w.dns.queries


def test_connection_cap_per_destination(start_daemon, mx_world):
    """[[shaping]] caps capped.test at 2 connections; others use [delivery]'s 3."""
    w = mx_world
    w.add_mx("capped.test", 10, "mx.capped.test", "127.0.0.9")
    w.add_mx("wide.test", 10, "mx.wide.test", "127.0.0.10")
    capped, wide = w.sink("127.0.0.9"), w.sink("127.0.0.10")
    capped.data_delay = wide.data_delay = 0.2
    d = start_daemon("", config=w.daemon_config({
        "server": {"shards": 1},
        "delivery": {"max_connections": 3},
        "shaping": [{"domain": "capped.test", "max_connections": 2}]}))
    for _ in range(12):
        submit(d, ["r@capped.test"])
        submit(d, ["r@wide.test"])
    capped.wait_count(12, 60)
    wide.wait_count(12, 60)
    assert capped.max_connections == 2, w.describe()
    assert wide.max_connections == 3, w.describe()


def test_recipients_split_by_limit(start_daemon, mx_world):
    w = mx_world
    w.add_mx("many.test", 10, "mx.many.test", "127.0.0.11")
    s = w.sink("127.0.0.11")
    d = start_daemon("", config=w.daemon_config({"delivery": {"max_recipients": 2}}))
    rcpts = [f"r{i}@many.test" for i in range(5)]
    qid = submit(d, rcpts)
    msgs = s.wait_for(lambda ms: sum(len(m.rcpt_tos) for m in ms) >= 5 and ms, 20, "5 recipients")
    assert sorted(len(m.rcpt_tos) for m in msgs) == [1, 2, 2]
    assert sorted(r for m in msgs for r in m.rcpt_tos) == sorted(rcpts)
    d.wait_log(rf"{qid}: removed")


def test_message_rate_spaces_deliveries(start_daemon, mx_world):
    w = mx_world
    w.add_mx("slow.test", 10, "mx.slow.test", "127.0.0.12")
    s = w.sink("127.0.0.12")
    d = start_daemon("", config=w.daemon_config({
        "server": {"shards": 1},
        "shaping": [{"mx": "*.slow.test", "message_rate": "5/s"}]}))
    for _ in range(6):
        submit(d, ["p@slow.test"])
    msgs = s.wait_count(6, 30)
    times = sorted(m.time for m in msgs)
    # 6 messages at 5/s: at least 5 intervals of 200 ms between first and last.
    assert times[-1] - times[0] >= 0.9, times


def test_unreachable_destination_is_paused_while_others_flow(start_daemon, mx_world):
    w = mx_world
    w.add_mx("down.test", 10, "mx.down.test", "127.0.0.13")
    w.add_mx("up.test", 10, "mx.up.test", "127.0.0.14")
    w.sink("127.0.0.13", behaviour="dead")
    up = w.sink("127.0.0.14")
    d = start_daemon("", config=w.daemon_config({
        "server": {"shards": 1},
        "queue": {"min_backoff": "1s", "max_backoff": "1s", "jitter": 0.0},
        "delivery": {"backoff_min": "3s", "backoff_max": "3s"}}))
    down_ids = [submit(d, ["q@down.test"]) for _ in range(3)]
    for _ in range(3):
        submit(d, ["q@up.test"])
    up.wait_count(3, 20)
    d.wait_log(r"destination mx\.down\.test paused for 3 s")
    # While paused, retries are deferred without a connection.
    d.wait_log(r"status=deferred \(delivery temporarily suspended: connect to mx\.down\.test")
    down = w.sink("127.0.0.13")  # the host comes back
    down.wait_count(3, 30)
    for qid in down_ids:
        d.wait_log(rf"{qid}: removed", timeout=20)


@pytest.mark.skipif(not has_ipv6_loopback(), reason="no IPv6 loopback on this machine")
def test_ipv6_mx_host(start_daemon, mx_world):
    w = mx_world
    w.add_mx("six.test", 10, "mx.six.test", "::1")
    s = w.sink("::1")
    d = start_daemon("", config=w.config)
    qid = submit(d, ["w@six.test"])
    s.wait_count(1, 20)
    d.wait_log(rf"{qid}: to=<w@six\.test> relay=mx\.six\.test\[::1\]")


def test_address_literal_needs_no_dns(start_daemon, mx_world):
    w = mx_world
    s = w.sink("127.0.0.15")
    d = start_daemon("", config=w.config)
    submit(d, ["lit@[127.0.0.15]"])
    assert s.wait_count(1, 20)[0].rcpt_tos == ["lit@[127.0.0.15]"]
    assert not any("127.0.0.15" in q[0] for q in w.dns.queries)


def test_mixed_outcomes_in_one_message(start_daemon, mx_world):
    """One message: delivered at one domain, bounced (null MX) at another, deferred at a
    third; only the bounced one is reported, the deferred one stays queued."""
    w = mx_world
    home = origin(w)
    w.add_mx("ok.test", 10, "mx.ok.test", "127.0.0.16")
    ok = w.sink("127.0.0.16")
    w.dns.set_zone("nullmx.test", [("MX", 0, ".")])
    w.dns.set_servfail("broken.test")
    d = start_daemon("", config=w.daemon_config({"queue": {"min_backoff": "1h", "max_backoff": "1h"}}))
    qid = submit(d, ["a@ok.test", "b@nullmx.test", "c@broken.test"])
    ok.wait_count(1, 20)
    home.wait_for(lambda ms: dsns(home), 20, "a DSN")
    report = dsns(home)[0].data
    assert b"b@nullmx.test" in report and b"a@ok.test" not in report and b"c@broken.test" not in report
    d.wait_log(rf"{qid}: to=<c@broken\.test> relay=none .*status=deferred")
    msgs = [m for m in d.queue_json()["messages"] if m["id"] == qid]
    assert len(msgs) == 1, d.queue_json()
    # Restart: only the deferred recipient is left to deliver (nothing sent twice).
    w.dns.set_servfail("broken.test", False)
    w.add_mx("broken.test", 10, "mx.broken.test", "127.0.0.17")
    late = w.sink("127.0.0.17")
    d.terminate()
    d.restart()
    d.ctl("queue", "flush")
    assert late.wait_count(1, 20)[0].rcpt_tos == ["c@broken.test"]
    d.wait_log(rf"{qid}: removed")
    time.sleep(0.5)
    assert len(ok.snapshot()) == 1 and len(dsns(home)) == 1


def test_failures_at_several_domains_make_one_dsn(start_daemon, mx_world):
    """Recipients at different domains are separate deliveries, but the sender gets one
    DSN per message listing every failed recipient (as from Postfix), not one per domain."""
    w = mx_world
    home = origin(w)
    w.add_mx("ok.test", 10, "mx.ok.test", "127.0.0.16")
    ok = w.sink("127.0.0.16")
    w.add_mx("refuses.test", 10, "mx.refuses.test", "127.0.0.18")
    refuses = w.sink("127.0.0.18", behaviour="reject")  # 550 at RCPT
    w.dns.set_zone("nullmx.test", [("MX", 0, ".")])
    d = start_daemon("", config=w.config)
    qid = submit(d, ["a@ok.test", "b@nullmx.test", "c@nosuch.test", "d@refuses.test"])
    ok.wait_count(1, 20)
    d.wait_log(rf"{qid}: removed")
    home.wait_for(lambda ms: dsns(home), 20, "a DSN")
    time.sleep(0.5)  # a second DSN, if any, would be on its way by now
    reports = dsns(home)
    assert len(reports) == 1, [r.data[:300] for r in reports]
    report = reports[0].data
    for rcpt, status in ((b"b@nullmx.test", b"5.1.10"), (b"c@nosuch.test", b"5.1.2"), (b"d@refuses.test", b"5.7.1")):
        field = b"Final-Recipient: rfc822; " + rcpt
        assert field in report, (rcpt, report[:2000])
        assert b"Status: " + status in report.split(field)[1].split(b"Final-Recipient")[0], (rcpt, report[:3000])
    assert b"a@ok.test" not in report.split(b"message/delivery-status")[1].split(b"\r\n\r\n--")[0]
    assert report.count(b"Action: failed") == 3, report[:3000]
    assert report.count(b"Remote-MTA: dns; mx.refuses.test") == 1, report[:3000]
    assert refuses.snapshot() == []


def test_failure_waits_for_the_other_deliveries_and_survives_a_crash(start_daemon, mx_world):
    """A recipient that failed while another domain's delivery is still out is not
    reported yet; if the daemon dies meanwhile, the restart retries it and the sender
    still gets exactly one DSN for it (never none)."""
    w = mx_world
    home = origin(w)
    w.add_mx("slow.test", 10, "mx.slow.test", "127.0.0.19")
    slow = w.sink("127.0.0.19")
    slow.data_delay = 30.0  # the end of DATA is held: that delivery stays out
    w.dns.set_zone("nullmx.test", [("MX", 0, ".")])
    d = start_daemon("", config=w.config)
    qid = submit(d, ["a@slow.test", "b@nullmx.test"])
    d.wait_log(rf"{qid}: to=<b@nullmx\.test> relay=none .*status=bounced")
    time.sleep(0.5)
    assert dsns(home) == []  # held back for the message's other delivery
    d.kill9()
    slow.data_delay = 0.0
    d.restart()
    d.ctl("queue", "flush")
    home.wait_for(lambda ms: dsns(home), 20, "the DSN after the restart")
    d.wait_log(rf"{qid}: removed")
    time.sleep(0.5)
    reports = dsns(home)
    assert len(reports) == 1, [r.data[:300] for r in reports]
    assert b"Final-Recipient: rfc822; b@nullmx.test" in reports[0].data
    assert b"a@slow.test" not in reports[0].data.split(b"message/delivery-status")[1].split(b"\r\n\r\n--")[0]
    assert [m.rcpt_tos for m in slow.snapshot()][-1] == ["a@slow.test"]


def test_burst_over_many_domains_does_not_overrun_the_resolver(start_daemon, mx_world):
    """3000 messages to 3000 domains arrive in about a second: every domain needs an MX
    lookup at once. The daemon sends at most [dns] max_queries_in_flight at a time, so
    the test DNS server (Python, a thread per query: ~1,300 queries/s, and it drops
    queries when ~200 arrive at once, as a small resolver would) is not flooded with a
    cap of 16, and nothing is deferred for a DNS failure. (With the cap at 100,000 the
    same run deferred hundreds of messages with 4.4.3.)"""
    import subprocess
    from conftest import BUILD
    w = mx_world
    n = 3000
    for i in range(1, n + 1):
        w.dns.add_records(f"d{i}.example.test", ("MX", 10, "mx.bulk.test"))
    w.add_mx("bulk.test", 10, "mx.bulk.test", "127.0.0.2")
    sink = w.sink("127.0.0.2")
    d = start_daemon("", config=w.daemon_config({"dns": {"max_queries_in_flight": 16}}))
    r = subprocess.run([str(BUILD / "tools" / "ringmail-blast"), "send", "--to", f"{d.host}:{d.port}",
                        "--connections", "20", "--messages", str(n), "--domains", str(n), "--size", "512",
                        "--from", SENDER, "--json", "--quiet"],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    sink.wait_count(n, 60)
    assert "4.4.3" not in d.log(), re.findall(r".*4\.4\.3.*", d.log())[:3]
    assert len({m.rcpt_tos[0] for m in sink.snapshot()}) == n


def test_mx_that_is_ourselves_bounces_as_a_loop(start_daemon, mx_world):
    """A domain whose best MX greets with our own hostname would send its mail round in
    a circle: as Postfix, bounce it "loops back to myself" (5.4.6) at once. When a less
    preferred MX is ourselves, we are that backup MX: RFC 5321 §5.1 forbids hosts at our
    preference or worse, so the mail waits for the better host, never the worse one."""
    from conftest import HOSTNAME
    w = mx_world
    home = origin(w)
    w.add_mx("loop.test", 10, "mx.loop.test", "127.0.0.20")
    me = w.sink("127.0.0.20", greeting_name=HOSTNAME.upper())  # names compare in any case
    w.add_mx("backup.test", 10, "mx1.backup.test", "127.0.0.21")  # dead, so the loop host is next
    w.sink("127.0.0.21", behaviour="dead")
    w.add_mx("backup.test", 20, "mx2.backup.test", "127.0.0.20")
    w.add_mx("backup.test", 30, "mx3.backup.test", "127.0.0.22")
    good = w.sink("127.0.0.22")
    d = start_daemon("", config=w.config)
    qid = submit(d, ["a@loop.test"])
    d.wait_log(rf"{qid}: to=<a@loop\.test> relay=none .*status=bounced \(554 5\.4\.6 .*loops back to myself")
    home.wait_for(lambda ms: dsns(home), 20, "the DSN")
    assert b"5.4.6" in dsns(home)[0].data and b"a@loop.test" in dsns(home)[0].data
    qid2 = submit(d, ["b@backup.test"])
    d.wait_log(rf"{qid2}: to=<b@backup\.test> relay=none .*status=deferred .*loops back to myself")
    w.set_behaviour("127.0.0.21", "accept")  # the better MX comes back
    better = w.get("127.0.0.21")
    d.ctl("queue", "flush")
    assert better.wait_count(1, 20)[0].rcpt_tos == ["b@backup.test"]
    d.wait_log(rf"{qid2}: removed")
    assert me.snapshot() == [] and good.snapshot() == []  # neither "ourselves" nor a worse MX
    assert len(dsns(home)) == 1


def test_mx_addresses_tried_per_attempt_are_limited(start_daemon, mx_world):
    """[delivery] max_mx_addresses (Postfix's smtp_mx_address_limit): an attempt tries at
    most that many addresses, in preference order; a working host beyond them is not
    reached (the mail is deferred), one within them is."""
    w = mx_world
    for pref, host, addr in ((10, "mx1", "127.0.0.23"), (20, "mx2", "127.0.0.24"), (30, "mx3", "127.0.0.25")):
        w.add_mx("far.test", pref, f"{host}.far.test", addr)
    w.add_mx("near.test", 10, "mx1.near.test", "127.0.0.23")
    w.add_mx("near.test", 20, "mx2.near.test", "127.0.0.25")
    w.sinks_on(["127.0.0.23", "127.0.0.24"], behaviour="dead")
    alive = w.sink("127.0.0.25")
    d = start_daemon("", config=w.daemon_config({"delivery": {"max_mx_addresses": 2}}))
    far = submit(d, ["a@far.test"])
    near = submit(d, ["b@near.test"])
    assert alive.wait_count(1, 20)[0].rcpt_tos == ["b@near.test"]
    d.wait_log(r"delivery to .*far\.test.*: 2 addresses tried, the limit")
    d.wait_log(rf"{far}: to=<a@far\.test> relay=none .*status=deferred")
    d.wait_log(rf"{near}: removed")
    assert [m.rcpt_tos for m in alive.snapshot()] == [["b@near.test"]]


def test_message_over_the_next_hops_size_limit_bounces_unsent(start_daemon, mx_world):
    """RFC 1870: a next hop announcing SIZE 2000 would refuse a bigger message; it is not
    sent (no MAIL at all) and bounces 5.3.4 with the limit in the DSN; a smaller one goes."""
    w = mx_world
    home = origin(w)
    w.add_mx("small.test", 10, "mx.small.test", "127.0.0.26")
    small = w.sink("127.0.0.26")
    small.size_limit = 2000
    w.set_behaviour("127.0.0.26", "dead")  # restart it with the new limit
    w.set_behaviour("127.0.0.26", "accept")
    d = start_daemon("", config=w.config)
    big = submit(d, ["a@small.test"], body=(b"x" * 70 + b"\r\n") * 40)
    d.wait_log(rf"{big}: to=<a@small\.test> relay=mx\.small\.test.*status=bounced \(552 5\.3\.4 message size \d+ exceeds size limit 2000")
    home.wait_for(lambda ms: dsns(home), 20, "the DSN")
    assert b"5.3.4" in dsns(home)[0].data
    ok = submit(d, ["b@small.test"])
    assert small.wait_count(1, 20)[0].rcpt_tos == ["b@small.test"]
    d.wait_log(rf"{ok}: removed")
    assert len(small.snapshot_attempts()) == 1, small.snapshot_attempts()


def test_too_many_recipients_452_sends_the_rest_in_a_new_transaction(start_daemon, mx_world):
    """A next hop that takes 2 recipients per transaction (452 4.5.3 for more, as big
    providers do past their limit): the rest go in further transactions at once, not
    after a back-off, and each recipient arrives exactly once."""
    w = mx_world
    w.add_mx("limited.test", 10, "mx.limited.test", "127.0.0.27")
    limited = w.sink("127.0.0.27")
    limited.max_rcpts_per_transaction = 2
    d = start_daemon("", config=w.daemon_config({"queue": {"min_backoff": "1h", "max_backoff": "1h"}}))
    rcpts = [f"r{i}@limited.test" for i in range(5)]
    qid = submit(d, rcpts)
    got = limited.wait_count(3, 20)
    assert sorted(len(m.rcpt_tos) for m in got) == [1, 2, 2], [m.rcpt_tos for m in got]
    assert sorted(r for m in got for r in m.rcpt_tos) == rcpts
    d.wait_log(rf"{qid}: removed")
    d.wait_log(rf"{qid}: 3 recipient\(s\) over the recipient limit of mx\.limited\.test")
    assert "status=deferred" not in d.log()


def test_egress_source_address_and_ehlo_by_sender_domain(start_daemon, mx_world):
    w = mx_world
    w.add_mx("dest.test", 10, "mx.dest.test", "127.0.0.18")
    s = w.sink("127.0.0.18")
    d = start_daemon("", config=w.daemon_config({"egress": [
        {"source": "127.0.0.30", "ehlo": "out30.example.test", "senders": ["bulk.test"]},
        {"source": "127.0.0.31"}]}))
    submit(d, ["a@dest.test"], sender="news@Bulk.test")
    submit(d, ["b@dest.test"], sender="alice@origin.test")
    msgs = s.wait_count(2, 20)
    by_rcpt = {m.rcpt_tos[0]: m for m in msgs}
    assert by_rcpt["a@dest.test"].peer[0] == "127.0.0.30"
    assert by_rcpt["a@dest.test"].helo == "out30.example.test"
    assert by_rcpt["b@dest.test"].peer[0] == "127.0.0.31"
    assert by_rcpt["b@dest.test"].helo == "relay.example.test"


class BusyHost:
    """A host on ip:port that greets every connection with 421 and hangs up."""

    def __init__(self, ip: str, port: int) -> None:
        import socket as _socket
        import threading as _threading
        self.connections = 0
        self._sock = _socket.socket(_socket.AF_INET, _socket.SOCK_STREAM)
        self._sock.setsockopt(_socket.SOL_SOCKET, _socket.SO_REUSEADDR, 1)
        self._sock.bind((ip, port))
        self._sock.listen(16)
        self._stop = False
        self._thread = _threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop:
            try:
                c, _ = self._sock.accept()
            except OSError:
                return
            self.connections += 1
            try:
                c.sendall(b"421 4.3.2 mx busy, try later\r\n")
            finally:
                c.close()

    def close(self) -> None:
        self._stop = True
        import socket as _socket
        try:
            self._sock.shutdown(_socket.SHUT_RDWR)
        except OSError:
            pass
        self._sock.close()
        self._thread.join(5)


def test_421_greeting_pauses_the_destination(start_daemon, mx_world):
    w = mx_world
    w.add_mx("busy.test", 10, "mx.busy.test", "127.0.0.40")
    w.add_mx("fine.test", 10, "mx.fine.test", "127.0.0.41")
    fine = w.sink("127.0.0.41")
    busy = BusyHost("127.0.0.40", w.port)
    try:
        d = start_daemon("", config=w.daemon_config({
            "server": {"shards": 1},
            "queue": {"min_backoff": "1h", "max_backoff": "1h"},
            "delivery": {"backoff_min": "1h", "backoff_max": "1h"}}))
        ids = [submit(d, ["z@busy.test"]) for _ in range(4)]
        for _ in range(4):
            submit(d, ["z@fine.test"])
        fine.wait_count(4, 20)
        d.wait_log(r"destination mx\.busy\.test paused for 3600 s: .*421 4\.3\.2 mx busy")
        for qid in ids:
            d.wait_log(rf"{qid}: to=<z@busy\.test> .*status=deferred")
        # One probe, not one connection per message: the rest waited for it, then the pause.
        assert busy.connections == 1, busy.connections
    finally:
        busy.close()


def test_messages_per_connection_limit(start_daemon, mx_world):
    """max_messages_per_connection = 2: six messages need three connections, and a
    connection is reused for the second message rather than opened per message."""
    w = mx_world
    w.add_mx("reuse.test", 10, "mx.reuse.test", "127.0.0.42")
    s = w.sink("127.0.0.42")
    s.data_delay = 0.05
    d = start_daemon("", config=w.daemon_config({
        "server": {"shards": 1},
        "relay": {"smarthost": "", "idle_timeout": "5s"},
        "delivery": {"max_connections": 1, "max_messages_per_connection": 2}}))
    for _ in range(6):
        submit(d, ["m@reuse.test"])
    s.wait_count(6, 30)
    assert s.connection_count == 3, w.describe()
    assert s.max_connections == 1, w.describe()


def test_rate_limited_destination_does_not_hold_up_shutdown(start_daemon, mx_world):
    w = mx_world
    w.add_mx("trickle.test", 10, "mx.trickle.test", "127.0.0.43")
    s = w.sink("127.0.0.43")
    d = start_daemon("", config=w.daemon_config({
        "server": {"shards": 1},
        "shaping": [{"domain": "trickle.test", "message_rate": "1/h"}]}))
    ids = [submit(d, ["t@trickle.test"]) for _ in range(2)]
    s.wait_count(1, 20)
    time.sleep(0.5)
    assert len(s.snapshot()) == 1  # the second waits for the next permit
    assert d.terminate() == 0
    assert "shutdown timeout" not in d.log(), d.stderr_tail(30)
    # The waiting message is still queued for the next start.
    assert ids[1] in {m["id"] for m in d.queue_json()["messages"]}


def test_more_concurrent_deliveries_than_lmdb_default_readers(start_daemon, mx_world):
    """Each delivery holds a read transaction while its body is sent from the map;
    160 at once on one shard exceeded LMDB's default 126 reader slots, and the jobs
    that found no slot were dropped until a restart."""
    import threading
    w = mx_world
    w.add_mx("wide.test", 10, "mx.wide.test", "127.0.0.44")
    s = w.sink("127.0.0.44")
    s.data_delay = 1.5
    d = start_daemon("", config=w.daemon_config({
        "server": {"shards": 1},
        "smtp": {"max_connections_per_ip": 0},
        "delivery": {"max_connections": 200}}))
    errors = []

    def client(n):
        try:
            for _ in range(n):
                submit(d, ["r@wide.test"])
        except Exception as e:  # noqa: BLE001
            errors.append(e)
    threads = [threading.Thread(target=client, args=(18,)) for _ in range(10)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    s.wait_count(180, 60)
    assert s.max_connections > 126, w.describe()
    d.wait_queue_empty(20)
    assert "cannot read the queue" not in d.log()


def test_equal_preference_mx_hosts_share_the_load(start_daemon, mx_world):
    """Two MX hosts of equal preference: each new connection draws the order anew,
    so both get mail (20 connections all choosing one host: 2 ** -19)."""
    w = mx_world
    w.add_mx("pair.test", 10, "mxa.pair.test", "127.0.0.45")
    w.add_mx("pair.test", 10, "mxb.pair.test", "127.0.0.46")
    w.add_mx("pair.test", 20, "backup.pair.test", "127.0.0.47")
    a, b, backup = w.sink("127.0.0.45"), w.sink("127.0.0.46"), w.sink("127.0.0.47")
    a.data_delay = b.data_delay = 0.1  # work stays queued: the destination lives on
    d = start_daemon("", config=w.daemon_config({
        "server": {"shards": 1},
        "delivery": {"max_messages_per_connection": 1, "max_connections": 1}}))
    for _ in range(20):
        submit(d, ["e@pair.test"])
    a.wait_for(lambda ms: len(ms) + len(b.snapshot()) >= 20, 30, "20 messages over both")
    assert len(a.snapshot()) > 0 and len(b.snapshot()) > 0, w.describe()
    assert backup.snapshot() == []  # the higher preference only when both fail
