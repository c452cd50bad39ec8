"""Temporary failures at the smarthost: deferred, visible in the queue, retried."""
from __future__ import annotations

import smtplib
import subprocess
import time

from conftest import RINGMAILCTL, make_message, queue_id_of, unique


def submit(d, msgid: str, rcpts=("bob@example.test",)) -> str:
    with smtplib.SMTP(d.host, d.port, timeout=30) as c:
        c.ehlo("client.example.test")
        assert c.mail("alice@example.test")[0] == 250
        for r in rcpts:
            assert c.rcpt(r)[0] == 250
        code, resp = c.data(make_message(msgid, "retry me", b"retry body\r\n"))
        assert code == 250, resp
        return queue_id_of(resp.decode())


def wait_queued(d, qid: str, pred, timeout: float = 30.0) -> dict:
    deadline = time.monotonic() + timeout
    doc = {}
    while time.monotonic() < deadline:
        doc = d.queue_json()
        for m in doc["messages"]:
            if m["id"] == qid and pred(m):
                return m
        time.sleep(0.1)
    raise AssertionError(f"{qid} not in the queue as expected within {timeout:.0f}s: {doc}")


def test_greylisted_then_delivered(daemon, sink):
    """451 on the first attempt; the 1 s back-off brings a second attempt that succeeds."""
    sink.tempfail_first_per_msgid = True
    msgid = unique("grey")
    qid = submit(daemon, msgid)
    sink.wait_for(lambda ms: [m for m in ms if m.message_id == f"<{msgid}>"], 60,
                  "the retried message")
    atts = [m for m in sink.snapshot_attempts() if m.message_id == f"<{msgid}>"]
    assert [a.reply[:3] for a in atts] == ["451", "250"], [a.reply for a in atts]
    assert atts[1].time - atts[0].time >= 0.5, "retried without back-off"
    daemon.wait_log(rf"{qid}: to=<?bob@example\.test>? relay=\S+ delay=\S+ status=deferred .*451")
    daemon.wait_log(rf"{qid}: to=<?bob@example\.test>? relay=\S+ delay=\S+ status=sent")
    daemon.wait_queue_empty(10)


def test_deferred_visible_in_queue_then_flush(start_daemon, sink):
    """With a long back-off the deferred message stays queued (ringmailctl shows why)
    until `ringmailctl queue flush` makes the daemon retry it now."""
    d = start_daemon(sink, config={"queue": {"min_backoff": "10m", "max_backoff": "1h"}})
    sink.tempfail_first_per_msgid = True
    msgid = unique("flush")
    qid = submit(d, msgid, rcpts=("bob@example.test", "carol@example.test"))
    m = wait_queued(d, qid, lambda m: m["attempts"] >= 1 and "451" in (m["last_error"] or ""))
    assert m["sender"] == "alice@example.test", m
    assert sorted(m["recipients"]) == ["bob@example.test", "carol@example.test"], m
    assert m["next_attempt"], m
    assert not sink.with_message_id(f"<{msgid}>")
    r = d.ctl("queue", "flush")
    assert r.returncode == 0, f"queue flush exited {r.returncode}: {r.stdout}{r.stderr}"
    sink.wait_for(lambda ms: sorted(r for x in ms if x.message_id == f"<{msgid}>"
                                    for r in x.rcpt_tos) == ["bob@example.test",
                                                              "carol@example.test"],
                  30, "delivery after flush")
    d.wait_queue_empty(10)


def test_queue_json_while_smarthost_down(start_daemon, sink):
    """The smarthost refuses connections: the message is deferred with a connection error."""
    from sink import free_port
    d = start_daemon(f"127.0.0.1:{free_port()}")       # nothing listens there
    qid = submit(d, unique("down"))
    m = wait_queued(d, qid, lambda m: m["attempts"] >= 1 and m["last_error"])
    assert m["recipients"] == ["bob@example.test"], m
    doc = d.queue_json()
    assert doc["count"] == len(doc["messages"]) >= 1


