#!/usr/bin/python3
"""DNS server for the MX benchmarks (bench/mx_relay.sh, bench/mx_scale.sh).

Serves, authoritatively, the recipient domains of ``ringmail-blast send --domains N``
(d1.example.test .. dN.example.test), each with one MX record pointing at one of
``--mx-hosts`` hosts mx0.bench.test .. mx{M-1}.bench.test (domain dI gets host
(I-1) mod M), and mxK.bench.test -> A 127.0.0.(2+K). Anything else: NXDOMAIN.

    /usr/bin/python3 bench/dns_zone.py --domains 1000 --mx-hosts 8 \
        --listen 127.0.0.1:0 --ready-file /tmp/x/dns.addr --stats-file /tmp/x/dns.json

Built on tests/integration/dns_server.py (dnslib, UDP + TCP on one port), with two
changes for load: queries are answered in the serving thread (the fixture starts a
thread per UDP packet) and the zone is read in place (the fixture copies its zone
table per query, which costs O(zones)); MX and A answers of the zone are
precomputed and sent straight from the packet bytes (the fixture's dnslib path,
~0.2 ms of CPU per query, answers the rest: NXDOMAIN, no-data, TCP); the UDP
socket has a 64 MiB receive buffer so that bursts queue instead of being dropped. Writes "HOST:PORT" to --ready-file once it
serves; on SIGUSR1 it writes {"queries": N, "by_type": {...}, "errors": [...],
"cpu_s": ...} (counters since start) to --stats-file; on SIGTERM/SIGINT (or after
--duration s) it writes them once more and exits.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import signal
import socket
import socketserver
import struct
import sys
import threading
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "integration"))
import dns_server  # noqa: E402
from dns_server import DnsServer, _Drop, norm  # noqa: E402,F401
from dnslib import RCODE, QTYPE  # noqa: E402
from dnslib.label import DNSBuffer  # noqa: E402


class _SerialUDPServer(socketserver.UDPServer):
    """One thread answers every UDP query in turn (no thread per packet), with a
    large receive buffer: a burst of thousands of queries (two ringmaild shards
    resolving 10,000 domains at once) must queue, not be dropped."""
    allow_reuse_address = False

    def __init__(self, server_address, handler):
        if ":" in server_address[0]:
            self.address_family = socket.AF_INET6
        super().__init__(server_address, handler)

    def server_bind(self):
        for opt in (getattr(socket, "SO_RCVBUFFORCE", None), socket.SO_RCVBUF):
            if opt is None:
                continue
            try:
                self.socket.setsockopt(socket.SOL_SOCKET, opt, 64 << 20)
                break
            except OSError:
                continue
        super().server_bind()


def _question_end(data: bytes) -> int:
    """Offset just past the (single) question of a query, or -1."""
    i = 12
    while i < len(data):
        n = data[i]
        if n == 0:
            return i + 5 if i + 5 <= len(data) else -1
        if n & 0xC0:
            return -1
        i += 1 + n
    return -1


class _FastHandler(dns_server._Handler):
    """UDP: answers names with precomputed records straight from the packet bytes
    (question echoed as received, answers pointing at it); everything else, and
    TCP, goes through the fixture's dnslib path."""

    def handle(self) -> None:
        if self.server.socket_type == socket.SOCK_DGRAM:
            data, sock = self.request
            owner = self.server.owner
            if len(data) >= 17 and data[4:6] == b"\x00\x01" and not data[2] & 0x80:
                end = _question_end(data)
                if end > 0:
                    labels, i = [], 12
                    while data[i]:
                        labels.append(data[i + 1:i + 1 + data[i]])
                        i += 1 + data[i]
                    name = b".".join(labels).decode("ascii", "replace").lower()
                    qtype = int.from_bytes(data[end - 4:end - 2], "big")
                    hit = owner.fast.get((name, qtype))
                    if hit is not None:
                        count, answers = hit
                        flags = 0x8400 | (data[2] & 0x01) << 8     # QR AA, RD echoed
                        reply = (data[0:2] + flags.to_bytes(2, "big") + b"\x00\x01" + count.to_bytes(2, "big")
                                 + b"\x00\x00\x00\x00" + data[12:end] + answers)
                        owner.note_fast(qtype)
                        try:
                            sock.sendto(reply, self.client_address)
                        except OSError:
                            pass
                        return
        super().handle()


dns_server._UDPServer = _SerialUDPServer   # DnsServer.start() looks these up at call time
dns_server._Handler = _FastHandler


