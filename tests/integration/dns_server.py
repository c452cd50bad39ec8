"""An authoritative DNS server on loopback for the MX delivery tests, built on dnslib.

Serves UDP and TCP on the same port, in threads of the test process. The zone data is a
dict of owner name -> record list; names are case-insensitive and a trailing dot is
optional everywhere::

    dns = DnsServer({
        "a.test":      [("MX", 10, "mx1.a.test"), ("MX", 20, "mx2.a.test")],
        "mx1.a.test":  [("A", "127.0.0.2"), ("AAAA", "::1", 60)],   # last item: TTL
        "nomx.test":   [("A", "127.0.0.4")],
        "nullmx.test": [("MX", 0, ".")],                            # RFC 7505 null MX
    }, servfail={"broken.test"}, silent={"blackhole.test"})
    with dns:
        dns.address        # "127.0.0.1:PORT"
        dns.queries        # [("a.test", "MX"), ...] as received (lower case, no dot)

Answers:

- a name in the zones with records of the asked type: NOERROR with them (AA set);
  a CNAME is followed through the zones (the chain is in the answer);
- a name in the zones without records of that type: NOERROR, no answer, an SOA in the
  authority section (negative caching TTL ``negative_ttl``);
- a name not in the zones: NXDOMAIN (with the SOA);
- ``servfail`` names: SERVFAIL;  ``silent`` names: never answered (UDP and TCP);
- ``delays`` {name: seconds}: answered after that long;
- ``truncate_udp`` names: over UDP an empty answer with TC set (so the client must
  retry over TCP); over TCP the real answer.

Record forms (the TTL is an optional last item, default ``default_ttl`` = 300):
``("A", addr)``, ``("AAAA", addr)``, ``("MX", pref, host)``, ``("CNAME", target)``,
``("NS", host)``, ``("PTR", host)``, ``("TXT", text_or_list_of_texts)``.

Everything can be changed while the server runs: ``set_zone``, ``remove_zone``,
``set_servfail``, ``set_silent``, ``set_delay``. ``errors`` collects exceptions raised
while answering (each also answered SERVFAIL), which a test can assert is empty.

Standalone: ``/usr/bin/python3 tests/integration/dns_server.py`` serves a small demo
zone and prints its address until Ctrl-C.
"""
from __future__ import annotations

import socket
import socketserver
import struct
import threading
import time
from typing import Iterable, Mapping, Optional, Sequence

from dnslib import AAAA, CNAME, MX, NS, PTR, QTYPE, RCODE, RR, SOA, TXT, A, DNSError, DNSRecord
from dnslib.server import DNSHandler, DNSServer

DEFAULT_TTL = 300

# type -> (number of data fields, constructor of the rdata from those fields)
_RDATA = {
    "A": (1, lambda a: A(a)),
    "AAAA": (1, lambda a: AAAA(a)),
    "MX": (2, lambda pref, host: MX(_fqdn(host), int(pref))),
    "CNAME": (1, lambda t: CNAME(_fqdn(t))),
    "NS": (1, lambda t: NS(_fqdn(t))),
    "PTR": (1, lambda t: PTR(_fqdn(t))),
    "TXT": (1, lambda t: TXT([t] if isinstance(t, (str, bytes)) else list(t))),
}


def norm(name: str) -> str:
    """Canonical form of a domain name: lower case, no trailing dot ("" for the root)."""
    return str(name).strip().rstrip(".").lower()


def _fqdn(name: str) -> str:
    n = str(name).strip()
    if n in ("", "."):
        return "."
    return n if n.endswith(".") else n + "."


class _Drop(Exception):
    """Raised by the resolver to leave a query unanswered."""


class _Record:
    __slots__ = ("rtype", "ttl", "rdata", "spec")

    def __init__(self, spec: Sequence) -> None:
        if not spec or not isinstance(spec[0], str):
            raise ValueError(f"dns record {spec!r}: first item must be the type, e.g. 'A'")
        rtype = spec[0].upper()
        if rtype not in _RDATA:
            raise ValueError(f"dns record {spec!r}: unsupported type {rtype} "
                             f"(have {', '.join(_RDATA)})")
        n, make = _RDATA[rtype]
        fields = list(spec[1:])
        if len(fields) == n + 1:
            ttl = int(fields.pop())
        elif len(fields) == n:
            ttl = None
        else:
            raise ValueError(f"dns record {spec!r}: {rtype} takes {n} field(s) and an "
                             "optional TTL")
        self.rtype = rtype
        self.ttl = ttl
        self.rdata = make(*fields)   # validates addresses etc. now, not at query time
        self.spec = tuple(spec)


