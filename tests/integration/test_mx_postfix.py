"""Interop: ringmaild delivering by MX to a real Postfix.

A private Postfix instance (its own config, queue and data directories under the test's
tmp_path; started with ``postfix -c DIR start`` and always stopped) is the MX of pf.test:
the DNS zone of the mx_world fixture says ``pf.test MX 10 mx.pf.test`` and
``mx.pf.test A 127.0.0.31``, and Postfix's smtpd listens on 127.0.0.31:P, where P is the
world's shared port (ringmaild's ``[delivery] smtp_port``). Postfix relays pf.test to a
recording Python Sink on 127.0.0.1 (``relayhost``), so the test sees what Postfix took.

smtpd logs the SMTP conversation of loopback clients (debug_peer_list), which is how
the tests check the MAIL/RCPT parameters ringmaild used (SIZE, BODY, SMTPUTF8, RET,
ENVID, NOTIFY, ORCPT) and BDAT vs DATA.

The system's Postfix (config /etc/postfix, queue /var/spool/postfix) is never touched.
Skipped only when the ``postfix`` binary is not installed (Debian package postfix);
starting Postfix needs root, as the rest of this suite's Postfix use does.
"""
from __future__ import annotations

import base64
import os
import random
import re
import shutil
import signal
import smtplib
import socket
import stat
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Optional

import pytest

from conftest import unique
from sink import Sink, header_lines, split_message

POSTFIX = shutil.which("postfix") or ("/usr/sbin/postfix" if Path("/usr/sbin/postfix").exists() else None)

pytestmark = pytest.mark.skipif(POSTFIX is None, reason="postfix not installed (Debian package postfix)")

MX_ADDR = "127.0.0.31"         # Postfix's smtpd: not used by the other MX tests
ORIGIN_ADDR = "127.0.0.2"      # the senders' domain MX (a Python sink): DSNs land there
SENDER = "alice@origin.test"
MX_HOST = "mx.pf.test"


# --------------------------------------------------------------------------- Postfix
def _banner_ok(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=2) as s:
            s.settimeout(3)
            data = b""
            while b"\r\n" not in data:
                chunk = s.recv(1024)
                if not chunk:
                    return False
                data += chunk
            if data.startswith(b"220"):
                try:
                    s.sendall(b"QUIT\r\n")
                    s.recv(1024)
                except OSError:
                    pass
                return True
    except OSError:
        pass
    return False


