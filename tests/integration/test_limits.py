"""Inbound limits: connection limits, idle timeout, pipelining without reading replies,
exact message-size boundaries and BDAT edge cases."""
from __future__ import annotations

import socket
import threading
import time

import pytest

from typing import Optional

from conftest import RawSMTP, SMTPReply, make_message, queue_id_of, unique


def alive(d) -> None:
    """The daemon still serves a fresh session."""
    with RawSMTP(d.host, d.port, timeout=10) as c:
        assert c.banner.code == 220, c.banner
        assert c.cmd("NOOP").code == 250
        assert c.cmd("QUIT").code == 221


def open_until_220(d, timeout: float = 10.0) -> RawSMTP:
    """A session that got its 220. A connection that ended a moment ago may still be
    counted by the limiter, so a 421 is retried until `timeout` (polling)."""
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        c = RawSMTP(d.host, d.port, timeout=10)
        if c.banner.code == 220:
            return c
        last = c.banner
        c.close()
        time.sleep(0.05)
    raise AssertionError(f"no 220 within {timeout:.0f}s; last banner {last}")


def expect_refused(d) -> None:
    with RawSMTP(d.host, d.port, timeout=10) as c:
        assert c.banner.code == 421 and "4.7.0" in c.banner.text, c.banner
        assert c.closed_by_peer(10), "not closed after the 421"


@pytest.mark.parametrize("key", ["max_connections_per_ip", "max_connections"])
def test_connection_limit(start_daemon, sink, key):
    n = 3 if key == "max_connections_per_ip" else 2
    d = start_daemon(sink, config={"smtp": {key: n}})
    held = [open_until_220(d) for _ in range(n)]
    try:
        for c in held:   # all of them are real sessions
            assert c.cmd("EHLO client.example.test").code == 250
        expect_refused(d)
        expect_refused(d)          # a refusal must not leak a slot either way
        held.pop().close()
        c = open_until_220(d)       # the slot comes back once the server saw the close
        held.append(c)
        assert c.cmd("NOOP").code == 250
        expect_refused(d)           # and the limit still holds
    finally:
        for c in held:
            c.close()
    # every slot comes back
    again = [open_until_220(d) for _ in range(n)]
    for c in again:
        c.close()


def test_idle_command_timeout(start_daemon, sink):
    d = start_daemon(sink, config={"smtp": {"command_timeout": "1s"}})
    with RawSMTP(d.host, d.port, timeout=15) as c:
        assert c.banner.code == 220
        c.ehlo()
        t0 = time.monotonic()
        r = c.reply()
        waited = time.monotonic() - t0
        assert r.code == 421 and "4.4.2" in r.text, r
        assert 0.95 <= waited <= 6, f"421 after {waited:.2f}s, command_timeout is 1s"
        assert c.closed_by_peer(5), "not closed after the timeout 421"
    alive(d)


def test_idle_timeout_never_fires_early(start_daemon, sink):
    """A timeout counts from when the session started waiting, also when its shard
    had been asleep (it counted from before the ring's wait: up to 1 s early)."""
    d = start_daemon(sink, config={"smtp": {"command_timeout": "2s"}, "server": {"shards": 1}})
    for idle in (0.35, 0.65, 0.9):
        time.sleep(idle)   # let the shard's ring sleep before the connection comes
        t0 = time.monotonic()
        with RawSMTP(d.host, d.port, timeout=15) as c:
            r = c.reply()
            waited = time.monotonic() - t0
            assert r.code == 421 and "4.4.2" in r.text, r
            assert waited >= 1.95, f"421 after {waited:.2f}s, command_timeout is 2s"
    alive(d)


def test_idle_timeout_resets_on_activity(start_daemon, sink):
    """The timeout is per command: a client that keeps talking is not cut off."""
    d = start_daemon(sink, config={"smtp": {"command_timeout": "1s"}})
    with RawSMTP(d.host, d.port, timeout=15) as c:
        c.ehlo()
        t0 = time.monotonic()
        while time.monotonic() - t0 < 2.5:
            assert c.cmd("NOOP").code == 250
            time.sleep(0.3)   # pacing the client, not synchronisation
        assert c.cmd("QUIT").code == 221


