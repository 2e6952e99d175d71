"""A network namespace of a test's own, with `lo` as its only interface (root only).

A browser that gathers ICE candidates on every interface it sees (Firefox) sees only loopback
there, and so does everything started from inside: its peer traffic cannot leave loopback.

    with Namespace.made("connvo-ff") as ns, ns.entered():
        ...  # sockets made and processes started here live in the namespace
    ns.counters()  # bytes per interface, read before it is torn down

Hosts of a test's own: namespaces joined by a veth pair (addresses from 198.18.0.0/24, no
default route, nothing joined to the machine's interfaces), each process started with a host
name of its own (a UTS namespace), and everything still running in them ended by PID.

    with Namespace.made("a") as a, Namespace.made("b") as b:
        with a.joined(b, "198.18.0.1", "198.18.0.2") as veth:  # veth: a's end
            a.start(["ray", "start", ...], hostname="node-a", env=..., log=...)
            ...
            a.end_all()
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import subprocess
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

CLONE_NEWNET = 0x40000000
_libc = ctypes.CDLL(None, use_errno=True)


def _ip(*args: str) -> str:
    return subprocess.run(["ip", *args], check=True, capture_output=True, text=True).stdout


def _setns(fd: int) -> None:
    if _libc.setns(fd, CLONE_NEWNET) != 0:
        errno = ctypes.get_errno()
        raise OSError(errno, f"setns: {os.strerror(errno)}")


@dataclass(frozen=True)
class Counters:
    """Bytes and packets an interface received and sent."""

    rx_bytes: int
    rx_packets: int
    tx_bytes: int
    tx_packets: int


@dataclass(frozen=True)
class Namespace:
    name: str

    @classmethod
    @contextlib.contextmanager
    def made(cls, name: str) -> Iterator[Namespace]:
        """A fresh namespace with `lo` up, deleted on the way out whatever happened (the
        processes still in it should be ended first: a namespace lives on while one is)."""
        if os.geteuid() != 0:
            raise PermissionError("network namespaces need root")
        with contextlib.suppress(subprocess.CalledProcessError):
            _ip("netns", "delete", name)  # left by a run that was killed
        _ip("netns", "add", name)
        try:
            _ip("-n", name, "link", "set", "lo", "up")
            yield cls(name)
        finally:
            _ip("netns", "delete", name)

    @contextlib.contextmanager
    def entered(self) -> Iterator[None]:
        """This thread (and the threads and processes it starts) in the namespace, back in its
        own on the way out; sockets stay in the namespace they were made in."""
        with open("/proc/thread-self/ns/net") as home, open(f"/run/netns/{self.name}") as ns:
            _setns(ns.fileno())
            try:
                yield
            finally:
                _setns(home.fileno())

    @contextlib.contextmanager
    def joined(self, other: Namespace, mine: str, theirs: str) -> Iterator[str]:
        """A veth pair between this namespace and `other`, `mine`/24 and `theirs`/24 on its
        ends; answers this end's name. Removed on the way out (and with either namespace)."""
        end = f"v{os.getpid() % 100000}{self.name[-1]}"
        far = f"v{os.getpid() % 100000}{other.name[-1]}"
        _ip(
            "link", "add", end, "netns", self.name, "type", "veth", "peer", far, "netns", other.name
        )
        try:
            for ns, name, address in ((self, end, mine), (other, far, theirs)):
                _ip("-n", ns.name, "addr", "add", f"{address}/24", "dev", name)
                _ip("-n", ns.name, "link", "set", name, "up")
            yield end
        finally:
            with contextlib.suppress(subprocess.CalledProcessError):
                _ip("-n", self.name, "link", "delete", end)

    def start(
        self, command: Sequence[str], *, hostname: str, env: dict[str, str], log: str
    ) -> subprocess.Popen[bytes]:
        """`command` in this namespace under its own host name (a new UTS namespace), in a
        session of its own, its output to the file `log`."""
        named = ["unshare", "--uts", "sh", "-c", 'hostname "$0" && exec "$@"', hostname]
        with open(log, "wb") as out:
            return subprocess.Popen(
                ["ip", "netns", "exec", self.name, *named, *command],
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    def routes(self) -> list[str]:
        """Its IPv4 and IPv6 routes, one line each (`ip route` as the namespace sees it)."""
        return [r for f in ("-4", "-6") for r in _ip("-n", self.name, f, "route").splitlines()]

    def pids(self) -> list[int]:
        return [int(p) for p in _ip("netns", "pids", self.name).split()]

    def end_all(self, grace: float = 5.0) -> None:
        """Every process in the namespace (all started by the test), by PID: SIGTERM, then
        SIGKILL to those still there after `grace` seconds."""
        for sig in (signal.SIGTERM, signal.SIGKILL):
            for pid in self.pids():
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, sig)
            deadline = time.monotonic() + grace
            while self.pids() and time.monotonic() < deadline:
                time.sleep(0.1)
            if not self.pids():
                return

    def counters(self) -> dict[str, Counters]:
        """Per interface, from /proc/net/dev as the namespace sees it."""
        counters = {}
        for line in self._read("/proc/net/dev").splitlines()[2:]:
            name, fields = line.split(":", 1)
            values = [int(v) for v in fields.split()]
            counters[name.strip()] = Counters(values[0], values[1], values[8], values[9])
        return counters

    def unroutable(self) -> int:
        """Packets its IPv4 and IPv6 stacks refused to send for want of a route: any try to
        reach beyond loopback (a DNS look-up, a call home), which the namespace stops."""
        ipv4 = [line.split() for line in self._read("/proc/net/snmp").splitlines()]
        names, values = [fields for fields in ipv4 if fields[0] == "Ip:"]
        ipv6 = dict(line.split() for line in self._read("/proc/net/snmp6").splitlines() if line)
        return int(dict(zip(names, values, strict=True))["OutNoRoutes"]) + int(
            ipv6["Ip6OutNoRoutes"]
        )

    def _read(self, path: str) -> str:
        command = ["ip", "netns", "exec", self.name, "cat", path]
        return subprocess.run(command, check=True, capture_output=True, text=True).stdout
