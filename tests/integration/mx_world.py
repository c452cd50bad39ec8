"""The world an MX-delivering ringmaild is tested in: an authoritative DnsServer, and
recording SMTP sinks on several loopback addresses (127.0.0.2, 127.0.0.3, ..., ::1) that
all listen on ONE shared port P, because the daemon connects to every MX host on
``[delivery] smtp_port = P``.

    with MxWorld() as w:                       # or the `mx_world` fixture (conftest.py)
        w.add_mx("a.test", 10, "mx1.a.test", "127.0.0.2")
        w.add_mx("a.test", 20, "mx2.a.test", "127.0.0.3", "::1")
        s1 = w.sink("127.0.0.2")                         # accepts everything
        s2 = w.sink("127.0.0.3", behaviour="tempfail")   # 451 at RCPT
        w.sink("127.0.0.4", behaviour="dead")            # nothing listens there
        d = start_daemon("", config=w.daemon_config({"queue": {...}}))

Behaviours: "accept", "tempfail" (451), "reject" (550) -- at ``stage`` "mail", "rcpt"
(default) or "data" -- and "dead" (no listener: connection refused). ``set_behaviour``
changes one live, including dead <-> alive (the sink is stopped / restarted on P).

``w.config`` is the daemon config fragment::

    {"dns": {"servers": ["127.0.0.1:DNSPORT"]}, "delivery": {"smtp_port": P},
     "relay": {"smarthost": ""}}

It deep-merges into conftest.default_config (relay.allow_networks etc. are kept).
"""
from __future__ import annotations

import errno
import socket
from typing import Iterable, Optional

from dns_server import DnsServer, norm
from sink import Sink

BEHAVIOURS = ("accept", "tempfail", "reject", "dead")


def has_ipv6_loopback() -> bool:
    """True if this machine can bind a TCP socket on [::1] (no IPv6 in some containers)."""
    if not socket.has_ipv6:
        return False
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as s:
            s.bind(("::1", 0))
        return True
    except OSError:
        return False


def _port_free_everywhere(port: int, v6: bool) -> bool:
    """The port is bindable on 0.0.0.0 (so no IPv4 address has a listener or a bound
    socket on it) and, with IPv6, on [::] (v6-only)."""
    socks = []
    try:
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        socks.append(s)
        s.bind(("0.0.0.0", port))
        if v6:
            s6 = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
            socks.append(s6)
            s6.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            s6.bind(("::", port))
        return True
    except OSError:
        return False
    finally:
        for s in socks:
            s.close()


def pick_shared_port(v6: Optional[bool] = None) -> int:
    """A TCP port with nothing bound on any local IPv4 address (nor IPv6 when v6), so
    sinks can bind it on every 127.0.0.x and ::1, and a "dead" host really refuses."""
    if v6 is None:
        v6 = has_ipv6_loopback()
    for _ in range(100):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            s.bind(("0.0.0.0", 0))
            port = s.getsockname()[1]
        if _port_free_everywhere(port, v6):
            return port
    raise RuntimeError("no TCP port free on all loopback addresses")


def _deep_merge(base: dict, over: dict) -> dict:
    """conftest.deep_merge (copied: conftest is not imported from helper modules)."""
    res = dict(base)
    for k, v in over.items():
        if isinstance(v, dict) and isinstance(res.get(k), dict):
            res[k] = _deep_merge(res[k], v)
        else:
            res[k] = v
    return res