class PrivatePostfix:
    """A Postfix instance under `base`: smtpd on host:port, relaying everything it
    accepts to `relay` ("[127.0.0.1]:PORT"). `rcpt_access` ({address: action}) becomes a
    texthash check_recipient_access map."""

    def __init__(self, base: Path, host: str, port: int, relay: str,
                 rcpt_access: Optional[dict] = None, main_cf: Optional[dict] = None) -> None:
        self.base = base
        self.host, self.port = host, port
        self.etc = base / "etc"
        self.queue = base / "queue"
        self.data = base / "data"
        self.maillog_path = base / "maillog"
        self.relay = relay
        self.rcpt_access = rcpt_access or {}
        self.main_cf = main_cf or {}
        self.master_pid: Optional[int] = None
        self.started = False

    # -- configuration -----------------------------------------------------------------
    def write_config(self) -> None:
        for d in (self.etc, self.queue, self.data):
            d.mkdir(parents=True, exist_ok=True)
        shutil.chown(self.data, user="postfix")
        restrictions = "permit_mynetworks, reject_unauth_destination"
        if self.rcpt_access:
            access = self.etc / "rcpt_access"
            access.write_text("".join(f"{k} {v}\n" for k, v in self.rcpt_access.items()))
            restrictions = f"check_recipient_access texthash:{access}, " + restrictions
        main = {
            "compatibility_level": "3.6",
            "queue_directory": str(self.queue),
            "data_directory": str(self.data),
            "mail_owner": "postfix",
            "setgid_group": "postdrop",
            "myhostname": MX_HOST,
            "mydomain": "pf.test",
            "myorigin": "pf.test",
            "mydestination": "",
            "local_recipient_maps": "",
            "local_transport": "error:local delivery is disabled",
            "alias_maps": "",
            "alias_database": "",
            "relay_domains": "pf.test",
            "relayhost": self.relay,
            "mynetworks": "127.0.0.0/8",
            # 127.0.0.31 is not an interface address (lo has 127.0.0.1/8): Postfix refuses
            # it here; the smtpd service binds it anyway (master.cf names host:port).
            "inet_interfaces": "loopback-only",
            "inet_protocols": "ipv4",
            "smtputf8_enable": "yes",
            "smtpd_peername_lookup": "no",
            "smtpd_relay_restrictions": "permit_mynetworks, reject_unauth_destination",
            "smtpd_recipient_restrictions": restrictions,
            "smtpd_tls_security_level": "none",
            "smtp_tls_security_level": "none",
            "smtp_dns_support_level": "disabled",   # the relayhost is an address literal
            "in_flow_delay": "0",
            "biff": "no",
            "maillog_file_prefixes": str(self.base),
            "maillog_file": str(self.maillog_path),
            # smtpd logs the SMTP conversation (commands and replies, not the content)
            # of loopback clients: how the test sees ringmaild's MAIL/RCPT parameters.
            "debug_peer_list": "127.0.0.0/8",
            "debug_peer_level": "1",
            **self.main_cf,
        }
        (self.etc / "main.cf").write_text("".join(f"{k} = {v}\n" for k, v in main.items()))
        # master.cf: only what a relaying MX needs; nothing chrooted.
        # service type private unpriv chroot wakeup maxproc command
        services = [
            f"{self.host}:{self.port} inet n - n - - smtpd",
            "cleanup unix n - n - 0 cleanup",
            "qmgr unix n - n 300 1 qmgr",
            "rewrite unix - - n - - trivial-rewrite",
            "bounce unix - - n - 0 bounce",
            "defer unix - - n - 0 bounce",
            "trace unix - - n - 0 bounce",
            "verify unix - - n - 1 verify",
            "flush unix n - n 1000? 0 flush",
            "proxymap unix - - n - - proxymap",
            "smtp unix - - n - - smtp -o debug_peer_list=",
            "relay unix - - n - - smtp -o debug_peer_list=",
            "error unix - - n - - error",
            "retry unix - - n - - error",
            "discard unix - - n - - discard",
            "anvil unix - - n - 1 anvil",
            "scache unix - - n - 1 scache",
            "postlog unix-dgram n - n - 1 postlogd",
        ]
        (self.etc / "master.cf").write_text("\n".join(services) + "\n")

    def grant_traverse(self) -> None:
        """Lets the mail_owner reach data_directory. The master opens
        data_directory/master.lock as "postfix" by its absolute path, but pytest's
        tmp_path lives under /tmp/pytest-of-root/pytest-N/, both 0700. Adds o+x (search,
        not listing) to tmp_path and its ancestors that lack it. (The queue needs no
        such thing: daemons chdir into it as root before dropping privileges.) pytest
        resets /tmp/pytest-of-USER to 0700 when a session starts, possibly during this
        test (another checkout's suite): start() grants again and retries then."""
        top = Path(tempfile.gettempdir()).resolve()
        d = self.base.resolve()
        while d != top and d != d.parent:
            st = d.stat()
            if not st.st_mode & stat.S_IXOTH and st.st_uid == os.geteuid():
                os.chmod(d, stat.S_IMODE(st.st_mode) | stat.S_IXOTH)
            d = d.parent

    def postfix(self, *args: str, timeout: float = 30.0) -> subprocess.CompletedProcess:
        return subprocess.run([POSTFIX, "-c", str(self.etc), *args], stdin=subprocess.DEVNULL,
                              capture_output=True, text=True, timeout=timeout)

    # -- lifecycle ---------------------------------------------------------------------
    def start(self, timeout: float = 20.0) -> "PrivatePostfix":
        if os.geteuid() != 0:
            pytest.fail("a private Postfix instance needs root (postfix start runs the "
                        "master as root; its daemons run as mail_owner postfix)", pytrace=False)
        self.write_config()
        r = self.postfix("check")
        assert r.returncode == 0, f"postfix check failed:\n{r.stdout}{r.stderr}\n{self.maillog()}"
        self.started = True   # from here on stop() must run, even if start fails
        for attempt in range(3):
            self.grant_traverse()
            r = self.postfix("start")
            if r.returncode == 0 or "master.lock: cannot open file: Permission denied" not in self.maillog():
                break
            self.postfix("stop")   # (the master died at once: normally a no-op)
        assert r.returncode == 0, f"postfix start failed:\n{r.stdout}{r.stderr}\n{self.maillog()}"
        pidfile = self.queue / "pid" / "master.pid"
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.master_pid is None:
                try:
                    self.master_pid = int(pidfile.read_text().strip())
                except (OSError, ValueError):
                    pass
            if _banner_ok(self.host, self.port):
                return self
            time.sleep(0.1)
        raise AssertionError(f"postfix smtpd did not answer on {self.host}:{self.port} in "
                             f"{timeout:.0f}s:\n{self.maillog()}")

    def stop(self, timeout: float = 15.0) -> None:
        if not self.started:
            return
        self.started = False
        if self.master_pid is None:
            try:
                self.master_pid = int((self.queue / "pid" / "master.pid").read_text().strip())
            except (OSError, ValueError):
                pass
        kids = _children(self.master_pid) if self.master_pid else []
        try:
            self.postfix("stop", timeout=timeout)
        except subprocess.TimeoutExpired:
            pass
        if self.master_pid is None:
            return
        # The master takes its children down with it; wait for all of them, and kill
        # what is left after `timeout` (only this instance's processes, by pid).
        procs = [self.master_pid, *kids]
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and any(_alive(p) for p in procs):
            time.sleep(0.1)
        for pid in [*procs, *_children(self.master_pid)]:
            if _alive(pid):
                try:
                    os.kill(pid, signal.SIGKILL)
                except OSError:
                    pass

    # -- inspection --------------------------------------------------------------------
    def maillog(self) -> str:
        try:
            return self.maillog_path.read_text(errors="replace")
        except OSError:
            return "(no maillog)"

    def maillog_summary(self, limit: int = 20000) -> str:
        """The maillog without smtpd's verbose internals (kept: the conversation,
        queue ids, connects, warnings and errors)."""
        keep = re.compile(r"smtpd\[\d+\]: ([<>] |[0-9A-F]+: |(dis)?connect|NOQUEUE|warning|"
                          r"error|fatal|panic)")
        lines = [ln for ln in self.maillog().splitlines()
                 if "postfix/smtpd[" not in ln or keep.search(ln)]
        return "\n".join(lines)[-limit:]

    def wait_log(self, pattern: str, timeout: float = 20.0) -> re.Match:
        rx = re.compile(pattern, re.M)
        deadline = time.monotonic() + timeout
        while True:
            m = rx.search(self.maillog())
            if m:
                return m
            if time.monotonic() > deadline:
                raise AssertionError(f"no postfix maillog line matching {pattern!r} in "
                                     f"{timeout:.0f}s:\n" + self.maillog_summary(8000))
            time.sleep(0.1)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # a zombie is not running (the master is not our child, but be safe)
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0] != "Z"
    except OSError:
        return False