def test_queue_delete_while_the_daemon_runs(start_daemon, sink):
    """`ringmailctl queue delete` removes deferred messages from the running daemon's
    queue: by id, from stdin, or ALL; an unknown id is reported (exit 1). A deleted
    message is never delivered, and a retry of it does not bring it back."""
    d = start_daemon(sink, config={"queue": {"min_backoff": "1s", "max_backoff": "1s"}})
    sink.tempfail_all = True  # every attempt deferred, so all stay queued
    ids = [unique("del") for _ in range(4)]
    qids = [submit(d, m) for m in ids]
    for q in qids:
        wait_queued(d, q, lambda m: m["attempts"] >= 1)
    r = d.ctl("queue", "delete", qids[0])
    assert r.returncode == 0 and f"{qids[0]}: removed" in r.stdout, (r.stdout, r.stderr)
    r = d.ctl("queue", "delete", qids[1], "0000000000000001")
    assert r.returncode == 1, (r.stdout, r.stderr)
    assert f"{qids[1]}: removed" in r.stdout and "0000000000000001: not in the queue" in r.stderr
    r = d.ctl("queue", "delete", "not-an-id")
    assert r.returncode == 2 and "not a queue id" in r.stderr, (r.stdout, r.stderr)
    r = subprocess.run([str(RINGMAILCTL), "--config", str(d.config_path), "queue", "delete", "-"],
                       input=f"{qids[2]}\n", capture_output=True, text=True, timeout=30)
    assert r.returncode == 0 and f"{qids[2]}: removed" in r.stdout, (r.stdout, r.stderr)
    left = {m["id"] for m in d.queue_json()["messages"]}
    assert left == {qids[3]}, left
    # The daemon retries what it still had scheduled: the deleted ones are gone for good.
    time.sleep(2.5)
    sink.tempfail_all = False
    d.ctl("queue", "flush")
    sink.wait_for(lambda ms: any(m.message_id == f"<{ids[3]}>" for m in ms), 30, "the one left")
    d.wait_queue_empty(20)
    assert not any(m.message_id in {f"<{x}>" for x in ids[:3]} for m in sink.snapshot()), sink.snapshot()
    d.wait_log(rf"{qids[0]}: no longer in the queue \(deleted\)")
    sink.tempfail_all = True
    more = [submit(d, unique("all")) for _ in range(2)]
    for q in more:
        wait_queued(d, q, lambda m: m["attempts"] >= 1)
    r = d.ctl("queue", "delete", "ALL")
    assert r.returncode == 0 and "-- 2 messages removed" in r.stdout, r.stdout
    assert d.queue_json()["count"] == 0


def test_queue_show_prints_envelope_and_message(start_daemon, sink):
    """`ringmailctl queue show ID` (Postfix: postcat -q): the envelope, then the message
    exactly as queued, our Received: first; an unknown id exits 1, a malformed one 2."""
    d = start_daemon(sink, config={"queue": {"min_backoff": "1h", "max_backoff": "1h"}})
    sink.tempfail_all = True
    msgid = unique("show")
    qid = submit(d, msgid, rcpts=("bob@example.test", "carol@example.test"))
    wait_queued(d, qid, lambda m: m["attempts"] >= 1)
    r = d.ctl("queue", "show", qid)
    assert r.returncode == 0, r.stderr
    out = r.stdout
    assert f"*** ENVELOPE RECORDS {qid} ***" in out and f"*** END OF MESSAGE {qid} ***" in out, out
    assert "sender: alice@example.test" in out
    assert "recipient: bob@example.test (pending): " in out and "451 4.3.0" in out, out
    assert "recipient: carol@example.test (pending)" in out
    contents = out.split(f"*** MESSAGE CONTENTS {qid} ***\n", 1)[1].split(f"*** END OF MESSAGE {qid} ***")[0]
    assert contents.startswith("Received: from client.example.test (127.0.0.1)"), contents[:200]
    assert f"Message-ID: <{msgid}>" in contents and contents.rstrip("\r\n").endswith("retry body"), contents[-200:]
    r = d.ctl("queue", "show", "0000000000000001")
    assert r.returncode == 1 and "not in the queue" in r.stderr, (r.returncode, r.stderr)
    r = d.ctl("queue", "show", "xyz")
    assert r.returncode == 2 and "not a queue id" in r.stderr, (r.returncode, r.stderr)