def drip(c: RawSMTP, data: bytes, every: float, for_at_most: float) -> Optional[SMTPReply]:
    """Sends data a byte at a time, `every` s apart, until the server answers
    (returned) or for_at_most s have passed (None)."""
    t0 = time.monotonic()
    c.sock.settimeout(every)
    for i in range(len(data)):
        if time.monotonic() - t0 > for_at_most:
            return None
        try:
            c.send(data[i:i + 1])
        except (BrokenPipeError, ConnectionResetError):
            break
        try:
            chunk = c.sock.recv(4096)   # doubles as the pause between bytes
        except socket.timeout:
            continue
        c.buf += chunk
        break
    c.sock.settimeout(10)
    return c.reply()


def test_command_line_sent_a_byte_at_a_time_times_out(start_daemon, sink):
    """The command timeout is for the whole line, not per read: a client that
    sends a byte every 0.5 s cannot hold the session past command_timeout."""
    d = start_daemon(sink, config={"smtp": {"command_timeout": "2s"}})
    with RawSMTP(d.host, d.port, timeout=15) as c:
        c.ehlo()
        t0 = time.monotonic()
        r = drip(c, b"MAIL FROM:<slow-drip-sender-with-a-long-name@example.test>\r\n", 0.5, 12)
        waited = time.monotonic() - t0
        assert r is not None, "no reply in 12 s: the 2 s line deadline was extended by each byte"
        assert r.code == 421 and "4.4.2" in r.text, r
        assert 1.9 <= waited <= 6, f"421 after {waited:.2f}s, command_timeout is 2s"
    alive(d)


def start_data(c: RawSMTP) -> None:
    """EHLO, MAIL, RCPT, DATA: the session is reading message content."""
    c.ehlo()
    assert c.cmd("MAIL FROM:<a@example.test>").code == 250
    assert c.cmd("RCPT TO:<b@example.test>").code == 250
    assert c.cmd("DATA").code == 354


def test_content_slower_than_min_data_rate_times_out(start_daemon, sink):
    d = start_daemon(sink, config={"smtp": {"data_timeout": "2s", "min_data_rate": 1000}})
    with RawSMTP(d.host, d.port, timeout=15) as c:
        start_data(c)
        t0 = time.monotonic()
        r = drip(c, b"Subject: slow\r\n\r\n" + b"x" * 200 + b"\r\n.\r\n", 0.3, 12)
        waited = time.monotonic() - t0
        assert r is not None, "a 3 byte/s DATA was never cut off (min_data_rate 1000 B/s)"
        assert r.code == 421 and "4.4.2" in r.text, r
        assert 1.9 <= waited <= 6, f"421 after {waited:.2f}s, data_timeout is 2s"
    assert d.queue_json()["count"] == 0
    assert sink.snapshot_attempts() == []


def test_content_at_the_rate_outlives_data_timeout(start_daemon, sink):
    """A client that keeps up min_data_rate is never cut off, however long the
    message takes."""
    d = start_daemon(sink, config={"smtp": {"data_timeout": "1s", "min_data_rate": 100}})
    with RawSMTP(d.host, d.port, timeout=15) as c:
        start_data(c)
        c.send(b"Subject: steady\r\n\r\n")
        t0 = time.monotonic()
        while time.monotonic() - t0 < 3.0:          # three data_timeouts
            c.send(b"y" * 78 + b"\r\n")             # 80 bytes per 0.25 s = 320 B/s
            time.sleep(0.25)                         # pacing the client
        c.send(b".\r\n")
        r = c.reply()
        assert r.code == 250, r
    [m] = sink.wait_count(1, timeout=20)
    assert m.data.count(b"y" * 78) >= 10