def _children(pid: int) -> list[int]:
    try:
        out = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True, timeout=5)
        return [int(x) for x in out.stdout.split()]
    except (OSError, subprocess.SubprocessError, ValueError):
        return []


# --------------------------------------------------------------------------- fixtures
@pytest.fixture
def final_sink():
    """Where Postfix relays everything it accepts."""
    s = Sink("127.0.0.1").start()
    yield s
    s.stop()


@pytest.fixture
def pf_world(mx_world, final_sink, tmp_path):
    """(mx_world with pf.test -> Postfix and origin.test -> a sink, start_postfix)."""
    w = mx_world
    w.add_mx("pf.test", 10, MX_HOST, MX_ADDR)
    w.add_mx("origin.test", 10, "mx.origin.test", ORIGIN_ADDR)
    w.sink(ORIGIN_ADDR)
    instances: list[PrivatePostfix] = []

    def start_postfix(rcpt_access: Optional[dict] = None, **main_cf: str) -> PrivatePostfix:
        pf = PrivatePostfix(tmp_path / "postfix", MX_ADDR, w.port,
                            f"[127.0.0.1]:{final_sink.port}", rcpt_access, main_cf)
        instances.append(pf)
        return pf.start()

    yield w, start_postfix
    for pf in instances:
        pf.stop()
        # captured: pytest shows it only when the test failed
        print(f"--- postfix maillog ({pf.maillog_path}) ---\n{pf.maillog_summary()}")


