"""Crash safety (runs last: file name sorts last). Clients send under bounded load while
the daemon is kill -9'd three times and restarted on the same data_dir. Every message
that got a 250 must arrive, untruncated. Duplicates are allowed."""
from __future__ import annotations

import hashlib
import random
import smtplib
import threading
import time

from conftest import make_message

THREADS = 4
PER_THREAD = 100
KILLS = 3
SEND_DEADLINE = 150.0    # for all clients to get their 400 messages accepted
DRAIN_DEADLINE = 120.0   # for the queue to deliver them afterwards


def body_for(tid: int, i: int) -> bytes:
    rnd = random.Random(tid * 100003 + i)
    lines = [f"{tid}-{i}-{k} ".encode() + bytes(rnd.choice(b"abcdefghij0123456789")
                                                 for _ in range(rnd.randint(0, 120)))
             for k in range(rnd.randint(1, 200))]
    return b"\r\n".join(lines) + b"\r\n"


def test_kill9_under_load_loses_nothing(start_daemon, sink):
    d = start_daemon(sink)
    acked: dict[str, str] = {}          # Message-ID -> body sha256
    lock = threading.Lock()
    stop = threading.Event()
    errors: list[str] = []
    deadline = time.monotonic() + SEND_DEADLINE

    def client(tid: int) -> None:
        conn = None
        for i in range(PER_THREAD):
            msgid = f"crash-{tid}-{i}@client.example.test"
            body = body_for(tid, i)
            digest = hashlib.sha256(body).hexdigest()
            msg = make_message(msgid, f"crash {tid}/{i}", body,
                               extra=f"X-Body-SHA256: {digest}\r\n".encode())
            while True:
                if stop.is_set() or time.monotonic() > deadline:
                    return
                try:
                    if conn is None:
                        conn = smtplib.SMTP(d.host, d.port, timeout=20)
                        conn.ehlo("client.example.test")
                    refused = conn.sendmail("alice@example.test", [f"u{tid}@example.test"], msg)
                    if not refused:
                        with lock:
                            acked[msgid] = digest
                        break
                except (OSError, smtplib.SMTPException) as e:
                    if isinstance(e, smtplib.SMTPResponseException) and 500 <= e.smtp_code < 600:
                        with lock:
                            errors.append(f"{msgid}: permanent {e.smtp_code} {e.smtp_error!r}")
                        break
                    try:
                        if conn is not None:
                            conn.close()
                    except Exception:  # noqa: BLE001
                        pass
                    conn = None
                    time.sleep(0.05)   # reconnect polling interval while the daemon restarts
        if conn is not None:
            try:
                conn.quit()
            except Exception:  # noqa: BLE001
                pass

    total = THREADS * PER_THREAD
    rng = random.Random()
    thresholds = sorted(rng.sample(range(total // 10, total * 8 // 10), KILLS))
    threads = [threading.Thread(target=client, args=(t,), daemon=True) for t in range(THREADS)]
    for t in threads:
        t.start()
    kills_done = 0
    try:
        for th in thresholds:
            while time.monotonic() < deadline:
                with lock:
                    n = len(acked)
                if n >= th:
                    break
                time.sleep(0.01)            # polling the progress counter
            # a random moment within a short window after the threshold
            time.sleep(rng.uniform(0, 0.05))
            d.kill9()
            kills_done += 1
            d.restart()
        for t in threads:
            t.join(max(1.0, deadline - time.monotonic()))
    finally:
        stop.set()
        for t in threads:
            t.join(30)
    assert kills_done == KILLS
    assert not errors, f"permanent refusals under load: {errors[:10]}"
    assert len(acked) == total, f"only {len(acked)}/{total} messages accepted before the deadline"

    def missing(ms):
        seen = {m.message_id for m in ms}
        return [mid for mid in acked if f"<{mid}>" not in seen]

    drain_deadline = time.monotonic() + DRAIN_DEADLINE
    while missing(sink.snapshot()) and time.monotonic() < drain_deadline:
        time.sleep(0.2)
    lost = missing(sink.snapshot())
    assert not lost, f"{len(lost)} acknowledged messages never arrived, e.g. {lost[:10]}"

    bad = []
    for m in sink.snapshot():
        want = m.header("X-Body-SHA256")
        if want is None:
            continue
        i = m.data.find(b"\r\n\r\n")
        got = hashlib.sha256(m.data[i + 4:]).hexdigest()
        if got != want:
            bad.append(f"{m.message_id}: body sha256 {got} != {want} ({len(m.data)} bytes)")
    assert not bad, f"{len(bad)} corrupted or truncated deliveries: {bad[:5]}"
    d.wait_queue_empty(60)