# The NOOP floods below test back-pressure, not the junk limit: lifted for them.
NO_JUNK_LIMIT = {"smtp": {"junk_command_limit": 10_000_000}}


def test_pipelined_noops_without_reading(start_daemon, sink):
    daemon = start_daemon(sink, config=NO_JUNK_LIMIT)
    n = 5000
    before = daemon.rss_kib()
    with RawSMTP(daemon.host, daemon.port) as c:
        c.ehlo()
        c.send(b"NOOP\r\n" * n)
        alive(daemon)   # others are served meanwhile
        codes = [c.reply().code for _ in range(n)]
        assert codes == [250] * n, {x: codes.count(x) for x in set(codes)}
        assert c.cmd("QUIT").code == 221
    after = daemon.rss_kib()
    assert after - before < 100 * 1024, f"RSS grew {before} -> {after} KiB"


def test_endless_pipelining_memory_bounded(start_daemon, sink):
    """A client that sends 200k commands and reads nothing until it is done: the
    server must push back (TCP), not buffer replies without bound."""
    daemon = start_daemon(sink, config=NO_JUNK_LIMIT)
    n = 200_000
    payload = b"NOOP\r\n" * n
    before = daemon.rss_kib()
    c = RawSMTP(daemon.host, daemon.port, timeout=60)
    try:
        c.ehlo()
        done = threading.Event()
        err: list[BaseException] = []

        def writer():
            try:
                c.sock.sendall(payload)
            except BaseException as e:  # noqa: BLE001
                err.append(e)
            finally:
                done.set()

        t = threading.Thread(target=writer, daemon=True)
        t.start()
        # While the writer is (probably) blocked, the daemon stays responsive and small.
        peak = before
        deadline = time.monotonic() + 3
        while time.monotonic() < deadline and not done.is_set():
            peak = max(peak, daemon.rss_kib() or 0)
            time.sleep(0.1)  # sampling interval
        alive(daemon)
        got = 0
        while got < n:
            r = c.reply()
            assert r.code == 250, (got, r)
            got += 1
            if got % 20000 == 0:
                peak = max(peak, daemon.rss_kib() or 0)
        t.join(30)
        assert not err, err
        assert c.cmd("QUIT").code == 221
    finally:
        c.close()
    assert peak - before < 100 * 1024, f"RSS grew {before} -> {peak} KiB"


def _data_message(c: RawSMTP, content: bytes):
    assert c.cmd("MAIL FROM:<alice@example.test>").code == 250
    assert c.cmd("RCPT TO:<bob@example.test>").code == 250
    assert c.cmd("DATA").code == 354
    c.send(content + b".\r\n")
    return c.reply()


def _bdat_message(c: RawSMTP, content: bytes, sender: str = "alice@example.test",
                  rcpt: str = "bob@example.test"):
    """MAIL, RCPT and the whole message as one BDAT LAST chunk; the final reply."""
    assert c.cmd(f"MAIL FROM:<{sender}>").code == 250
    assert c.cmd(f"RCPT TO:<{rcpt}>").code == 250
    c.send(f"BDAT {len(content)} LAST\r\n".encode() + content)
    return c.reply()


def _sized(msgid: str, size: int) -> bytes:
    head = make_message(msgid, "size", b"")
    line = b"y" * 98 + b"\r\n"
    body = b""
    need = size - len(head)
    while need - len(body) > len(line):
        body += line
    rest = need - len(body)
    assert rest >= 2
    body += b"x" * (rest - 2) + b"\r\n"
    msg = head + body
    assert len(msg) == size
    return msg