# --------------------------------------------------------------------------- messages
def build_message(msgid: str, to: str) -> tuple[bytes, bytes]:
    """(headers, body) of a CRLF MIME message: UTF-8 in the Subject and in an 8bit text
    part with dot-led lines, and a ~300 KB base64 attachment."""
    rnd = random.Random(1234)
    blob = rnd.randbytes(225 * 1024)
    b64 = base64.encodebytes(blob).replace(b"\n", b"\r\n")  # 76-character lines
    text = ("Grüße aus Köln — ½ € ✓ 日本語 ñandú\r\n"
            ".a line starting with a dot\r\n"
            "..two dots\r\n"
            ".\r\n"
            "the line above was a lone dot; this one ends in spaces   \r\n"
            "\tand a tab-led line\r\n").encode("utf-8")
    headers = (f"From: Alice <{SENDER}>\r\n"
               f"To: <{to}>\r\n"
               "Subject: interop Grüße ✓\r\n"
               f"Message-ID: <{msgid}>\r\n"
               "Date: Mon, 24 Nov 2025 10:00:00 +0000\r\n"
               "MIME-Version: 1.0\r\n"
               'Content-Type: multipart/mixed; boundary="=_pf_interop"\r\n').encode("utf-8")
    body = (b"This is a multi-part message in MIME format.\r\n"
            b"--=_pf_interop\r\n"
            b"Content-Type: text/plain; charset=utf-8\r\n"
            b"Content-Transfer-Encoding: 8bit\r\n\r\n" + text +
            b"--=_pf_interop\r\n"
            b"Content-Type: application/octet-stream\r\n"
            b"Content-Transfer-Encoding: base64\r\n"
            b'Content-Disposition: attachment; filename="blob.bin"\r\n\r\n' + b64 +
            b"--=_pf_interop--\r\n")
    return headers, body


def smtpd_command(pf: PrivatePostfix, verb: str, arg: str) -> str:
    """The first command `verb` (e.g. "MAIL FROM:<a@b>") smtpd logged from a client."""
    m = pf.wait_log(rf"smtpd\[\d+\]: < [^:]+: ({re.escape(verb)}:?<{re.escape(arg)}>[^\n]*)$", 5)
    return m.group(1)


def wait_msgs(sink: Sink, pred, timeout: float, what: str):
    return sink.wait_for(lambda ms: [m for m in ms if pred(m)] or None, timeout, what)