class _Resolver:
    def __init__(self, owner: "DnsServer") -> None:
        self.owner = owner

    def resolve(self, request: DNSRecord, handler) -> DNSRecord:
        return self.owner._resolve(request, getattr(handler, "protocol", "udp"))


class _Handler(DNSHandler):
    """dnslib's handler, plus: several queries on one TCP connection (c-ares reuses
    them), dropping queries (silent names), and no tracebacks for garbage."""

    def handle(self) -> None:
        if self.server.socket_type == socket.SOCK_STREAM:
            self.protocol = "tcp"
            self.request.settimeout(self.server.owner.tcp_idle_timeout)
            try:
                while True:
                    hdr = self._recv_exact(2)
                    if hdr is None:
                        return
                    data = self._recv_exact(struct.unpack("!H", hdr)[0])
                    if data is None:
                        return
                    rdata = self._reply(data)
                    if rdata is not None:
                        self.request.sendall(struct.pack("!H", len(rdata)) + rdata)
            except OSError:
                return
        else:
            self.protocol = "udp"
            data, sock = self.request
            rdata = self._reply(data)
            if rdata is not None:
                try:
                    sock.sendto(rdata, self.client_address)
                except OSError:
                    pass

    def _recv_exact(self, n: int) -> Optional[bytes]:
        buf = b""
        while len(buf) < n:
            chunk = self.request.recv(n - len(buf))
            if not chunk:
                return None
            buf += chunk
        return buf

    def _reply(self, data: bytes) -> Optional[bytes]:
        try:
            return self.get_reply(data)
        except _Drop:
            return None
        except DNSError as e:          # unparseable query: ignore it, as a server would
            self.server.owner._note_error(f"bad query from {self.client_address}: {e}")
            return None


class _QuietLogger:
    def __getattr__(self, name):
        return lambda *a, **k: None


class _UDPServer(socketserver.ThreadingMixIn, socketserver.UDPServer):
    # No SO_REUSEADDR on UDP: on Linux it lets a second socket bind the same port,
    # which would hide a port clash instead of failing the bind.
    allow_reuse_address = False
    daemon_threads = True

    def __init__(self, server_address, handler):
        if ":" in server_address[0]:
            self.address_family = socket.AF_INET6
        super().__init__(server_address, handler)


class _TCPServer(socketserver.ThreadingMixIn, socketserver.TCPServer):
    allow_reuse_address = True      # TIME_WAIT only; two TCP listeners still conflict
    daemon_threads = True

    def __init__(self, server_address, handler):
        if ":" in server_address[0]:
            self.address_family = socket.AF_INET6
        super().__init__(server_address, handler)