def test_data_exactly_at_size_limit(start_daemon, sink):
    limit = 20000
    d = start_daemon(sink, config={"smtp": {"message_size_limit": limit}})
    ok_id, big_id = unique("exact"), unique("plus1")
    with RawSMTP(d.host, d.port) as c:
        c.ehlo()
        r = _data_message(c, _sized(ok_id, limit))
        assert r.code == 250, f"a message of exactly SIZE {limit} octets was refused: {r}"
        r = _data_message(c, _sized(big_id, limit + 1))
        assert r.code == 552 and "5.3.4" in r.text, r
        # SIZE= at the limit is accepted at MAIL, one more is not
        assert c.cmd(f"MAIL FROM:<alice@example.test> SIZE={limit}").code == 250
        assert c.cmd("RSET").code == 250
        assert c.cmd(f"MAIL FROM:<alice@example.test> SIZE={limit + 1}").code == 552
        assert c.cmd("QUIT").code == 221
    sink.wait_for(lambda ms: any(m.message_id == f"<{ok_id}>" for m in ms), 30, "exact-size message")
    d.wait_queue_empty(30)
    assert not any(m.message_id == f"<{big_id}>" for m in sink.snapshot_attempts())


def test_bdat_exactly_at_size_limit(start_daemon, sink):
    limit = 20000
    d = start_daemon(sink, config={"smtp": {"message_size_limit": limit}})
    ok_id, big_id = unique("bexact"), unique("bplus1")
    with RawSMTP(d.host, d.port) as c:
        c.ehlo()
        for msgid, size, code in ((ok_id, limit, 250), (big_id, limit + 1, 552)):
            msg = _sized(msgid, size)
            assert c.cmd("MAIL FROM:<alice@example.test>").code == 250
            assert c.cmd("RCPT TO:<bob@example.test>").code == 250
            half = len(msg) // 2
            c.send(f"BDAT {half}\r\n".encode() + msg[:half])
            assert c.reply().code == 250
            c.send(f"BDAT {len(msg) - half} LAST\r\n".encode() + msg[half:])
            r = c.reply()
            assert r.code == code, (size, r)
        assert c.cmd("NOOP").code == 250
    sink.wait_for(lambda ms: any(m.message_id == f"<{ok_id}>" for m in ms), 30, "exact-size message")
    d.wait_queue_empty(30)


def test_bdat_zero_last_empty_message(daemon, sink):
    """`BDAT 0 LAST` as the only chunk: an empty message is legal (RFC 3030 §2)."""
    with RawSMTP(daemon.host, daemon.port) as c:
        c.ehlo()
        assert c.cmd("MAIL FROM:<alice@example.test>").code == 250
        assert c.cmd("RCPT TO:<empty@example.test>").code == 250
        r = c.cmd("BDAT 0 LAST")
        assert r.code == 250, r
        queue_id_of(r.text)
        assert c.cmd("QUIT").code == 221
    [m] = sink.wait_for(lambda ms: [x for x in ms if x.rcpt_tos == ["empty@example.test"]], 30,
                        "the empty message")
    # only our Received: header, then the (empty) rest
    assert m.data.startswith(b"Received: "), m.data[:200]
    daemon.wait_queue_empty(30)


def test_bdat_message_without_final_crlf(daemon, sink):
    """BDAT content need not end in CRLF; the relay must still end DATA correctly."""
    msgid = unique("nocrlf")
    msg = make_message(msgid, "no final crlf", b"last line without CRLF")
    with RawSMTP(daemon.host, daemon.port) as c:
        c.ehlo()
        r = _bdat_message(c, msg)
        assert r.code == 250, r
    [m] = sink.wait_for(lambda ms: [x for x in ms if x.message_id == f"<{msgid}>"], 30, "message")
    assert b"last line without CRLF" in m.data
    daemon.wait_queue_empty(30)


def test_bdat_without_mail_chunk_not_parsed(daemon):
    with RawSMTP(daemon.host, daemon.port) as c:
        c.ehlo()
        chunk = b"QUIT\r\n"
        c.send(f"BDAT {len(chunk)}\r\n".encode() + chunk)
        r = c.reply()
        assert r.code == 503, r
        # the chunk's QUIT was data, not a command: the session is still open
        r = c.cmd("NOOP")
        assert r.code == 250, r
        c.send(f"BDAT {len(chunk)} LAST\r\n".encode() + chunk)
        assert c.reply().code == 503
        assert c.cmd("NOOP").code == 250