# --------------------------------------------------------------------------- tests
@pytest.mark.parametrize("transfer", ["bdat", "data"])
def test_delivery_to_postfix_mx(start_daemon, pf_world, final_sink, transfer):
    """One message with every hard part (8-bit UTF-8, SMTPUTF8, dot-led lines, 300 KB,
    DSN parameters) through ringmaild -> Postfix (MX of pf.test) -> sink.

    Postfix advertises CHUNKING, and ringmaild then sends the message as one BDAT (no
    dot-stuffing at all); "data" hides CHUNKING (smtpd_discard_ehlo_keywords) so that
    ringmaild has to use DATA and dot-stuff the dot-led lines."""
    w, start_postfix = pf_world
    pf = start_postfix(**({"smtpd_discard_ehlo_keywords": "chunking"} if transfer == "data" else {}))
    d = start_daemon("", config=w.daemon_config())
    rcpt = "someone@pf.test"
    msgid = unique("pf")
    envid = "pf-envid-" + str(os.getpid())
    headers, body = build_message(msgid, rcpt)
    message = headers + b"\r\n" + body
    assert len(body) > 300_000

    with smtplib.SMTP(d.host, d.port, timeout=30) as c:
        c.ehlo("client.example.test")
        for ext in ("dsn", "8bitmime", "smtputf8", "size"):
            assert c.has_extn(ext), ext
        refused = c.sendmail(SENDER, [rcpt], message,
                             mail_options=["BODY=8BITMIME", "SMTPUTF8", "RET=HDRS", f"ENVID={envid}"],
                             rcpt_options=["NOTIFY=SUCCESS,FAILURE", f"ORCPT=rfc822;{rcpt}"])
        assert refused == {}
    # ringmaild: sent to Postfix, through the MX record, and Postfix queued it.
    m = d.wait_log(rf"^.*to=<{re.escape(rcpt)}> relay={re.escape(MX_HOST)}\[{re.escape(MX_ADDR)}\]:{w.port} "
                   rf".*status=sent \(.*250 2\.0\.0 Ok: (?:(\d+) bytes )?queued as ([0-9A-Za-z]+)\).*$")
    pf_bytes, pf_qid = m.group(1), m.group(2)

    # The final sink got it, from Postfix, for the same envelope.
    got = wait_msgs(final_sink, lambda x: x.mail_from == SENDER, 20, "the message via Postfix")
    assert len(got) == 1, final_sink.describe(10)
    msg = got[0]
    assert msg.rcpt_tos == [rcpt]
    assert "SMTPUTF8" in [o.upper() for o in msg.mail_options], msg.mail_options
    assert "BODY=8BITMIME" in [o.upper() for o in msg.mail_options], msg.mail_options
    got_headers, got_body = split_message(msg.data)
    if got_body != body:
        at = next((i for i, (a, b) in enumerate(zip(got_body, body)) if a != b),
                  min(len(got_body), len(body)))
        pytest.fail(f"body changed on the way: {len(got_body)} bytes for {len(body)}, first "
                    f"difference at byte {at}: {got_body[at - 40:at + 40]!r} for "
                    f"{body[at - 40:at + 40]!r}", pytrace=False)
    fields = header_lines(got_headers)
    # Postfix's Received on top, ringmaild's next, then the original header, unchanged.
    assert fields[0].startswith(b"Received: from ") and f"by {MX_HOST} (Postfix) with UTF8SMTP".encode() in fields[0], fields[0]
    assert f"id {pf_qid}".encode() in fields[0], (pf_qid, fields[0])
    assert fields[1].startswith(b"Received: from ") and b"(ringmail)" in fields[1], fields[1]
    assert fields[2:] == header_lines(headers + b"\r\n"), fields

    # What ringmaild said to Postfix (smtpd's log of the conversation).
    mail_cmd = smtpd_command(pf, "MAIL FROM", SENDER)
    rcpt_cmd = smtpd_command(pf, "RCPT TO", rcpt)
    params = dict(p.split("=", 1) if "=" in p else (p, "") for p in mail_cmd.split()[2:])
    assert params.get("BODY") == "8BITMIME", mail_cmd
    assert "SMTPUTF8" in params, mail_cmd
    assert params.get("RET") == "HDRS", mail_cmd
    assert params.get("ENVID") == envid, mail_cmd
    # SIZE is exactly what ringmaild then sent: its stored message (its Received +
    # the original), i.e. what the sink got minus Postfix's Received.
    stored = msg.data[len(fields[0]) + 2:]
    assert int(params["SIZE"]) == len(stored), (mail_cmd, len(stored))
    rparams = rcpt_cmd.split()[2:]
    assert "NOTIFY=SUCCESS,FAILURE" in rparams and f"ORCPT=rfc822;{rcpt}" in rparams, rcpt_cmd
    bdats = re.findall(r"smtpd\[\d+\]: < [^:]+: BDAT (\d+)( LAST)?$", pf.maillog(), re.M)
    datas = re.findall(r"smtpd\[\d+\]: < [^:]+: DATA$", pf.maillog(), re.M)
    if transfer == "bdat":  # one BDAT of SIZE bytes; Postfix counted them in its reply
        assert bdats == [(str(len(stored)), " LAST")] and not datas, (bdats, datas)
        assert pf_bytes is not None and int(pf_bytes) == len(stored), (pf_bytes, len(stored))
    else:
        assert not bdats and len(datas) == 1, (bdats, datas)
        assert pf_bytes is None, m.group(0)   # the DATA reply: "250 2.0.0 Ok: queued as X"
    # Postfix's own account: queued with that size, relayed to the sink.
    qm = pf.wait_log(rf"{pf_qid}: from=<{re.escape(SENDER)}>, size=(\d+), nrcpt=1")
    assert int(qm.group(1)) >= len(stored), qm.group(0)
    pf.wait_log(rf"{pf_qid}: to=<{re.escape(rcpt)}>, .*relay=127\.0\.0\.1\[127\.0\.0\.1\]:{final_sink.port}"
                rf".*status=sent \(250 ")

    # NOTIFY=SUCCESS reached Postfix: the sink is not DSN-capable, so Postfix reports
    # "relayed" to the sender (through its relayhost, the same sink), quoting
    # ringmaild's ENVID and ORCPT.
    dsn = wait_msgs(final_sink, lambda x: x.mail_from == "", 20, "Postfix's 'relayed' DSN")[0]
    assert dsn.rcpt_tos == [SENDER]
    assert b"multipart/report" in dsn.data and b"report-type=delivery-status" in dsn.data
    assert f"Original-Envelope-Id: {envid}".encode() in dsn.data, dsn.data[:4000]
    assert f"Original-Recipient: rfc822;{rcpt}".encode() in dsn.data
    assert b"Action: relayed" in dsn.data
    # Headers only (SMTPUTF8 message: message/global-headers); Postfix returns only
    # headers in a success report anyway, so RET=HDRS is checked on MAIL FROM above.
    assert re.search(rb"Content-Type: (message/global-headers|text/rfc822-headers)", dsn.data)
    assert f"Message-ID: <{msgid}>".encode() in dsn.data and b"blob.bin" not in dsn.data

    d.wait_queue_empty(10)
    assert not [x for x in w.get(ORIGIN_ADDR).snapshot()], "ringmaild sent a DSN of its own"


