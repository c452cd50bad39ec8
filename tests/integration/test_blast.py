"""ringmail-blast: the load generator (send) and the counting sink (sink).

Checks that the two agree with each other, that the sink's failure behaviours are
what a plain client (smtplib) sees, that send notices lost and refused mail, that
both interoperate with Postfix's smtp-sink / smtp-source, and one run through
ringmaild. Every process runs on loopback with a bounded load and is killed at the end.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import signal
import smtplib
import subprocess
import time
from pathlib import Path
from typing import Optional

import pytest

from conftest import BUILD, make_message, start_postfix_smtp_sink
from sink import free_port

BLAST = BUILD / "tools" / "ringmail-blast"
SMTP_SOURCE = Path("/usr/sbin/smtp-source")


@pytest.fixture(autouse=True)
def _need_blast():
    if not BLAST.exists():
        raise AssertionError(f"{BLAST} does not exist (build it first: ninja -C {BUILD} tools/ringmail-blast)")


class BlastSink:
    """A `ringmail-blast sink` process; stop() returns its JSON summary."""

    def __init__(self, tmp: Path, *args: str, port: Optional[int] = None, listen: Optional[str] = None) -> None:
        self.port = port or free_port()
        self.address = f"127.0.0.1:{self.port}"
        listen = listen or self.address
        self.err_path = tmp / f"blast-sink-{self.port}.err"
        self.out_path = tmp / f"blast-sink-{self.port}.out"
        self._out = open(self.out_path, "wb")
        self._err = open(self.err_path, "wb")
        self.proc = subprocess.Popen(
            [str(BLAST), "sink", "--listen", listen, "--json", "--quiet", "--duration", "60", *args],
            stdin=subprocess.DEVNULL, stdout=self._out, stderr=self._err, start_new_session=True)
        deadline = time.monotonic() + 10
        while "listening on" not in self.stderr():
            if self.proc.poll() is not None:
                raise AssertionError(f"blast sink exited {self.proc.returncode}: {self.stderr()}")
            if time.monotonic() > deadline:
                self.kill()
                raise AssertionError(f"blast sink not listening after 10 s: {self.stderr()}")
            time.sleep(0.02)

    def stderr(self) -> str:
        return self.err_path.read_text(errors="replace")

    def wait(self, timeout: float = 20) -> dict:
        """Waits for the sink to exit by itself (--expect / --duration)."""
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            raise AssertionError(f"blast sink did not exit in {timeout} s: {self.stderr()}")
        return self._summary()

    def stop(self) -> dict:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.kill()
                raise AssertionError("blast sink ignored SIGTERM")
        return self._summary()

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(5)

    def _summary(self) -> dict:
        self._out.close()
        self._err.close()
        assert self.proc.returncode == 0, f"blast sink exited {self.proc.returncode}: {self.stderr()}"
        text = self.out_path.read_text()
        try:
            return json.loads(text)
        except ValueError as e:
            raise AssertionError(f"blast sink printed invalid JSON ({e}): {text!r}") from e


@pytest.fixture
def blast_sink(tmp_path):
    sinks: list[BlastSink] = []

    def factory(*args: str, port: Optional[int] = None) -> BlastSink:
        s = BlastSink(tmp_path, *args, port=port)
        sinks.append(s)
        return s

    yield factory
    for s in sinks:
        s.kill()


def blast_send(to: str, *args: str, timeout: float = 30) -> tuple[int, dict, str]:
    """Runs `ringmail-blast send --json`; returns (exit code, summary, stderr)."""
    r = subprocess.run([str(BLAST), "send", "--to", to, "--json", "--quiet", *args],
                       stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=timeout)
    try:
        doc = json.loads(r.stdout)
    except ValueError as e:
        raise AssertionError(f"blast send exited {r.returncode} without JSON ({e}): "
                             f"stdout {r.stdout!r} stderr {r.stderr!r}") from e
    return r.returncode, doc, r.stderr


SEND_FIELDS = ("messages", "seconds", "msgs_per_sec", "errors", "latency_p50_ms", "latency_p99_ms", "replies")
SINK_FIELDS = ("messages", "seconds", "checksum_failures", "duplicates", "per_domain")


# --------------------------------------------------------------------------- send -> sink
def test_send_to_sink_counts_match(blast_sink):
    sink = blast_sink("--expect", "2000")
    before = time.time()
    rc, sent, err = blast_send(sink.address, "--connections", "10", "--messages", "2000", "--size", "4096",
                               "--domains", "3")
    got = sink.wait()
    after = time.time()
    for f in SEND_FIELDS:
        assert f in sent, f"send JSON lacks {f}: {sent}"
    for f in SINK_FIELDS:
        assert f in got, f"sink JSON lacks {f}: {got}"
    assert rc == 0, (sent, err)
    assert sent["messages"] == 2000 and sent["errors"] == 0, sent
    assert sent["replies"] == {"250": 2000}, sent
    assert got["messages"] == 2000, got
    assert got["checksum_failures"] == 0 and got["checksum_ok"] == 2000, got
    assert got["duplicates"] == 0, got
    assert got["per_domain"] == {"d1.example.test": 667, "d2.example.test": 667, "d3.example.test": 666}, got
    # When the 2000th message was counted (benchmarks time runs to it): inside the run.
    assert before < got["expect_reached_at"] < after, (before, got["expect_reached_at"], after)


def test_send_bdat_sizes_and_rcpts_to_sink(blast_sink):
    sink = blast_sink("--expect", "300", "--threads", "2")
    rc, sent, err = blast_send(sink.address, "--connections", "4", "--messages", "300", "--bdat",
                               "--size", "1k:60,16k:30,256k:10", "--rcpts", "2",
                               "--domain-list", "a.example.test,b.example.test")
    got = sink.wait()
    assert rc == 0 and sent["messages"] == 300, (sent, err)
    assert got["messages"] == 300 and got["checksum_failures"] == 0 and got["duplicates"] == 0, got
    assert got["per_domain"] == {"a.example.test": 300, "b.example.test": 300}, got


def test_send_without_pipelining(blast_sink):
    sink = blast_sink("--expect", "200")
    rc, sent, err = blast_send(sink.address, "--connections", "3", "--messages", "200", "--pipelining", "off")
    got = sink.wait()
    assert rc == 0 and sent["messages"] == 200, (sent, err)
    assert got["messages"] == 200 and got["checksum_failures"] == 0, got


@pytest.mark.parametrize("mode", [["--bdat", "--window", "16"], ["--window", "2"], ["--bdat", "--window", "1000"]],
                         ids=["bdat-window16", "data-window2", "bdat-window-beyond-share"])
def test_send_window_pipelines_across_messages(blast_sink, mode):
    """--window keeps several transactions in flight per connection; counts, checksums and
    per-domain totals stay exact and no message is sent twice."""
    sink = blast_sink("--expect", "3000", "--threads", "2")
    rc, sent, err = blast_send(sink.address, "--connections", "7", "--messages", "3000", "--size", "1k:80,20k:20",
                               "--rcpts", "2", "--domains", "3", *mode)
    got = sink.wait()
    assert rc == 0, (sent, err)
    assert sent["messages"] == 3000 and sent["attempted"] == 3000 and sent["errors"] == 0, sent
    assert sent["replies"] == {"250": 3000}, sent
    assert got["messages"] == 3000 and got["checksum_ok"] == 3000 and got["checksum_failures"] == 0, got
    assert got["duplicates"] == 0, got
    assert got["per_domain"] == {"d1.example.test": 2000, "d2.example.test": 2000, "d3.example.test": 2000}, got
    assert sent["bytes"] == got["bytes"], (sent, got)


@pytest.mark.parametrize("mode", [["--bdat", "--window", "8"], ["--window", "2"]], ids=["bdat", "data"])
@pytest.mark.parametrize("behaviour", [["--drop-percent", "3"], ["--permfail-percent", "3"],
                                       ["--tempfail-percent", "2", "--greylist"]],
                         ids=["drop", "permfail", "tempfail-greylist"])
def test_send_window_accounts_every_message(blast_sink, mode, behaviour):
    """With transactions in flight, a refusal or a dropped connection is charged to the right
    messages: what send counts as accepted is exactly what the sink counted."""
    sink = blast_sink(*behaviour, "--seed", "7")
    rc, sent, err = blast_send(sink.address, "--connections", "5", "--messages", "1000", *mode)
    got = sink.stop()
    assert rc != 0 and sent["errors"] > 0, (sent, err)
    assert got["messages"] == sent["messages"], (sent, got)
    assert sent["messages"] + sent["errors"] == 1000 and sent["attempted"] == 1000, sent
    assert got["checksum_failures"] == 0 and got["duplicates"] == 0, got
    if behaviour[0] == "--drop-percent":
        assert sent["lost"] > 0 and sent["refused"] == 0, sent
        assert got["dropped"] > 0, got
    elif behaviour[0] == "--permfail-percent":
        assert sent["lost"] == 0 and sent["replies"].get("550", 0) == sent["errors"], sent
    else:
        assert sent["lost"] == 0, sent
        assert sent["replies"].get("451", 0) == sent["errors"], sent
        assert got["greylisted"] + got["tempfailed_rcpts"] >= sent["errors"], got


def test_sink_verifies_pipelined_bdat_checksums(blast_sink):
    """Many BDAT transactions in one write (bodies hashed side by side by the sink):
    exactly the bodies that do not match their checksum are counted as failures."""
    import socket
    sink = blast_sink()
    bad = {2, 5, 6, 11}
    wire = b"EHLO t.example.test\r\n"
    for i in range(13):
        body = (b"line %d of a pipelined body\r\n" % i) * (3 + i * 7) + (b".dot\r\n" if i % 2 else b"")
        claimed = fnv1a(body + b"x" if i in bad else body)
        msg = (b"Message-ID: <pipe-%d@t.example.test>\r\nX-Blast-Checksum: %016x\r\n\r\n" % (i, claimed)) + body
        wire += (b"MAIL FROM:<a@t.example.test>\r\nRCPT TO:<b@d%d.example.test>\r\nBDAT %d LAST\r\n"
                 % (i % 2, len(msg))) + msg
    wire += b"QUIT\r\n"
    with socket.create_connection(("127.0.0.1", sink.port), timeout=10) as c:
        c.recv(1024)  # greeting
        c.sendall(wire)
        got = b""
        while not got.endswith(b"221 2.0.0 Bye\r\n"):
            chunk = c.recv(65536)
            assert chunk, got
            got += chunk
    assert got.count(b"Ok: queued as") == 13, got
    s = sink.stop()
    assert s["messages"] == 13 and s["checksum_failures"] == len(bad) and s["checksum_ok"] == 13 - len(bad), s
    assert s["per_domain"] == {"d0.example.test": 7, "d1.example.test": 6}, s


def test_send_window_help_and_range():
    r = subprocess.run([str(BLAST), "send", "--help"], capture_output=True, text=True, timeout=10)
    assert "--window" in r.stdout, r.stdout
    r = subprocess.run([str(BLAST), "send", "--to", "127.0.0.1:1", "--messages", "1", "--window", "0"],
                       capture_output=True, text=True, timeout=10)
    assert r.returncode != 0, r


# --------------------------------------------------------------------------- lost mail is noticed
@pytest.mark.parametrize("behaviour", [["--drop-percent", "3"], ["--permfail-percent", "3"]],
                         ids=["drop", "permfail"])
def test_send_reports_lost_or_refused_mail(blast_sink, behaviour):
    sink = blast_sink(*behaviour, "--seed", "5")
    rc, sent, err = blast_send(sink.address, "--connections", "10", "--messages", "1000")
    got = sink.stop()
    assert rc != 0, f"send must fail when mail is lost or refused: {sent}"
    assert sent["errors"] > 0, sent
    assert got["messages"] < 1000, got
    # every message send counted as accepted reached the sink, and nothing more
    assert got["messages"] == sent["messages"], (sent, got)
    assert sent["messages"] + sent["errors"] == 1000, sent
    if behaviour[0] == "--permfail-percent":
        assert sent["replies"].get("550", 0) == sent["errors"], sent
    else:
        assert sent["lost"] == sent["errors"] == got["dropped"], (sent, got)
    # --allow-failures turns the exit code around, not the counts
    again = blast_sink(*behaviour, "--seed", "6")
    rc2, sent2, _ = blast_send(again.address, "--connections", "2", "--messages", "200", "--allow-failures")
    assert rc2 == 0 and sent2["errors"] > 0, sent2


# --------------------------------------------------------------------------- sink behaviours
def test_sink_behaviours_seen_by_smtplib(blast_sink):
    sink = blast_sink("--greylist")
    with smtplib.SMTP("127.0.0.1", sink.port, timeout=10) as c:
        code, caps = c.ehlo("client.example.test")
        assert code == 250
        for ext in ("pipelining", "chunking", "8bitmime", "size"):
            assert c.has_extn(ext), caps
        assert c.mail("alice@example.test")[0] == 250
        code, text = c.rcpt("tempfail@d1.example.test")
        assert code == 451 and b"4.7.1" in text, text
        code, text = c.rcpt("permfail@d1.example.test")
        assert code == 550 and b"5.1.1" in text, text
        assert c.rcpt("bob@d1.example.test")[0] == 250
        c.rset()

        msg = make_message("grey-1@client.example.test")
        with pytest.raises(smtplib.SMTPDataError) as e:
            c.sendmail("alice@example.test", ["bob@d1.example.test"], msg)
        assert e.value.smtp_code == 451, e.value
        assert c.sendmail("alice@example.test", ["bob@d1.example.test"], msg) == {}

        # a body that does not match its checksum is accepted but counted
        good = make_message("sum-1@client.example.test", body=b"payload\r\n",
                            extra=b"X-Blast-Checksum: %016x\r\n" % fnv1a(b"payload\r\n"))
        bad = make_message("sum-2@client.example.test", body=b"payl0ad\r\n",
                           extra=b"X-Blast-Checksum: %016x\r\n" % fnv1a(b"payload\r\n"))
        for m in (good, bad):  # first attempts are greylisted
            with pytest.raises(smtplib.SMTPDataError):
                c.sendmail("alice@example.test", ["bob@d2.example.test"], m)
            assert c.sendmail("alice@example.test", ["bob@d2.example.test"], m) == {}
    got = sink.stop()
    assert got["messages"] == 3, got
    assert got["greylisted"] == 3, got
    assert got["checksum_failures"] == 1 and got["checksum_ok"] == 1, got
    assert got["per_domain"] == {"d1.example.test": 1, "d2.example.test": 2}, got


def test_sink_duplicates_ids_file_and_connection_limit(blast_sink, tmp_path):
    ids = tmp_path / "ids.txt"
    sink = blast_sink("--ids-file", str(ids), "--max-connections", "1")
    with smtplib.SMTP("127.0.0.1", sink.port, timeout=10) as c:
        msg = make_message("dup-1@client.example.test")
        for _ in range(2):
            assert c.sendmail("alice@example.test", ["bob@d1.example.test"], msg) == {}
        # a second connection is over the limit
        with pytest.raises(smtplib.SMTPConnectError) as e:
            smtplib.SMTP("127.0.0.1", sink.port, timeout=10)
        assert e.value.smtp_code == 421
    got = sink.stop()
    assert got["messages"] == 2 and got["duplicates"] == 1, got
    assert ids.read_text().splitlines() == ["<dup-1@client.example.test>"] * 2


def test_sink_refuses_non_loopback(tmp_path):
    r = subprocess.run([str(BLAST), "sink", "--listen", "192.0.2.1:2525", "--duration", "1"],
                       capture_output=True, text=True, timeout=10)
    assert r.returncode != 0 and "not a loopback address" in r.stderr, r
    r = subprocess.run([str(BLAST), "send", "--to", "192.0.2.1:2525", "--messages", "1"],
                       capture_output=True, text=True, timeout=10)
    assert r.returncode != 0 and "not a loopback address" in r.stderr, r


def fnv1a(data: bytes) -> int:
    h = 0xcbf29ce484222325
    for b in data:
        h ^= b
        h = (h * 0x100000001b3) & 0xFFFFFFFFFFFFFFFF
    return h


# --------------------------------------------------------------------------- Postfix tools
def _need(path: Path) -> None:
    if not path.exists():
        pytest.skip(f"{path} not installed (Debian package postfix)")


def test_send_to_postfix_smtp_sink(tmp_path):
    port = free_port()
    out = open(tmp_path / "smtp-sink.out", "wb")
    p = start_postfix_smtp_sink("-c", port=port, stdout=out)
    try:
        rc, sent, err = blast_send(f"127.0.0.1:{port}", "--connections", "10", "--messages", "1000")
        assert rc == 0 and sent["messages"] == 1000 and sent["errors"] == 0, (sent, err)
        time.sleep(0.3)  # let smtp-sink print its last counter
    finally:
        p.kill()
        p.wait(5)
        out.close()
    counts = re.findall(r"mesg=(\d+)", (tmp_path / "smtp-sink.out").read_text())
    assert counts and int(counts[-1]) == 1000, counts[-5:]


def test_postfix_smtp_source_to_sink(blast_sink):
    _need(SMTP_SOURCE)
    sink = blast_sink("--expect", "200")
    r = subprocess.run([str(SMTP_SOURCE), "-s", "5", "-m", "200", sink.address],
                       capture_output=True, text=True, timeout=20)
    assert r.returncode == 0, r
    got = sink.wait()
    assert got["messages"] == 200, got
    assert got["checksum_failures"] == 0 and got["duplicates"] == 0, got


# --------------------------------------------------------------------------- through ringmaild
def test_send_through_ringmaild_to_sink(start_daemon, blast_sink):
    sink = blast_sink("--expect", "1000")
    d = start_daemon(sink.address)
    rc, sent, err = blast_send(f"{d.host}:{d.port}", "--connections", "10", "--messages", "1000", "--size", "2k",
                               timeout=60)
    assert rc == 0 and sent["messages"] == 1000, (sent, err)
    got = sink.wait(timeout=30)
    assert got["messages"] == 1000, got
    assert got["checksum_failures"] == 0 and got["checksum_ok"] == 1000, got
    assert got["duplicates"] == 0, got
    d.wait_queue_empty(timeout=10)


def test_split_bodies_relayed_over_bdat_verify(start_daemon, blast_sink):
    """Sizes that the spool keeps as a head and a tail (just over one and two
    pages with our Received: field) go out over BDAT as two pieces of the map:
    the sink checks every body against its checksum."""
    sink = blast_sink("--expect", "600")
    d = start_daemon(sink.address)
    rc, sent, err = blast_send(f"{d.host}:{d.port}", "--connections", "8", "--messages", "600",
                               "--size", "4000:30,4096:40,8100:30", timeout=60)
    assert rc == 0 and sent["messages"] == 600, (sent, err)
    got = sink.wait(timeout=30)
    assert got["messages"] == 600, got
    assert got["checksum_failures"] == 0 and got["checksum_ok"] == 600, got
    d.wait_queue_empty(timeout=10)


def test_relay_over_bdat_per_recipient_outcomes(start_daemon, blast_sink):
    """The sink offers PIPELINING+CHUNKING, so ringmaild relays each message as one
    MAIL/RCPT/BDAT LAST write. A recipient the sink refuses (550 at RCPT) bounces on its
    own; the other is delivered once, body intact (checksum), and the DSN (from <>)
    reaches the sink too."""
    sink = blast_sink("--expect", "2")
    d = start_daemon(sink.address)
    body = b"line one\r\n.leading dot survives BDAT\r\nline three\r\n"
    checksum = fnv1a(body)
    msg = (b"From: alice@example.test\r\nTo: bob@d1.example.test\r\nSubject: bdat relay\r\n"
           b"Message-ID: <bdat-relay-1@client.example.test>\r\n"
           + f"X-Blast-Checksum: {checksum:016x}\r\n".encode() + b"\r\n" + body)
    with smtplib.SMTP(d.host, d.port, timeout=20) as c:
        refused = c.sendmail("alice@example.test", ["bob@d1.example.test", "permfail@d2.example.test"], msg)
        assert refused == {}, refused   # both accepted by ringmaild; the sink decides later
    got = sink.wait(timeout=30)
    assert got["messages"] == 2, got                     # the message to bob + the DSN to alice
    assert got["checksum_failures"] == 0 and got["checksum_ok"] >= 1, got
    d.wait_queue_empty(timeout=10)
    log = d.log()
    assert re.search(r"to=<bob@d1\.example\.test> .*status=sent", log), log
    assert re.search(r"to=<permfail@d2\.example\.test> .*status=bounced .*550.*RCPT TO", log), log
    assert "sender non-delivery notification" in log, log


# --------------------------------------------------------------------------- bad input, stops
@pytest.mark.parametrize("args,needle", [
    (["send", "--to", "127.0.0.1:1", "--messages", "-5"], "must not be negative"),
    (["send", "--to", "127.0.0.1:1", "--messages", "1", "--seed", "-1"], "must not be negative"),
    (["sink", "--listen", "127.0.0.1:1", "--expect", "-1"], "must not be negative"),
    (["send", "--to", "127.0.0.1:1", "--messages", "1", "--size", "1k:70,16k"], "give every size"),
    (["send", "--to", "127.0.0.1:1", "--messages", "1", "--size", "1k:70:5"], "bad weight"),
    (["send", "--to", "127.0.0.1:1", "--messages", "1", "--size", "1k:inf,2k:1"], "at most 1e9"),
    (["send", "--to", "127.0.0.1:1", "--duration", "nan"], "--duration"),
    (["send", "--to", "127.0.0.1:1", "--messages", "1", "--rate", "-5"], "--rate"),
    (["send", "--to", "127.0.0.1:1", "--messages", "1", "--timeout", "0"], "--timeout"),
    (["send", "--to", "127.0.0.1:0", "--messages", "1"], "port 0"),
    (["send", "--to", "127.0.0.1:1", "--messages", "1", "--from", "bad sender"], "--from"),
    (["send", "--to", "127.0.0.1:1", "--messages", "1", "--connections", "100000000"], "ulimit -n"),
    (["sink", "--listen", "127.0.0.1:1", "--tempfail-percent", "60", "--permfail-percent", "60"], "more than 100"),
    (["sink", "--listen", "127.0.0.1:1", "--duration", "-1"], "--duration"),
    (["send", "--to", "127.0.0.1:1", "--messages", "1", "--size", "18014398509481985k"], "too large"),
    (["send", "--to", "127.0.0.1:1", "--messages", "1", "--domain-list", ",,"], "--domain-list"),
], ids=lambda v: v if isinstance(v, str) else "-".join(v[:1] + v[-2:]))
def test_bad_values_are_usage_errors(args, needle):
    r = subprocess.run([str(BLAST), *args], stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=10)
    assert r.returncode == 2, (r.returncode, r.stderr)
    assert needle in r.stderr, r.stderr


def test_send_offers_size_only_when_the_server_does(tmp_path):
    """RFC 1870: SIZE= goes only to a server that announced SIZE."""
    from scripted_host import ScriptedHost
    host = ScriptedHost(capabilities=("PIPELINING",))
    try:
        rc, doc, err = blast_send(host.address, "--messages", "3", "--connections", "1")
        assert rc == 0 and doc["messages"] == 3, (doc, err)
        mails = [c for _, c in host.commands if c.upper().startswith("MAIL")]
        assert len(mails) == 3 and all("SIZE=" not in m.upper() for m in mails), mails
    finally:
        host.close()


def test_sigterm_during_a_paced_run_stops_at_once(blast_sink):
    sink = blast_sink()
    t0 = time.monotonic()
    p = subprocess.Popen([str(BLAST), "send", "--to", sink.address, "--json", "--quiet", "--messages", "10",
                          "--rate", "0.5", "--connections", "10"],
                         stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    time.sleep(2.5)
    p.send_signal(signal.SIGTERM)
    out, err = p.communicate(timeout=15)
    took = time.monotonic() - t0
    assert took < 6, f"{took:.1f} s: messages paced for later held up the stop"
    doc = json.loads(out)
    assert doc["interrupted"] is True and doc["requested"] == 10, doc
    assert doc["messages"] <= 3, f"paced messages went out early after SIGTERM: {doc}"
    assert doc["unsent"] == 10 - doc["attempted"] and doc["lost"] == 0, doc
    assert p.returncode == 0, err
    assert sink.stop()["messages"] == doc["messages"]


def test_sink_refuses_a_message_over_its_size_limit(blast_sink):
    import socket as _socket
    sink = blast_sink("--size-limit", "1000")
    with _socket.create_connection(("127.0.0.1", sink.port), timeout=10) as s:
        f = s.makefile("rb")
        def reply() -> bytes:
            while True:
                line = f.readline()
                if line[3:4] != b"-":
                    return line
        reply()
        s.sendall(b"EHLO c.test\r\n")
        assert b"250" in reply()
        s.sendall(b"MAIL FROM:<a@b.test>\r\nRCPT TO:<c@d.test>\r\nDATA\r\n")
        assert reply().startswith(b"250") and reply().startswith(b"250") and reply().startswith(b"354")
        s.sendall(b"Subject: big\r\n\r\n" + b"x" * 78 + b"\r\n" * 1 + (b"y" * 78 + b"\r\n") * 20 + b".\r\n")
        r = reply()
        assert r.startswith(b"552"), r
    assert sink.stop()["messages"] == 0


def test_seed_makes_sizes_and_message_ids_reproducible(blast_sink, tmp_path):
    ids = tmp_path / "ids.txt"
    sink = blast_sink("--ids-file", str(ids))
    runs = []
    for _ in range(2):
        rc, doc, err = blast_send(sink.address, "--messages", "300", "--connections", "4",
                                  "--size", "1k:70,16k:25,64k:5", "--seed", "99")
        assert rc == 0, err
        runs.append(doc["bytes"])
    assert runs[0] == runs[1], runs
    summary = sink.stop()
    assert summary["messages"] == 600 and summary["duplicates"] == 300, summary
    lines = ids.read_text().split()
    assert len(set(lines)) == 300 and all(l.startswith("<99-") for l in lines), lines[:5]


def test_dead_target_among_several_costs_connect_errors_not_connections(blast_sink):
    sink = blast_sink("--expect", "2000")
    dead = f"127.0.0.1:{free_port()}"  # nobody listens there
    rc, sent, err = blast_send(f"{sink.address},{dead}", "--connections", "10", "--messages", "2000")
    got = sink.wait()
    assert rc == 0 and sent["messages"] == 2000 and sent["errors"] == 0, (sent, err)
    assert got["messages"] == 2000, got
    # the five connections meant for the dead target each failed once and moved
    # on to the live one (they used to retry it ten times each, then give up)
    assert 1 <= sent["connect_errors"] <= 5, sent
    assert "connection attempt(s) failed" in err and dead in err, err


def test_refused_recipients_make_the_run_fail(blast_sink):
    # one recipient in ten refused: messages of five recipients are still
    # accepted (for the others), yet the run did not deliver what was asked
    sink = blast_sink("--permfail-percent", "10", "--seed", "3")
    rc, sent, err = blast_send(sink.address, "--messages", "200", "--rcpts", "5", "--connections", "4")
    assert sent["rcpt_refusals"] > 0, sent
    assert rc == 1, (sent, err)
    rc2, sent2, _ = blast_send(sink.address, "--messages", "50", "--rcpts", "5", "--allow-failures")
    assert rc2 == 0 and sent2["rcpt_refusals"] > 0, sent2
    sink.stop()


def test_sink_ids_file_lists_only_messages_with_an_id(blast_sink, tmp_path):
    ids = tmp_path / "ids.txt"
    sink = blast_sink("--ids-file", str(ids))
    with smtplib.SMTP("127.0.0.1", sink.port, timeout=10) as c:
        with_id = make_message("one@client.example.test")
        without = b"From: a@b.test\r\nSubject: no id\r\n\r\nbody\r\n"
        for m in (with_id, without, with_id):
            assert c.sendmail("alice@example.test", ["bob@d1.example.test"], m) == {}
    got = sink.stop()
    assert got["messages"] == 3 and got["duplicates"] == 1, got
    assert ids.read_text() == "<one@client.example.test>\n" * 2


def test_sink_listens_on_a_v4_mapped_loopback_address(tmp_path):
    # [::ffff:127.0.0.1] is 127.0.0.1: it passed the loopback check, then
    # failed to bind ("Invalid argument")
    port = free_port()
    sink = BlastSink(tmp_path, port=port, listen=f"[::ffff:127.0.0.1]:{port}")
    try:
        with smtplib.SMTP("127.0.0.1", port, timeout=10) as c:
            assert c.sendmail("alice@example.test", ["bob@d1.example.test"], make_message("m@c.test")) == {}
        assert sink.stop()["messages"] == 1
    finally:
        sink.kill()


# --------------------------------------------------------------------------- review of 2026-12-05
def test_sink_expect_takes_exactly_n_and_refuses_the_rest(blast_sink):
    """--expect N: exactly N messages are accepted, whatever the shards race;
    the rest get 421 (the sender counts them as not delivered), and every
    accepted message's 250 reaches the sender before the sink exits."""
    sink = blast_sink("--expect", "300", "--threads", "2")
    rc, sent, err = blast_send(sink.address, "--messages", "2000", "--connections", "8", "--bdat", "--window", "16",
                               "--allow-failures")
    got = sink.wait()
    assert got["messages"] == 300, got
    assert sent["messages"] == 300, (sent, got)   # what the sink counted is what the sender saw accepted
    assert got["over_expect"] > 0, got
    assert sent["replies"].get("421", 0) > 0 or sent["lost"] > 0, sent