class BenchDnsServer(DnsServer):
    """Static zone: no copy of the table per query, counters instead of a query log."""

    def __init__(self, *a, **kw):
        super().__init__(*a, **kw)
        self.count = 0
        self.by_type: dict[str, int] = {}
        self._count_lock = threading.Lock()
        self.fast: dict[tuple[str, int], tuple[int, bytes]] = {}
        for name, records in self._zones.items():
            by_qtype: dict[int, list[bytes]] = {}
            for r in records:
                if r.rtype not in ("MX", "A"):
                    continue
                rtype = getattr(QTYPE, r.rtype)
                rdata = DNSBuffer()
                r.rdata.pack(rdata)
                ttl = self._ttl(r)
                rr = (b"\xc0\x0c" + struct.pack("!HHIH", rtype, 1, ttl, len(rdata.data)) + bytes(rdata.data))
                by_qtype.setdefault(rtype, []).append(rr)
            for rtype, rrs in by_qtype.items():
                self.fast[(name, rtype)] = (len(rrs), b"".join(rrs))

    _fast_names = {1: "A", 15: "MX"}

    def note_fast(self, qtype: int) -> None:
        t = self._fast_names.get(qtype, str(qtype))
        with self._count_lock:
            self.count += 1
            self.by_type[t] = self.by_type.get(t, 0) + 1

    def _resolve(self, request, protocol):
        qname = request.q.qname
        name = norm(str(qname))
        qtype = QTYPE.get(request.q.qtype, f"TYPE{request.q.qtype}")
        with self._count_lock:
            self.count += 1
            self.by_type[qtype] = self.by_type.get(qtype, 0) + 1
        reply = request.reply()
        reply.header.aa = 1
        reply.header.ra = 0
        try:
            self._fill(reply, qname, name, qtype, self._zones)   # never changed while serving
        except Exception as e:  # noqa: BLE001
            self._note_error(f"{name} {qtype}: {e!r}")
            reply = request.reply()
            reply.header.rcode = RCODE.SERVFAIL
        return reply


def write_stats(srv: BenchDnsServer, path) -> dict:
    ru = resource.getrusage(resource.RUSAGE_SELF)
    with srv._count_lock:
        stats = {"queries": srv.count, "by_type": dict(srv.by_type), "errors": srv.errors[:20],
                 "cpu_s": round(ru.ru_utime + ru.ru_stime, 2)}
    if path:
        with open(path + ".tmp", "w") as fh:
            json.dump(stats, fh)
        os.replace(path + ".tmp", path)
    return stats


def build_zones(domains: int, mx_hosts: int, ttl: int) -> dict:
    zones = {}
    for k in range(mx_hosts):
        zones[f"mx{k}.bench.test"] = [("A", f"127.0.0.{2 + k}", ttl)]
    for i in range(1, domains + 1):
        zones[f"d{i}.example.test"] = [("MX", 10, f"mx{(i - 1) % mx_hosts}.bench.test", ttl)]
    return zones


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--domains", type=int, default=1000)
    ap.add_argument("--mx-hosts", type=int, default=8, help="1..250 hosts, 127.0.0.2 upwards")
    ap.add_argument("--ttl", type=int, default=3600)
    ap.add_argument("--listen", default="127.0.0.1:0", help="HOST:PORT (port 0 = any free one)")
    ap.add_argument("--ready-file", help="write HOST:PORT here once serving")
    ap.add_argument("--stats-file", help="write query counters (JSON) here at exit")
    ap.add_argument("--duration", type=float, default=0, help="exit after this many seconds (0 = until SIGTERM)")
    args = ap.parse_args()
    if not 1 <= args.mx_hosts <= 250:
        ap.error("--mx-hosts must be 1..250")
    host, _, port = args.listen.rpartition(":")
    srv = BenchDnsServer(build_zones(args.domains, args.mx_hosts, args.ttl), host=host.strip("[]"),
                         port=int(port), default_ttl=args.ttl)
    done = threading.Event()
    for s in (signal.SIGTERM, signal.SIGINT):
        signal.signal(s, lambda *_: done.set())
    dump = threading.Event()
    signal.signal(signal.SIGUSR1, lambda *_: dump.set())
    srv.start()
    if args.ready_file:
        tmp = args.ready_file + ".tmp"
        with open(tmp, "w") as fh:
            fh.write(srv.address + "\n")
        os.replace(tmp, args.ready_file)
    print(f"dns_zone: {args.domains} domains -> {args.mx_hosts} MX hosts, serving on {srv.address} (UDP+TCP)",
          file=sys.stderr, flush=True)
    deadline = time.monotonic() + args.duration if args.duration > 0 else None
    while not done.is_set():
        if deadline is not None and time.monotonic() >= deadline:
            break
        done.wait(0.1)
        if dump.is_set():
            dump.clear()
            write_stats(srv, args.stats_file)
    srv.stop()
    stats = write_stats(srv, args.stats_file)
    print(f"dns_zone: {json.dumps(stats)}", file=sys.stderr, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