def test_transaction_after_failed_bdat_without_mail(daemon, sink):
    msgid = unique("afterbdat")
    with RawSMTP(daemon.host, daemon.port) as c:
        c.ehlo()
        c.send(b"BDAT 6\r\nQUIT\r\n")
        assert c.reply().code == 503
        r = _bdat_message(c, make_message(msgid, "after a failed BDAT", b"ok\r\n"))
        assert r.code == 250, r
    sink.wait_for(lambda ms: any(m.message_id == f"<{msgid}>" for m in ms), 30, "message")


def test_bdat_huge_declared_size_no_memory(start_daemon, sink):
    """BDAT 10^18 with the size limit at 1 MiB: bytes beyond the limit are discarded,
    not buffered."""
    d = start_daemon(sink, config={"smtp": {"message_size_limit": "1MiB"}})
    before = d.rss_kib()
    with RawSMTP(d.host, d.port) as c:
        c.ehlo()
        assert c.cmd("MAIL FROM:<alice@example.test>").code == 250
        assert c.cmd("RCPT TO:<bob@example.test>").code == 250
        c.send(b"BDAT 1000000000000000000\r\n")
        blob = b"z" * 65536
        for _ in range(20 * 16):       # 20 MiB
            c.send(blob)
        peak = d.rss_kib()
    assert peak - before < 50 * 1024, f"RSS grew {before} -> {peak} KiB"
    alive(d)


def _hops(n: int) -> bytes:
    return b"".join(f"Received: from hop{i}.example.test by relay{i}.example.test;\r\n"
                    f"\tMon, 24 Nov 2025 10:00:{i % 60:02d} +0000\r\n".encode() for i in range(n))


def test_mail_loop_refused_by_received_count(start_daemon, sink):
    """RFC 5321 §6.3: a message already carrying max_hops Received: fields is a loop:
    554 5.4.6 at the end of DATA (and of BDAT LAST); one fewer is relayed, and
    Received: lines in the body do not count."""
    d = start_daemon(sink, config={"smtp": {"max_hops": 10}})
    ok_id, loop_id, bloop_id = unique("hops9"), unique("hops10"), unique("bhops10")
    with RawSMTP(d.host, d.port) as c:
        c.ehlo()
        r = _data_message(c, make_message(ok_id, extra=_hops(9), body=_hops(30)))
        assert r.code == 250, r
        r = _data_message(c, make_message(loop_id, extra=_hops(10)))
        assert r.code == 554 and "5.4.6" in r.text, r
        r = _bdat_message(c, make_message(bloop_id, extra=_hops(10)))
        assert r.code == 554 and "5.4.6" in r.text, r
        assert c.cmd("NOOP").code == 250
        assert c.cmd("QUIT").code == 221
    sink.wait_for(lambda ms: any(m.message_id == f"<{ok_id}>" for m in ms), 30, "the 9-hop message")
    d.wait_queue_empty(30)
    got = [m for m in sink.snapshot() if m.message_id == f"<{ok_id}>"][0]
    assert got.data.count(b"Received: from hop") == 39  # 9 in the header, 30 in the body
    assert not any(m.message_id in (f"<{loop_id}>", f"<{bloop_id}>") for m in sink.snapshot_attempts())
    d.wait_log(r"reject: end of data .*5\.4\.6")