def test_sink_protocol_checks_seen_by_smtplib(blast_sink):
    sink = blast_sink("--size-limit", "0")
    with smtplib.SMTP("127.0.0.1", sink.port, timeout=10) as c:
        assert c.docmd("HELO")[0] == 501
        assert c.docmd("EHLO")[0] == 501
        code, _ = c.ehlo("client.example.test")
        assert code == 250 and c.esmtp_features.get("size") == "0"  # RFC 1870: no fixed limit
        # RFC 3030: BDAT and DATA do not mix in one transaction
        assert c.docmd("MAIL FROM:<a@b.test>")[0] == 250
        assert c.docmd("RCPT TO:<x@D1.Example.TEST>")[0] == 250
        c.send(b"BDAT 5\r\nhello")
        assert c.getreply()[0] == 250
        assert c.docmd("DATA")[0] == 503
        assert c.docmd("RSET")[0] == 250
        # no size limit: a 300 KB message is taken
        big = make_message("big@client.example.test", body=(b"y" * 998 + b"\r\n") * 300)
        assert c.sendmail("alice@example.test", ["bob@d1.example.test"], big) == {}
        assert c.sendmail("alice@example.test", ["bob@D1.EXAMPLE.test"], make_message("m2@c.test")) == {}
    got = sink.stop()
    assert got["messages"] == 2, got
    assert got["per_domain"] == {"d1.example.test": 2}, got  # domains are case-insensitive