class DnsServer:
    def __init__(self, zones: Optional[Mapping[str, Iterable[Sequence]]] = None, *,
                 servfail: Iterable[str] = (), silent: Iterable[str] = (),
                 delays: Optional[Mapping[str, float]] = None,
                 truncate_udp: Iterable[str] = (),
                 host: str = "127.0.0.1", port: int = 0,
                 default_ttl: int = DEFAULT_TTL, negative_ttl: int = 60,
                 tcp_idle_timeout: float = 30.0) -> None:
        self.host = host
        self.port = port
        self.default_ttl = default_ttl
        self.negative_ttl = negative_ttl
        self.tcp_idle_timeout = tcp_idle_timeout
        self._lock = threading.Lock()
        self._cond = threading.Condition(self._lock)
        self._zones: dict[str, list[_Record]] = {}
        self._servfail = {norm(n) for n in servfail}
        self._silent = {norm(n) for n in silent}
        self._delays = {norm(k): float(v) for k, v in (delays or {}).items()}
        self._truncate = {norm(n) for n in truncate_udp}
        self._queries: list[tuple[str, str]] = []
        self._query_log: list[tuple[str, str, str]] = []   # (name, type, "udp"/"tcp")
        self.errors: list[str] = []
        self._servers: list[DNSServer] = []
        self._threads: list[threading.Thread] = []
        for name, records in (zones or {}).items():
            self.set_zone(name, records)

    # -- zone data (thread-safe, live) ----------------------------------------------
    def set_zone(self, name: str, records: Iterable[Sequence]) -> None:
        """Replaces every record of `name` (an empty list: the name exists, no data)."""
        parsed = [_Record(r) for r in records]
        with self._lock:
            self._zones[norm(name)] = parsed

    def add_records(self, name: str, *records: Sequence) -> None:
        parsed = [_Record(r) for r in records]
        with self._lock:
            self._zones.setdefault(norm(name), []).extend(parsed)

    def remove_zone(self, name: str) -> None:
        """The name no longer exists (NXDOMAIN)."""
        with self._lock:
            self._zones.pop(norm(name), None)

    def zone(self, name: str) -> Optional[list[tuple]]:
        with self._lock:
            recs = self._zones.get(norm(name))
            return None if recs is None else [r.spec for r in recs]

    def set_servfail(self, name: str, on: bool = True) -> None:
        with self._lock:
            (self._servfail.add if on else self._servfail.discard)(norm(name))

    def set_silent(self, name: str, on: bool = True) -> None:
        with self._lock:
            (self._silent.add if on else self._silent.discard)(norm(name))

    def set_delay(self, name: str, seconds: Optional[float]) -> None:
        with self._lock:
            if seconds:
                self._delays[norm(name)] = float(seconds)
            else:
                self._delays.pop(norm(name), None)

    def set_truncate_udp(self, name: str, on: bool = True) -> None:
        with self._lock:
            (self._truncate.add if on else self._truncate.discard)(norm(name))

    # -- inspection -----------------------------------------------------------------------
    @property
    def queries(self) -> list[tuple[str, str]]:
        """(name, type) of every query received, in order (a copy)."""
        with self._lock:
            return list(self._queries)

    @property
    def query_log(self) -> list[tuple[str, str, str]]:
        """(name, type, protocol) of every query received."""
        with self._lock:
            return list(self._query_log)

    def queries_for(self, name: str, qtype: Optional[str] = None) -> list[tuple[str, str]]:
        n = norm(name)
        return [q for q in self.queries if q[0] == n and (qtype is None or q[1] == qtype.upper())]

    def clear_queries(self) -> None:
        with self._lock:
            self._queries.clear()
            self._query_log.clear()

    def wait_query(self, name: str, qtype: Optional[str] = None, timeout: float = 10.0,
                   count: int = 1) -> list[tuple[str, str]]:
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                got = [q for q in self._queries if q[0] == norm(name)
                       and (qtype is None or q[1] == qtype.upper())]
                if len(got) >= count:
                    return got
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(
                        f"dns: no {count} query(ies) for {name} {qtype or ''} in "
                        f"{timeout:.0f}s; got {self._queries[-30:]}")
                self._cond.wait(min(left, 0.2))

    @property
    def address(self) -> str:
        """"127.0.0.1:PORT" (or "[::1]:PORT"), the form of `[dns] servers`."""
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"

    # -- lifecycle --------------------------------------------------------------------
    def start(self) -> "DnsServer":
        assert not self._servers, "dns server already running"
        last: Optional[Exception] = None
        for _ in range(1 if self.port else 50):
            udp = tcp = None
            try:
                # UDP first on an ephemeral port (the kernel's pick is free for UDP),
                # then TCP on the same number; if TCP is taken, start over.
                udp = DNSServer(_Resolver(self), address=self.host, port=self.port,
                                logger=_QuietLogger(), handler=_Handler, server=_UDPServer)
                port = udp.server.server_address[1]
                tcp = DNSServer(_Resolver(self), address=self.host, port=port, tcp=True,
                                logger=_QuietLogger(), handler=_Handler, server=_TCPServer)
            except OSError as e:
                last = e
                if udp is not None:
                    udp.server.server_close()
                continue
            self.port = port
            self._servers = [udp, tcp]
            for srv in self._servers:
                srv.server.owner = self
                t = threading.Thread(target=srv.server.serve_forever,
                                     kwargs={"poll_interval": 0.05},
                                     name=f"dns-{srv.server.socket_type}-{port}", daemon=True)
                t.start()
                self._threads.append(t)
            return self
        raise RuntimeError(f"dns server: could not bind UDP+TCP on {self.host}: {last}")

    def stop(self) -> None:
        for srv in self._servers:
            srv.server.shutdown()
            srv.server.server_close()
        for t in self._threads:
            t.join(5)
        self._servers, self._threads = [], []

    def __enter__(self) -> "DnsServer":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    # -- answering ------------------------------------------------------------------------
    def _note_error(self, text: str) -> None:
        with self._lock:
            self.errors.append(text)

    def _soa(self, qname: str) -> RR:
        labels = [l for l in norm(qname).split(".") if l]
        apex = _fqdn(labels[-1]) if labels else "."
        return RR(apex, QTYPE.SOA, ttl=self.negative_ttl,
                  rdata=SOA(_fqdn("ns." + apex.rstrip(".")) if apex != "." else "ns.",
                            _fqdn("hostmaster." + apex.rstrip(".")) if apex != "." else "hostmaster.",
                            (1, 3600, 600, 86400, self.negative_ttl)))

    def _resolve(self, request: DNSRecord, protocol: str) -> DNSRecord:
        qname = request.q.qname
        name = norm(str(qname))
        qtype = QTYPE.get(request.q.qtype, f"TYPE{request.q.qtype}")
        with self._cond:
            self._queries.append((name, qtype))
            self._query_log.append((name, qtype, protocol))
            self._cond.notify_all()
            silent = name in self._silent
            servfail = name in self._servfail
            delay = self._delays.get(name, 0.0)
            truncate = protocol == "udp" and name in self._truncate
            zones = {k: list(v) for k, v in self._zones.items()}
        if silent:
            raise _Drop()
        if delay:
            time.sleep(delay)
        reply = request.reply()
        reply.header.aa = 1
        reply.header.ra = 0
        if servfail:
            reply.header.rcode = RCODE.SERVFAIL
            return reply
        if truncate:
            reply.header.tc = 1
            return reply
        try:
            self._fill(reply, qname, name, qtype, zones)
        except Exception as e:  # noqa: BLE001 - a fixture bug must show, not hang a test
            self._note_error(f"{name} {qtype}: {e!r}")
            reply = request.reply()
            reply.header.rcode = RCODE.SERVFAIL
        return reply

    def _fill(self, reply: DNSRecord, qname, name: str, qtype: str, zones: dict) -> None:
        owner = qname                     # the first owner is echoed as asked (0x20-safe)
        seen: set[str] = set()
        while True:
            records = zones.get(name)
            if records is None:
                reply.header.rcode = RCODE.NXDOMAIN
                reply.add_auth(self._soa(name))
                return
            hits = [r for r in records if qtype in (r.rtype, "ANY")]
            if hits:
                for r in hits:
                    reply.add_answer(RR(owner, getattr(QTYPE, r.rtype), ttl=self._ttl(r),
                                        rdata=r.rdata))
                return
            cnames = [r for r in records if r.rtype == "CNAME"]
            if not cnames or name in seen or len(seen) > 8:
                reply.add_auth(self._soa(name))   # NOERROR, no data
                return
            seen.add(name)
            c = cnames[0]
            reply.add_answer(RR(owner, QTYPE.CNAME, ttl=self._ttl(c), rdata=c.rdata))
            owner = str(c.rdata.label)
            name = norm(owner)

    def _ttl(self, r: _Record) -> int:
        return self.default_ttl if r.ttl is None else r.ttl


if __name__ == "__main__":
    demo = DnsServer({
        "a.test": [("MX", 10, "mx1.a.test"), ("MX", 20, "mx2.a.test")],
        "mx1.a.test": [("A", "127.0.0.2")],
        "mx2.a.test": [("A", "127.0.0.3"), ("AAAA", "::1")],
        "nullmx.test": [("MX", 0, ".")],
    }, servfail={"broken.test"}, silent={"blackhole.test"})
    with demo:
        print(f"dns server on {demo.address} (UDP+TCP); try: dig @127.0.0.1 -p {demo.port} "
              "a.test MX; Ctrl-C stops", flush=True)
        try:
            while True:
                time.sleep(3600)
        except KeyboardInterrupt:
            pass