def test_full_queue_answers_452_keeps_what_it_accepted_and_recovers(start_daemon, sink):
    """A spool short of space (a 1 MiB LMDB map, 150 KB messages, the next hop deferring
    everything so nothing leaves) answers 452 4.3.1 (insufficient system storage): at
    MAIL once the free space is below the reserve (1.5 x message_size_limit, checked
    each second), or at the end of DATA if the map filled up in between. It stays up,
    keeps every message it said 250 to, and accepts mail again once deliveries made room."""
    sink.tempfail_all = True
    # One shard: each shard has its own spool, and a new session could land on another.
    d = start_daemon(sink, config={"server": {"shards": 1},
                                   "store": {"map_size": "1MiB"}, "smtp": {"message_size_limit": 400000},
                                   "queue": {"min_backoff": "1h", "max_backoff": "1h"}})
    body = (b"y" * 998 + b"\r\n") * 150
    accepted, last = [], None
    with RawSMTP(d.host, d.port) as c:
        c.ehlo()
        for _ in range(40):
            last = c.cmd("MAIL FROM:<alice@example.test>")
            if last.code != 250:
                break
            assert c.cmd("RCPT TO:<bob@example.test>").code == 250
            assert c.cmd("DATA").code == 354
            c.send(make_message(unique("full"), body=body) + b".\r\n")
            last = c.reply()
            if last.code != 250:
                break
            accepted.append(queue_id_of(last.text))
        assert last.code == 452 and "4.3.1" in last.text, last
        assert 2 <= len(accepted) < 10, len(accepted)
        assert c.cmd("RSET").code == 250
        assert c.cmd("NOOP").code == 250
    queued = {m["id"] for m in d.queue_json()["messages"]}
    assert set(accepted) <= queued, (accepted, queued)
    d.wait_log(r"queue storage low")  # the once-a-second check saw it
    with RawSMTP(d.host, d.port) as c:  # and now refuses at MAIL (polled: the check is periodic)
        c.ehlo()
        deadline = time.monotonic() + 5
        while (r := c.cmd("MAIL FROM:<alice@example.test>")).code == 250 and time.monotonic() < deadline:
            assert c.cmd("RSET").code == 250
            time.sleep(0.2)
        assert r.code == 452 and "4.3.1" in r.text, r
    # The next hop takes mail again: everything queued goes out, and so does new mail.
    sink.tempfail_all = False
    d.ctl("queue", "flush")
    d.wait_queue_empty(30)
    got = {m.message_id for m in sink.snapshot()}
    assert len(got) >= len(accepted)
    d.wait_log(r"queue storage available again")
    with RawSMTP(d.host, d.port) as c:
        c.ehlo()
        assert _data_message(c, make_message(unique("after"))).code == 250


def test_junk_commands_and_recipient_overshoot_end_in_421(start_daemon, sink):
    """As Postfix's smtpd_junk_command_limit and smtpd_recipient_overshoot_limit: past
    the limit every NOOP/RSET/VRFY/HELP, and every RCPT refused for max_recipients,
    counts as an error, so a session cannot go on with them for ever."""
    d = start_daemon(sink, config={"smtp": {"junk_command_limit": 5, "max_errors": 3,
                                            "max_recipients": 2, "recipient_overshoot_limit": 4}})
    with RawSMTP(d.host, d.port) as c:
        c.ehlo()
        codes = [c.cmd(v).code for v in ["NOOP", "RSET", "VRFY x", "HELP", "NOOP", "NOOP", "NOOP"]]
        assert codes[:7] == [250, 250, 252, 214, 250, 250, 250], codes   # still answered
        r = c.cmd("NOOP")   # 5 free, then errors 1, 2 and the third ends the session
        assert r.code == 250, r
        assert c.reply().code == 421
        assert c.closed_by_peer(5)
    with RawSMTP(d.host, d.port) as c:
        c.ehlo()
        assert c.cmd("MAIL FROM:<a@example.test>").code == 250
        codes = [c.cmd(f"RCPT TO:<r{i}@example.test>").code for i in range(8)]
        assert codes == [250, 250] + [452] * 6, codes   # 4 free overshoots, then 2 errors
        assert c.cmd("RCPT TO:<r9@example.test>").code == 452
        assert c.reply().code == 421
    # A client that reuses its connection with an RSET before every message (as
    # Postfix's and many others' connection caches do) is never cut off: the
    # count starts again with each accepted message.
    with RawSMTP(d.host, d.port) as c:
        c.ehlo()
        for i in range(12):
            assert c.cmd("RSET").code == 250
            assert c.cmd("MAIL FROM:<a@example.test>").code == 250
            assert c.cmd(f"RCPT TO:<r{i}@example.test>").code == 250
            assert c.cmd("DATA").code == 354
            c.send(make_message(unique("rset"), "rset reuse", b"x\r\n") + b".\r\n")
            assert c.reply().code == 250
        assert c.cmd("QUIT").code == 221
    alive(d)