def test_sink_ids_file_is_complete_at_sigusr1(blast_sink, tmp_path):
    ids = tmp_path / "ids.txt"
    sink = blast_sink("--ids-file", str(ids))
    with smtplib.SMTP("127.0.0.1", sink.port, timeout=10) as c:
        for i in range(20):
            c.sendmail("alice@example.test", ["bob@d1.example.test"], make_message(f"u{i}@c.test"))
    sink.proc.send_signal(signal.SIGUSR1)
    deadline = time.monotonic() + 10
    while len(ids.read_text().splitlines()) < 20 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert len(ids.read_text().splitlines()) == 20  # while the sink still runs
    assert sink.stop()["messages"] == 20


def test_duration_run_that_sends_nothing_fails():
    dead = f"127.0.0.1:{free_port()}"
    r = subprocess.run([str(BLAST), "send", "--to", dead, "--connections", "2", "--duration", "30", "--json", "-q"],
                       stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=30)
    doc = json.loads(r.stdout)
    assert r.returncode == 1, (r.returncode, r.stderr)
    assert doc["ended_early"] is True and doc["messages"] == 0, doc
    assert "gave up" in r.stderr, r.stderr


@pytest.mark.parametrize("mode", [[], ["--pipelining", "off"], ["--bdat", "--window", "4"], ["--window", "4"]],
                         ids=["pipelined", "one-by-one", "bdat-window", "data-window"])