GOOD, BAD = "someone@pf.test", "nobody@pf.test"
REJECT_TEXT = "550 5.1.1 <nobody@pf.test>: Recipient address rejected: no such user here"


def reject_one_of_two(start_daemon, pf_world, final_sink):
    """Postfix answers 550 5.1.1 to BAD at RCPT and takes GOOD: ringmaild delivers GOOD
    and bounces BAD only (one DSN, to the sender's MX). Returns (daemon, the DSN)."""
    w, start_postfix = pf_world
    pf = start_postfix(rcpt_access={BAD: "550 5.1.1 no such user here"})
    d = start_daemon("", config=w.daemon_config())
    msgid = unique("pfrej")
    headers, body = build_message(msgid, GOOD)
    with smtplib.SMTP(d.host, d.port, timeout=30) as c:
        c.ehlo("client.example.test")
        assert c.sendmail(SENDER, [GOOD, BAD], headers + b"\r\n" + body,
                          mail_options=["BODY=8BITMIME", "SMTPUTF8"]) == {}

    relay = rf"relay={re.escape(MX_HOST)}\[{re.escape(MX_ADDR)}\]:{w.port} "
    d.wait_log(rf"to=<{re.escape(GOOD)}> {relay}.*status=sent \(.*250 2\.0\.0 Ok: (\d+ bytes )?queued as ")
    bounced = d.wait_log(rf"^.*to=<{re.escape(BAD)}> {relay}.*status=bounced .*$")
    assert REJECT_TEXT in bounced.group(0), bounced.group(0)
    pf.wait_log(r"(NOQUEUE|[0-9A-F]+): reject: RCPT from [^:]+: 550 5\.1\.1 <nobody@pf\.test>")

    got = wait_msgs(final_sink, lambda x: x.mail_from == SENDER, 20, "the message via Postfix")
    assert len(got) == 1 and got[0].rcpt_tos == [GOOD], final_sink.describe(10)
    assert split_message(got[0].data)[1] == body

    home = w.get(ORIGIN_ADDR)
    dsns = wait_msgs(home, lambda x: x.mail_from == "", 20, "ringmaild's DSN to the sender")
    assert len(dsns) == 1
    report = dsns[0]
    assert report.rcpt_tos == [SENDER]
    assert "multipart/report" in (report.header("Content-Type") or "")
    assert not [m for m in home.snapshot() if m.mail_from != ""]
    d.wait_queue_empty(10)
    time.sleep(0.5)
    assert len([m for m in final_sink.snapshot() if m.mail_from == SENDER]) == 1
    assert len(home.snapshot()) == 1
    return d, report


def test_postfix_rejects_one_recipient(start_daemon, pf_world, final_sink):
    """Postfix answers 550 to one of two recipients: ringmaild bounces that one (a DSN
    to the sender's MX) and delivers the other."""
    _, report = reject_one_of_two(start_daemon, pf_world, final_sink)
    data = report.data
    finals = re.findall(rb"^Final-Recipient: *rfc822; *(\S+)\r?$", data, re.M | re.I)
    assert finals == [BAD.encode()], finals
    assert re.search(rb"^Action: *failed\r?$", data, re.M), data[:4000]
    assert re.search(rb"^Status: *5\.\d{1,3}\.\d{1,3}\r?$", data, re.M), data[:4000]
    # Postfix's words reach the sender (unfolded: the report wraps long lines)
    assert REJECT_TEXT.encode() in re.sub(rb"\r?\n[ \t]+", b" ", data), data[:4000]


def test_bounce_report_fields_from_postfix_reply(start_daemon, pf_world, final_sink):
    """The report's per-recipient fields as RFC 3464 wants them, from Postfix's reply."""
    _, report = reject_one_of_two(start_daemon, pf_world, final_sink)
    data = re.sub(rb"\r?\n[ \t]+", b" ", report.data)   # unfold
    assert re.search(rb"^Status: 5\.1\.1\r?$", data, re.M), data[:4000]
    assert re.search(rb"^Remote-MTA: dns; ?mx\.pf\.test\r?$", data, re.M), data[:4000]
    assert re.search(rb"^Diagnostic-Code: smtp; ?" + re.escape(REJECT_TEXT.encode()), data, re.M), data[:4000]
    assert data.count(b" said:") == 1, data[:4000]