# The receive_memory tests: a 1 MiB budget on one shard, and two ~630 KB messages,
# one of which session `a` holds in memory (a BDAT chunk without LAST).
SMALL_RECEIVE_MEMORY = {"smtp": {"receive_memory": "1MiB", "max_errors": 1}, "server": {"shards": 1}}
BIG_BODY = b"".join(b"line %06d ........................................................\r\n" % i
                    for i in range(9000))


def hold_memory(a, held: bytes) -> None:
    a.ehlo()
    assert a.cmd("MAIL FROM:<a@example.test>").code == 250
    assert a.cmd("RCPT TO:<r@example.test>").code == 250
    a.send(f"BDAT {len(held)}\r\n".encode() + held)
    assert a.reply().code == 250          # held in memory: no LAST yet


def test_messages_past_receive_memory_get_452_and_nothing_is_lost(start_daemon, sink):
    """Sessions hold the message they receive in memory until its commit; past
    [smtp] receive_memory (per shard) a message is read to its end and refused
    452 4.3.1, not counted as a client error, and the same message is accepted once
    memory is free again. The message holding the memory is queued as usual."""
    d = start_daemon(sink, config=SMALL_RECEIVE_MEMORY)
    holder_id, second_id = unique("holder"), unique("second")
    held = make_message(holder_id, "holds memory", BIG_BODY)
    second = make_message(second_id, "waits for memory", BIG_BODY)
    with RawSMTP(d.host, d.port) as a, RawSMTP(d.host, d.port) as b:
        hold_memory(a, held)
        b.ehlo()
        for attempt in range(2):
            assert b.cmd("MAIL FROM:<b@example.test>").code == 250
            assert b.cmd("RCPT TO:<r@example.test>").code == 250
            assert b.cmd("DATA").code == 354
            b.send(second + b".\r\n")
            r = b.reply()
            if attempt == 0:
                assert r.code == 452 and "4.3.1" in r.text, r
                r = a.cmd("BDAT 0 LAST")      # the holder finishes and frees its memory
                assert r.code == 250, r
            else:
                assert r.code == 250, r       # max_errors = 1: the 452 counted no error
    for msgid, msg in ((holder_id, held), (second_id, second)):
        [m] = sink.wait_for(lambda ms, i=msgid: [x for x in ms if x.message_id == f"<{i}>"], 30, msgid)
        assert m.data.endswith(msg)
    d.wait_log(r"smtp\.receive_memory")


def test_bdat_past_receive_memory_gets_452(start_daemon, sink):
    d = start_daemon(sink, config=SMALL_RECEIVE_MEMORY)
    held = make_message(unique("holder"), "holds memory", BIG_BODY)
    second_id = unique("bdat-second")
    second = make_message(second_id, "waits for memory", BIG_BODY)
    with RawSMTP(d.host, d.port) as a, RawSMTP(d.host, d.port) as b:
        hold_memory(a, held)
        b.ehlo()
        r = _bdat_message(b, second, "b@example.test", "r@example.test")
        assert r.code == 452 and "4.3.1" in r.text, r
        assert a.cmd("BDAT 0 LAST").code == 250
        assert _bdat_message(b, second, "b@example.test", "r@example.test").code == 250
    [m] = sink.wait_for(lambda ms: [x for x in ms if x.message_id == f"<{second_id}>"], 30, second_id)
    assert m.data.endswith(second)