def test_a_refused_mail_refuses_no_recipient(blast_sink, mode):
    """MAIL refused (552, too big): the 503s its pipelined RCPTs get are not
    recipient refusals; every mode counts the same."""
    sink = blast_sink("--size-limit", "1000")
    rc, sent, err = blast_send(sink.address, "--messages", "10", "--rcpts", "3", "--size", "4k", "--connections", "1",
                               *mode)
    sink.stop()
    assert rc == 1 and sent["refused"] == 10, (sent, err)
    assert sent["rcpt_refusals"] == 0, sent
    assert sent["replies"] == {"552": 10}, sent


def test_out_of_step_reply_to_data_is_lost_not_refused(tmp_path):
    """250 to DATA (RFC 5321 §4.3.2 allows 354 or an error): no body was taken
    and none refused; counted as lost, and the connection is not reused."""
    from scripted_host import ScriptedHost
    host = ScriptedHost()
    host.answer = lambda stage, conn, st: "250 2.0.0 fine" if stage == "data" else None
    try:
        rc, doc, err = blast_send(host.address, "--messages", "3", "--connections", "1")
        assert rc == 1 and doc["messages"] == 0 and doc["lost"] >= 1 and doc["refused"] == 0, doc
        assert "250" not in doc["replies"], doc
    finally:
        host.close()