class MxWorld:
    def __init__(self, dns: Optional[DnsServer] = None, port: Optional[int] = None) -> None:
        self.dns = dns if dns is not None else DnsServer()
        self._port = port
        self._port_frozen = port is not None
        self._sinks: dict[str, Sink] = {}
        self._behaviour: dict[str, str] = {}
        self._started = False

    # -- lifecycle ---------------------------------------------------------------------
    def start(self) -> "MxWorld":
        if self._port is None:
            self._port = pick_shared_port()
        if not self.dns._servers:
            self.dns.start()
        self._started = True
        return self

    def stop(self) -> None:
        errors = []
        for s in self._sinks.values():
            try:
                s.stop()
            except Exception as e:  # noqa: BLE001 - stop the rest anyway
                errors.append(f"{s.host}: {e!r}")
        self.dns.stop()
        self._started = False
        if errors:
            raise RuntimeError("mx world: stopping sinks: " + "; ".join(errors))

    def __enter__(self) -> "MxWorld":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    # -- the shared port ----------------------------------------------------------------
    @property
    def port(self) -> int:
        """P, the port of every sink (= the daemon's `[delivery] smtp_port`). Reading it
        fixes it: before that, a sink that loses a bind race moves all sinks to a new P."""
        assert self._port is not None, "MxWorld not started"
        self._port_frozen = True
        return self._port

    @property
    def config(self) -> dict:
        """The daemon config fragment for MX delivery in this world."""
        return {
            "dns": {"servers": [self.dns.address]},
            "delivery": {"smtp_port": self.port},
            "relay": {"smarthost": ""},
        }

    def daemon_config(self, extra: Optional[dict] = None) -> dict:
        """`config` deep-merged with `extra` (for start_daemon(..., config=...))."""
        return _deep_merge(self.config, extra or {})

    # -- sinks ------------------------------------------------------------------------------
    def sink(self, host: str, behaviour: str = "accept", stage: Optional[str] = None,
             tls_context=None, greeting_name: str = "sink.example.test") -> Sink:
        """The sink on host:P, started (unless "dead"). Asking again for the same host
        returns the same sink, with the behaviour applied."""
        assert self._started, "MxWorld not started"
        if behaviour not in BEHAVIOURS:
            raise ValueError(f"behaviour {behaviour!r}: one of {BEHAVIOURS}")
        if host not in self._sinks:
            self._sinks[host] = Sink(host, self._port, tls_context=tls_context, greeting_name=greeting_name)
            self._behaviour[host] = "dead"
        self.set_behaviour(host, behaviour, stage)
        return self._sinks[host]

    def sinks_on(self, hosts: Iterable[str], behaviour: str = "accept",
                 stage: Optional[str] = None) -> list[Sink]:
        return [self.sink(h, behaviour, stage) for h in hosts]

    def set_behaviour(self, host: str, behaviour: str, stage: Optional[str] = None) -> None:
        if behaviour not in BEHAVIOURS:
            raise ValueError(f"behaviour {behaviour!r}: one of {BEHAVIOURS}")
        s = self._sinks[host]
        if behaviour == "dead":
            s.stop()
        else:
            s.behave(behaviour, stage)
            if not s.running:
                self._start_sink(s)
        self._behaviour[host] = behaviour

    def _start_sink(self, s: Sink) -> None:
        for attempt in range(10):
            try:
                s.start()
                self._port_frozen = True
                return
            except Exception as e:  # noqa: BLE001
                if isinstance(e, OSError) and e.errno == errno.EADDRNOTAVAIL:
                    raise RuntimeError(
                        f"mx world: cannot bind {s.host}: not a local address (on Linux all "
                        "of 127.0.0.0/8 is; ::1 needs IPv6 on lo)") from e
                if self._port_frozen or attempt == 9:
                    raise RuntimeError(f"mx world: sink on {s.host} port {s.port}: {e}") from e
                # Nobody has seen P yet and no sink holds it: move the world to a new P.
                self._port = pick_shared_port()
                for other in self._sinks.values():
                    other.port = other.fixed_port = self._port

    def get(self, host: str) -> Sink:
        return self._sinks[host]

    @property
    def sinks(self) -> dict[str, Sink]:
        return dict(self._sinks)

    def behaviour(self, host: str) -> str:
        return self._behaviour[host]

    def all_messages(self) -> list:
        return [m for s in self._sinks.values() for m in s.snapshot()]

    # -- DNS helpers ------------------------------------------------------------------------
    def add_mx(self, domain: str, pref: int, mx_host: str, *addrs: str,
               ttl: Optional[int] = None) -> str:
        """Adds "domain MX pref mx_host" and A/AAAA records of mx_host for addrs;
        returns mx_host. (Use self.dns directly for anything else.)"""
        tail = () if ttl is None else (ttl,)
        self.dns.add_records(domain, ("MX", pref, mx_host) + tail)
        recs = [(("AAAA" if ":" in a else "A"), a) + tail for a in addrs]
        if recs or self.dns.zone(mx_host) is None:
            self.dns.add_records(mx_host, *recs)
        return norm(mx_host)

    # -- reporting ------------------------------------------------------------------------
    def describe(self) -> str:
        out = [f"dns {self.dns.address if self.dns._servers else '(stopped)'}; "
               f"smtp port {self._port}"]
        for host, s in self._sinks.items():
            out.append(f"sink {host} [{self._behaviour[host]}]: {len(s.connections)} "
                       f"connection(s), max {s.max_connections} at once, "
                       f"{len(s.snapshot())} accepted:" + s.describe(20))
        q = self.dns.queries
        out.append(f"dns queries ({len(q)}): {q[-40:]}")
        if self.dns.errors:
            out.append(f"dns errors: {self.dns.errors}")
        return "\n".join(out)