def test_bdat_without_chunking_is_reported(tmp_path):
    from scripted_host import ScriptedHost
    host = ScriptedHost()  # PIPELINING, 8BITMIME, SIZE: no CHUNKING
    try:
        rc, doc, err = blast_send(host.address, "--messages", "3", "--connections", "1", "--bdat")
        assert rc == 0 and doc["messages"] == 3, (doc, err)
        assert doc["bdat_unavailable"] is True, doc
        assert "did not offer CHUNKING" in err, err
    finally:
        host.close()


def test_seed_zero_is_a_seed(blast_sink, tmp_path):
    ids = tmp_path / "ids.txt"
    sink = blast_sink("--ids-file", str(ids))
    rc, doc, err = blast_send(sink.address, "--messages", "5", "--seed", "0")
    assert rc == 0 and doc["seed"] == 0, doc
    sink.stop()
    assert sorted(ids.read_text().split()) == [f"<0-{i}@blast>" for i in range(5)]


def test_sink_rate_counts_the_gaps_between_messages(blast_sink):
    """n messages from the first to the last are n - 1 gaps: 3 messages over
    receiving_seconds arrive at 2 / receiving_seconds a second."""
    sink = blast_sink()
    with smtplib.SMTP("127.0.0.1", sink.port, timeout=10) as c:
        for i in range(3):
            c.sendmail("alice@example.test", ["bob@d1.example.test"], make_message(f"gap{i}@c.test"))
            time.sleep(0.05)
    got = sink.stop()
    assert got["messages"] == 3 and got["receiving_seconds"] > 0, got
    assert got["msgs_per_sec"] == pytest.approx(2 / got["receiving_seconds"]), got
